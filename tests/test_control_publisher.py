"""
``replica.SlicePublisher``: the leader's slices written to etcd in
batches that etcd takes, each held to the leader's lease, the latest of a
node winning, and a refusal ending the term. etcd here is a recording
stand-in for its client (the publisher's one collaborator); the real one
runs in ``test_control_replicas``.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from blockmover.control import replica
from blockmover.control.etcd import EtcdError, Range, TxnResult
from blockmover.control.slices import SliceChange


class Recording(object):
    """
    Answers each transaction as told (``answers``: a ``TxnResult``, an
    exception, or None for success), recording its operations.
    """

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.txns = []

    def range(self, key, prefix=False, keys_only=False):
        return succeed(Range(revision=1, kvs=[]))

    def txn(self, compares, success, failure=()):
        self.txns.append(list(success))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            d = Deferred()
            d.errback(answer)
            return d
        return succeed(answer or TxnResult(succeeded=True, revision=2))


class Slices(object):
    def __init__(self, nodes):
        self._nodes = nodes

    def nodes(self):
        return set(self._nodes)

    def serialized(self, desired):
        return desired


class Service(object):
    def __init__(self, nodes):
        self.slices = Slices(nodes)

    def poll_limit(self):
        return 10.0


class Leadership(object):
    def compares(self):
        return ["held"]


def publisher(client, nodes, lost):
    clock = Clock()
    published = replica.SlicePublisher(client, "demo", Leadership, clock,
                                       lost.append)
    published.start()
    published.serve(Service(nodes))
    return published, clock


def change(bodies):
    return SliceChange(0, bodies, 1, set(bodies), 0.0)


def written(txns):
    return [[op.key.rsplit(b"/", 1)[1].decode() for op in ops
             if b"/serve/slices/" in op.key] for ops in txns]


def test_slices_go_in_batches_etcd_takes():
    client = Recording()
    lost = []
    nodes = ["n%03d" % (n,) for n in range(250)]
    published, _ = publisher(client, nodes, lost)
    published(change({node: b'{"generation": 1}' for node in nodes}))
    batches = written(client.txns)
    assert [len(b) for b in batches] == [99, 100, 51]
    assert sorted(sum(batches, [])) == nodes
    # The poll limit travels with the first batch.
    assert client.txns[0][0].key.endswith(replica.POLL_LIMIT)
    assert published.written == 250 and lost == []


def test_large_slices_make_smaller_batches():
    client = Recording()
    nodes = ["n%d" % (n,) for n in range(10)]
    published, _ = publisher(client, nodes, [])
    big = b"x" * (replica.SLICE_BATCH_BYTES // 3)
    published(change({node: big for node in nodes}))
    assert [len(b) for b in written(client.txns)] == [3, 3, 3, 1]


def test_a_batch_etcd_missed_is_sent_again_with_the_newest_slices():
    unanswered = Deferred()
    client = Recording([unanswered])
    published, clock = publisher(client, ["a", "b"], [])
    published(change({"a": b"1", "b": b"1"}))
    # While etcd is asked, a's slice changes again; then the batch fails.
    published(change({"a": b"2"}))
    assert len(client.txns) == 1
    unanswered.errback(EtcdError("no answer"))
    assert len(client.txns) == 1
    clock.advance(replica.SLICE_RETRY)
    last = {op.key.rsplit(b"/", 1)[1]: op.value
            for op in client.txns[-1] if b"/serve/slices/" in op.key}
    assert last == {b"a": b"2", b"b": b"1"}


def test_a_refused_batch_ends_the_term():
    client = Recording([TxnResult(succeeded=False, revision=3)])
    lost = []
    published, _ = publisher(client, ["a"], lost)
    published(change({"a": b"1"}))
    assert lost and "no longer holds the leader key" in lost[0]


def test_slices_that_went_away_lose_their_keys():
    client = Recording()
    published, _ = publisher(client, ["a"], [])
    published(change({"a": b"1", "gone": None}))
    [ops] = client.txns
    deleted = [op.key for op in ops if not hasattr(op, "value")]
    assert deleted == [b"/blockmover/demo/serve/slices/gone"]
