"""
Twisted clients called from the local-cluster tools, which are synchronous:
one reactor, run in a daemon thread, started on first use and stopped at
exit; ``call`` hands it work and blocks until the answer. So the tools ask
the control service through its one client, ``ControlClient``, instead of
HTTP of their own.

Never call ``call`` from the reactor's own thread: it would wait for
itself.
"""

import atexit
import threading

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread

from blockmover.client import ControlClient

# Seconds ``stop`` waits for the reactor's thread to end.
_STOP_TIMEOUT = 10.0

_lock = threading.Lock()
# (reactor, thread) while running.
_running = None


def _reactor():
    global _running
    with _lock:
        if _running is None:
            # A reactor of our own, not the global one: a tool or a test
            # may run that on its main thread.
            reactor = EPollReactor()
            thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False},
                name="blockmover-tools-reactor", daemon=True)
            thread.start()
            _running = (reactor, thread)
        return _running[0]


def call(f, *args, **kwargs):
    """
    Call ``f(reactor, *args, **kwargs)`` in the tools' reactor thread and
    wait for the Deferred (or value) it returns.

    :return: its result.
    :raise: what it failed with.
    """
    reactor = _reactor()
    return blockingCallFromThread(reactor, f, reactor, *args, **kwargs)


def stop():
    """
    Stop the tools' reactor and wait for its thread to end; a later
    ``call`` starts a new one. Idempotent.
    """
    global _running
    with _lock:
        running, _running = _running, None
    if running is None:
        return
    reactor, thread = running
    reactor.callFromThread(reactor.stop)
    thread.join(_STOP_TIMEOUT)


atexit.register(stop)


def ask_control(url, question, timeout, credentials):
    """
    Ask the control service at ``url`` (one URL, or a list of its
    replicas', as ``ControlClient`` takes them) ``question(client)`` (a
    ``ControlClient`` method call, e.g. ``lambda c: c.get_state()``) with
    requests of at most ``timeout`` seconds, presenting ``credentials``
    (``tls.Credentials``), and return its answer; the client's connections
    are closed after.

    :raise blockmover.client.ControlUnreachable: it does not answer.
    :raise blockmover.client.ControlError: it refused.
    """
    def ask(reactor):
        client = ControlClient(url, reactor=reactor, timeout=timeout,
                               credentials=credentials)
        d = question(client)
        d.addBoth(lambda answer: client.close().addCallback(
            lambda _: answer))
        return d
    return call(ask)
