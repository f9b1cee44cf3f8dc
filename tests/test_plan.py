"""
The planner: one readable test per row of its tables, then hypothesis
properties over arbitrary (desired, observed) pairs.
"""

from hypothesis import given, settings, strategies as st

from agents.changes import (
    AttachVolume, AwaitReady, CreateVolume, DetachVolume, GrowFilesystem, GrowVolume,
    MakeFilesystem, MountFilesystem, StartApplication, StopApplication,
    UnmountFilesystem,
)
from agents.plan import is_converged, plan, waiting
from blockmover.identity import FORMAT_KEY, FORMATTED, NEW, dataset_id
from blockmover.model import (
    Application, DesiredDataset, Device, Mount, NodeDesired, NodeState,
    RunningApplication, Volume, VolumeSpec,
)
from blockmover.units import GiB

from agents.foresee import apply_change

CLUSTER = "demo"
ME, OTHER = "i-me", "i-other"
MONGO = dataset_id(CLUSTER, "mongodb")
LOGS = dataset_id(CLUSTER, "logs")
FOREIGN_UUID = "0badf00d-0000-4000-8000-000000000000"


def app(name, filesystem="ext4", size=GiB, volume=True):
    spec = VolumeSpec(mountpoint="/data/" + name, size=size,
                      filesystem=filesystem) if volume else None
    return Application(name=name, command=["serve", name], volume=spec)


def desired(apps=(), volumes=()):
    """
    The slice of node ``me``: ``apps`` run here, their datasets are wanted
    here, ``volumes`` is the listing.
    """
    datasets = {}
    for a in apps:
        if a.volume is not None:
            d = dataset_id(CLUSTER, a.name)
            datasets[d] = DesiredDataset(
                dataset_id=d, application=a.name, size=a.volume.size,
                filesystem=a.volume.filesystem,
                mountpoint=a.volume.mountpoint)
    return NodeDesired(node="me", backend_id=ME, cluster_name=CLUSTER,
                       generation=1, datasets=datasets,
                       applications={a.name: a for a in apps},
                       volumes={v.dataset_id: v for v in volumes})


def volume(d, attached_to=None, size=GiB, mark=FORMATTED):
    return Volume(volume_id="vol-" + d[:8], dataset_id=d, size=size,
                  attached_to=attached_to, metadata={FORMAT_KEY: mark})


def device(d, filesystem="ext4", uuid=None, size=GiB, fs_size=None):
    if filesystem is not None and uuid is None:
        uuid = d
    return Device(volume_id="vol-" + d[:8], dataset_id=d,
                  path="/dev/loop-" + d[:4], size=size,
                  filesystem=filesystem, filesystem_uuid=uuid,
                  filesystem_size=(size if fs_size is None else fs_size)
                  if filesystem is not None else None)


def observed(devices=(), mounts=(), running=(), starting=()):
    """
    What node ``me`` holds: ``running`` applications serve, ``starting``
    ones run but have not passed their ready checks yet.
    """
    return NodeState(
        node="me", backend_id=ME,
        devices={x.dataset_id: x for x in devices},
        mounts={d: Mount(dataset_id=d, device="/dev/loop-" + d[:4],
                         mountpoint=mp) for d, mp in mounts},
        running=dict(
            {n: RunningApplication(name=n, pid=100, ready=True)
             for n in running},
            **{n: RunningApplication(name=n, pid=101) for n in starting}))


def start(application):
    """
    What starts ``application``: its start, then the wait until it serves.
    """
    dataset = dataset_id(CLUSTER, application.name)
    return [StartApplication(dataset_id=dataset, application=application),
            AwaitReady(dataset_id=dataset, application=application)]


def stop(name):
    return StopApplication(dataset_id=dataset_id(CLUSTER, name), name=name)


def details(waits):
    return ["%s: %s" % (w.application, w.detail) for w in waits]


def kinds(changes):
    return [type(c).__name__ for c in changes]


MONGODB = app("mongodb")
LOGGER = app("logs", filesystem="xfs")


# --- taking a dataset ---------------------------------------------------------

def test_no_volume_is_created_and_nothing_else():
    changes = plan(desired([MONGODB]), observed())
    assert list(changes) == [CreateVolume(dataset_id=MONGO,
                                          application="mongodb", size=GiB)]


def test_volume_attached_elsewhere_waits():
    d, o = desired([MONGODB], [volume(MONGO, attached_to=OTHER)]), observed()
    assert list(plan(d, o)) == []
    assert details(waiting(d, o)) == [
        "mongodb: volume attached to i-other, waiting for it to be released"]
    assert not is_converged(d, o)


def test_free_volume_is_attached():
    changes = plan(desired([MONGODB], [volume(MONGO)]), observed())
    assert list(changes) == [AttachVolume(dataset_id=MONGO,
                                          volume_id="vol-" + MONGO[:8])]


def test_attached_here_without_device_is_attached_again():
    changes = plan(desired([MONGODB], [volume(MONGO, attached_to=ME)]),
                   observed())
    assert kinds(changes) == ["AttachVolume"]


def test_device_here_wins_over_a_stale_listing():
    d = desired([MONGODB], [volume(MONGO, attached_to=OTHER)])
    changes = plan(d, observed([device(MONGO)]))
    assert kinds(changes) == ["MountFilesystem", "StartApplication", "AwaitReady"]


def test_blank_device_of_new_volume_gets_a_filesystem_then_mount_and_start():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME, mark=NEW)])
    changes = plan(d, observed([device(MONGO, filesystem=None)]))
    assert list(changes) == [
        MakeFilesystem(dataset_id=MONGO, volume_id="vol-" + MONGO[:8],
                       filesystem="ext4"),
        MountFilesystem(dataset_id=MONGO, volume_id="vol-" + MONGO[:8],
                        mountpoint="/data/mongodb"),
        *start(MONGODB)]


def test_blank_device_of_volume_not_marked_new_is_never_formatted():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME, mark=FORMATTED)])
    o = observed([device(MONGO, filesystem=None)])
    assert list(plan(d, o)) == []
    [reason] = details(waiting(d, o))
    assert reason.startswith("mongodb: ") and "never formatted" in reason


def test_blank_device_of_unlisted_volume_waits_for_the_listing():
    d, o = desired([MONGODB]), observed([device(MONGO, filesystem=None)])
    assert list(plan(d, o)) == []
    assert "listing" in waiting(d, o)[0].detail


def test_device_with_another_filesystem_is_never_mounted_nor_formatted():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME, mark=NEW)])
    o = observed([device(MONGO, uuid=FOREIGN_UUID)])
    assert list(plan(d, o)) == []
    assert FOREIGN_UUID in waiting(d, o)[0].detail


def test_own_filesystem_is_mounted_then_application_started():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    assert kinds(plan(d, observed([device(MONGO)]))) == [
        "MountFilesystem", "StartApplication", "AwaitReady"]


def test_own_filesystem_on_volume_still_marked_new_is_marked_first():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME, mark=NEW)])
    changes = plan(d, observed([device(MONGO)]))
    assert kinds(changes) == ["MakeFilesystem", "MountFilesystem",
                              "StartApplication", "AwaitReady"]


def test_mounted_and_running_is_converged():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO)], [(MONGO, "/data/mongodb")], ["mongodb"])
    assert list(plan(d, o)) == [] and waiting(d, o) == []
    assert is_converged(d, o)


def test_mounted_application_not_running_is_started():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO)], [(MONGO, "/data/mongodb")])
    assert list(plan(d, o)) == start(MONGODB)


def test_application_running_without_its_volume_mounted_is_stopped():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO)], running=["mongodb"])
    assert kinds(plan(d, o)) == ["StopApplication", "MountFilesystem",
                                 "StartApplication", "AwaitReady"]


def test_mounted_at_an_old_mountpoint_is_mounted_again():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO)], [(MONGO, "/old")], ["mongodb"])
    assert kinds(plan(d, o)) == ["StopApplication", "UnmountFilesystem",
                                 "MountFilesystem", "StartApplication", "AwaitReady"]


# --- giving a dataset up ------------------------------------------------------

def test_giving_up_stops_unmounts_detaches_in_that_order():
    d = desired([], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO)], [(MONGO, "/data/mongodb")], ["mongodb"])
    assert list(plan(d, o)) == [
        stop("mongodb"),
        UnmountFilesystem(dataset_id=MONGO, mountpoint="/data/mongodb"),
        DetachVolume(dataset_id=MONGO, volume_id="vol-" + MONGO[:8])]


def test_giving_up_unmounted_device_only_detaches():
    assert kinds(plan(desired(), observed([device(MONGO)]))) == [
        "DetachVolume"]


def test_volume_listed_attached_here_without_device_is_detached():
    d = desired([], [volume(MONGO, attached_to=ME)])
    assert kinds(plan(d, observed())) == ["DetachVolume"]


def test_volumes_not_here_and_not_wanted_are_left_alone():
    d = desired([], [volume(MONGO, attached_to=OTHER), volume(LOGS)])
    assert list(plan(d, observed())) == []
    assert is_converged(d, observed())


def test_giving_up_one_dataset_comes_before_taking_another():
    d = desired([LOGGER], [volume(LOGS, attached_to=ME)])
    o = observed([device(MONGO), device(LOGS, filesystem="xfs")],
                 [(MONGO, "/data/mongodb")], ["mongodb"])
    assert kinds(plan(d, o)) == ["StopApplication", "UnmountFilesystem",
                                 "DetachVolume", "MountFilesystem",
                                 "StartApplication", "AwaitReady"]


# --- applications without a volume --------------------------------------------

def test_application_without_volume_starts_when_wanted():
    web = app("web", volume=False)
    assert list(plan(desired([web]), observed())) == start(web)


def test_application_without_volume_stops_when_not_wanted():
    assert list(plan(desired(), observed(running=["web"]))) == [
        stop("web")]


def test_application_without_volume_running_is_left_running():
    web = app("web", volume=False)
    assert is_converged(desired([web]), observed(running=["web"]))


# --- growing --------------------------------------------------------------------

def test_growing_ext4_is_offline():
    bigger = app("mongodb", size=2 * GiB)
    d = desired([bigger], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO)], [(MONGO, "/data/mongodb")], ["mongodb"])
    vid = "vol-" + MONGO[:8]
    assert list(plan(d, o)) == [
        stop("mongodb"),
        UnmountFilesystem(dataset_id=MONGO, mountpoint="/data/mongodb"),
        GrowVolume(dataset_id=MONGO, volume_id=vid, size=2 * GiB),
        GrowFilesystem(dataset_id=MONGO, volume_id=vid, filesystem="ext4",
                       mountpoint="/data/mongodb"),
        MountFilesystem(dataset_id=MONGO, volume_id=vid,
                        mountpoint="/data/mongodb"),
        *start(bigger)]


def test_growing_xfs_is_online_and_the_application_keeps_running():
    bigger = app("logs", filesystem="xfs", size=2 * GiB)
    d = desired([bigger], [volume(LOGS, attached_to=ME)])
    o = observed([device(LOGS, filesystem="xfs")], [(LOGS, "/data/logs")],
                 ["logs"])
    assert kinds(plan(d, o)) == ["GrowVolume", "GrowFilesystem"]


def test_filesystem_smaller_than_its_device_is_grown_after_a_crash():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO, size=GiB, fs_size=GiB // 2)])
    assert kinds(plan(d, o)) == ["GrowFilesystem", "MountFilesystem",
                                 "StartApplication", "AwaitReady"]


def test_unmounted_xfs_is_mounted_before_growing():
    bigger = app("logs", filesystem="xfs", size=2 * GiB)
    d = desired([bigger], [volume(LOGS, attached_to=ME)])
    o = observed([device(LOGS, filesystem="xfs")])
    assert kinds(plan(d, o)) == ["GrowVolume", "MountFilesystem",
                                 "GrowFilesystem", "StartApplication", "AwaitReady"]


def test_a_stale_listing_of_a_grown_volume_grows_nothing_more():
    bigger = app("mongodb", size=2 * GiB)
    d = desired([bigger], [volume(MONGO, attached_to=ME, size=GiB)])
    o = observed([device(MONGO, size=2 * GiB)], [(MONGO, "/data/mongodb")],
                 ["mongodb"])
    assert is_converged(d, o)


def test_never_shrinks():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME, size=2 * GiB)])
    o = observed([device(MONGO, size=2 * GiB)], [(MONGO, "/data/mongodb")],
                 ["mongodb"])
    assert is_converged(d, o)


def test_a_little_unused_device_tail_is_not_growth():
    d = desired([MONGODB], [volume(MONGO, attached_to=ME)])
    o = observed([device(MONGO, fs_size=GiB - 2 * 1024 * 1024)],
                 [(MONGO, "/data/mongodb")], ["mongodb"])
    assert is_converged(d, o)


# --- properties over arbitrary pairs ---------------------------------------------

APPS = {n: app(n, filesystem=f, size=s * GiB)
        for n, f, s in [("mongodb", "ext4", 1), ("logs", "xfs", 1),
                        ("cache", "ext4", 2)]}
APPS["web"] = app("web", volume=False)
DATASETS = [dataset_id(CLUSTER, n) for n in ("mongodb", "logs", "cache")]
sizes = st.sampled_from([GiB, 2 * GiB, 3 * GiB])


@st.composite
def listed_volumes(draw, d):
    return volume(d, attached_to=draw(st.sampled_from([None, ME, OTHER])),
                  size=draw(sizes), mark=draw(st.sampled_from([NEW,
                                                               FORMATTED])))


@st.composite
def devices(draw, d):
    filesystem = draw(st.sampled_from([None, "ext4", "xfs"]))
    uuid = None
    if filesystem is not None:
        uuid = draw(st.sampled_from([d, FOREIGN_UUID]))
    size = draw(sizes)
    return device(d, filesystem=filesystem, uuid=uuid, size=size,
                  fs_size=draw(st.sampled_from([size, size - GiB // 2])))


@st.composite
def pairs(draw):
    """
    An arbitrary (desired, observed) pair over three datasets and four
    applications, consistent or not.
    """
    here = draw(st.lists(st.sampled_from(sorted(APPS)), unique=True))
    listing = [draw(listed_volumes(d)) for d in DATASETS
               if draw(st.booleans())]
    d = desired([APPS[n] for n in here], listing)
    devs = [draw(devices(x)) for x in DATASETS if draw(st.booleans())]
    mounts = [(x, draw(st.sampled_from(["/data/" + n for n in APPS])))
              for x in DATASETS if draw(st.booleans())]
    running = draw(st.lists(st.sampled_from(sorted(APPS)), unique=True))
    return d, observed(devs, mounts, running)


def _positions(changes, kind):
    return [i for i, c in enumerate(changes) if isinstance(c, kind)]


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_mounts_only_a_device_with_its_filesystem(pair):
    d, o = pair
    changes = list(plan(d, o))
    for i, c in enumerate(changes):
        if isinstance(c, MountFilesystem):
            dev = o.devices.get(c.dataset_id)
            assert dev is not None
            made = any(isinstance(p, MakeFilesystem)
                       and p.dataset_id == c.dataset_id
                       for p in changes[:i])
            assert dev.filesystem_uuid == c.dataset_id or (
                made and dev.filesystem is None)


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_makes_filesystems_only_on_blank_devices_of_new_volumes(pair):
    d, o = pair
    for c in plan(d, o):
        if isinstance(c, MakeFilesystem):
            dev = o.devices.get(c.dataset_id)
            assert dev is not None
            # Over this dataset's own filesystem it only marks.
            assert dev.filesystem_uuid in (None, c.dataset_id)
            assert d.volumes[c.dataset_id].metadata[FORMAT_KEY] == NEW


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_starts_applications_only_on_their_mounted_volume(pair):
    d, o = pair
    mounted = {x for x, m in o.mounts.items()}
    mountpoint = {x: m.mountpoint for x, m in o.mounts.items()}
    running = set(o.running)
    for c in plan(d, o):
        if isinstance(c, MountFilesystem):
            mounted.add(c.dataset_id)
            mountpoint[c.dataset_id] = c.mountpoint
        elif isinstance(c, UnmountFilesystem):
            # Nothing may still run on a filesystem being unmounted.
            assert not any(APPS[r].volume is not None
                           and dataset_id(CLUSTER, r) == c.dataset_id
                           for r in running)
            mounted.discard(c.dataset_id)
        elif isinstance(c, StopApplication):
            running.discard(c.name)
        elif isinstance(c, StartApplication):
            a = c.application
            assert a.name in d.applications
            if a.volume is not None:
                x = dataset_id(CLUSTER, a.name)
                assert x in mounted and mountpoint[x] == a.volume.mountpoint
            running.add(a.name)


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_stops_before_unmounts_before_detaches_and_never_attaches_taken(pair):
    d, o = pair
    changes = list(plan(d, o))
    stops = _positions(changes, StopApplication)
    unmounts = _positions(changes, UnmountFilesystem)
    detaches = _positions(changes, DetachVolume)
    if stops and unmounts:
        assert max(stops) < min(unmounts)
    if unmounts and detaches:
        assert max(unmounts) < min(detaches)
    if stops and detaches:
        assert max(stops) < min(detaches)
    for c in changes:
        if isinstance(c, AttachVolume):
            assert c.dataset_id not in o.devices
            assert d.volumes[c.dataset_id].attached_to in (None, ME)
        if isinstance(c, GrowVolume):
            assert c.size > o.devices[c.dataset_id].size
            assert c.size > d.volumes.get(c.dataset_id, volume(
                c.dataset_id, size=1)).size


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_applying_the_plan_and_planning_again_converges(pair):
    d, o = pair
    for _ in range(6):
        changes = plan(d, o)
        if not changes:
            break
        for c in changes:
            d, o = apply_change(d, o, c)
    assert list(plan(d, o)) == []
    if not waiting(d, o):
        # Nothing held up: the node is exactly what its slice says.
        assert set(o.running) == set(d.applications)
        assert {x: m.mountpoint for x, m in o.mounts.items()} == {
            x: w.mountpoint for x, w in d.datasets.items()}
        assert set(o.devices) <= set(d.datasets)
        assert is_converged(d, o)
