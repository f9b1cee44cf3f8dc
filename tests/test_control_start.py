"""
A control service started on a running reactor (a replica just elected to
lead) reads its stored configuration in a thread: the reactor goes on
meanwhile, renewing the replica's lease and answering its clients.
"""

import os
import threading

import pytest
from twisted.internet.defer import inlineCallbacks

from blockmover.control import service as service_module
from blockmover.control.errors import StoreError
from blockmover.control.service import ControlService
from blockmover.control.store import FileStore, StoredConfiguration
from tests.reactors import run_reactor
from tests.test_control_slicing import (
    START, Cloud, app_yml, cluster_yml, start_volumes,
)


def stored_in(tmp_path, cluster):
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir, mode=0o700)
    FileStore(state_dir).save(StoredConfiguration(
        generation=1, counter=7, cluster_yml=cluster, app_yml=app_yml(),
        cluster_path="cluster.yml", app_path="app.yml"))
    return state_dir


def started_reading(state_dir, before=lambda reactor: None):
    """
    Start a service on ``state_dir`` with ``start_reading`` on a running
    reactor (calling ``before(reactor)`` first); :return: its cluster's
    name and counter once started.
    """
    @inlineCallbacks
    def start(reactor):
        service = ControlService(
            FileStore(state_dir), reactor, refresh_interval=3600,
            make_backend=lambda name, options, cluster: Cloud(
                start_volumes()))
        before(reactor)
        try:
            yield service.start_reading()
            return service.deployment.cluster_name, service.slices.counter
        finally:
            service.stop()
    return run_reactor(start)


def test_the_reactor_turns_while_the_configuration_is_read(tmp_path,
                                                           monkeypatch):
    state_dir = stored_in(tmp_path, cluster_yml(START))
    turned = threading.Event()
    parse = service_module._parse

    def parse_once_the_reactor_turned(*args):
        # Read on the reactor's own thread, this would wait in vain.
        assert turned.wait(10), "the reactor stood still while the " \
            "configuration was read"
        return parse(*args)
    monkeypatch.setattr(service_module, "_parse",
                        parse_once_the_reactor_turned)
    assert started_reading(
        state_dir, lambda reactor: reactor.callLater(0, turned.set)) == \
        ("demo", 7)


def test_a_stored_configuration_that_no_longer_loads_fails_the_start(
        tmp_path):
    state_dir = stored_in(tmp_path, cluster_yml(START).replace(
        "nodes:", "nodes: oops\nnodes:"))
    with pytest.raises(StoreError, match="no longer loads"):
        started_reading(state_dir)
