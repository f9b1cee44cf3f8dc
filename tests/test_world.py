"""
A simulated cluster driven by the planner: three nodes, one backend, a
control service whose listing is refreshed only sometimes, random
interleavings of node turns, crashes, re-deploys and writes. A node's
agent runs one worker per dataset: a worker looks at its own dataset and
plans it, and runs that plan later, after any number of other workers'
changes (of other datasets on the same node, and of other nodes). The
safety invariants hold after every single change, and once the faults
stop the cluster converges to the placement within a bounded number of
turns.

For the application without a volume, "runs on at most one node" is not
checked: the planner of the node taking it cannot know whether the node
giving it up has stopped it yet, and nothing it could corrupt is shared.
"""

from hypothesis import given, settings, strategies as st

from agents.plan import dataset_plan, datasets, is_converged, plan, waiting
from blockmover.model import Application, VolumeSpec
from blockmover.units import GiB

from tests.world_model import ChangeFailed, World

NODES = ["node1", "node2", "node3"]
APPLICATIONS = {
    "mongodb": Application(name="mongodb", command=["serve"], volume=VolumeSpec(
        mountpoint="/data/db", size=GiB, filesystem="ext4")),
    "logs": Application(name="logs", command=["serve"], volume=VolumeSpec(
        mountpoint="/data/logs", size=GiB, filesystem="xfs")),
    "web": Application(name="web", command=["serve"]),
}
WITH_VOLUMES = sorted(a for a, app in APPLICATIONS.items() if app.volume)
MAX_SIZE = 3 * GiB
# Turns per node, after the faults stop, in which the cluster must converge:
# create, attach, make+mount+start, and a move's give-up turn, with room.
CONVERGENCE_ROUNDS = 8

# How a node's turn goes wrong, if it does.
CLEAN = "clean"
CUT = "cut"          # the agent dies before its k-th change
FAIL = "fail"        # the k-th change fails and changes nothing
PARTIAL = "partial"  # the agent dies half-way through its k-th change
STALE = "stale"      # the agent acts on the slice it was handed before
FAULTS = [CLEAN, CLEAN, CUT, FAIL, PARTIAL, STALE]

placements = st.sampled_from(NODES + [None])

turns = st.tuples(st.just("turn"), st.sampled_from(NODES),
                  st.sampled_from(FAULTS), st.integers(0, 3), st.booleans())
# A dataset worker looks at its dataset and plans it...
looks = st.tuples(st.just("look"), st.sampled_from(NODES),
                  st.integers(0, 5), st.booleans())
# ... and, some steps later, runs what it planned.
acts = st.tuples(st.just("act"), st.sampled_from(NODES), st.integers(0, 5),
                 st.sampled_from([CLEAN, CLEAN, CUT, FAIL, PARTIAL]),
                 st.integers(0, 3), st.booleans())
steps = st.one_of(
    turns, turns, looks, looks, acts, acts, acts,
    st.tuples(st.just("refresh")),
    st.tuples(st.just("move"), st.sampled_from(sorted(APPLICATIONS)),
              placements),
    st.tuples(st.just("grow"), st.sampled_from(WITH_VOLUMES)),
    st.tuples(st.just("write"), st.sampled_from(WITH_VOLUMES)),
)


def turn(world, node, fault=CLEAN, k=0):
    """
    One turn of a node's agent: look, plan, run the changes in order until
    the first failure (or the injected fault), checking the invariants
    after every change. Returns whether every change ran.
    """
    model = world.nodes[node]
    if fault != STALE or model.slice is None:
        model.slice = world.slice_for(node)
    changes = plan(model.slice, world.observe(node))
    for i, change in enumerate(changes):
        if i == k and fault in (CUT, FAIL):
            return False
        try:
            world.apply(node, change, partial=(i == k and fault == PARTIAL))
        except ChangeFailed:
            return False
        finally:
            world.check()
        if i == k and fault == PARTIAL:
            return False
    return True


def look(world, node, index, stale):
    """
    A worker of ``node`` looks at one of its datasets (the ``index``-th,
    round) and plans it from the slice it holds (``stale``) or a fresh one;
    the plan waits in ``world.planned`` until the worker acts.
    """
    model = world.nodes[node]
    if not stale or model.slice is None:
        model.slice = world.slice_for(node)
    known = datasets(model.slice, world.observe(node))
    if not known:
        return
    dataset = known[index % len(known)]
    world.planned[(node, dataset)] = dataset_plan(
        model.slice, world.observe(node, [dataset]), dataset)


def act(world, node, index, fault=CLEAN, k=0):
    """
    A worker of ``node`` that planned (the ``index``-th, round) runs its
    changes in order until the first failure or the injected fault; the
    invariants are checked after every change. An agent that dies takes
    every worker's plan with it.
    """
    waiting_workers = sorted(key for key in world.planned if key[0] == node)
    if not waiting_workers:
        return
    key = waiting_workers[index % len(waiting_workers)]
    changes = world.planned.pop(key)
    for i, change in enumerate(changes):
        if i == k and fault in (CUT, FAIL):
            if fault == CUT:
                _die(world, node)
            return
        try:
            world.apply(node, change, partial=(i == k and fault == PARTIAL))
        except ChangeFailed:
            return
        finally:
            world.check()
        if i == k and fault == PARTIAL:
            _die(world, node)
            return


def _die(world, node):
    for key in [key for key in world.planned if key[0] == node]:
        del world.planned[key]


def run_step(world, step):
    kind = step[0]
    if kind == "turn":
        _, node, fault, k, report = step
        # A turn is every worker of the node at once: their own plans go.
        _die(world, node)
        turn(world, node, fault, k)
        if report:
            # The agent's report asked for a fresh listing, and got it.
            world.refresh()
    elif kind == "look":
        look(world, *step[1:])
    elif kind == "act":
        _, node, index, fault, k, report = step
        act(world, node, index, fault, k)
        if report:
            world.refresh()
    elif kind == "refresh":
        world.refresh()
    elif kind == "move":
        world.deploy(placement=dict(world.placement, **{step[1]: step[2]}))
    elif kind == "grow":
        app = world.applications[step[1]]
        size = min(app.volume.size + GiB, MAX_SIZE)
        world.deploy(applications=dict(world.applications, **{
            step[1]: app.set(volume=app.volume.set(size=size))}))
    elif kind == "write":
        world.write(step[1])
    world.check()


def converge(world):
    """
    Fault-free turns, the listing refreshed after each (as the agent's
    report asks), until every node has converged; the rounds it took.
    """
    world.refresh()
    world.planned.clear()
    for rounds in range(1, CONVERGENCE_ROUNDS + 1):
        for node in NODES:
            turn(world, node)
            world.refresh()
        if all(is_converged(world.slice_for(n), world.observe(n))
               for n in NODES):
            return rounds
    raise AssertionError(
        "not converged after %d rounds: %r; waiting: %r; plans: %r"
        % (CONVERGENCE_ROUNDS, world.state(),
           {n: waiting(world.slice_for(n), world.observe(n)) for n in NODES},
           {n: list(plan(world.slice_for(n), world.observe(n)))
            for n in NODES}))


@settings(max_examples=3000, deadline=None)
@given(initial=st.fixed_dictionaries({a: placements for a in APPLICATIONS}),
       steps=st.lists(steps, max_size=30))
def test_world_stays_safe_and_converges(initial, steps):
    world = World(NODES, APPLICATIONS, initial)
    converge(world)
    for app in initial:
        world.write(app)
    for step in steps:
        run_step(world, step)
    converge(world)
    world.check()
    assert world.converged(), world.state()
    # Every token any application wrote is still on its volume.
    for dataset, tokens in world.written.items():
        assert tokens <= world.volumes[dataset].disk.tokens


def test_a_move_reads_as_stop_unmount_detach_then_attach_mount_start():
    world = World(NODES, APPLICATIONS, {"mongodb": "node1"})
    converge(world)
    world.write("mongodb")
    world.deploy(placement={"mongodb": "node2"})
    world.refresh()
    giving = plan(world.slice_for("node1"), world.observe("node1"))
    assert [type(c).__name__ for c in giving] == [
        "StopApplication", "UnmountFilesystem", "DetachVolume"]
    # node2 waits while node1 holds the volume.
    assert waiting(world.slice_for("node2"), world.observe("node2"))
    assert turn(world, "node1")
    world.refresh()
    taking = plan(world.slice_for("node2"), world.observe("node2"))
    assert [type(c).__name__ for c in taking] == ["AttachVolume"]
    converge(world)
    assert world.converged()
    assert world.nodes["node2"].running.keys() == {"mongodb"}
    assert world.written[world.dataset("mongodb")] <= \
        world.volumes[world.dataset("mongodb")].disk.tokens


def _kinds(changes):
    return [type(c).__name__ for c in changes]


def _turn_and_refresh(world, node, fault=CLEAN, k=0):
    done = turn(world, node, fault, k)
    world.refresh()
    return done


def test_a_crash_between_mkfs_and_marking_marks_before_mounting():
    world = World(NODES, APPLICATIONS, {"mongodb": "node1"})
    _turn_and_refresh(world, "node1")      # create
    _turn_and_refresh(world, "node1")      # attach
    assert not _turn_and_refresh(world, "node1", PARTIAL, 0)
    volume = world.volumes[world.dataset("mongodb")]
    assert volume.disk is not None and volume.metadata["blockmover-format"] \
        == "new"
    assert _kinds(plan(world.slice_for("node1"), world.observe("node1"))) \
        == ["MakeFilesystem", "MountFilesystem", "StartApplication", "AwaitReady"]
    converge(world)
    assert volume.metadata["blockmover-format"] == "formatted"


def test_a_crash_after_growing_the_volume_still_grows_the_filesystem():
    world = World(NODES, APPLICATIONS, {"mongodb": "node1"})
    converge(world)
    world.write("mongodb")
    app = APPLICATIONS["mongodb"]
    world.deploy(applications=dict(APPLICATIONS, mongodb=app.set(
        volume=app.volume.set(size=2 * GiB))))
    # Stop, unmount, grow the volume; the agent dies before resize2fs.
    assert not _turn_and_refresh(world, "node1", CUT, 3)
    volume = world.volumes[world.dataset("mongodb")]
    assert (volume.size, volume.disk.size) == (2 * GiB, GiB)
    assert _kinds(plan(world.slice_for("node1"), world.observe("node1"))) \
        == ["GrowFilesystem", "MountFilesystem", "StartApplication", "AwaitReady"]
    converge(world)
    assert world.converged() and volume.disk.size == 2 * GiB


def test_a_stale_listing_never_lets_two_nodes_hold_a_volume():
    world = World(NODES, APPLICATIONS, {"mongodb": "node1"})
    converge(world)
    world.deploy(placement={"mongodb": "node2"})
    world.listing = {d: v.set(attached_to=None)
                     for d, v in world.listing.items()}
    # node2 is told the volume is free while node1 still holds it.
    assert _kinds(plan(world.slice_for("node2"), world.observe("node2"))) \
        == ["AttachVolume"]
    assert not turn(world, "node2")
    assert world.volumes[world.dataset("mongodb")].attached_to == "i-node1"
    converge(world)
    assert world.converged()


def test_a_stale_slice_asks_to_detach_only_what_this_node_holds():
    world = World(NODES, APPLICATIONS, {"mongodb": "node1"})
    converge(world)
    world.deploy(placement={"mongodb": "node2"})
    assert _turn_and_refresh(world, "node1")   # stop, unmount, detach
    stale = world.nodes["node1"].slice
    converge(world)
    assert world.nodes["node2"].mounts
    # node1, acting on the slice it had before its detach, still sees the
    # volume listed as its own: DetachVolume must detach only from the node
    # it runs on, or node2 would lose a mounted volume.
    assert _kinds(plan(stale, world.observe("node1"))) == ["DetachVolume"]
    assert turn(world, "node1", STALE)
    assert world.volumes[world.dataset("mongodb")].attached_to == "i-node2"
