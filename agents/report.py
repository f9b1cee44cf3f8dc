"""
Sends an agent's ``NodeReport`` to the control service without ever making
the convergence loop wait for it: at most one report in flight, only the
newest one pending, a failed send retried with backoff.
"""

from eliot import log_message
from twisted.internet.defer import Deferred, succeed

from blockmover.poll import Backoff


class Reporter(object):
    """
    Deliver ``node``'s newest report through ``client.put_state``.

    ``send(report)`` returns at once; reports queued while one is in flight
    are collapsed to the newest, since each report is the whole truth.
    A report whose ``changed_backend`` is set keeps the flag when it is
    collapsed into a newer one, so the control service still refreshes its
    listing. ``on_retry()`` is called for every failed send that is
    retried (the agent counts them).
    """

    def __init__(self, reactor, client, node, backoff=Backoff(
            initial=0.2, factor=2.0, maximum=10.0), on_retry=None):
        self._reactor = reactor
        self._on_retry = on_retry
        self._client = client
        self._node = node
        self._backoff = backoff
        self._pending = None
        self._sending = None
        self._retry = None
        self._failures = 0
        self._idle = []

    def send(self, report):
        if self._pending is not None and self._pending.changed_backend:
            report = report.set(changed_backend=True)
        self._pending = report
        if self._sending is None and self._retry is None:
            self._send_next()

    def flush(self):
        """
        A Deferred firing once nothing is in flight or pending (or at once
        while the control service is unreachable and a retry is waiting).
        """
        if self._sending is None:
            return succeed(None)
        d = Deferred()
        self._idle.append(d)
        return d

    def stop(self):
        """
        Stop retrying; what is in flight may still arrive.
        """
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._pending = None

    def _send_next(self):
        self._retry = None
        report, self._pending = self._pending, None
        if report is None:
            self._notify_idle()
            return
        self._sending = self._client.put_state(self._node, report)
        self._sending.addCallbacks(self._sent, self._failed,
                                   errbackArgs=(report,))

    def _sent(self, _):
        self._sending = None
        self._failures = 0
        self._send_next()

    def _failed(self, failure, report):
        self._sending = None
        log_message(message_type="blockmover:agent:report-failed",
                    node=self._node, reason=failure.getErrorMessage())
        if self._pending is None:
            self._pending = report
        elif report.changed_backend:
            self._pending = self._pending.set(changed_backend=True)
        delay = self._backoff.delay(self._failures)
        self._failures += 1
        if self._on_retry is not None:
            self._on_retry()
        self._retry = self._reactor.callLater(delay, self._send_next)
        self._notify_idle()

    def _notify_idle(self):
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)
