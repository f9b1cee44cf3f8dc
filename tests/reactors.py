"""
Running Twisted code in a test: a fresh, uninstalled reactor per call, so
no test depends on (or stops) the global one.
"""

from twisted.internet.selectreactor import SelectReactor
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


def run_reactor(start, timeout=60.0, threadpool=False):
    """
    Run a fresh reactor until the Deferred ``start(reactor)`` returns fires,
    and return its result; raise what it failed with. With ``threadpool``,
    ``start(reactor, pool)`` also gets a running thread pool, stopped
    afterwards.
    """
    reactor = SelectReactor()
    pool = ThreadPool(minthreads=1, maxthreads=2, name="blockmover-test")
    outcome = []

    def go():
        if threadpool:
            pool.start()
            d = start(reactor, pool)
        else:
            d = start(reactor)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    deadline = reactor.callLater(timeout, reactor.stop)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        if pool.started:
            pool.stop()
        if deadline.active():
            deadline.cancel()
        for reader in list(reactor._internalReaders):
            reactor.removeReader(reader)
            reader.connectionLost(None)
    assert outcome, "nothing happened within %s seconds" % (timeout,)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]
