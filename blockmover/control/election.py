"""
Which of the control service's replicas leads: an election on an etcd
lease, the way Kubernetes elects the leaders of its controllers.

A candidate campaigns by creating the leader key, only if it is absent
(a transaction on its ``create_revision`` being 0), attached to a lease of
its own; the key's value says who leads (``Leader``: name, address, since
when). Leading, it renews the lease every ``retry`` seconds. It counts
itself the leader only while it renewed the lease within the last
``renew_deadline`` seconds, measured from when it *sent* the renewal: etcd
keeps the lease at least ``lease`` seconds after it received it, so a
leader that could not renew in time (paused, cut off from etcd) says it
lost before the key can go, and before anyone else can be elected. It
says so too, at once, when the key is deleted or etcd no longer has its
lease (a watch of the key, and the renewal's answer).

Followers watch the key and campaign as soon as it goes, and every
``retry`` seconds anyway (a watch can be cut off silently).

Leading is not proof: a leader's every write is a transaction that checks
the key is still its own (``Leadership.compares``), so one that lost it
without knowing yet cannot write (``blockmover.control.etcdstore``).
"""

import json
import math

from eliot import log_message, write_traceback
from pyrsistent import PClass, field
from twisted.internet.defer import inlineCallbacks, succeed

from blockmover.control.etcd import created_at, get, held_by, put
from blockmover.model import ElectionTiming

class Leader(PClass):
    """
    Who leads, as the leader key says: the replica's ``name``, the
    ``address`` it serves at, and ``since`` when (seconds since the
    epoch).
    """
    name = field(type=str, mandatory=True)
    address = field(type=str, mandatory=True)
    since = field(type=float, mandatory=True)

    def to_bytes(self):
        return json.dumps({"name": self.name, "address": self.address,
                           "since": self.since}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data):
        """
        :return: the ``Leader`` ``data`` says, None when it is not one.
        """
        try:
            record = json.loads(data)
            return cls(name=record["name"], address=record["address"],
                       since=float(record["since"]))
        except (ValueError, TypeError, KeyError):
            return None


class Leadership(PClass):
    """
    What a leader holds: the leader ``key``, the ``lease`` it is attached
    to and the ``revision`` that created it (this term of leadership).
    """
    key = field(type=bytes, mandatory=True)
    lease = field(type=int, mandatory=True)
    revision = field(type=int, mandatory=True)
    leader = field(type=Leader, mandatory=True)

    def compares(self):
        """
        The conditions of a transaction that may run only while this
        leadership holds: the key is the one this leader created, on its
        lease.
        """
        return [held_by(self.key, self.lease),
                created_at(self.key, self.revision)]


def current_leader(client, key):
    """
    :return: Deferred firing with the ``Leader`` the key ``key`` names,
        None while nobody leads.
    """
    d = client.get(key)
    d.addCallback(lambda kv: None if kv is None
                  else Leader.from_bytes(kv.value))
    return d


class Election(object):
    """
    One candidate, ``name`` serving at ``address``, for the leader key
    ``key`` on etcd through ``client`` (an ``EtcdClient``).

    ``on_elected(leadership)`` is called when it starts leading,
    ``on_lost(reason)`` at once when it stops (``reason`` for a person),
    before its lease can end; a leader stops acting when told.

    :ivar leadership: the ``Leadership`` while it leads, else None.
    :ivar leader: the ``Leader`` last seen in the key (this one's own
        while leading), None when nobody was seen leading.
    """

    def __init__(self, client, key, name, address, on_elected, on_lost,
                 reactor, timing=ElectionTiming()):
        self._client = client
        self.key = key.encode() if isinstance(key, str) else key
        self.name = name
        self.address = address
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._reactor = reactor
        self.timing = timing
        self.leadership = None
        self.leader = None
        self._running = False
        self._busy = False
        self._again = False
        self._timer = None
        self._deadline = None
        self._watch = None
        self._watch_from = None
        # Bumped at every change of leadership: an answer to a request of
        # an earlier term changes nothing.
        self._term = 0

    def start(self):
        """
        Start campaigning.
        """
        self._running = True
        self._schedule(0)

    def stop(self):
        """
        Stop campaigning; a leader resigns (says it lost, then revokes its
        lease so the key goes and another can lead at once).

        :return: Deferred firing once resigned.
        """
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        leadership = self.leadership
        if leadership is None:
            return succeed(None)
        self._lose("this replica stopped")
        return self._revoke(leadership.lease)

    # --- the turn -----------------------------------------------------------

    def _schedule(self, delay):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._reactor.callLater(delay, self._turn)

    def _wake(self):
        """
        Take the next turn now, or right after the one under way.
        """
        if self._busy:
            self._again = True
        elif self._running:
            self._schedule(0)

    def _turn(self):
        """
        One turn: a leader renews its lease, a follower tries to lead.
        """
        self._timer = None
        if not self._running or self._busy:
            return
        self._busy = True
        self._again = False
        d = self._renew() if self.leadership is not None \
            else self._campaign()
        d.addErrback(self._failed)
        d.addBoth(self._turned)

    def _turned(self, _):
        self._busy = False
        if self._running:
            self._schedule(0 if self._again else self.timing.retry)

    def _failed(self, failure):
        log_message(message_type="blockmover:election:try-failed",
                    name=self.name, leading=self.leadership is not None,
                    reason=failure.getErrorMessage())

    # --- following ------------------------------------------------------------

    @inlineCallbacks
    def _campaign(self):
        term = self._term
        timeout = self.timing.retry
        found = yield self._client.get(self.key, timeout=timeout)
        if found is not None:
            self._follow(found)
            return
        sent = self._reactor.seconds()
        lease = yield self._client.grant(math.ceil(self.timing.lease),
                                         timeout=timeout)
        leader = Leader(name=self.name, address=self.address, since=sent)
        try:
            result = yield self._client.txn(
                [created_at(self.key, 0)],
                [put(self.key, leader.to_bytes(), lease.id)],
                [get(self.key)], timeout=timeout)
        except Exception:
            self._revoke(lease.id)
            raise
        kv = result.ranges[0].first if result.ranges else None
        if result.succeeded:
            revision = result.revision
        elif kv is not None and kv.lease == lease.id:
            # This very transaction, applied by a member whose answer was
            # lost, then sent again to another.
            revision = kv.create_revision
        else:
            self._revoke(lease.id)
            if kv is not None:
                self._follow(kv)
            return
        if not self._running or term != self._term:
            self._revoke(lease.id)
            return
        self._elected(Leadership(key=self.key, lease=lease.id,
                                 revision=revision, leader=leader), sent)

    def _follow(self, kv):
        self.leader = Leader.from_bytes(kv.value)
        self._ensure_watch(kv.mod_revision + 1)

    def _ensure_watch(self, revision):
        """
        Watch the key from ``revision`` unless watched already.
        """
        if self._watch is not None or not self._running:
            return
        self._watch = self._client.watch(self.key, self._key_changed,
                                         start_revision=revision)
        self._watch.done.addErrback(self._watch_ended, self._watch)

    def _watch_ended(self, failure, watch):
        # Compacted past where it started: the next turn reads the key
        # and watches again from there.
        if self._watch is watch:
            self._watch = None
        log_message(message_type="blockmover:election:watch-ended",
                    name=self.name, reason=failure.getErrorMessage())

    def _key_changed(self, events):
        leadership = self.leadership
        if leadership is None:
            if any(e.type == "DELETE" for e in events):
                self.leader = None
                self._wake()
            else:
                self.leader = Leader.from_bytes(events[-1].kv.value)
            return
        for event in events:
            if event.kv.mod_revision <= leadership.revision:
                continue
            if event.type == "DELETE":
                self._lose("the leader key was deleted (its lease was "
                           "revoked or ended)")
                return
            if event.kv.lease != leadership.lease:
                self._lose("the leader key was taken by another lease")
                return

    # --- leading ------------------------------------------------------------

    def _elected(self, leadership, renewed_at):
        self._term += 1
        self.leadership = leadership
        self.leader = leadership.leader
        self._set_deadline(renewed_at)
        self._ensure_watch(leadership.revision + 1)
        log_message(message_type="blockmover:election:elected",
                    name=self.name, key=self.key.decode("utf-8", "replace"),
                    lease="%x" % (leadership.lease,))
        self._tell(self._on_elected, leadership)

    def _set_deadline(self, renewed_at):
        """
        Stop leading ``renew_deadline`` seconds after the renewal sent at
        ``renewed_at``, unless a later one succeeds first.
        """
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        delay = renewed_at + self.timing.renew_deadline - \
            self._reactor.seconds()
        self._deadline = self._reactor.callLater(
            max(0.0, delay), self._lose,
            "the lease was not renewed for %g seconds (etcd unreachable or "
            "too slow)" % (self.timing.renew_deadline,))

    @inlineCallbacks
    def _renew(self):
        term = self._term
        leadership = self.leadership
        sent = self._reactor.seconds()
        ttl = yield self._client.keepalive(leadership.lease,
                                           timeout=self.timing.retry)
        if term != self._term:
            return
        if ttl <= 0:
            self._lose("etcd no longer has the lease (it ended or was "
                       "revoked)")
        else:
            self._set_deadline(sent)

    def _lose(self, reason):
        leadership = self.leadership
        if leadership is None:
            return
        self._term += 1
        self.leadership = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        log_message(message_type="blockmover:election:lost",
                    name=self.name, reason=reason)
        self._tell(self._on_lost, reason)
        if self._running:
            # The key goes with the lease, so that the next leader need
            # not wait for it to end.
            self._revoke(leadership.lease)

    def _revoke(self, lease):
        d = self._client.revoke(lease, timeout=self.timing.retry)
        d.addErrback(self._failed)
        return d

    def _tell(self, callback, argument):
        try:
            callback(argument)
        except Exception:
            # The election goes on whatever its listener does.
            write_traceback()
