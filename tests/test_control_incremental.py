"""
The control service lists a backend that declares ``IListsChanges``
incrementally: the changes are merged into the one cache, the
``VolumeListing``, with a whole listing now and then to see deletions. What
a backend can do is what it declares, never what its methods look like.
"""

import datetime

from twisted.internet.defer import inlineCallbacks
from zope.interface import implementer

from blockmover.backends.interface import IListsChanges, IReportsLimits
from blockmover.config import load_deployment
from blockmover.control.backend import FULL_EVERY, SKEW, ControlBackend
from blockmover.control.listing import ChangedVolumes, VolumeListing
from blockmover.model import Limits, Volume
from tests.reactors import run_reactor
from tests.test_control_api import APP, CLUSTER


class WholeBackend(object):
    """
    A backend whose listing is whatever the test puts in ``volumes``; it
    records each call, ``None`` for a whole listing.
    """
    def __init__(self):
        self.volumes = []
        self.changed = []
        self.calls = []

    def allocation_unit(self):
        return 1

    def list_volumes(self):
        self.calls.append(None)
        return list(self.volumes)

    # Not declared: the control service must not call it.
    def list_changed_volumes(self, since):
        self.calls.append(since)
        return list(self.changed)

    def limits(self):
        return Limits(region_volumes=1)


@implementer(IListsChanges)
class ChangesBackend(WholeBackend):
    """
    A backend that declares it lists changes: ``changed`` is its answer.
    """


@implementer(IReportsLimits)
class LimitsBackend(WholeBackend):
    """
    A backend that declares it reports limits.
    """


def volume(volume_id, size=1):
    return Volume(volume_id=volume_id, dataset_id="d-" + volume_id,
                  size=size)


def deployment():
    return load_deployment(CLUSTER.format(root="/nonexistent"), APP)


def control_backend(reactor, pool, raw):
    d = deployment()
    return ControlBackend(d.backend, d.cluster_name, reactor, pool,
                          make=lambda name, options, cluster: raw)


def listed(listing):
    return [(v.volume_id, v.size) for v in listing.volumes]


def test_changes_merge_into_the_listing_and_whole_listings_recur():
    raw = ChangesBackend()

    @inlineCallbacks
    def body(reactor, pool):
        backend = control_backend(reactor, pool, raw)
        listing = VolumeListing(reactor, 3600.0, lambda changed: None)
        listing.set_lister(backend.list_volumes)
        seen = {}
        raw.volumes = [volume("a"), volume("b")]
        seen["before"] = datetime.datetime.now(datetime.timezone.utc)
        yield listing.refresh()
        seen["first"] = listed(listing)
        raw.changed = [volume("b", size=2), volume("c")]
        yield listing.refresh()
        seen["second"] = listed(listing)
        # The backend returns the changes alone; the listing merged them.
        raw.changed = []
        seen["changes"] = yield backend.list_volumes()
        for _ in range(FULL_EVERY - 3):
            yield listing.refresh()
        raw.volumes = [volume("c")]
        yield listing.refresh()
        seen["whole"] = listed(listing)
        listing.stop()
        return seen

    seen = run_reactor(body, threadpool=True)
    assert raw.calls[0] is None
    since = datetime.datetime.strptime(
        raw.calls[1], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)
    # Reaches back before the previous listing started, by the skew margin.
    before = seen["before"]
    assert before - SKEW - datetime.timedelta(seconds=1) <= since <= \
        before - SKEW + datetime.timedelta(seconds=5)
    assert seen["first"] == [("a", 1), ("b", 1)]
    assert seen["second"] == [("a", 1), ("b", 2), ("c", 1)]
    assert isinstance(seen["changes"], ChangedVolumes)
    assert seen["changes"].volumes == []
    assert all(c is not None for c in raw.calls[1:FULL_EVERY])
    # The tenth listing is whole again, and forgets the deleted volumes.
    assert raw.calls[FULL_EVERY] is None
    assert seen["whole"] == [("c", 1)]


def test_a_backend_that_does_not_declare_changes_is_always_listed_whole():
    raw = WholeBackend()
    raw.volumes = [volume("a")]

    @inlineCallbacks
    def body(reactor, pool):
        backend = control_backend(reactor, pool, raw)
        yield backend.list_volumes()
        result = yield backend.list_volumes()
        return result

    assert [v.volume_id for v in run_reactor(body, threadpool=True)] == ["a"]
    assert raw.calls == [None, None]


def test_changes_without_a_whole_listing_leave_the_cache_empty():
    @inlineCallbacks
    def body(reactor):
        listing = VolumeListing(reactor, 3600.0, lambda changed: None)
        listing.set_lister(lambda: ChangedVolumes([volume("a")]))
        yield listing.refresh()
        listing.stop()
        return listing

    listing = run_reactor(body)
    assert listing.volumes is None
    assert listing.failures == 1
    assert "whole listing" in listing.last_error


def test_limits_only_from_a_backend_that_declares_them():
    @inlineCallbacks
    def body(reactor, pool):
        undeclared = yield control_backend(reactor, pool,
                                           WholeBackend()).limits()
        declared = yield control_backend(reactor, pool,
                                         LimitsBackend()).limits()
        return undeclared, declared

    undeclared, declared = run_reactor(body, threadpool=True)
    assert undeclared is None
    assert declared == Limits(region_volumes=1)
