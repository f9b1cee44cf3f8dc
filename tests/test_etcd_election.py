"""
Leader election (``blockmover.control.election``) among candidates on a
real three-member etcd (``tests.etcd_process``), with short times: a lease
of 4 s, a renew deadline of 3 s, a retry every 0.5 s.

Whether a leader stopped before its lease ended is checked by what etcd
does, not by a clock: nobody else can be elected before the old leader's
key goes with its lease, so the old leader must have been told it lost
before the new one was told it won.
"""

import uuid

import pytest
from pyrsistent import InvariantException
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater

from blockmover.control.election import Election, Leader, current_leader
from blockmover.control.etcd import EtcdClient, EtcdTLS
from blockmover.model import ElectionTiming
from tests.etcd_process import EtcdCluster
from tests.reactors import run_reactor

TIMING = ElectionTiming(lease=4.0, renew_deadline=3.0, retry=0.5)
# Generous: the bounds are lease + retry, plus time for etcd and a loaded
# machine.
SLACK = 5.0


@pytest.fixture(scope="module")
def etcd():
    with EtcdCluster(3) as cluster:
        yield cluster


class Candidate(object):
    """
    An ``Election`` of its own client, recording what it was told and
    when (reactor time).
    """

    def __init__(self, reactor, endpoints, files, key, name):
        self.reactor = reactor
        self.name = name
        self.client = EtcdClient(endpoints, EtcdTLS(files), reactor,
                                 timeout=1.0)
        self.told = []
        self.election = Election(
            self.client, key, name, "https://%s.example:4523" % (name,),
            self._elected, self._lost, reactor, TIMING)

    def _elected(self, leadership):
        self.told.append(("elected", self.reactor.seconds(), leadership))

    def _lost(self, reason):
        self.told.append(("lost", self.reactor.seconds(), reason))

    @property
    def leading(self):
        return self.election.leadership is not None

    def when(self, what):
        return [t for (w, t, _) in self.told if w == what]

    @inlineCallbacks
    def close(self):
        yield self.election.stop()
        yield self.client.close()


def until(reactor, check, seconds):
    """
    A Deferred firing with ``check()``'s first true value, polled every
    20 ms; failing after ``seconds``.
    """
    @inlineCallbacks
    def wait():
        for _ in range(int(seconds / 0.02)):
            value = check()
            if value:
                return value
            yield deferLater(reactor, 0.02, lambda: None)
        raise AssertionError("not true within %s seconds" % (seconds,))
    return wait()


def the_leader(candidates):
    leaders = [c for c in candidates if c.leading]
    assert len(leaders) <= 1, "two leaders: %s" % (
        [c.name for c in leaders],)
    return leaders[0] if leaders else None


def with_candidates(etcd, test, endpoints=None):
    """
    Run ``test(reactor, candidates, key)`` (a generator) with three
    candidates for a fresh key; each given ``endpoints[n]`` if given, else
    every member; stopped afterwards.
    """
    key = "/blockmover/test-%s/leader" % (uuid.uuid4().hex[:8],)

    @inlineCallbacks
    def run(reactor):
        candidates = [
            Candidate(reactor, (endpoints[n] if endpoints
                                else etcd.endpoints),
                      etcd.client_files, key, "replica%d" % (n + 1,))
            for n in range(3)]
        try:
            yield inlineCallbacks(test)(reactor, candidates, key)
        finally:
            yield gatherResults([c.close() for c in candidates])
    return run_reactor(run, timeout=120)


def another_leader(candidates, old):
    """
    The candidate leading now if it is not ``old``, else None.
    """
    leader = the_leader(candidates)
    return leader if leader is not old else None


def never_answers(*args, **kwargs):
    return Deferred()


def test_timing_must_leave_room():
    with pytest.raises(InvariantException):
        ElectionTiming(lease=10.0, renew_deadline=10.0, retry=2.0)
    assert ElectionTiming() == ElectionTiming(lease=15.0, renew_deadline=10.0,
                                              retry=2.0)


def test_one_of_three_leads_and_says_who(etcd):
    def test(reactor, candidates, key):
        start = reactor.seconds()
        for c in candidates:
            c.election.start()
        leader = yield until(reactor, lambda: the_leader(candidates), 10)
        # A while later it still leads, alone, having renewed its lease.
        yield deferLater(reactor, TIMING.lease + 1, lambda: None)
        assert the_leader(candidates) is leader
        assert [w for (w, _, _) in leader.told] == ["elected"]
        for c in candidates:
            if c is not leader:
                assert c.told == []
                assert c.election.leader.name == leader.name
        record = yield current_leader(leader.client, key)
        assert record == Leader(
            name=leader.name, address="https://%s.example:4523"
            % (leader.name,), since=record.since)
        assert start - 1 <= record.since <= leader.when("elected")[0]
    with_candidates(etcd, test)


def test_leader_that_cannot_renew_stops_first(etcd):
    """
    A leader whose renewals get no answer (a paused process, a network
    that drops them) says it lost, and only then, once its lease has
    ended, does another lead: within lease + retry.
    """
    def test(reactor, candidates, key):
        for c in candidates:
            c.election.start()
        old = yield until(reactor, lambda: the_leader(candidates), 10)
        old.client.keepalive = never_answers
        cut = reactor.seconds()
        new = yield until(reactor, lambda: another_leader(candidates, old),
                          TIMING.lease + TIMING.retry + SLACK)
        assert len(old.when("lost")) == 1
        assert "not renewed" in old.told[-1][2]
        assert old.when("lost")[0] < new.when("elected")[0]
        assert new.when("elected")[0] - cut <= \
            TIMING.lease + TIMING.retry + SLACK
        assert (yield current_leader(new.client, key)).name == new.name
    with_candidates(etcd, test)


def test_revoked_lease_moves_the_lead(etcd):
    """
    A leader whose lease is revoked (its key goes with it) is told at
    once, by its watch of the key; another leads.
    """
    def test(reactor, candidates, key):
        for c in candidates:
            c.election.start()
        old = yield until(reactor, lambda: the_leader(candidates), 10)
        revoked = reactor.seconds()
        yield old.client.revoke(old.election.leadership.lease)
        yield until(reactor, lambda: old.when("lost"), TIMING.retry + SLACK)
        assert "deleted" in old.told[-1][2] or "no longer" in old.told[-1][2]
        new = yield until(reactor, lambda: next(
            (c for c in candidates
             if c.leading and c.when("elected")[-1] > revoked), None),
            TIMING.lease + TIMING.retry + SLACK)
        assert new.when("elected")[-1] - revoked <= \
            TIMING.lease + TIMING.retry + SLACK
    with_candidates(etcd, test)


def test_stopped_leader_resigns(etcd):
    def test(reactor, candidates, key):
        for c in candidates:
            c.election.start()
        old = yield until(reactor, lambda: the_leader(candidates), 10)
        yield old.election.stop()
        assert old.when("lost") and not old.leading
        new = yield until(reactor, lambda: the_leader(candidates),
                          TIMING.retry + SLACK)
        assert new is not old
    with_candidates(etcd, test)


def test_leader_cut_off_from_etcd_stops_before_its_lease_ends():
    """
    Each candidate talks to one member only. The leader's member stops
    answering (SIGSTOP: its connections stay open and silent): the leader
    says it lost before another can lead, and another does.
    """
    with EtcdCluster(3) as etcd:
        def test(reactor, candidates, key):
            for c in candidates:
                c.election.start()
            old = yield until(reactor, lambda: the_leader(candidates), 10)
            member = etcd.members[candidates.index(old)]
            member.pause()
            try:
                cut = reactor.seconds()
                new = yield until(
                    reactor, lambda: another_leader(candidates, old),
                    # etcd renews every lease when it elects a new leader
                    # of its own, as it may when this member stopped.
                    2 * TIMING.lease + TIMING.retry + SLACK)
                assert len(old.when("lost")) == 1
                assert old.when("lost")[0] < new.when("elected")[0]
                assert old.when("lost")[0] - cut <= \
                    TIMING.renew_deadline + SLACK
            finally:
                member.resume()
        with_candidates(etcd, test,
                        endpoints=[[url] for url in etcd.endpoints])
