"""
Observing a node: devices, filesystems, mounts and applications, on the
loopback backend's real loop devices.
"""

import os
import uuid

import pytest

from blockmover import identity
from blockmover.model import Application, Mount, NodeDesired, VolumeSpec
from blockmover.units import MiB

from agents.changes import (
    AttachVolume, CreateVolume, DetachVolume, MakeFilesystem,
    MountFilesystem, NodeContext, StartApplication, StopApplication,
    UnmountFilesystem,
)
from agents.filesystem import make_filesystem
from agents.mounts import mount, unmount
from agents.observe import observe
from agents.runtime import ProcessRuntime
from tests.scratch_devices import scratch_device, scratch_directory

SIZE = 64 * MiB


@pytest.fixture
def top():
    with scratch_directory() as directory:
        yield directory


@pytest.fixture
def context(make_loopback, top):
    cluster = "test-" + uuid.uuid4().hex[:8]
    return NodeContext(
        node="node1", backend_id="node1", cluster_name=cluster,
        backend=make_loopback("node1", cluster),
        runtime=ProcessRuntime(os.path.join(top, "state")),
        device_deadline=10.0)


def desired_for(context, *volumes):
    return NodeDesired(node=context.node, backend_id=context.backend_id,
                       cluster_name=context.cluster_name, generation=1,
                       volumes={v.dataset_id: v for v in volumes})


def test_observe_follows_a_volume_through_a_take(context, top):
    mountpoint = os.path.join(top, "data")
    dataset = identity.dataset_id(context.cluster_name, "db")
    volume = CreateVolume(dataset_id=dataset, application="db",
                          size=SIZE).run(context)
    desired = desired_for(context, volume)
    state = observe(context, desired)
    assert (state.node, state.backend_id) == ("node1", "node1")
    assert (dict(state.devices), dict(state.mounts),
            dict(state.running)) == ({}, {}, {})

    AttachVolume(dataset_id=dataset, volume_id=volume.volume_id).run(context)
    device = observe(context, desired).devices[dataset]
    path = context.backend.get_device_path(volume.volume_id)
    assert (device.volume_id, device.path, device.size) == (
        volume.volume_id, path, SIZE)
    assert (device.filesystem, device.filesystem_uuid,
            device.filesystem_size) == (None, None, None)

    MakeFilesystem(dataset_id=dataset, volume_id=volume.volume_id,
                   filesystem="ext4").run(context)
    MountFilesystem(dataset_id=dataset, volume_id=volume.volume_id,
                    mountpoint=mountpoint).run(context)
    app = Application(name="db", command=["sleep", "120"],
                      volume=VolumeSpec(mountpoint=mountpoint, size=SIZE))
    running = StartApplication(dataset_id=dataset,
                               application=app).run(context)
    try:
        state = observe(context, desired)
    finally:
        StopApplication(dataset_id=dataset, name="db").run(context)
    device = state.devices[dataset]
    assert (device.filesystem, device.filesystem_uuid) == ("ext4", dataset)
    assert SIZE * 0.9 < device.filesystem_size <= SIZE
    mount = state.mounts[dataset]
    assert (mount.device, mount.mountpoint) == (path, mountpoint)
    assert dict(state.running) == {"db": running}

    UnmountFilesystem(dataset_id=dataset, mountpoint=mountpoint).run(context)
    DetachVolume(dataset_id=dataset, volume_id=volume.volume_id).run(context)
    state = observe(context, desired)
    assert (dict(state.devices), dict(state.mounts),
            dict(state.running)) == ({}, {}, {})


def test_observe_ignores_volumes_of_other_nodes(context, make_loopback):
    other = make_loopback("node2", context.cluster_name)
    dataset = identity.dataset_id(context.cluster_name, "db")
    volume = other.create_volume(dataset, SIZE, {})
    other.attach_volume(volume.volume_id, "node2")
    try:
        state = observe(context, desired_for(context, volume))
        assert dict(state.devices) == {}
    finally:
        other.detach_volume(volume.volume_id, "node2")


def test_observe_finds_a_dataset_mounted_from_another_device(context, top):
    """
    A dataset's filesystem mounted here from a device its volume does not
    lead to is still seen, by its stamp, so that it can be unmounted.
    """
    dataset = identity.dataset_id(context.cluster_name, "db")
    volume = CreateVolume(dataset_id=dataset, application="db",
                          size=SIZE).run(context)
    with scratch_device(SIZE) as device:
        make_filesystem(device.path, "ext4", dataset)
        mount(device.path, top + "/data", dataset)
        state = observe(context, desired_for(context, volume))
        assert dict(state.devices) == {}
        assert state.mounts[dataset] == Mount(
            dataset_id=dataset, device=device.path, mountpoint=top + "/data")
        unmount(top + "/data", dataset)
        assert dict(observe(context, desired_for(context, volume)).mounts) \
            == {}
