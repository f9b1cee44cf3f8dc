"""
Replacing a state file: all or nothing, with the mode asked for from the
start, and nothing left beside it; from the reactor, in the order asked and
off the reactor's thread.
"""

import os
import stat
import threading

import pytest
from twisted.internet.defer import gatherResults

from blockmover.files import FileWriter, write_atomically
from tests.reactors import run_reactor


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


def test_writer_writes_in_order_off_the_reactor(tmp_path):
    path = str(tmp_path / "state.json")
    threads = []

    def write(text):
        threads.append(threading.current_thread())
        write_atomically(path, text)
        return text

    def go(reactor):
        writer = FileWriter(reactor, "test-writer")
        writer.start()
        written = [writer.run(write, "%d" % (n,)) for n in range(20)]
        written.append(writer.write_atomically(path + ".secret", "s",
                                               mode=0o600))
        done = gatherResults(written)

        def finish(result):
            writer.stop()
            return result
        return done.addBoth(finish)
    results = run_reactor(go)
    assert results[:-1] == ["%d" % (n,) for n in range(20)]
    with open(path) as f:
        assert f.read() == "19"
    assert stat.S_IMODE(os.stat(path + ".secret").st_mode) == 0o600
    # One thread, not the reactor's (the test's own).
    assert len(set(threads)) == 1
    assert threads[0] is not threading.current_thread()


def test_writer_hands_a_failure_to_the_caller(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")

    def refused(failure):
        failure.trap(TypeError)
        return "refused"

    def go(reactor):
        writer = FileWriter(reactor, "test-writer")
        writer.start()
        d = writer.write_atomically(str(path), object())
        d.addErrback(refused)
        d.addBoth(lambda result: writer.stop() or result)
        return d
    assert run_reactor(go) == "refused"
    assert path.read_text() == "old"
