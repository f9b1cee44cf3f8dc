"""
The control service lists a backend that can say what changed since a time
incrementally, merging the changes into its cache, with a full listing now
and then to see deletions.
"""

import datetime

from twisted.internet.defer import inlineCallbacks

from blockmover.config import load_deployment
from blockmover.control.backend import FULL_EVERY, SKEW, ControlBackend
from blockmover.model import Volume
from tests.reactors import run_reactor
from tests.test_control_api import APP, CLUSTER


class ChangesBackend(object):
    """
    A backend whose listing is whatever the test puts in ``volumes``, and
    whose incremental listing is ``changed``; it records each call.
    """
    def __init__(self):
        self.volumes = []
        self.changed = []
        self.calls = []

    def allocation_unit(self):
        return 1

    def list_volumes(self, changed_since=None):
        self.calls.append(changed_since)
        return list(self.volumes if changed_since is None else self.changed)


def volume(volume_id, size=1):
    return Volume(volume_id=volume_id, dataset_id="d-" + volume_id,
                  size=size)


def test_changes_merge_into_the_cache_and_full_listings_recur():
    raw = ChangesBackend()
    deployment = load_deployment(CLUSTER.format(root="/nonexistent"), APP)

    @inlineCallbacks
    def body(reactor, pool):
        backend = ControlBackend(deployment, reactor, pool,
                                 make=lambda name, options, cluster: raw)
        raw.volumes = [volume("a"), volume("b")]
        before = datetime.datetime.now(datetime.timezone.utc)
        first = yield backend.list_volumes()
        raw.changed = [volume("b", size=2), volume("c")]
        second = yield backend.list_volumes()
        for _ in range(FULL_EVERY - 2):
            yield backend.list_volumes()
        raw.volumes = [volume("c")]
        full = yield backend.list_volumes()
        return before, first, second, full

    before, first, second, full = run_reactor(body, threadpool=True)
    assert raw.calls[0] is None
    since = datetime.datetime.strptime(
        raw.calls[1], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)
    # Reaches back before the previous listing started, by the skew margin.
    assert before - SKEW - datetime.timedelta(seconds=1) <= since <= \
        before - SKEW + datetime.timedelta(seconds=5)
    assert sorted((v.volume_id, v.size) for v in first) == [("a", 1),
                                                            ("b", 1)]
    assert sorted((v.volume_id, v.size) for v in second) == [
        ("a", 1), ("b", 2), ("c", 1)]
    assert all(c is not None for c in raw.calls[1:FULL_EVERY])
    # The tenth listing is whole again, and forgets the deleted volumes.
    assert raw.calls[FULL_EVERY] is None
    assert [v.volume_id for v in full] == ["c"]


def test_a_backend_without_changes_is_always_listed_whole():
    class Whole(object):
        calls = 0

        def allocation_unit(self):
            return 1

        def list_volumes(self):
            Whole.calls += 1
            return [volume("a")]

    deployment = load_deployment(CLUSTER.format(root="/nonexistent"), APP)

    @inlineCallbacks
    def body(reactor, pool):
        backend = ControlBackend(deployment, reactor, pool,
                                 make=lambda name, options, cluster: Whole())
        yield backend.list_volumes()
        listed = yield backend.list_volumes()
        return listed

    assert [v.volume_id for v in run_reactor(body, threadpool=True)] == ["a"]
    assert Whole.calls == 2
