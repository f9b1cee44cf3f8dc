"""
The volumes an operator may remove (``blockmover.control.kept``), pure: a
listing and the push records in, the kept volumes and the refusals out.
"""

from blockmover.control.kept import (
    CANCELLED_PUSH, FAILED_PUSH, LEFT, OLDER, kept, refusal,
)
from blockmover.control.push_rules import (
    CANCELLED, COMMITTED, FAILED, FINAL, LIVE, PushRecord,
)
from blockmover.identity import (
    COMPLETE, FORMAT_KEY, FORMATTED, GENERATION_KEY, INCOMING, PUSH_ID_KEY,
    PUSH_KEY, dataset_id, volume_metadata,
)
from blockmover.model import Volume
from blockmover.placement import Listing
from blockmover.units import GiB

DB = dataset_id("demo", "db")


def volume(volume_id, site, generation=0, attached_to=None, incoming=None,
           application="db"):
    metadata = volume_metadata("demo", application)
    metadata[FORMAT_KEY] = FORMATTED
    if generation:
        metadata[GENERATION_KEY] = str(generation)
        metadata[PUSH_KEY] = COMPLETE
    if incoming is not None:
        metadata.update({PUSH_KEY: INCOMING, PUSH_ID_KEY: incoming})
    return Volume(volume_id=volume_id,
                  dataset_id=dataset_id("demo", application), size=GiB, attached_to=attached_to, metadata=metadata,
                  site=site)


def push(phase, push_id="p1", source_volume="vol-east", error=None):
    return PushRecord(
        push_id=push_id, dataset_id=DB, application="db",
        source_node="node1", source_site="east",
        source_volume=source_volume, target_node="node2",
        target_site="west", generation=1, phase=phase, started_at=10.0,
        ended_at=None if phase in (LIVE, FINAL) else 20.0, error=error)


def kept_ids(listing, records):
    return [v.volume_id for v in kept(listing, records)]


def test_a_dataset_of_one_volume_keeps_nothing():
    listing = Listing.of([volume("vol-east", "east", attached_to="node1"),
                          volume("vol-web", "east", application="web")])
    assert kept(listing, {}) == []


def test_a_committed_push_leaves_its_source_kept_with_its_story():
    listing = Listing.of([volume("vol-east", "east"),
                          volume("vol-west", "west", generation=1,
                                 attached_to="node2")])
    [left] = kept(listing, {DB: push(COMMITTED)})
    assert (left.volume_id, left.dataset_id, left.application, left.site,
            left.size, left.attached_to, left.generation, left.incoming,
            left.reason, left.push_id) == (
        "vol-east", DB, "db", "east", GiB, None, 0, False, LEFT, "p1")
    assert left.why == "left by push p1 to node2 (west)"


def test_a_copy_no_record_explains_is_an_older_copy():
    listing = Listing.of([volume("vol-east", "east"),
                          volume("vol-west", "west", generation=1)])
    [left] = kept(listing, {})
    assert (left.volume_id, left.reason) == ("vol-east", OLDER)
    assert "generation 0" in left.why


def test_the_volumes_of_an_active_push_are_not_kept():
    """
    While a push is live or final the volume pushed into (marked incoming)
    and the one pushed from (the data) are taken; a copy the push would
    push into again is taken as well.
    """
    listing = Listing.of([volume("vol-east", "east", attached_to="node1"),
                          volume("vol-in", "west", generation=1,
                                 attached_to="node2", incoming="p1")])
    for phase in (LIVE, FINAL):
        assert kept_ids(listing, {DB: push(phase)}) == []
    # Back east, into the copy an earlier push left there.
    back = PushRecord(
        push_id="p2", dataset_id=DB, application="db", source_node="node2",
        source_site="west", source_volume="vol-west", target_node="node1",
        target_site="east", generation=2, phase=LIVE, started_at=30.0)
    listing = Listing.of([volume("vol-east", "east"),
                          volume("vol-west", "west", generation=1,
                                 attached_to="node2")])
    assert kept_ids(listing, {DB: back}) == []
    assert kept_ids(listing, {DB: back.set(phase=COMMITTED,
                                           ended_at=40.0)}) == ["vol-east"]


def test_a_push_that_failed_or_was_cancelled_leaves_its_target_kept():
    listing = Listing.of([volume("vol-east", "east", attached_to="node1"),
                          volume("vol-in", "west", generation=1,
                                 incoming="p1")])
    [failed] = kept(listing, {DB: push(FAILED, error="digests differ")})
    assert (failed.volume_id, failed.incoming, failed.reason,
            failed.push_id) == ("vol-in", True, FAILED_PUSH, "p1")
    assert failed.why == ("pushed into by push p1 from node1 (east), which "
                          "failed: digests differ")
    [cancelled] = kept(listing, {DB: push(CANCELLED)})
    assert cancelled.reason == CANCELLED_PUSH
    assert cancelled.why.endswith("which was cancelled")


def test_kept_volumes_of_every_dataset_come_sorted():
    listing = Listing.of([
        volume("w2", "west", application="web", generation=1),
        volume("w1", "east", application="web"),
        volume("d2", "west", generation=1),
        volume("d1", "east")])
    assert [(v.application, v.volume_id) for v in kept(listing, {})] == [
        ("db", "d1"), ("web", "w1")]


def test_removal_is_refused_for_data_active_pushes_and_attached_volumes():
    source = volume("vol-east", "east", attached_to="node1")
    target = volume("vol-in", "west", generation=1, attached_to="node2",
                    incoming="p1")
    listing = Listing.of([source, target])
    live = {DB: push(LIVE)}
    said = refusal(listing, live, target)
    assert said.startswith("volume vol-in is not removed: push p1 of db "
                           "from node1 (east) pushes into it now")
    said = refusal(listing, live, source)
    assert said.startswith("volume vol-east is not removed: it is the "
                           "source of push p1")
    said = refusal(listing, {}, source)
    assert said.startswith("volume vol-east is not removed: it holds the "
                           "data of db")
    # Failed: the target is kept, but still attached to the node.
    failed = {DB: push(FAILED)}
    said = refusal(listing, failed, target)
    assert said.startswith("volume vol-in is not removed: it is attached "
                           "to node2")
    detached = target.set(attached_to=None)
    listing = Listing.of([source, detached])
    assert refusal(listing, failed, detached) is None
