"""
Placement: each node's desired slice, the checks that refuse a deployment,
and the plan people read.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from blockmover.config import load_deployment
from blockmover.identity import (
    FORMAT_KEY, FORMATTED, dataset_id, volume_metadata,
)
from blockmover.model import Limits, Volume
from blockmover.placement import (
    check_deployment, combined_limits, describe_changes, desired_slices,
)
from blockmover.units import GiB, MiB
from tests.strategies import deployments, listings

CLUSTER = """\
version: 1
cluster: {name: demo, control: "https://127.0.0.1:4523"}
nodes:
  node1: {address: 10.0.0.1}
  node2: {address: 10.0.0.2, instance_id: i-2}
deployment:
  node1: [mongodb, web]
  node2: [redis]
"""

APP = """\
version: 1
applications:
  mongodb: {command: [m], volume: {mountpoint: /data/db, maximum_size: 1G}}
  redis: {command: [r], volume: {mountpoint: /data/r, maximum_size: 300M,
          filesystem: xfs}}
  web: {command: [w]}
  idle: {command: [i], volume: {mountpoint: /data/i, maximum_size: 2G}}
"""

DEMO = load_deployment(CLUSTER, APP)


def volume(app, size=GiB, attached_to=None, volume_id=None, cluster="demo",
           formatted=True):
    metadata = volume_metadata(cluster, app)
    if formatted:
        metadata[FORMAT_KEY] = FORMATTED
    return Volume(volume_id=volume_id or "vol-" + app,
                  dataset_id=dataset_id(cluster, app), size=size,
                  attached_to=attached_to, metadata=metadata)


# --- desired_slices ----------------------------------------------------------

def test_slices_of_demo():
    slices = desired_slices(DEMO, [volume("mongodb", attached_to="i-2"),
                                   volume("idle", attached_to="node1")],
                            GiB, listed_at=5.0)
    node1, node2 = slices["node1"], slices["node2"]
    assert set(node1.datasets) == {dataset_id("demo", "mongodb")}
    mongodb = node1.datasets[dataset_id("demo", "mongodb")]
    assert (mongodb.size, mongodb.filesystem, mongodb.mountpoint) == (
        GiB, "ext4", "/data/db")
    assert set(node1.applications) == {"mongodb", "web"}
    # Wanted here (though attached on node2), and attached here.
    assert set(node1.volumes) == {dataset_id("demo", "mongodb"),
                                  dataset_id("demo", "idle")}
    redis = node2.datasets[dataset_id("demo", "redis")]
    assert (redis.size, redis.filesystem) == (GiB, "xfs")  # rounded up
    assert node2.backend_id == "i-2"
    assert set(node2.volumes) == {dataset_id("demo", "mongodb")}
    assert node1.generation == node2.generation == 0
    assert node1.listed_at == 5.0 and node1.cluster_name == "demo"


def test_duplicate_volumes_prefer_the_one_attached_here():
    here = volume("mongodb", attached_to="node1", volume_id="vol-b")
    spare = volume("mongodb", volume_id="vol-a")
    slices = desired_slices(DEMO, [spare, here], MiB)
    assert slices["node1"].volumes[here.dataset_id] == here


@settings(max_examples=100, deadline=None)
@given(deployments(), st.data(),
       st.sampled_from([1, MiB, GiB]))
def test_slice_properties(deployment, data, unit):
    """
    Every placed application with a volume is in exactly one node's
    datasets (its own node's), every volume attached to a node is in that
    node's slice, and every node has a slice.
    """
    volumes = data.draw(listings(deployment))
    slices = desired_slices(deployment, volumes, unit)
    assert set(slices) == set(deployment.nodes)
    for app, node in deployment.placement.items():
        spec = deployment.applications[app].volume
        holders = [n for n, s in slices.items()
                   if dataset_id(deployment.cluster_name, app) in s.datasets]
        assert holders == ([node] if spec is not None else [])
        assert app in slices[node].applications
        if spec is not None:
            wanted = slices[node].datasets[
                dataset_id(deployment.cluster_name, app)]
            assert wanted.size >= spec.size and wanted.size % unit == 0
    for app in deployment.applications:
        if app not in deployment.placement:
            assert all(app not in s.applications for s in slices.values())
    for v in volumes:
        node = deployment.node_by_backend_id(v.attached_to or "")
        if node is not None:
            assert v.dataset_id in slices[node.name].volumes
    for s in slices.values():
        for dataset, v in s.volumes.items():
            assert v.dataset_id == dataset
            assert dataset in s.datasets or v.attached_to == s.backend_id


# --- check_deployment --------------------------------------------------

def with_limits(**limits):
    return DEMO.set(backend=DEMO.backend.set(limits=Limits(**limits)))


def test_fine_deployment_passes():
    assert check_deployment(DEMO, [volume("mongodb")], GiB) == []


def test_size_limits():
    errors = check_deployment(with_limits(min_size=2 * GiB), [], MiB)
    assert ("mongodb: volume size 1G is below the minimum size (min_size) "
            "of 2G; make maximum_size at least 2G") in errors
    assert any(e.startswith("redis: volume size 300M is below") for e in
               errors)
    errors = check_deployment(with_limits(max_size=GiB), [], MiB)
    assert errors == ["idle: volume size 2G is above the maximum size "
                      "(max_size) of 1G; make maximum_size at most 1G"]


def test_shrink_refused():
    errors = check_deployment(DEMO, [volume("mongodb", size=2 * GiB)], GiB)
    assert errors == ["mongodb: volume is 2G and cannot shrink to 1G; "
                      "volumes only grow"]


def test_xfs_too_small_for_mkfs_refused():
    small = DEMO.transform(
        ["applications", "redis", "volume", "size"], 200 * MiB)
    errors = check_deployment(small, [], MiB)
    assert errors == ["redis: volume size 200M is too small for xfs, which "
                      "needs at least 300M; make maximum_size at least 300M "
                      "or use ext4"]


def test_volumes_per_node():
    two = DEMO.set(placement={"mongodb": "node1", "idle": "node1"})
    errors = check_deployment(two.set(backend=two.backend.set(
        limits=Limits(volumes_per_node=1))), [], GiB)
    assert errors == ["idle, mongodb: 2 volumes on node1 but "
                      "volumes_per_node is 1; move some of them to another "
                      "node"]


def test_region_limits_count_leftover_volumes():
    leftover = volume("gone", size=5 * GiB)
    errors = check_deployment(with_limits(region_volumes=3), [leftover], GiB)
    assert errors == ["idle, mongodb, redis: 4 volumes (3 configured and 1 "
                      "kept from applications no longer configured) but "
                      "region_volumes is 3; configure fewer volumes or "
                      "destroy old ones"]
    errors = check_deployment(with_limits(region_size=8 * GiB), [leftover],
                              GiB)
    assert errors == ["idle, mongodb, redis: volumes total 9G but "
                      "region_size is 8G; make them smaller or destroy old "
                      "ones"]
    assert check_deployment(with_limits(region_size=9 * GiB,
                                        region_volumes=4), [leftover],
                            GiB) == []
    # Already over, but this deployment adds nothing: it may go ahead.
    existing = [volume("mongodb"), volume("redis"),
                volume("idle", size=2 * GiB), leftover]
    assert check_deployment(with_limits(region_size=GiB, region_volumes=1),
                            existing, GiB) == []


def test_backend_limits_tighten():
    assert combined_limits(Limits(max_size=4 * GiB, min_size=GiB),
                           Limits(max_size=2 * GiB, min_size=MiB,
                                  region_volumes=5)) == Limits(
        max_size=2 * GiB, min_size=GiB, region_volumes=5)
    errors = check_deployment(with_limits(max_size=10 * GiB), [], GiB,
                              backend_limits=Limits(max_size=GiB))
    assert errors == ["idle: volume size 2G is above the maximum size "
                      "(max_size) of 1G; make maximum_size at most 1G"]


_limits = st.builds(
    Limits,
    min_size=st.one_of(st.none(), st.integers(1, 4096).map(lambda n: n * MiB)),
    max_size=st.one_of(st.none(), st.integers(1, 4096).map(lambda n: n * MiB)),
    volumes_per_node=st.one_of(st.none(), st.integers(1, 4)),
    region_volumes=st.one_of(st.none(), st.integers(1, 8)),
    region_size=st.one_of(st.none(),
                          st.integers(1, 16384).map(lambda n: n * MiB)))


@settings(max_examples=150, deadline=None)
@given(deployments(limits=_limits), st.data())
def test_check_catches_every_limit(deployment, data):
    """
    Whenever a limit is broken, an error names it, with the application;
    when none is, there are no errors.
    """
    volumes = data.draw(listings(deployment))
    errors = check_deployment(deployment, volumes, MiB)
    limits = deployment.backend.limits
    sized = {a: v.volume.size for a, v in deployment.applications.items()
             if v.volume is not None}
    expected = set()
    for app, size in sized.items():
        if (deployment.applications[app].volume.filesystem == "xfs"
                and size < 300 * MiB):
            expected.add((app, "too small for xfs"))
        if limits.min_size is not None and size < limits.min_size:
            expected.add((app, "min_size"))
        if limits.max_size is not None and size > limits.max_size:
            expected.add((app, "max_size"))
        for v in volumes:
            if v.dataset_id == dataset_id(deployment.cluster_name, app) and \
                    v.size > size:
                expected.add((app, "cannot shrink"))
    for node in deployment.nodes:
        on = [a for a in sized if deployment.placement.get(a) == node]
        if limits.volumes_per_node is not None and \
                len(on) > limits.volumes_per_node:
            expected.update((a, "volumes_per_node") for a in on)
    datasets = {dataset_id(deployment.cluster_name, a) for a in sized}
    leftovers = [v for v in volumes if v.dataset_id not in datasets]
    count = len(sized) + len(leftovers)
    existing = {a: [v.size for v in volumes if v.dataset_id ==
                    dataset_id(deployment.cluster_name, a)] for a in sized}
    created = [a for a in sized if not existing[a]]
    if limits.region_volumes is not None and count > limits.region_volumes:
        expected.update((a, "region_volumes") for a in created)
        if created:
            assert any(" %d volumes " % (count,) in e for e in errors)
    total = sum(max([s] + existing[a]) for a, s in sized.items()) + sum(
        v.size for v in leftovers)
    # Only what the deployment adds is refused: new volumes and growth.
    grown = [a for a, s in sized.items() if s > max(existing[a] or [0])]
    if limits.region_size is not None and total > limits.region_size:
        expected.update((a, "region_size") for a in grown)
    found = set()
    for e in errors:
        names, _, _ = e.partition(": ")
        for app in names.split(", "):
            for limit in ("min_size", "max_size", "cannot shrink",
                          "volumes_per_node", "region_volumes",
                          "region_size", "too small for xfs"):
                if limit in e:
                    found.add((app, limit))
    assert found == expected
    assert (errors == []) == (expected == set())


# --- describe_changes --------------------------------------------------

READY = "start, wait until it serves"


def test_first_deploy():
    assert describe_changes(None, DEMO, []) == {
        "node1": ["mongodb: create a 1G volume, attach its volume, make ext4 "
                  "on it, mount it at /data/db, " + READY,
                  "web: " + READY],
        "node2": ["redis: create a 300M volume, attach its volume, make xfs "
                  "on it, mount it at /data/r, " + READY],
    }


def test_move_grow_stop():
    listing = [volume("mongodb", attached_to="node1"),
               volume("redis", size=300 * MiB, attached_to="i-2")]
    new = load_deployment(CLUSTER.replace("[mongodb, web]", "[web]")
                          .replace("[redis]", "[mongodb]"),
                          APP.replace("maximum_size: 1G", "maximum_size: 2G"))
    assert describe_changes(DEMO, new, listing) == {
        "node1": ["mongodb: stop (moving to node2), unmount /data/db, detach "
                  "its volume for node2"],
        "node2": ["redis: stop (no longer deployed), unmount /data/r, detach "
                  "its volume (no longer deployed; the volume is kept)",
                  "mongodb: attach its volume from node1, grow its volume to "
                  "2G, grow its ext4 filesystem, mount it at /data/db, "
                  + READY],
    }
    grown = load_deployment(CLUSTER, APP.replace("maximum_size: 1G",
                                                 "maximum_size: 2G"))
    # ext4 grows unmounted: the application stops for it.
    assert describe_changes(DEMO, grown, listing)["node1"] == [
        "mongodb: stop, unmount /data/db, grow its volume to 2G, grow its "
        "ext4 filesystem, mount it at /data/db, " + READY]


def test_first_deploy_over_existing_volumes():
    """
    Without a previous deployment, the listing says where volumes are.
    """
    listing = [volume("mongodb", attached_to="i-2"),
               volume("idle", attached_to="i-2")]
    assert describe_changes(None, DEMO, listing) == {
        "node1": ["web: " + READY,
                  "mongodb: attach its volume from node2, mount it at "
                  "/data/db, " + READY],
        "node2": ["idle: detach its volume (no longer deployed; the volume "
                  "is kept)",
                  "mongodb: detach its volume for node1",
                  "redis: create a 300M volume, attach its volume, make xfs "
                  "on it, mount it at /data/r, " + READY],
    }


def test_volume_held_by_a_third_node():
    listing = [volume("mongodb", attached_to="i-2")]
    new = DEMO.set(placement={"web": "node1"})
    assert describe_changes(DEMO, new, listing) == {
        "node1": [],
        "node2": ["mongodb: detach its volume (no longer deployed; the "
                  "volume is kept)"],
    }


def test_nothing_changes():
    listing = [volume("mongodb", attached_to="node1"),
               volume("redis", size=300 * MiB, attached_to="i-2")]
    assert describe_changes(DEMO, DEMO, listing) == {"node1": [],
                                                     "node2": []}


def test_removed_application_and_leftover_volume():
    listing = [volume("gone", attached_to="node1"),
               volume("mongodb", attached_to="node1"),
               volume("redis", size=300 * MiB, attached_to="i-2")]
    new = load_deployment(CLUSTER.replace("[mongodb, web]", "[mongodb]"),
                          APP.replace("  web: {command: [w]}\n", ""))
    assert describe_changes(DEMO, new, listing)["node1"] == [
        "web: stop (no longer configured)",
        "gone: detach its volume (no longer configured; the volume is "
        "kept)"]


def test_the_plan_is_what_the_agents_do():
    """
    The plan is foreseen with the agents' own planner: a move's steps on
    each node are exactly the changes their plans make, in order.
    """
    from agents.foresee import foresee
    from blockmover.placement import node_slice
    listing = [volume("mongodb", attached_to="node1"),
               volume("redis", size=300 * MiB, attached_to="i-2")]
    new = load_deployment(CLUSTER.replace("[mongodb, web]", "[web]")
                          .replace("[redis]", "[mongodb]"), APP)
    made = foresee(DEMO, new, listing,
                   lambda node, volumes: node_slice(new, node, volumes, MiB))
    assert [c.kind for c in made["node1"]] == ["stop", "unmount", "detach"]
    assert [c.kind for c in made["node2"]] == [
        "stop", "unmount", "detach", "attach", "mount", "start", "ready"]


@settings(max_examples=100, deadline=None)
@given(deployments(), st.data())
def test_every_node_described(deployment, data):
    """
    Every node has a list, and a deployment over itself changes nothing
    when the volumes are already where and how big it wants them.
    """
    volumes = [volume(a, size=app.volume.size,
                      attached_to=deployment.nodes[
                          deployment.placement[a]].backend_id
                      if a in deployment.placement else None,
                      cluster=deployment.cluster_name)
               for a, app in deployment.applications.items()
               if app.volume is not None]
    first = describe_changes(None, deployment, data.draw(listings(deployment)))
    assert set(first) == set(deployment.nodes)
    assert describe_changes(deployment, deployment, volumes) == {
        n: [] for n in deployment.nodes}
