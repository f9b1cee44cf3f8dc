"""
The etcd client (``blockmover.control.etcd``) against real etcd processes
(``tests.etcd_process``): one member for what a client does, three for
what it does when members die.
"""

import tempfile

import pytest
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from blockmover.control.etcd import (
    EtcdClient, EtcdError, EtcdTLS, EtcdUnavailable, created_at, delete, get,
    held_by, modified_at, put, value_is,
)
from blockmover.certificates import USER
from tests.cluster_ca import TestCA
from tests.etcd_process import EtcdCluster
from tests.reactors import run_reactor


@pytest.fixture(scope="module")
def etcd():
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def cluster3():
    with EtcdCluster(3) as cluster:
        yield cluster


def with_client(etcd, test, endpoints=None, timeout=5.0, files=None):
    """
    Run ``test(client, reactor)`` (a generator of Deferreds) with a client
    of ``etcd``, closed afterwards.
    """
    @inlineCallbacks
    def run(reactor):
        client = EtcdClient(endpoints or etcd.endpoints,
                            EtcdTLS(files or etcd.client_files), reactor,
                            timeout=timeout)
        try:
            result = yield inlineCallbacks(test)(client, reactor)
        finally:
            yield client.close()
        return result
    return run_reactor(run, timeout=120)


def until(reactor, check, seconds=10.0):
    """
    A Deferred firing once ``check()`` is true, polled every 20 ms;
    failing after ``seconds``.
    """
    @inlineCallbacks
    def wait():
        for _ in range(int(seconds / 0.02)):
            if check():
                return
            yield deferLater(reactor, 0.02, lambda: None)
        raise AssertionError("not true within %s seconds" % (seconds,))
    return wait()


def test_put_get_range_delete(etcd):
    def test(client, reactor):
        first = yield client.put("kv/a", b"1")
        second = yield client.put("kv/b", "2")
        assert second > first
        found = yield client.get("kv/a")
        assert (found.value, found.create_revision, found.mod_revision) == (
            b"1", first, first)
        assert (yield client.get("kv/none")) is None
        listed = yield client.range("kv/", prefix=True)
        assert [(kv.key, kv.value) for kv in listed.kvs] == [
            (b"kv/a", b"1"), (b"kv/b", b"2")]
        assert listed.revision >= second
        assert (yield client.delete("kv/", prefix=True)) == 2
        assert (yield client.range("kv/", prefix=True)).kvs == []
    with_client(etcd, test)


def test_txn_decides_once(etcd):
    """
    Two transactions that each create a key only if absent: the first
    succeeds, the second sees what the first wrote.
    """
    def test(client, reactor):
        first = yield client.txn([created_at("txn/k", 0)],
                                 [put("txn/k", "mine")], [get("txn/k")])
        second = yield client.txn([created_at("txn/k", 0)],
                                  [put("txn/k", "theirs")], [get("txn/k")])
        assert first.succeeded and not second.succeeded
        assert second.ranges[0].first.value == b"mine"
        kv = second.ranges[0].first
        stale = yield client.txn([modified_at("txn/k", kv.mod_revision - 1)],
                                 [put("txn/k", "stale")])
        assert not stale.succeeded
        fresh = yield client.txn(
            [modified_at("txn/k", kv.mod_revision), value_is("txn/k", "mine")],
            [put("txn/k", "next"), get("txn/k")], [])
        assert fresh.succeeded and fresh.ranges[0].first.value == b"next"
        gone = yield client.txn([], [delete("txn/k")])
        assert gone.succeeded and (yield client.get("txn/k")) is None
    with_client(etcd, test)


def test_lease_keepalive_and_revoke(etcd):
    """
    A key put with a lease lives while the lease does: renewed, it stays;
    revoked, it goes, and renewing says the lease is gone.
    """
    def test(client, reactor):
        lease = yield client.grant(10)
        assert lease.ttl >= 10
        yield client.put("lease/k", "v", lease=lease.id)
        assert (yield client.get("lease/k")).lease == lease.id
        held = yield client.txn([held_by("lease/k", lease.id)], [])
        assert held.succeeded
        assert (yield client.keepalive(lease.id)) >= 9
        yield client.revoke(lease.id)
        assert (yield client.get("lease/k")) is None
        assert (yield client.keepalive(lease.id)) == 0
        # Revoking again is harmless: the lease is revoked already.
        yield client.revoke(lease.id)
    with_client(etcd, test)


def test_expired_lease_takes_its_key(etcd):
    def test(client, reactor):
        lease = yield client.grant(2)
        yield client.put("expire/k", "v", lease=lease.id)
        found = []

        @inlineCallbacks
        def poll_gone():
            for _ in range(100):
                kv = yield client.get("expire/k")
                if kv is None:
                    found.append(True)
                    return
                yield deferLater(reactor, 0.1, lambda: None)
        yield poll_gone()
        assert found, "the key outlived its lease by 8 seconds"
    with_client(etcd, test)


def test_refusal_carries_etcds_message(etcd):
    def test(client, reactor):
        with pytest.raises(EtcdError) as caught:
            yield client.put("refused", "v", lease=0x1234)
        assert not isinstance(caught.value, EtcdUnavailable)
        assert caught.value.message == "etcdserver: requested lease not found"
    with_client(etcd, test)


def test_watch_from_a_revision(etcd):
    """
    A watch from a revision delivers the changes since, then each new one
    as it happens, in order, deletes included.
    """
    def test(client, reactor):
        start = yield client.put("watch/a", "1")
        yield client.put("watch/b", "2")
        events = []
        watch = client.watch("watch/", events.extend, prefix=True,
                             start_revision=start)
        yield until(reactor, lambda: len(events) == 2)
        yield client.delete("watch/a")
        yield client.put("other", "not watched")
        yield client.put("watch/b", "3")
        yield until(reactor, lambda: len(events) == 4)
        watch.stop()
        yield client.put("watch/c", "after the stop")
        yield deferLater(reactor, 0.3, lambda: None)
        assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
            ("PUT", b"watch/a", b"1"), ("PUT", b"watch/b", b"2"),
            ("DELETE", b"watch/a", b""), ("PUT", b"watch/b", b"3")]
        revisions = [e.kv.mod_revision for e in events]
        assert revisions == sorted(revisions)
        yield watch.done
    with_client(etcd, test)


def test_client_of_another_ca_is_refused(etcd):
    """
    A client presenting a certificate etcd's CA did not issue gets nothing,
    and an error saying it could not be served.
    """
    def test(client, reactor):
        with pytest.raises(EtcdUnavailable) as caught:
            yield client.get("anything")
        assert etcd.endpoints[0] in str(caught.value)
    with tempfile.TemporaryDirectory() as directory:
        other = TestCA(directory, "etcdtest").files(USER, "intruder")
        with_client(etcd, test, files=other.set(ca=etcd.client_files.ca))


def test_one_member_killed(cluster3):
    """
    A client of three members goes on when the one it talks to is killed,
    and its watch goes on too, missing nothing.
    """
    def test(client, reactor):
        events = []
        start = (yield client.range("ha/", prefix=True)).revision + 1
        client.watch("ha/", events.extend, prefix=True, start_revision=start)
        yield client.put("ha/before", "1")
        yield until(reactor, lambda: len(events) == 1)
        yield deferLater(reactor, 0, cluster3.members[0].kill)
        for n in range(5):
            yield client.put("ha/after%d" % (n,), str(n))
        assert (yield client.get("ha/before")).value == b"1"
        yield until(reactor, lambda: len(events) == 6, 20)
        assert [e.kv.key for e in events] == [b"ha/before"] + [
            b"ha/after%d" % (n,) for n in range(5)]
    with_client(cluster3, test)


def test_two_members_killed(cluster3):
    """
    With two of three members gone, writes fail with an error saying etcd
    could not be served and why, soon in etcd's own words (the member left
    knows no leader); nothing written before is lost, and writes work again
    once the members return.
    """
    def test(client, reactor):
        yield client.put("quorum/kept", "1")
        for member in cluster3.members[:2]:
            yield deferLater(reactor, 0, member.kill)
        with pytest.raises(EtcdUnavailable) as caught:
            yield client.put("quorum/lost", "2")
        message = str(caught.value)
        assert "majority" in message
        assert "connection refused" in message
        assert all(url in message for url in cluster3.endpoints)
        refusals = []
        for _ in range(30):
            try:
                yield client.put("quorum/refused", "3")
            except EtcdUnavailable as e:
                if "etcdserver: no leader" in str(e):
                    refusals.append(e)
                    break
            yield deferLater(reactor, 0.5, lambda: None)
        assert refusals, "the member left never said it had no leader"
        for member in cluster3.members[:2]:
            member.start()
        yield deferLater(reactor, 0, cluster3.wait_healthy, cluster3.members)
        assert (yield client.get("quorum/kept")).value == b"1"
        assert (yield client.get("quorum/refused")) is None
        yield client.put("quorum/again", "4")
        assert (yield client.get("quorum/again")).value == b"4"
    with_client(cluster3, test, timeout=3.0)
