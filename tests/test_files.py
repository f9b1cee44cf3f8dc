"""
Replacing a state file: all or nothing, with the mode asked for from the
start, and nothing left beside it.
"""

import os
import stat

import pytest

from blockmover.files import write_atomically


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomically(str(path), "new")
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_secret_is_created_private(tmp_path):
    path = tmp_path / "clouds.yaml"
    write_atomically(str(path), "password: x", mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomically(str(path), object())
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
