"""
The control service's configuration file: round trip, atomic replacement,
refusal of a format it does not know.
"""

import json
import os
import stat

import pytest

from blockmover.control.errors import StoreError
from blockmover.control.store import FileStore, StoredConfiguration


def stored(generation=3):
    return StoredConfiguration(generation=generation, counter=generation + 2,
                               cluster_yml="c: 1\n", app_yml="a: 2\n",
                               cluster_path="prod.yml", app_path="apps.yml")


def test_round_trip_owner_only_and_no_leftovers(tmp_path):
    store = FileStore(str(tmp_path / "state"))
    assert store.load() is None
    store.save(stored(3))
    store.save(stored(4))
    assert store.load() == stored(4)
    assert os.listdir(str(tmp_path / "state")) == ["configuration.json"]
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode & 0o077 == 0
    with open(store.path) as f:
        data = json.load(f)
    assert data["version"] == 1 and data["generation"] == 4


def test_unknown_version_is_refused(tmp_path):
    store = FileStore(str(tmp_path))
    with open(store.path, "w") as f:
        json.dump({"version": 2, "generation": 1}, f)
    with pytest.raises(StoreError) as info:
        store.load()
    assert "format version 2" in str(info.value)
    assert "version 1 only" in str(info.value)


def test_malformed_file_is_refused(tmp_path):
    store = FileStore(str(tmp_path))
    with open(store.path, "w") as f:
        f.write("{not json")
    with pytest.raises(StoreError) as info:
        store.load()
    assert "not valid JSON" in str(info.value)
