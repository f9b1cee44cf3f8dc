"""
The agent's side of pushes between sites: what the planner does with a
slice's incoming and outgoing pushes, when rounds have settled, and what
the receiver lets in.
"""

import pytest

from agents.changes import (
    AttachVolume, GrowVolume, MountFilesystem, StopApplication,
    UnmountFilesystem,
)
from agents.plan import dataset_plan, datasets, is_converged
from agents.push import Offer, PushRefused, RoundResult
from agents.pushing import (
    CreateIncoming, PushFinal, PushRegistry, PushRound, Receiving, _settled,
)
from blockmover.identity import (
    BLANK_FOR_KEY, FORMAT_KEY, FORMATTED, GENERATION_KEY, INCOMING,
    PUSH_ID_KEY, PUSH_KEY,
)
from blockmover.model import (
    PUSH_FAILED, PUSH_LIVE, PUSH_VERIFIED, Device, IncomingPush, Mount,
    OutgoingPush, PushProgress, RunningApplication, Volume,
)
from blockmover.units import GiB, MiB
from tests.test_plan import CLUSTER, ME, MONGO, app, desired, device, observed

PUSH = "p1"


def marked(push_id=PUSH, attached_to=None, volume_id="vol-in"):
    return Volume(volume_id=volume_id, dataset_id=MONGO, size=GiB,
                  attached_to=attached_to,
                  metadata={PUSH_KEY: INCOMING, PUSH_ID_KEY: push_id,
                            GENERATION_KEY: "1"})


def incoming(volume=None, size=GiB):
    return IncomingPush(push_id=PUSH, dataset_id=MONGO, application="mongodb",
                        size=size, generation=1, source_node="node1",
                        volume=volume)


def target_slice(volume=None, size=GiB):
    return desired().set(incoming={MONGO: incoming(volume, size)})


def target_seen(device_size=None):
    state = observed()
    if device_size is not None:
        state = state.set(incoming={MONGO: Device(
            volume_id="vol-in", dataset_id=MONGO, path="/dev/loop-in",
            size=device_size)})
    return state


def kinds(changes):
    return [type(c) for c in changes]


# --- the target ------------------------------------------------------------

def test_the_target_makes_the_volume_first():
    assert kinds(dataset_plan(target_slice(), target_seen(), MONGO)) == [
        CreateIncoming]


def test_the_target_marks_a_volume_its_site_kept_then_attaches_it():
    kept = Volume(volume_id="vol-in", dataset_id=MONGO, size=GiB,
                  metadata={FORMAT_KEY: FORMATTED})
    assert kinds(dataset_plan(target_slice(kept), target_seen(),
                              MONGO)) == [CreateIncoming, AttachVolume]


def test_a_volume_marked_for_another_push_is_marked_again():
    plan = dataset_plan(target_slice(marked(push_id="old")), target_seen(),
                        MONGO)
    assert kinds(plan) == [CreateIncoming, AttachVolume]
    assert plan[0].push_id == PUSH


def test_the_target_attaches_grows_and_never_mounts():
    assert kinds(dataset_plan(target_slice(marked()), target_seen(),
                              MONGO)) == [AttachVolume]
    here = marked(attached_to=ME)
    assert kinds(dataset_plan(target_slice(here, size=2 * GiB),
                              target_seen(GiB), MONGO)) == [GrowVolume]
    # Attached, big enough: nothing to do but receive; never mounted,
    # whatever filesystem the blocks pushed so far hold.
    assert dataset_plan(target_slice(here), target_seen(GiB), MONGO) == []
    assert is_converged(target_slice(here), target_seen(GiB))


def test_a_volume_held_by_another_node_of_the_site_is_waited_for():
    elsewhere = marked(attached_to="i-else")
    assert dataset_plan(target_slice(elsewhere), target_seen(), MONGO) == []


# --- the source --------------------------------------------------------------

def outgoing(final=False, target_volume="vol-in"):
    return OutgoingPush(push_id=PUSH, dataset_id=MONGO, application="mongodb",
                        source_volume="vol-" + MONGO[:8],
                        target_node="node2", target_address="10.0.0.2",
                        port=4524, target_volume=target_volume, size=GiB,
                        final=final)


def running_source(push=None):
    mongodb = app("mongodb")
    slice_ = desired([mongodb], [Volume(
        volume_id="vol-" + MONGO[:8], dataset_id=MONGO, size=GiB,
        attached_to=ME, metadata={FORMAT_KEY: FORMATTED})])
    state = observed(devices=[device(MONGO)]).set(
        mounts={MONGO: Mount(dataset_id=MONGO, device="/dev/loop-" + MONGO[:4],
                             mountpoint="/data/mongodb")},
        running={"mongodb": RunningApplication(name="mongodb", pid=10,
                                               ready=True)})
    if push is not None:
        state = state.set(pushes={MONGO: push})
    return slice_, state


def progress(**fields):
    return PushProgress(push_id=PUSH, dataset_id=MONGO,
                        phase=fields.pop("phase", PUSH_LIVE), **fields)


def test_the_source_pushes_rounds_while_its_application_runs():
    slice_, state = running_source()
    slice_ = slice_.set(outgoing={MONGO: outgoing()})
    assert kinds(dataset_plan(slice_, state, MONGO)) == [PushRound]
    # Until the target's volume is ready, nothing.
    waiting = slice_.set(outgoing={MONGO: outgoing(target_volume=None)})
    assert dataset_plan(waiting, state, MONGO) == []


def test_the_source_stops_pushing_once_rounds_settled_or_failed():
    for push in (progress(settled=True), progress(phase=PUSH_FAILED)):
        slice_, state = running_source(push)
        slice_ = slice_.set(outgoing={MONGO: outgoing()})
        assert dataset_plan(slice_, state, MONGO) == []
    # Another push's progress counts for nothing.
    slice_, state = running_source(progress(settled=True).set(
        push_id="old"))
    slice_ = slice_.set(outgoing={MONGO: outgoing()})
    assert kinds(dataset_plan(slice_, state, MONGO)) == [PushRound]


def test_the_last_round_stops_unmounts_keeps_attached_and_pushes():
    slice_, state = running_source()
    # Placed nowhere while final: the dataset is not wanted, its volume is
    # listed as attached here.
    final = slice_.set(datasets={}, applications={},
                       outgoing={MONGO: outgoing(final=True)})
    assert kinds(dataset_plan(final, state, MONGO)) == [
        StopApplication, UnmountFilesystem, PushFinal]
    stopped = state.set(running={}, mounts={},
                        pushes={MONGO: progress(phase=PUSH_VERIFIED)})
    assert dataset_plan(final, stopped, MONGO) == []
    assert MONGO in datasets(final, stopped)


def test_without_a_push_a_dataset_not_wanted_is_given_up():
    # The same look without the outgoing push detaches: the push is what
    # keeps the volume attached through its last round.
    slice_, state = running_source()
    plain = slice_.set(datasets={}, applications={})
    assert UnmountFilesystem in kinds(dataset_plan(plain, state, MONGO))
    assert MountFilesystem not in kinds(dataset_plan(plain, state, MONGO))


# --- settling ----------------------------------------------------------------

def test_rounds_settle_when_what_they_send_stops_shrinking():
    assert not _settled([(900 * MiB, 3.0)])
    assert not _settled([(900 * MiB, 3.0), (200 * MiB, 1.0)])
    assert _settled([(900 * MiB, 3.0), (200 * MiB, 1.0), (190 * MiB, 1.0)])
    assert _settled([(900 * MiB, 3.0), (4 * MiB, 1.0)])
    assert _settled([(100 * MiB, 1.0)] * 8)


def test_the_registry_reports_rounds_and_gives_up_after_failing_a_minute():
    now = [0.0]
    registry = PushRegistry(clock=lambda: now[0])
    push = outgoing()
    registry.round_started(push, GiB)
    registry.round_ended(push, RoundResult(blocks_sent=3, bytes_sent=3 * MiB,
                                           bytes_scanned=GiB, seconds=2.0,
                                           hashes=()))
    shown = registry.get(MONGO)
    assert (shown.round, shown.last_round_bytes, shown.rate,
            shown.estimated_downtime) == (1, 3 * MiB, 3 * MiB / 2.0, 4.0)
    for _ in range(10):
        registry.failed(push, OSError("connection reset"))
        now[0] += 1.0
    # Ten failures in ten seconds: a target restarting, not gone.
    assert registry.get(MONGO).phase == PUSH_LIVE
    now[0] += 60.0
    registry.failed(push, OSError("connection reset"))
    assert (registry.get(MONGO).phase, registry.get(MONGO).error) == (
        PUSH_FAILED, "connection reset")


# --- what the receiver lets in ------------------------------------------------

def offer(**changes):
    fields = dict(push_id=PUSH, dataset_id=MONGO, source_node="node1",
                  target_node="node2", source_volume="vol-src",
                  target_volume="vol-in", size=GiB)
    fields.update(changes)
    return Offer(**fields)


def receiving(volume, device_size=GiB):
    slice_ = target_slice(volume)
    state = target_seen(device_size)
    return Receiving(None, CLUSTER, lambda: (slice_, state), PushRegistry())


@pytest.mark.parametrize("peer, changes, volume, why", [
    ("node3", {}, marked(attached_to=ME), "comes from node node1"),
    ("node1", {"push_id": "p0"}, marked(attached_to=ME), "expects no push"),
    ("node1", {"dataset_id": "other"}, marked(attached_to=ME),
     "expects no push"),
    ("node1", {"target_volume": "vol-x"}, marked(attached_to=ME),
     "not the one marked incoming"),
    ("node1", {}, marked(push_id="old", attached_to=ME),
     "not the one marked incoming"),
    ("node1", {"size": 2 * GiB}, marked(attached_to=ME), "less than"),
])
def test_the_receiver_lets_in_only_what_the_slice_names(peer, changes,
                                                         volume, why):
    with pytest.raises(PushRefused) as refused:
        receiving(volume).authorize(peer, offer(**changes))
    assert why in str(refused.value)


def test_the_receiver_gives_the_device_of_the_volume_marked_for_the_push():
    granted = receiving(marked(attached_to=ME)).authorize("node1", offer())
    assert (granted.device, granted.blank) == ("/dev/loop-in", False)
    made = marked(attached_to=ME)
    made = made.set(metadata=made.metadata.set(BLANK_FOR_KEY, PUSH))
    assert receiving(made).authorize("node1", offer()).blank


def test_the_target_says_it_receives_once_blocks_come():
    registry = PushRegistry(clock=lambda: 0.0)
    registry.waiting(incoming())
    assert registry.get(MONGO).phase == "waiting"
    registry.received(offer(), 4 * MiB)
    shown = registry.get(MONGO)
    assert (shown.phase, shown.bytes_sent) == ("receiving", 4 * MiB)
    registry.target_verified(offer(), "abc")
    assert registry.get(MONGO).target_digest == "abc"
