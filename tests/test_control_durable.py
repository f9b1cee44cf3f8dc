"""
The control service's counter of generations is on disk before any slice of
a new generation is handed out, and a configuration it cannot save is
refused with nothing changed: the service in this process, its store made
to fail or to hold its saves.
"""

import errno
import http.client
import json
import os
import socket
import threading

from blockmover import identity
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.control import store as store_module
from blockmover.control.store import FileStore
from blockmover.poll import Backoff, poll
from blockmover.units import GiB
from tests.test_control_api import APP, CLUSTER, report
from tests.test_control_inprocess import put_configuration, serve


def request(port, method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=None if body is None
                           else json.dumps(body))
        response = connection.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)
    finally:
        connection.close()


def long_poll(port, node, after):
    """
    A long poll sent on a connection of its own; read its answer with
    ``answer``.
    """
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(b"GET /v1/nodes/%s/desired?after=%d&timeout=60 HTTP/1.1"
                   b"\r\nHost: x\r\n\r\n" % (node.encode(), after))
    return client


def answer(client):
    try:
        response = http.client.HTTPResponse(client)
        response.begin()
        return response.status, json.loads(response.read())
    finally:
        client.close()


def wait_for(condition, what):
    return poll(lambda: condition() or None, 10, what,
                Backoff(initial=0.01, maximum=0.1))


def moved(cluster):
    return cluster.replace("node1: [mongodb]\n  node2: []",
                           "node1: []\n  node2: [mongodb]")


def new_volume(root):
    return LoopbackBlockDeviceAPI(root, "demo").create_volume(
        identity.dataset_id("demo", "mongodb"), GiB,
        identity.volume_metadata("demo", "mongodb"))


class FullDisk(object):
    """
    ``write_atomically`` of the store, failing as a full disk does while
    ``full``; ``attempts`` counts the writes tried while it was.
    """

    def __init__(self, monkeypatch):
        self.full = False
        self.attempts = 0
        self._write = store_module.write_atomically
        monkeypatch.setattr(store_module, "write_atomically", self.write)

    def write(self, path, text, mode=0o644):
        if self.full:
            self.attempts += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._write(path, text, mode)


def test_a_configuration_that_cannot_be_saved_changes_nothing(
        tmp_path, loopback_root, monkeypatch):
    disk = FullDisk(monkeypatch)
    state_dir = str(tmp_path / "state")
    path = os.path.join(state_dir, "configuration.json")

    def body(port, service, reactor):
        cluster = CLUSTER.format(root=loopback_root)
        generation = put_configuration(port, cluster)
        with open(path) as f:
            before = f.read()
        waiter = long_poll(port, "node2", generation)
        wait_for(lambda: service.slices.waiting() == 1, "the long poll")
        disk.full = True
        status, refused = request(port, "PUT", "/v1/configuration",
                                  {"cluster_yml": moved(cluster),
                                   "app_yml": APP})
        assert status == 500
        assert refused == {"errors": [
            "cannot save the configuration in %s: No space left on device; "
            "check the disk and the state directory, then deploy again"
            % (path,)]}
        # Nothing changed, nothing was handed out.
        assert disk.attempts == 1
        assert service.slices.waiting() == 1
        assert service.slices.counter == generation
        status, shown = request(port, "GET", "/v1/configuration")
        assert (shown["generation"], shown["cluster_yml"]) == (generation,
                                                               cluster)
        status, desired = request(port, "GET", "/v1/nodes/node2/desired")
        assert desired["generation"] == generation
        assert desired["applications"] == {}
        with open(path) as f:
            assert f.read() == before
        # Once it can be saved, it is taken and handed out.
        disk.full = False
        assert put_configuration(port, moved(cluster)) == generation + 1
        status, desired = answer(waiter)
        assert status == 200 and desired["generation"] == generation + 1
        assert set(desired["applications"]) == {"mongodb"}

    serve(state_dir, body)


class HeldStore(FileStore):
    """
    A ``FileStore`` whose saves wait, while ``held``, until released;
    ``saving`` is set when a save starts, ``saved`` lists the counters
    saved.
    """

    def __init__(self, state_dir):
        FileStore.__init__(self, state_dir)
        self.saving = threading.Event()
        self.released = threading.Event()
        self.released.set()
        self.saved = []

    def hold(self):
        self.saving.clear()
        self.released.clear()

    def save(self, stored):
        self.saving.set()
        assert self.released.wait(30), "the save was never released"
        FileStore.save(self, stored)
        self.saved.append(stored.counter)


def test_counter_saved_before_a_listing_hands_out_slices(tmp_path,
                                                          loopback_root):
    store = HeldStore(str(tmp_path / "state"))

    def body(port, service, reactor):
        generation = put_configuration(port,
                                       CLUSTER.format(root=loopback_root))
        waiter = long_poll(port, "node1", generation)
        wait_for(lambda: service.slices.waiting() == 1, "the long poll")
        store.hold()
        # A volume the listing will find changes node1's slice.
        volume = new_volume(loopback_root)
        status, _ = request(port, "PUT", "/v1/nodes/node1/state",
                            report("node1", changed_backend=True))
        assert status == 200
        assert store.saving.wait(10), "the new counter was never saved"
        # Its save runs: the new slice is not handed out yet.
        assert service.slices.waiting() == 1
        assert service.slices.counter == generation
        store.released.set()
        status, desired = answer(waiter)
        assert status == 200
        assert desired["generation"] == generation + 1
        assert desired["volumes"][volume.dataset_id]["volume_id"] == \
            volume.volume_id
        assert store.saved[-1] == desired["generation"]

    serve(str(tmp_path / "state"), body, store=store)


def test_slices_whose_counter_cannot_be_saved_wait_for_the_next_listing(
        tmp_path, loopback_root, monkeypatch):
    disk = FullDisk(monkeypatch)

    def body(port, service, reactor):
        generation = put_configuration(port,
                                       CLUSTER.format(root=loopback_root))
        waiter = long_poll(port, "node1", generation)
        wait_for(lambda: service.slices.waiting() == 1, "the long poll")
        disk.full = True
        volume = new_volume(loopback_root)
        request(port, "PUT", "/v1/nodes/node1/state",
                report("node1", changed_backend=True))
        wait_for(lambda: disk.attempts == 1, "the counter's save")
        # node1's slice is still to be computed again.
        wait_for(lambda: service._dirty is None or "node1" in service._dirty,
                 "the failed save to be noted")
        assert service.slices.waiting() == 1
        assert service.slices.counter == generation
        assert service.stored.counter == generation
        # The next listing finds the same volumes, and hands out the
        # slices once their counter is saved.
        disk.full = False
        request(port, "PUT", "/v1/nodes/node1/state",
                report("node1", changed_backend=True))
        status, desired = answer(waiter)
        assert status == 200 and desired["generation"] == generation + 1
        assert volume.dataset_id in desired["volumes"]
        with open(service.store.path) as f:
            assert json.load(f)["counter"] == generation + 1

    serve(str(tmp_path / "state"), body)
