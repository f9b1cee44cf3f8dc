"""
The control service's records on etcd (``blockmover.control.etcdstore``)
against a real etcd member: written only by the replica that leads, as
it leads now.
"""

import uuid

import pytest
from pyrsistent import pmap
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater

from blockmover.control.election import Election
from blockmover.model import ElectionTiming
from blockmover.control.errors import StoreError
from blockmover.control.etcd import EtcdClient, EtcdTLS
from blockmover.control.etcdstore import EtcdStore, NotLeader, leader_key
from blockmover.control.failurestore import (
    FENCED, FailoverDecision, FailureRecords, FenceAttempt, NodeRecord,
)
from blockmover.control.push_rules import PushRecord
from blockmover.control.store import StoredConfiguration
from tests.etcd_process import EtcdCluster
from tests.reactors import run_reactor

TIMING = ElectionTiming(lease=4.0, renew_deadline=3.0, retry=0.5)

CONFIGURATION = StoredConfiguration(
    generation=3, counter=7, cluster_yml="version: 1\n",
    app_yml="version: 1\napplications: {}\n", cluster_path="/c.yml",
    app_path="/a.yml")
FAILURES = FailureRecords(
    nodes={"node1": NodeRecord(
        fence=FenceAttempt(result=FENCED, method="backend",
                           requested_by="control service", started_at=1.0,
                           finished_at=2.0),
        down_since=2.0)},
    failovers={"mongodb": FailoverDecision(from_node="node1",
                                           to_node="node2",
                                           decided_at=2.5)},
    removed={"node9": "server-9"})
PUSHES = pmap({"dataset-1": PushRecord(
    push_id="abc", dataset_id="dataset-1", application="mongodb",
    source_node="node1", source_site="east", source_volume="vol-1",
    target_node="node2", target_site="west", generation=4,
    started_at=10.0)})


@pytest.fixture(scope="module")
def etcd():
    with EtcdCluster(1) as cluster:
        yield cluster


class Replica(object):
    """
    One replica of the control service: its client, its election for
    ``cluster``'s leader key and its ``EtcdStore``.
    """

    def __init__(self, reactor, etcd, cluster, name):
        self.client = EtcdClient(etcd.endpoints, EtcdTLS(etcd.client_files),
                                 reactor)
        self.election = Election(self.client, leader_key(cluster), name,
                                 "https://%s:4523" % (name,),
                                 lambda _: None, lambda _: None, reactor,
                                 TIMING)
        self.store = EtcdStore(self.client, cluster,
                               lambda: self.election.leadership)

    @inlineCallbacks
    def lead(self, reactor):
        self.election.start()
        for _ in range(500):
            if self.election.leadership is not None:
                return
            yield deferLater(reactor, 0.02, lambda: None)
        raise AssertionError("%s never led" % (self.election.name,))

    @inlineCallbacks
    def close(self):
        yield self.election.stop()
        yield self.client.close()


def with_replicas(etcd, test, count=1):
    """
    Run ``test(reactor, replicas)`` (a generator) with ``count`` replicas
    of a fresh cluster, the first leading.
    """
    cluster = "test-" + uuid.uuid4().hex[:8]

    @inlineCallbacks
    def run(reactor):
        replicas = [Replica(reactor, etcd, cluster, "replica%d" % (n + 1,))
                    for n in range(count)]
        try:
            yield replicas[0].lead(reactor)
            yield inlineCallbacks(test)(reactor, replicas)
        finally:
            yield gatherResults([r.close() for r in replicas])
    return run_reactor(run, timeout=120)


def test_nothing_stored_yet(etcd):
    def test(reactor, replicas):
        store = replicas[0].store
        assert (yield store.configuration.load()) is None
        assert (yield store.failures.load()) == FailureRecords()
        assert (yield store.pushes.load()) == pmap()
    with_replicas(etcd, test)


def test_leader_saves_and_any_replica_loads(etcd):
    def test(reactor, replicas):
        leader, follower = replicas
        yield leader.store.configuration.save(CONFIGURATION)
        yield leader.store.failures.save(FAILURES)
        yield leader.store.pushes.save(PUSHES)
        follower.election.start()
        assert (yield follower.store.configuration.load()) == CONFIGURATION
        assert (yield follower.store.failures.load()) == FAILURES
        assert (yield follower.store.pushes.load()) == PUSHES
    with_replicas(etcd, test, count=2)


def test_saves_land_in_call_order(etcd):
    def test(reactor, replicas):
        record = replicas[0].store.configuration
        yield gatherResults([
            record.save(CONFIGURATION.set(generation=n)) for n in range(20)])
        assert (yield record.load()).generation == 19
    with_replicas(etcd, test)


def test_follower_cannot_save(etcd):
    """
    A replica that does not lead is refused before anything is sent, and
    the stored value stays.
    """
    def test(reactor, replicas):
        leader, follower = replicas
        yield leader.store.configuration.save(CONFIGURATION)
        follower.election.start()
        with pytest.raises(NotLeader):
            yield follower.store.configuration.save(
                CONFIGURATION.set(generation=99))
        assert (yield leader.store.configuration.load()) == CONFIGURATION
    with_replicas(etcd, test, count=2)


def test_replica_that_lost_the_lead_cannot_save(etcd):
    """
    A replica still holding a ``Leadership`` whose lease has ended (it does
    not know yet) writes nothing; etcd refuses it, saying who leads now.
    """
    def test(reactor, replicas):
        old, new = replicas
        yield old.store.configuration.save(CONFIGURATION)
        stale = old.election.leadership
        stale_store = EtcdStore(old.client, old.store.cluster,
                                lambda: stale)
        yield old.client.revoke(stale.lease)
        yield new.lead(reactor)
        with pytest.raises(NotLeader) as caught:
            yield stale_store.configuration.save(
                CONFIGURATION.set(generation=99))
        assert "replica2 at https://replica2:4523 leads" in str(caught.value)
        assert (yield new.store.configuration.load()) == CONFIGURATION
        yield new.store.configuration.save(CONFIGURATION.set(generation=4))
        assert (yield old.store.configuration.load()).generation == 4
    with_replicas(etcd, test, count=2)


def test_unreadable_record_is_an_error(etcd):
    def test(reactor, replicas):
        store = replicas[0].store
        yield replicas[0].client.put(store.failures.key, b"{\"version\": 7}")
        with pytest.raises(StoreError) as caught:
            yield store.failures.load()
        assert "format version 7" in str(caught.value)
    with_replicas(etcd, test)


def test_etcd_unreachable_is_a_store_error(etcd):
    def test(reactor, replicas):
        leader = replicas[0]
        leader.client.endpoints[:] = ["https://127.0.0.1:1"]
        with pytest.raises(StoreError) as caught:
            yield leader.store.configuration.save(CONFIGURATION)
        assert not isinstance(caught.value, NotLeader)
        assert "cannot write the configuration in etcd" in str(caught.value)
        assert "connection refused" in str(caught.value)
    with_replicas(etcd, test)
