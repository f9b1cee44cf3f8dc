"""
Filesystems and mounts on real loop devices.
"""

import os
import signal
import subprocess
import sys
import uuid

import pytest

from blockmover import identity
from blockmover.blockdevice import device_size
from blockmover.command import run
from blockmover.poll import poll
from blockmover.units import MiB

from agents import filesystem, mounts
from tests.scratch_devices import scratch_device, scratch_directory

EXT4_SIZE = 64 * MiB
# mkfs.xfs refuses filesystems smaller than 300M.
XFS_SIZE = 320 * MiB


def new_dataset():
    return str(uuid.uuid4())


@pytest.mark.parametrize("kind,size", [("ext4", EXT4_SIZE),
                                       ("xfs", XFS_SIZE)])
def test_make_filesystem_stamps_dataset(kind, size):
    dataset = new_dataset()
    with scratch_device(size) as device:
        assert filesystem.probe(device.path).blank
        filesystem.make_filesystem(device.path, kind, dataset)
        found = filesystem.probe(device.path)
        assert (found.type, found.uuid, found.label) == (
            kind, dataset, identity.filesystem_label(dataset))
        assert device_size(device.path) == size
        fs_size = filesystem.filesystem_size(device.path, kind)
        assert size * 0.9 < fs_size <= size


def test_make_filesystem_refuses_a_filesystem():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device:
        filesystem.make_filesystem(device.path, "ext4", dataset)
        for kind in ("ext4", "xfs"):
            with pytest.raises(filesystem.FilesystemPresent) as caught:
                filesystem.make_filesystem(device.path, kind, new_dataset())
            assert device.path in str(caught.value)
        assert filesystem.probe(device.path).uuid == dataset


def test_make_filesystem_refuses_any_signature():
    with scratch_device(EXT4_SIZE) as device:
        run(["mkswap", device.path])
        with pytest.raises(filesystem.FilesystemPresent) as caught:
            filesystem.make_filesystem(device.path, "ext4", new_dataset())
        assert "swap" in str(caught.value)
        assert filesystem.probe(device.path).type == "swap"


def test_mount_refuses_wrong_uuid():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device, scratch_directory() as top:
        mountpoint = os.path.join(top, "data")
        with pytest.raises(mounts.WrongFilesystem):
            mounts.mount(device.path, mountpoint, dataset)
        other = new_dataset()
        filesystem.make_filesystem(device.path, "ext4", other)
        with pytest.raises(mounts.WrongFilesystem) as caught:
            mounts.mount(device.path, mountpoint, dataset)
        assert dataset in str(caught.value) and other in str(caught.value)
        assert mounts.mounts_of(device.path) == []


def test_mount_and_unmount_are_idempotent():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device, scratch_directory() as top:
        mountpoint = os.path.join(top, "deep", "data")
        filesystem.make_filesystem(device.path, "ext4", dataset)
        mounts.mount(device.path, mountpoint, dataset)
        mounts.mount(device.path, mountpoint, dataset)
        assert mounts.mounts_of(device.path) == [mountpoint]
        with open(os.path.join(mountpoint, "kept"), "w") as f:
            f.write("data")
        mounts.unmount(mountpoint, dataset)
        mounts.unmount(mountpoint, dataset)
        assert mounts.mounts_of(device.path) == []
        assert not os.path.exists(os.path.join(mountpoint, "kept"))
        mounts.mount(device.path, mountpoint, dataset)
        with open(os.path.join(mountpoint, "kept")) as f:
            assert f.read() == "data"
        mounts.unmount(mountpoint)


def test_mount_refuses_a_second_place():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device, scratch_directory() as top:
        filesystem.make_filesystem(device.path, "ext4", dataset)
        mounts.mount(device.path, os.path.join(top, "a"), dataset)
        with pytest.raises(mounts.MountpointTaken):
            mounts.mount(device.path, os.path.join(top, "b"), dataset)
        assert mounts.mounts_of(device.path) == [os.path.join(top, "a")]


def test_unmount_leaves_another_dataset_alone():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device, scratch_directory() as top:
        filesystem.make_filesystem(device.path, "ext4", dataset)
        mounts.mount(device.path, top + "/data", dataset)
        mounts.unmount(top + "/data", new_dataset())
        assert mounts.mounts_of(device.path) == [top + "/data"]


def test_unmount_refuses_while_busy():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device, scratch_directory() as top:
        mountpoint = top + "/data"
        filesystem.make_filesystem(device.path, "ext4", dataset)
        mounts.mount(device.path, mountpoint, dataset)
        held = os.path.join(mountpoint, "held")
        holder = subprocess.Popen([
            sys.executable, "-c",
            "import sys, time\nf = open(sys.argv[1], 'w')\n"
            "f.write('x'); f.flush()\ntime.sleep(120)", held])
        try:
            poll(lambda: True if os.path.exists(held) else None, 10,
                 "the holder to open its file")
            with pytest.raises(mounts.FilesystemBusy) as caught:
                mounts.unmount(mountpoint, dataset)
            assert holder.pid in [pid for pid, _ in caught.value.holders]
            assert "pid %d" % (holder.pid,) in str(caught.value)
            assert mounts.mounts_of(device.path) == [mountpoint]
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        mounts.unmount(mountpoint, dataset)
        assert mounts.mounts_of(device.path) == []


def test_grow_ext4_offline():
    dataset = new_dataset()
    with scratch_device(EXT4_SIZE) as device, scratch_directory() as top:
        filesystem.make_filesystem(device.path, "ext4", dataset)
        mounts.mount(device.path, top + "/data", dataset)
        with open(top + "/data/kept", "w") as f:
            f.write("data")
        mounts.unmount(top + "/data")
        before = filesystem.filesystem_size(device.path, "ext4")
        device.grow(2 * EXT4_SIZE)
        filesystem.grow_ext4(device.path)
        after = filesystem.filesystem_size(device.path, "ext4")
        assert after > before + EXT4_SIZE * 0.9
        filesystem.grow_ext4(device.path)
        assert filesystem.filesystem_size(device.path, "ext4") == after
        mounts.mount(device.path, top + "/data", dataset)
        with open(top + "/data/kept") as f:
            assert f.read() == "data"
        mounts.unmount(top + "/data")


def test_grow_xfs_online():
    dataset = new_dataset()
    with scratch_device(XFS_SIZE) as device, scratch_directory() as top:
        filesystem.make_filesystem(device.path, "xfs", dataset)
        mountpoint = top + "/data"
        mounts.mount(device.path, mountpoint, dataset)
        before = filesystem.filesystem_size(device.path, "xfs", mountpoint)
        device.grow(XFS_SIZE + 128 * MiB)
        filesystem.grow_xfs(mountpoint)
        after = filesystem.filesystem_size(device.path, "xfs", mountpoint)
        assert after > before + 100 * MiB
        assert os.statvfs(mountpoint).f_blocks * \
            os.statvfs(mountpoint).f_frsize > before
        mounts.unmount(mountpoint)
