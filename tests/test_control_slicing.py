"""
The control service computes again only the slices a change touches: a
listing that finds nothing new computes none, a configuration or a listing
that changes one node's part computes that node's alone. Whatever the
sequence of configurations and listings, the slices it hands out are those
computed whole, and generations only grow.
"""

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks

from blockmover.control.service import ConfigurationRejected, ControlService
from blockmover.control.store import FileStore
from blockmover.identity import dataset_id
from blockmover.model import Volume
from blockmover.placement import Listing, Placement
from blockmover.units import GiB, MiB
from tests.reactors import run_reactor
from tests.strategies import deployment_yaml, deployments
from tests.test_placement_incremental import (
    changed_deployments, reference_slices, volumes_of,
)

NODES = 6


def cluster_yml(placement, command="serve"):
    nodes = "".join("  node%d: {address: 10.0.0.%d}\n" % (i, i + 1)
                    for i in range(NODES))
    deployment = "".join("  node%d: [%s]\n" % (
        i, ", ".join(app for app, node in sorted(placement.items())
                     if node == i)) for i in range(NODES))
    return ("version: 1\ncluster: {name: demo, control: "
            "'https://127.0.0.1:4523'}\nnodes:\n" + nodes + "deployment:\n"
            + deployment)


def app_yml(commands=None):
    commands = commands or {}
    return "version: 1\napplications:\n" + "".join(
        "  app%d: {command: [%s], volume: {mountpoint: /data/app%d, "
        "maximum_size: 1G}}\n" % (i, commands.get(i, "serve"), i)
        for i in range(NODES))


def volume(i, attached_to, size=GiB):
    return Volume(volume_id="vol-%d" % (i,),
                  dataset_id=dataset_id("demo", "app%d" % (i,)), size=size,
                  attached_to=attached_to)


class Cloud(object):
    """
    A backend whose listing is whatever the test puts in ``volumes``.
    """

    def __init__(self, volumes):
        self.volumes = list(volumes)

    def allocation_unit(self):
        return MiB

    def list_volumes(self):
        return list(self.volumes)


class Counted(object):
    """
    The nodes whose slices were computed, in order.
    """

    def __init__(self, monkeypatch):
        self.nodes = []
        compute = Placement.node_slice

        def counting(placement, node, *args):
            self.nodes.append(node)
            return compute(placement, node, *args)
        monkeypatch.setattr(Placement, "node_slice", counting)


def run_service(state_dir, cloud, body):
    """
    Run ``body(service)`` (returning a Deferred) against a started
    ``ControlService`` over ``cloud``, then stop it.
    """
    @inlineCallbacks
    def start(reactor):
        service = ControlService(
            FileStore(state_dir), reactor, refresh_interval=3600,
            make_backend=lambda name, options, cluster: cloud)
        service.start()
        try:
            result = yield body(service)
        finally:
            service.stop()
        return result
    return run_reactor(start)


@inlineCallbacks
def settled(service):
    """
    Once every listing asked for has ended and its slices are handed out.
    """
    yield service.listing.settled()
    yield service._slicing.run(lambda: None)
    # What a configuration removed is recorded after its slices are out.
    yield service.failures.settled()


@inlineCallbacks
def configured(service, cluster, apps=None):
    yield service.configure(cluster, apps or app_yml())
    yield settled(service)


def generations(service):
    return {node: service.slices.generation(node)
            for node in service.slices.nodes()}


START = {"app%d" % (i,): i for i in range(NODES)}


def start_volumes():
    return [volume(i, "node%d" % (i,)) for i in range(NODES)]


def test_a_refresh_finding_nothing_computes_no_slice(tmp_path, monkeypatch):
    counted = Counted(monkeypatch)
    cloud = Cloud(start_volumes())

    @inlineCallbacks
    def body(service):
        yield configured(service, cluster_yml(START))
        before = generations(service), service.slices.counter
        del counted.nodes[:]
        yield service.listing.refresh()
        yield settled(service)
        listed_at = service.listing.listed_at
        return before, (generations(service), service.slices.counter), \
            listed_at, service.slices.get("node1").listed_at

    before, after, listed_at, handed_out = run_service(
        str(tmp_path / "state"), cloud, body)
    assert counted.nodes == []
    assert after == before
    # The slices say how fresh the listing is, all the same.
    assert handed_out == listed_at > 0


def test_a_configuration_touching_one_node_computes_only_it(tmp_path,
                                                            monkeypatch):
    counted = Counted(monkeypatch)
    cloud = Cloud(start_volumes())

    @inlineCallbacks
    def body(service):
        yield configured(service, cluster_yml(START))
        seen = {"start": generations(service)}
        del counted.nodes[:]
        yield configured(service, cluster_yml(START),
                         app_yml(commands={3: "other"}))
        seen["one"] = (list(counted.nodes), generations(service))
        del counted.nodes[:]
        yield configured(service, cluster_yml(dict(START, app1=2)),
                         app_yml(commands={3: "other"}))
        seen["move"] = (sorted(counted.nodes), generations(service))
        return seen

    seen = run_service(str(tmp_path / "state"), cloud, body)
    start = seen["start"]
    nodes, one = seen["one"]
    assert nodes == ["node3"]
    assert {n for n in one if one[n] != start[n]} == {"node3"}
    assert one["node3"] > max(start.values())
    nodes, move = seen["move"]
    # The node an application leaves and the node it goes to.
    assert nodes == ["node1", "node2"]
    assert {n for n in move if move[n] != one[n]} == {"node1", "node2"}


def test_a_listing_changing_one_node_computes_only_it(tmp_path, monkeypatch):
    counted = Counted(monkeypatch)
    cloud = Cloud(start_volumes())

    @inlineCallbacks
    def body(service):
        yield configured(service, cluster_yml(START))
        before = generations(service)
        del counted.nodes[:]
        cloud.volumes[4] = volume(4, "node4", size=2 * GiB)
        yield service.listing.refresh()
        yield settled(service)
        grown = (list(counted.nodes), generations(service),
                 service.slices.get("node4").volumes[
                     dataset_id("demo", "app4")].size)
        del counted.nodes[:]
        # Detached from node5 and left there: node5 alone still wants it.
        cloud.volumes[5] = volume(5, None)
        yield service.listing.refresh()
        yield settled(service)
        return before, grown, (list(counted.nodes), generations(service))

    before, grown, detached = run_service(str(tmp_path / "state"), cloud,
                                          body)
    nodes, after, size = grown
    assert nodes == ["node4"] and size == 2 * GiB
    assert {n for n in after if after[n] != before[n]} == {"node4"}
    nodes, later = detached
    assert nodes == ["node5"]
    assert {n for n in later if later[n] != after[n]} == {"node5"}


@settings(max_examples=25, deadline=None)
@given(deployments(min_nodes=1), st.data())
def test_slices_handed_out_are_those_computed_whole(tmp_path_factory, first,
                                                    data):
    """
    Through configurations (some refused) and listings in any order, every
    slice the service holds is the one computed from scratch, a slice's
    generation only grows and grows exactly when its content changes.
    """
    cloud = Cloud(data.draw(volumes_of(first)))
    steps = []
    deployment = first
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()):
            deployment = data.draw(changed_deployments(deployment))
            steps.append(("configure", deployment))
        else:
            steps.append(("list", data.draw(st.integers(0, 2 ** 16))))

    @inlineCallbacks
    def body(service):
        seen = []
        yield _configure(service, first)
        seen.append(_held(service, cloud))
        for kind, value in steps:
            if kind == "configure":
                yield _configure(service, value)
            else:
                # The cloud changes, as a listing would show it.
                cloud.volumes = _changed_cloud(
                    cloud.volumes, value, service.deployment or first)
                yield service.listing.refresh()
                yield settled(service)
            seen.append(_held(service, cloud))
        return seen

    seen = run_service(str(tmp_path_factory.mktemp("state")), cloud, body)
    previous = {}
    for held, expected, counter in seen:
        assert {n: d for n, (d, _) in held.items()} == expected
        for node, (desired, generation) in held.items():
            if node in previous:
                before, before_generation = previous[node]
                assert generation >= before_generation
                assert (generation == before_generation) == (
                    before == desired)
            assert generation <= counter
        previous = held


@inlineCallbacks
def _configure(service, deployment):
    try:
        yield service.configure(*deployment_yaml(deployment))
    except ConfigurationRejected:
        pass
    yield settled(service)


def _held(service, cloud):
    """
    ``({node: (content, generation)}, the slices computed whole, the
    counter)``.
    """
    held = {}
    for node in service.slices.nodes():
        desired = service.slices.get(node)
        held[node] = (desired.set(generation=0, listed_at=0.0, task_id=None),
                      desired.generation)
    expected = {}
    if service.deployment is not None and service.listing.listing is not None:
        expected = dict(reference_slices(service.deployment,
                                         service.listing.volumes, MiB))
        # A node removed from the configuration keeps a slice releasing
        # what it may still hold (computed whole every time).
        expected.update(service.failures.removed_slices(
            service.deployment.cluster_name,
            Listing.of(service.listing.volumes), 0.0, 0))
    return held, expected, service.slices.counter


def _changed_cloud(volumes, seed, deployment):
    """
    ``volumes`` after some were attached, detached, grown, made or
    destroyed, chosen by ``seed``.
    """
    chooser = random.Random(seed)
    backend_ids = sorted(n.backend_id for n in deployment.nodes.values())
    changed = []
    for v in volumes:
        choice = chooser.randrange(5)
        if choice == 0:
            v = v.set(attached_to=chooser.choice(backend_ids + [None]))
        elif choice == 1:
            v = v.set(size=chooser.randrange(1, 64) * MiB)
        elif choice == 2:
            continue
        changed.append(v)
    if chooser.randrange(2):
        datasets = sorted(Placement(deployment, MiB).datasets) + ["gone"]
        changed.append(Volume(
            volume_id="made-%d" % (seed,), dataset_id=chooser.choice(datasets),
            size=MiB, attached_to=chooser.choice(backend_ids + [None])))
    return changed
