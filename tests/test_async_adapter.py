"""
``AsyncBlockDevice``: backend calls run in the thread pool, never on the
reactor thread, and their results and errors come back as Deferreds.

Each test runs a fresh, uninstalled reactor to completion, so no test
depends on (or stops) the global one.
"""

import threading
import uuid

import pytest
from twisted.internet.selectreactor import SelectReactor
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from blockmover.backends.interface import AsyncBlockDevice, UnknownVolume
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.model import Volume
from blockmover.units import MiB


def run_deferred(start, timeout=30.0):
    """
    Run a fresh reactor with a real thread pool until the Deferred that
    ``start(reactor, threadpool)`` returns fires; return its result (a
    ``Failure`` when it failed) and the reactor thread's ident.
    """
    reactor = SelectReactor()
    pool = ThreadPool(minthreads=1, maxthreads=2, name="blockmover-test")
    pool.start()
    outcome = []
    reactor_thread = []

    def go():
        reactor_thread.append(threading.get_ident())
        d = start(reactor, pool)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    deadline = reactor.callLater(timeout, reactor.stop)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        pool.stop()
        if deadline.active():
            deadline.cancel()
        for reader in list(reactor._internalReaders):
            reactor.removeReader(reader)
            reader.connectionLost(None)
    assert outcome, "the Deferred did not fire within %s seconds" % (timeout,)
    return outcome[0], reactor_thread[0]


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
    result, reactor_thread = run_deferred(
        lambda reactor, pool: AsyncBlockDevice(
            ThreadRecorder(), reactor, pool).compute_instance_id())
    assert isinstance(result, int)
    assert result != reactor_thread


def test_reactor_free_while_call_blocks():
    release = threading.Event()

    def start(reactor, pool):
        api = AsyncBlockDevice(ThreadRecorder(release), reactor, pool)
        d = api.get_volume("any")
        # Only a reactor that is not stuck in the call can set it.
        reactor.callLater(0.05, release.set)
        return d

    result, _ = run_deferred(start)
    assert result is True


def test_result_of_real_backend(make_loopback):
    backend = make_loopback("node1")

    def start(reactor, pool):
        return AsyncBlockDevice(backend, reactor, pool).create_volume(
            str(uuid.uuid4()), MiB, {"k": "v"})

    volume, _ = run_deferred(start)
    assert isinstance(volume, Volume)
    assert backend.list_volumes() == [volume]
    backend.destroy_volume(volume.volume_id)


def test_error_is_failure(make_loopback):
    backend = make_loopback("node1")
    missing = str(uuid.uuid4())
    result, _ = run_deferred(
        lambda reactor, pool: AsyncBlockDevice(
            backend, reactor, pool).get_volume(missing))
    assert isinstance(result, Failure)
    assert result.check(UnknownVolume)
    assert result.value.volume_id == missing


def test_only_interface_methods(loopback_root):
    api = AsyncBlockDevice(LoopbackBlockDeviceAPI(loopback_root, "test"),
                           reactor=None, threadpool=None)
    with pytest.raises(AttributeError):
        api.root
