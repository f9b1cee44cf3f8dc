"""
The control service's one cached listing: refreshes coalesce, failures keep
the last good listing, the timer lists again.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from blockmover.control.listing import ChangedVolumes, VolumeListing
from blockmover.model import Volume


def volume(n):
    return Volume(volume_id="v%d" % (n,), dataset_id="d%d" % (n,), size=1)


class Lister(object):
    """
    A backend's list_volumes whose answers the test gives by hand.
    """
    def __init__(self):
        self.pending = []

    def __call__(self):
        d = Deferred()
        self.pending.append(d)
        return d

    def answer(self, volumes):
        self.pending.pop(0).callback(volumes)

    def fail(self, message):
        self.pending.pop(0).errback(RuntimeError(message))


def make(interval=30.0):
    clock = Clock()
    clock.advance(1000)
    calls = []
    listing = VolumeListing(clock, interval, calls.append)
    lister = Lister()
    listing.set_lister(lister)
    return clock, listing, lister, calls


def test_refreshes_while_one_runs_cause_exactly_one_more():
    clock, listing, lister, calls = make()
    first = listing.refresh()
    later = [listing.refresh() for _ in range(10)]
    assert listing.refreshes == 1
    lister.answer([volume(1)])
    assert first.called and not any(d.called for d in later)
    assert listing.refreshes == 2 and len(lister.pending) == 1
    lister.answer([volume(1), volume(2)])
    assert all(d.called for d in later)
    assert listing.refreshes == 2 and not lister.pending
    assert [v.volume_id for v in listing.volumes] == ["v1", "v2"]
    assert calls == [True, True]


def test_unchanged_listing_says_so_and_moves_listed_at():
    clock, listing, lister, calls = make()
    listing.refresh()
    lister.answer([volume(2), volume(1)])
    first = listing.listed_at
    clock.advance(5)
    listing.refresh()
    lister.answer([volume(1), volume(2)])
    assert calls == [True, False]
    assert listing.listed_at == first + 5


def test_failure_keeps_the_last_good_listing():
    clock, listing, lister, calls = make()
    listing.refresh()
    lister.answer([volume(1)])
    listed_at = listing.listed_at
    clock.advance(1)
    listing.refresh()
    lister.fail("backend down")
    assert [v.volume_id for v in listing.volumes] == ["v1"]
    assert listing.listed_at == listed_at
    assert listing.failures == 1 and listing.last_error == "backend down"
    assert calls == [True]


def test_timer_lists_again_after_the_interval():
    clock, listing, lister, calls = make(interval=30.0)
    listing.start()
    lister.answer([])
    clock.advance(29)
    assert listing.refreshes == 1
    clock.advance(1)
    assert listing.refreshes == 2
    lister.answer([])
    listing.stop()
    clock.advance(100)
    assert listing.refreshes == 2 and not clock.getDelayedCalls()


def test_on_demand_refresh_restarts_the_timer():
    clock, listing, lister, calls = make(interval=30.0)
    listing.start()
    lister.answer([])
    clock.advance(20)
    listing.refresh()
    lister.answer([])
    clock.advance(20)
    assert listing.refreshes == 2
    clock.advance(10)
    assert listing.refreshes == 3


def test_a_replaced_lister_discards_the_old_answer():
    clock, listing, lister, calls = make()
    listing.refresh()
    newer = Lister()
    listing.set_lister(newer, [volume(7)], listed_at=5.0)
    lister.answer([volume(1)])
    assert [v.volume_id for v in listing.volumes] == ["v7"]
    assert calls == []


def test_a_seeded_listing_counts_and_the_timer_follows_it():
    clock = Clock()
    listing = VolumeListing(clock, 30.0, lambda changed: None)
    listing.start()
    assert listing.refreshes == 0 and not clock.getDelayedCalls()
    lister = Lister()
    listing.set_lister(lister, [volume(1)], listed_at=3.0)
    assert listing.refreshes == 1 and listing.listed_at == 3.0
    clock.advance(30)
    assert listing.refreshes == 2 and len(lister.pending) == 1


def test_clients_start_at_most_one_listing_a_second():
    """
    However many clients ask, and however often, the listings they cause
    start at least a second apart; an ask within that second is answered
    by one listing at its end, not dropped.
    """
    clock, listing, lister, calls = make(interval=3600.0)
    starts = []
    original = lister.__call__

    def counting():
        starts.append(clock.seconds())
        return original()
    listing.set_lister(counting)
    listing.request()
    assert starts == [1000.0]
    lister.answer([volume(1)])
    for _ in range(10):
        for _ in range(100):
            listing.request()
        clock.advance(0.25)
        while lister.pending:
            lister.answer([volume(1)])
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) >= 3
    assert all(gap >= 1.0 for gap in gaps), gaps
    # The last asks are answered by one listing within the second...
    clock.advance(1)
    while lister.pending:
        lister.answer([volume(1)])
    assert starts[-1] >= 1000.0 + 2.5
    # ...and with nothing asked since, nothing more is listed.
    count = len(starts)
    clock.advance(5)
    assert len(starts) == count and not lister.pending
    listing.stop()


def test_a_listing_asked_for_while_one_runs_still_waits_its_second():
    clock, listing, lister, calls = make(interval=3600.0)
    listing.refresh()
    listing.request()
    assert listing.refreshes == 1
    clock.advance(0.5)
    lister.answer([volume(1)])
    assert listing.refreshes == 1
    clock.advance(0.5)
    assert listing.refreshes == 2
    lister.answer([volume(1)])
    listing.stop()


def test_settled_waits_for_the_listing_asked_for_and_starts_none():
    clock, listing, lister, calls = make(interval=3600.0)
    assert listing.settled().called
    listing.refresh()
    lister.answer([volume(1)])
    listing.request()
    waiting = listing.settled()
    assert not waiting.called and not lister.pending
    clock.advance(1)
    assert not waiting.called and len(lister.pending) == 1
    lister.answer([volume(1), volume(2)])
    assert waiting.called and len(listing.volumes) == 2
    # While one runs: the end of that one.
    listing.refresh()
    running = listing.settled()
    assert not running.called
    lister.answer([volume(1)])
    assert running.called
    listing.stop()


class Merges(object):
    """
    A ``merge`` of ``VolumeListing`` whose work the test lets finish by
    hand, as a thread would some time later.
    """

    def __init__(self):
        self.pending = []

    def __call__(self, function, *args):
        d = Deferred()
        self.pending.append((d, function, args))
        return d

    def finish(self):
        d, function, args = self.pending.pop(0)
        d.callback(function(*args))


def test_whole_listings_are_compared_by_merge_and_changes_at_once():
    clock = Clock()
    calls = []
    merges = Merges()
    listing = VolumeListing(clock, 30.0, calls.append, merge=merges)
    lister = Lister()
    listing.set_lister(lister)
    done = listing.refresh()
    lister.answer([volume(1), volume(2)])
    # Compared elsewhere: nothing taken, the listing not over.
    assert listing.volumes is None and not done.called and calls == []
    merges.finish()
    assert [v.volume_id for v in listing.volumes] == ["v1", "v2"]
    assert done.called and calls == [True] and listing.changes is None
    listing.refresh()
    lister.answer(ChangedVolumes([volume(3)]))
    assert not merges.pending and calls == [True, True]
    assert [(old, new.volume_id) for old, new in listing.changes] == \
        [(None, "v3")]
    listing.refresh()
    lister.answer([volume(1), volume(3)])
    merges.finish()
    assert [(old.volume_id, new) for old, new in listing.changes] == \
        [("v2", None)]
    assert [v.volume_id for v in listing.volumes] == ["v1", "v3"]
    listing.stop()


def test_a_merge_ending_after_its_lister_was_replaced_is_discarded():
    clock = Clock()
    calls = []
    merges = Merges()
    listing = VolumeListing(clock, 30.0, calls.append, merge=merges)
    lister = Lister()
    listing.set_lister(lister)
    listing.refresh()
    lister.answer([volume(1)])
    listing.set_lister(Lister(), [volume(7)], listed_at=5.0)
    merges.finish()
    assert [v.volume_id for v in listing.volumes] == ["v7"]
    assert calls == []
    listing.stop()
