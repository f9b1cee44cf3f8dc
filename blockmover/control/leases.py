"""
Each node's lease with the control service: an agent renews it with every
long poll for its slice and every report, and a node whose lease lapses is
*unresponsive* (the first step of ``blockmover.control.failures``).

The service answers a long poll within a third of the lease at most
(``poll_limit``), so a live agent renews its lease at least three times a
lease even when nothing changes; one lost poll or report does not make it
unresponsive.

Leases are kept in memory, on the service's clock: a service that starts
gives every node a whole lease from its start, and at least
``STARTUP_GRACE`` (``Leases(started_at=...)``), before it counts it
unresponsive, so that a restart of the service never makes a node
unresponsive because all the others reconnected first (at 10,000 nodes
that takes about half a minute), and a node that died while the service
was down is noticed that long after the start (as Kubernetes' node
controller gives nodes a startup grace period).
"""

# Seconds from the service's start before a node it has not heard from
# counts as unresponsive, when that is longer than a lease.
STARTUP_GRACE = 60.0

# A long poll lasts at most this part of a lease: a live agent renews its
# lease this many times a lease at least.
RENEWALS_PER_LEASE = 3


def poll_limit(lease):
    """
    The longest a long poll may wait, in seconds, under a lease of
    ``lease`` seconds.
    """
    return lease / RENEWALS_PER_LEASE


class Leases(object):
    """
    When each node last renewed its lease, and when it lapses: a lease
    lasts ``duration`` seconds from its last renewal, or, for a node that
    has not renewed it since ``started_at``, the longer of ``duration``
    and ``grace`` from then.
    """

    def __init__(self, duration, started_at, grace=STARTUP_GRACE):
        self.duration = duration
        self._started_at = started_at
        self._grace = grace
        self._renewed = {}

    def renew(self, node, now):
        """
        ``node`` was heard from at ``now``.
        """
        self._renewed[node] = now

    def renewed_at(self, node):
        """
        When ``node`` last renewed its lease, or None if it has not since
        the service started.
        """
        return self._renewed.get(node)

    def expires_at(self, node):
        """
        When ``node``'s lease lapses (or lapsed).
        """
        renewed = self._renewed.get(node)
        if renewed is None:
            return self._started_at + max(self.duration, self._grace)
        return renewed + self.duration

    def live(self, node, now):
        """
        Whether ``node``'s lease holds at ``now``.
        """
        return now < self.expires_at(node)

    def forget(self, node):
        """
        ``node`` left the configuration: its lease goes with it.
        """
        self._renewed.pop(node, None)

    def next_expiry(self, nodes, now):
        """
        The earliest time after ``now`` when the lease of one of ``nodes``
        lapses, or None when none will (every one has lapsed already).
        """
        times = [self.expires_at(node) for node in nodes]
        later = [t for t in times if t > now]
        return min(later) if later else None
