"""
``AsyncBlockDevice``: backend calls run in the thread pool, never on the
reactor thread, and their results and errors come back as Deferreds.

Each test runs a fresh, uninstalled reactor to completion, so no test
depends on (or stops) the global one.
"""

import threading
import uuid

import pytest

from blockmover.backends.interface import AsyncBlockDevice, UnknownVolume
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.model import Volume
from blockmover.units import MiB
from tests.reactors import run_reactor


class ThreadRecorder(object):
    """
    Stands in for a backend in these unit tests: says which thread ran it.
    """
    def __init__(self, release=None):
        self.release = release

    def compute_instance_id(self):
        return threading.get_ident()

    def get_volume(self, volume_id):
        # Blocks until the reactor, still free, sets ``release``.
        return self.release.wait(timeout=10)


def test_call_runs_off_reactor_thread():
    reactor_thread = []

    def start(reactor, pool):
        reactor_thread.append(threading.get_ident())
        return AsyncBlockDevice(ThreadRecorder(), reactor,
                                pool).compute_instance_id()

    result = run_reactor(start, threadpool=True)
    assert isinstance(result, int)
    assert result != reactor_thread[0]


def test_reactor_free_while_call_blocks():
    release = threading.Event()

    def start(reactor, pool):
        api = AsyncBlockDevice(ThreadRecorder(release), reactor, pool)
        d = api.get_volume("any")
        # Only a reactor that is not stuck in the call can set it.
        reactor.callLater(0.05, release.set)
        return d

    assert run_reactor(start, threadpool=True) is True


def test_result_of_real_backend(make_loopback):
    backend = make_loopback("node1")

    def start(reactor, pool):
        return AsyncBlockDevice(backend, reactor, pool).create_volume(
            str(uuid.uuid4()), MiB, {"k": "v"})

    volume = run_reactor(start, threadpool=True)
    assert isinstance(volume, Volume)
    assert backend.list_volumes() == [volume]
    backend.destroy_volume(volume.volume_id)


def test_error_is_failure(make_loopback):
    backend = make_loopback("node1")
    missing = str(uuid.uuid4())
    with pytest.raises(UnknownVolume) as raised:
        run_reactor(lambda reactor, pool: AsyncBlockDevice(
            backend, reactor, pool).get_volume(missing), threadpool=True)
    assert raised.value.volume_id == missing


def test_only_interface_methods(loopback_root):
    api = AsyncBlockDevice(LoopbackBlockDeviceAPI(loopback_root, "test"),
                           reactor=None, threadpool=None)
    with pytest.raises(AttributeError):
        api.root
