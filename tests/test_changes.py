"""
The state changes run against the loopback backend: real loop devices,
filesystems, mounts and processes. Every change runs twice; the second run
must change nothing.
"""

import os
import socket
import sys
import time
import uuid

import pytest
from eliot import add_destinations, remove_destination

from blockmover import identity
from blockmover.backends import loopdevice
from blockmover.backends.interface import AlreadyAttached
from blockmover.command import run
from blockmover.model import Application, Port, ReadyCheck, VolumeSpec
from blockmover.poll import Timeout, poll
from blockmover.units import MiB

from agents import filesystem, mounts
from agents.changes import (
    AttachVolume, AwaitReady, CreateVolume, DetachVolume, GrowFilesystem, GrowVolume,
    MakeFilesystem, MountFilesystem, NodeContext, StartApplication,
    StopApplication, UnmountFilesystem, VolumeNotMounted,
)
from agents.ready import NotReady
from agents.runtime import ProcessRuntime
from tests.scratch_devices import scratch_directory


@pytest.fixture
def cluster():
    return "test-" + uuid.uuid4().hex[:8]


@pytest.fixture
def top():
    with scratch_directory() as directory:
        yield directory


@pytest.fixture
def make_context(make_loopback, cluster, top):
    """
    ``make_context(node)``: that node's ``NodeContext``; afterwards every
    application its runtime runs is stopped.
    """
    runtimes = []

    def make(node):
        runtime = ProcessRuntime(os.path.join(top, "state-" + node),
                                 stop_timeout=5.0)
        runtimes.append(runtime)
        return NodeContext(node=node, backend_id=node, cluster_name=cluster,
                           backend=make_loopback(node, cluster),
                           runtime=runtime, device_deadline=10.0)
    yield make
    for runtime in runtimes:
        for name in runtime.running():
            runtime.stop(name)


def twice(change, context):
    first = change.run(context)
    second = change.run(context)
    return first, second


def new_volume(context, application, size=64 * MiB):
    dataset = identity.dataset_id(context.cluster_name, application)
    volume, again = twice(CreateVolume(dataset_id=dataset,
                                       application=application, size=size),
                          context)
    assert again.volume_id == volume.volume_id
    return dataset, volume.volume_id


def take(context, dataset, volume_id, mountpoint, kind="ext4"):
    """
    Attach, make the filesystem (or find it) and mount, each twice.
    """
    twice(AttachVolume(dataset_id=dataset, volume_id=volume_id), context)
    twice(MakeFilesystem(dataset_id=dataset, volume_id=volume_id,
                         filesystem=kind), context)
    twice(MountFilesystem(dataset_id=dataset, volume_id=volume_id,
                          mountpoint=mountpoint), context)


def give_up(context, dataset, volume_id, mountpoint, application=None):
    """
    Stop, unmount and detach, each twice.
    """
    if application is not None:
        twice(StopApplication(dataset_id=dataset, name=application),
              context)
    twice(UnmountFilesystem(dataset_id=dataset, mountpoint=mountpoint),
          context)
    twice(DetachVolume(dataset_id=dataset, volume_id=volume_id), context)


def test_take_and_move(make_context, top):
    """
    A node takes a new volume, runs an application writing on it, gives it
    up; another node takes it with the data, and nothing is left behind.
    """
    node1, node2 = make_context("node1"), make_context("node2")
    mountpoint = os.path.join(top, "data")
    app = Application(
        name="writer",
        command=["sh", "-c", "echo kept > written; exec sleep 120"],
        volume=VolumeSpec(mountpoint=mountpoint, size=64 * MiB))
    dataset, volume_id = new_volume(node1, "writer")
    take(node1, dataset, volume_id, mountpoint)
    device = node1.backend.get_device_path(volume_id)
    assert mounts.mounts_of(device) == [mountpoint]
    assert node1.backend.get_volume(volume_id).metadata[
        identity.FORMAT_KEY] == identity.FORMATTED

    started, again = twice(StartApplication(dataset_id=dataset,
                                            application=app), node1)
    assert started == again
    assert node1.runtime.running() == {"writer": started}
    written = os.path.join(mountpoint, "written")
    poll(lambda: True if os.path.exists(written) else None, 10,
         "the application to write")

    with pytest.raises(AlreadyAttached):
        AttachVolume(dataset_id=dataset, volume_id=volume_id).run(node2)

    give_up(node1, dataset, volume_id, mountpoint, "writer")
    assert node1.runtime.running() == {}
    assert not os.path.exists(written)
    assert node1.backend.get_device_path(volume_id) is None
    assert mounts.mount_at(mountpoint) is None
    assert loopdevice.devices_under(node1.backend.root) == []

    take(node2, dataset, volume_id, mountpoint)
    with open(written) as f:
        assert f.read() == "kept\n"
    give_up(node2, dataset, volume_id, mountpoint)
    assert node2.backend.get_volume(volume_id).attached_to is None
    assert mounts.mount_at(mountpoint) is None
    assert loopdevice.devices_under(node2.backend.root) == []
    assert node1.runtime.running() == node2.runtime.running() == {}


def test_make_filesystem_refuses_a_foreign_signature(make_context):
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db")
    AttachVolume(dataset_id=dataset, volume_id=volume_id).run(context)
    device = context.backend.get_device_path(volume_id)
    run(["mkswap", device])
    with pytest.raises(filesystem.FilesystemPresent):
        MakeFilesystem(dataset_id=dataset, volume_id=volume_id,
                       filesystem="ext4").run(context)
    assert filesystem.probe(device).type == "swap"
    assert context.backend.get_volume(volume_id).metadata[
        identity.FORMAT_KEY] == identity.NEW
    DetachVolume(dataset_id=dataset, volume_id=volume_id).run(context)


def test_make_filesystem_refuses_a_formatted_volume_gone_blank(make_context):
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db")
    AttachVolume(dataset_id=dataset, volume_id=volume_id).run(context)
    context.backend.set_metadata(volume_id,
                                 {identity.FORMAT_KEY: identity.FORMATTED})
    with pytest.raises(filesystem.FilesystemError):
        MakeFilesystem(dataset_id=dataset, volume_id=volume_id,
                       filesystem="ext4").run(context)
    assert filesystem.probe(
        context.backend.get_device_path(volume_id)).blank
    DetachVolume(dataset_id=dataset, volume_id=volume_id).run(context)


@pytest.mark.parametrize("mark", [None, "", "imported"])
def test_make_filesystem_refuses_a_volume_not_marked_new(make_context, mark):
    """
    A blank volume the backend does not mark as created blank by blockmover
    (no mark, or another one) gets no filesystem and no mark.
    """
    context = make_context("node1")
    dataset = identity.dataset_id(context.cluster_name, "db")
    metadata = identity.volume_metadata(context.cluster_name, "db")
    del metadata[identity.FORMAT_KEY]
    if mark is not None:
        metadata[identity.FORMAT_KEY] = mark
    volume_id = context.backend.create_volume(dataset, 64 * MiB,
                                              metadata).volume_id
    AttachVolume(dataset_id=dataset, volume_id=volume_id).run(context)
    with pytest.raises(filesystem.FilesystemError) as info:
        MakeFilesystem(dataset_id=dataset, volume_id=volume_id,
                       filesystem="ext4").run(context)
    assert "is not marked as created blank by blockmover" in str(
        info.value)
    assert filesystem.probe(
        context.backend.get_device_path(volume_id)).blank
    assert context.backend.get_volume(volume_id).metadata.get(
        identity.FORMAT_KEY) == mark
    DetachVolume(dataset_id=dataset, volume_id=volume_id).run(context)


def test_mount_refuses_another_datasets_filesystem(make_context, top):
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db")
    AttachVolume(dataset_id=dataset, volume_id=volume_id).run(context)
    device = context.backend.get_device_path(volume_id)
    filesystem.make_filesystem(device, "ext4", str(uuid.uuid4()))
    with pytest.raises(mounts.WrongFilesystem):
        MountFilesystem(dataset_id=dataset, volume_id=volume_id,
                        mountpoint=top + "/data").run(context)
    assert mounts.mounts_of(device) == []
    DetachVolume(dataset_id=dataset, volume_id=volume_id).run(context)


def test_start_refuses_without_its_volume(make_context, top):
    context = make_context("node1")
    os.makedirs(top + "/data")
    app = Application(name="db", command=["sleep", "120"],
                      volume=VolumeSpec(mountpoint=top + "/data",
                                        size=64 * MiB))
    with pytest.raises(VolumeNotMounted):
        StartApplication(dataset_id=identity.dataset_id(
            context.cluster_name, "db"), application=app).run(context)
    assert context.runtime.running() == {}


def test_detach_refuses_while_mounted(make_context, top):
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db")
    take(context, dataset, volume_id, top + "/data")
    with pytest.raises(filesystem.FilesystemMounted):
        DetachVolume(dataset_id=dataset, volume_id=volume_id).run(context)
    assert context.backend.get_volume(volume_id).attached_to == "node1"
    give_up(context, dataset, volume_id, top + "/data")


def test_detach_from_a_stale_slice_leaves_another_nodes_volume(
        make_context, top):
    """
    A node acting on an old slice that still shows a volume attached to it
    must not pull it from the node that holds and mounts it now.
    """
    holder, stale = make_context("node1"), make_context("node2")
    dataset, volume_id = new_volume(holder, "db")
    take(holder, dataset, volume_id, top + "/data")
    twice(DetachVolume(dataset_id=dataset, volume_id=volume_id), stale)
    assert holder.backend.get_volume(volume_id).attached_to == "node1"
    device = holder.backend.get_device_path(volume_id)
    assert device is not None
    assert mounts.mounts_of(device) == [top + "/data"]
    give_up(holder, dataset, volume_id, top + "/data")


def test_grow_ext4_offline(make_context, top):
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db")
    take(context, dataset, volume_id, top + "/data")
    device = context.backend.get_device_path(volume_id)
    before = filesystem.filesystem_size(device, "ext4")
    twice(GrowVolume(dataset_id=dataset, volume_id=volume_id,
                     size=128 * MiB), context)
    grow = GrowFilesystem(dataset_id=dataset, volume_id=volume_id,
                          filesystem="ext4", mountpoint=top + "/data")
    with pytest.raises(filesystem.FilesystemMounted):
        grow.run(context)
    UnmountFilesystem(dataset_id=dataset,
                      mountpoint=top + "/data").run(context)
    twice(grow, context)
    assert filesystem.filesystem_size(device, "ext4") > before + 60 * MiB
    DetachVolume(dataset_id=dataset, volume_id=volume_id).run(context)


def test_grow_xfs_online(make_context, top):
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db", size=320 * MiB)
    take(context, dataset, volume_id, top + "/data", kind="xfs")
    device = context.backend.get_device_path(volume_id)
    before = filesystem.filesystem_size(device, "xfs", top + "/data")
    GrowVolume(dataset_id=dataset, volume_id=volume_id,
               size=448 * MiB).run(context)
    twice(GrowFilesystem(dataset_id=dataset, volume_id=volume_id,
                         filesystem="xfs", mountpoint=top + "/data"), context)
    assert filesystem.filesystem_size(device, "xfs", top + "/data") > \
        before + 100 * MiB
    give_up(context, dataset, volume_id, top + "/data")


def test_changes_are_eliot_actions(make_context):
    context = make_context("node1")
    seen = []
    add_destinations(seen.append)
    try:
        dataset, volume_id = new_volume(context, "db")
    finally:
        remove_destination(seen.append)
    # Eliot replays messages from before the first destination: keep this
    # test's, by its (unique) dataset's tasks.
    actions = [m for m in seen
               if m.get("action_type") == "blockmover:agent:create_volume"]
    tasks = {m["task_uuid"] for m in actions if m.get("dataset_id") == dataset}
    mine = [m for m in actions if m["task_uuid"] in tasks]
    assert [m["action_status"] for m in mine] == [
        "started", "succeeded"] * 2
    assert mine[0]["node"] == "node1"
    assert mine[1]["volume_id"] == volume_id


def test_make_filesystem_after_a_crash_before_marking(make_context, top):
    """
    A crash between mkfs and marking the volume formatted: running the
    change again keeps the filesystem and its data, and only marks it.
    """
    context = make_context("node1")
    dataset, volume_id = new_volume(context, "db")
    AttachVolume(dataset_id=dataset, volume_id=volume_id).run(context)
    device = context.backend.get_device_path(volume_id)
    filesystem.make_filesystem(device, "ext4", dataset)
    mounts.mount(device, top + "/data", dataset)
    with open(top + "/data/kept", "w") as f:
        f.write("data")
    mounts.unmount(top + "/data", dataset)
    assert context.backend.get_volume(volume_id).metadata[
        identity.FORMAT_KEY] == identity.NEW
    MakeFilesystem(dataset_id=dataset, volume_id=volume_id,
                   filesystem="ext4").run(context)
    assert context.backend.get_volume(volume_id).metadata[
        identity.FORMAT_KEY] == identity.FORMATTED
    MountFilesystem(dataset_id=dataset, volume_id=volume_id,
                    mountpoint=top + "/data").run(context)
    with open(top + "/data/kept") as f:
        assert f.read() == "data"
    give_up(context, dataset, volume_id, top + "/data")


class _DeviceNeverAppears(object):
    """
    A backend that attaches but whose device never shows: only for the
    deadline of one change.
    """
    def __init__(self):
        self.attached = []
        self.looked = 0

    def attach_volume(self, volume_id, attach_to):
        self.attached.append((volume_id, attach_to))

    def get_device_path(self, volume_id):
        self.looked += 1
        return None


def test_attach_gives_up_at_the_deadline(top):
    backend = _DeviceNeverAppears()
    context = NodeContext(node="node1", backend_id="node1",
                          cluster_name="test", backend=backend,
                          runtime=ProcessRuntime(top), device_deadline=0.5)
    began = time.monotonic()
    with pytest.raises(Timeout) as caught:
        AttachVolume(dataset_id="d", volume_id="v").run(context)
    assert 0.5 <= time.monotonic() - began < 2
    assert "volume v" in str(caught.value)
    assert backend.attached == [("v", "node1")]
    # Backoff, not a busy loop: a handful of looks in half a second.
    assert 2 <= backend.looked <= 6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_waits_until_the_application_serves(make_context):
    """
    An application counts as ready once its port accepts connections (it
    listens only after a second here); the runtime then says so, and
    waiting again returns at once.
    """
    context = make_context("node1")
    port = _free_port()
    app = Application(
        name="web", ports=[Port(internal=port, external=port)],
        command=[sys.executable, "-c",
                 "import socket, time; time.sleep(1); s = socket.socket(); "
                 "s.bind(('127.0.0.1', %d)); s.listen(); time.sleep(120)"
                 % (port,)])
    dataset = identity.dataset_id(context.cluster_name, "web")
    StartApplication(dataset_id=dataset, application=app).run(context)
    assert context.runtime.running()["web"].ready is False
    started = time.monotonic()
    twice(AwaitReady(dataset_id=dataset, application=app), context)
    assert time.monotonic() - started >= 0.9
    assert context.runtime.running()["web"].ready is True
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_never_ready_is_an_error_naming_the_check(make_context):
    context = make_context("node1")
    app = Application(name="mute", command=["sleep", "120"],
                      ready=ReadyCheck(command=["false"], deadline=1.0))
    dataset = identity.dataset_id(context.cluster_name, "mute")
    StartApplication(dataset_id=dataset, application=app).run(context)
    with pytest.raises(NotReady) as raised:
        AwaitReady(dataset_id=dataset, application=app).run(context)
    assert "command false" in str(raised.value)
    assert "within 1 seconds" in str(raised.value)
    assert context.runtime.running()["mute"].ready is False


def test_an_application_that_exits_is_never_waited_for(make_context):
    context = make_context("node1")
    app = Application(name="gone", command=["true"],
                      ready=ReadyCheck(port=1, deadline=60.0))
    dataset = identity.dataset_id(context.cluster_name, "gone")
    StartApplication(dataset_id=dataset, application=app).run(context)
    started = time.monotonic()
    with pytest.raises(NotReady) as raised:
        AwaitReady(dataset_id=dataset, application=app).run(context)
    assert "exited before it served" in str(raised.value)
    assert time.monotonic() - started < 30
