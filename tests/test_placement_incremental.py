"""
Placement that costs what changed: the listing's indexes, the nodes a
configuration or a listing touches, slices handed out in part, and the
plan foreseen in groups of nodes; each equal to computing everything again
the plain way (the ``reference_*`` functions, placement as it was written
before it was indexed).
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.foresee import foresee, node_as_deployed
from blockmover.control.slices import Slices
from blockmover.identity import dataset_id
from blockmover.model import Node, NodeDesired, NodeState, Volume
from blockmover.placement import (
    Listing, Placement, _datasets, _Foresight, desired_slices,
)
from blockmover.units import MiB
from tests.strategies import deployments, listings, names, sizes

UNITS = st.sampled_from([1, MiB])


# --- placement the plain way ----------------------------------------------

def reference_by_dataset(volumes, backend_id=None):
    def preference(volume):
        return (volume.attached_to != backend_id or backend_id is None,
                volume.attached_to is not None, volume.volume_id)
    chosen = {}
    for volume in sorted(volumes, key=preference):
        chosen.setdefault(volume.dataset_id, volume)
    return chosen


def reference_node_slice(deployment, node, volumes, datasets):
    backend_id = node.backend_id
    apps = deployment.applications_on(node.name)
    wanted = {d.dataset_id: d for d in datasets.values()
              if d.application in apps}
    listed = reference_by_dataset(volumes, backend_id)
    relevant = {dataset: volume for dataset, volume in listed.items()
                if dataset in wanted or volume.attached_to == backend_id}
    return NodeDesired(
        node=node.name, backend_id=backend_id,
        cluster_name=deployment.cluster_name, generation=0,
        datasets=wanted,
        applications={a: deployment.applications[a] for a in apps},
        volumes=relevant)


def reference_slices(deployment, volumes, unit):
    datasets = _datasets(deployment, unit)
    return {node.name: reference_node_slice(deployment, node, list(volumes),
                                            datasets)
            for node in deployment.nodes.values()}


def reference_foresee(old, new, volumes, unit, reported):
    datasets = _datasets(new, unit)
    return foresee(old, new, sorted(volumes, key=lambda v: v.volume_id),
                   lambda node, listing: reference_node_slice(
                       new, node, list(listing), datasets),
                   reported)


# --- strategies -----------------------------------------------------------

@st.composite
def volumes_of(draw, deployment):
    """
    A listing of ``deployment``'s volumes, some datasets claimed by two
    volumes (a create retried), attached anywhere or nowhere.
    """
    volumes = draw(listings(deployment))
    backend_ids = sorted(n.backend_id for n in deployment.nodes.values())
    for i, volume in enumerate(list(volumes)):
        if draw(st.integers(0, 3)) == 0:
            volumes.append(volume.set(
                volume_id="dup-%d" % (i,), size=draw(sizes),
                attached_to=draw(st.one_of(st.none(),
                                           st.sampled_from(backend_ids)))))
    return volumes


@st.composite
def changed_deployments(draw, deployment):
    """
    ``deployment`` with some of what a new configuration changes:
    applications moved, placed nowhere, resized, added or removed; nodes
    added, removed or given another instance id; now and then another
    cluster name.
    """
    nodes = dict(deployment.nodes)
    apps = dict(deployment.applications)
    placement = dict(deployment.placement)
    for name in sorted(nodes):
        choice = draw(st.integers(0, 9))
        if choice == 0 and len(nodes) > 1:
            del nodes[name]
            placement = {a: n for a, n in placement.items() if n != name}
        elif choice == 1:
            nodes[name] = nodes[name].set(instance_id=draw(
                st.sampled_from([None, "i-" + name, "j-" + name])))
    if draw(st.integers(0, 3)) == 0:
        name = "new" + draw(names)
        nodes.setdefault(name, Node(name=name, address="10.9.9.9"))
    for app in sorted(apps):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            placement.pop(app, None)
        elif choice == 1:
            placement[app] = draw(st.sampled_from(sorted(nodes)))
        elif choice == 2 and apps[app].volume is not None:
            apps[app] = apps[app].transform(["volume", "size"], draw(sizes))
        elif choice == 3:
            del apps[app]
            placement.pop(app, None)
        elif choice == 4:
            apps[app] = apps[app].set(command=["changed"])
    cluster_name = deployment.cluster_name
    if draw(st.integers(0, 9)) == 0:
        cluster_name = "other"
    return deployment.set(cluster_name=cluster_name, nodes=nodes,
                          applications=apps, placement=placement)


@st.composite
def listing_changes(draw, listing, deployment):
    """
    ``(volumes, whole)``: a listing of changes (or, with ``whole``, a
    whole new listing) after volumes were attached, detached, grown,
    created or destroyed.
    """
    backend_ids = sorted(n.backend_id for n in deployment.nodes.values()) \
        + ["elsewhere"]
    current = {v.volume_id: v for v in listing}
    changed = {}
    for volume_id in sorted(current):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            changed[volume_id] = current[volume_id].set(attached_to=draw(
                st.one_of(st.none(), st.sampled_from(backend_ids))))
        elif choice == 1:
            changed[volume_id] = current[volume_id].set(size=draw(sizes))
        elif choice == 2:
            # The same again: a listing of changes may repeat a volume.
            changed[volume_id] = current[volume_id]
        elif choice == 3:
            changed[volume_id] = None
    datasets = sorted(_datasets(deployment, 1)) + ["gone"]
    for i in range(draw(st.integers(0, 2))):
        volume_id = "made-%d-%s" % (i, draw(names))
        changed[volume_id] = Volume(
            volume_id=volume_id, dataset_id=draw(st.sampled_from(datasets)),
            size=draw(sizes), attached_to=draw(st.one_of(
                st.none(), st.sampled_from(backend_ids))))
    whole = draw(st.booleans())
    if whole:
        current.update(changed)
        return [v for v in current.values() if v is not None], True
    # A listing of changes cannot say a volume is gone.
    return [v for v in changed.values() if v is not None], False


@st.composite
def reports(draw, old, new, volumes):
    """
    What some nodes reported they hold: what the old or the new deployment
    put there, or nothing.
    """
    nodes = dict(new.nodes)
    if old is not None:
        nodes = dict(old.nodes, **nodes)
    specs = {}
    for deployment in (old, new):
        for name, app in (deployment.applications.items()
                          if deployment is not None else ()):
            if app.volume is not None:
                specs.setdefault(dataset_id(deployment.cluster_name, name),
                                 app.volume)
    reported = {}
    for name in sorted(nodes):
        choice = draw(st.integers(0, 3))
        if choice == 1:
            reported[name] = node_as_deployed(new, nodes[name], volumes,
                                              specs)
        elif choice == 2 and old is not None:
            reported[name] = node_as_deployed(old, nodes[name], volumes,
                                              specs)
        elif choice == 3:
            reported[name] = NodeState(node=name,
                                       backend_id=nodes[name].backend_id)
    return reported


# --- the properties -------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(deployments(), st.data(), UNITS)
def test_indexed_slices_are_the_plain_ones(deployment, data, unit):
    volumes = data.draw(volumes_of(deployment))
    assert dict(desired_slices(deployment, volumes, unit)) == \
        reference_slices(deployment, volumes, unit)


@settings(max_examples=150, deadline=None)
@given(deployments(), st.data(), UNITS)
def test_incremental_slices_equal_a_full_recompute(first, data, unit):
    """
    Slices computed again only for the nodes a configuration touches
    (``Placement.touched``) or a listing's changes affect
    (``Placement.affected``), the others kept, are every time what
    computing all of them from scratch gives; and the listing merged
    change by change is the listing.
    """
    listing = Listing.of(data.draw(volumes_of(first)))
    placement = Placement(first, unit)
    held = placement.slices(listing)
    for _ in range(data.draw(st.integers(1, 5))):
        if data.draw(st.booleans()):
            # Made on its own, or from the placement before.
            new = Placement(data.draw(changed_deployments(
                placement.deployment)), unit,
                data.draw(st.sampled_from([None, placement])))
            assert new.datasets == _datasets(new.deployment, unit)
            touched = new.touched(placement)
            if touched is None:
                held = new.slices(listing)
            else:
                held = {n: s for n, s in held.items()
                        if n in new.deployment.nodes}
                held.update(new.slices(listing, nodes=touched))
            placement = new
        else:
            volumes, whole = data.draw(listing_changes(
                listing, placement.deployment))
            before = {v.volume_id: v for v in listing}
            listing, changes = listing.changed(volumes, whole=whole)
            expected = {} if whole else dict(before)
            expected.update((v.volume_id, v) for v in volumes)
            assert listing.volumes() == sorted(expected.values(),
                                               key=lambda v: v.volume_id)
            assert {(old and old.volume_id, new and new.volume_id)
                    for old, new in changes} == {
                (before.get(i) and i, expected.get(i) and i)
                for i in set(before) | set(expected)
                if before.get(i) != expected.get(i)}
            held.update(placement.slices(listing,
                                         nodes=placement.affected(changes)))
        assert held == reference_slices(placement.deployment, listing, unit)


@settings(max_examples=100, deadline=None)
@given(deployments(), st.data(), UNITS)
def test_slices_handed_out_in_part_are_those_handed_out_whole(first, data,
                                                              unit):
    """
    Handing out only the slices computed again (``propose_some``) gives
    every node the slice, generation and task that handing out all of
    them (``propose``) does; generations only grow.
    """
    whole, some = Slices(), Slices()
    listing = Listing.of(data.draw(volumes_of(first)))
    placement = Placement(first, unit)
    whole.update(placement.slices(listing, 1.0))
    some.update(placement.slices(listing, 1.0))
    for step in range(data.draw(st.integers(1, 4))):
        new = Placement(data.draw(changed_deployments(placement.deployment)),
                        unit, placement)
        touched = new.touched(placement)
        tasks = {n: "task-%d" % (step,) for n in new.deployment.nodes}
        generation = whole.counter + data.draw(st.integers(1, 2))
        counters = (whole.counter, dict((n, whole.generation(n))
                                        for n in whole.nodes()))
        whole.commit(whole.propose(new.slices(listing, 2.0 + step),
                                   generation, tasks))
        some.commit(some.propose_some(
            new.slices(listing, 2.0 + step, touched),
            some.nodes() - set(new.deployment.nodes), 2.0 + step,
            generation, tasks))
        placement = new
        assert whole.counter == some.counter >= counters[0]
        assert whole.nodes() == some.nodes() == set(new.deployment.nodes)
        for node in whole.nodes():
            assert whole.get(node) == some.get(node)
            before = counters[1].get(node)
            assert before is None or whole.generation(node) >= before


@settings(max_examples=150, deadline=None)
@given(deployments(), st.data(), UNITS)
def test_the_plan_foreseen_in_groups_is_foreseen_whole(first, data, unit):
    """
    The plan foreseen one group of nodes sharing no dataset at a time,
    groups with nothing to do skipped, is the plan foreseen for the whole
    cluster at once.
    """
    old = data.draw(st.one_of(st.none(), st.just(first)))
    new = data.draw(changed_deployments(first))
    volumes = data.draw(volumes_of(first))
    reported = data.draw(reports(old, new, volumes))
    pauses = []
    grouped = _Foresight(old, new, Listing.of(volumes), Placement(new, unit),
                         reported, lambda: pauses.append(1)).made()
    assert grouped == reference_foresee(old, new, volumes, unit, reported)
    # It gives way between nodes.
    assert len(pauses) >= len(set(new.nodes) | set(
        old.nodes if old is not None else ()))
