"""
Scratch block devices and directories for node-side tests: loop devices on
uniquely named sparse files, removed afterwards with whatever this test
mounted on them. Only what a test made here is ever unmounted or detached.
"""

import contextlib
import os
import shutil
import tempfile

from blockmover.command import run

from agents.mounts import current_mounts, mounts_of


class ScratchDevice(object):
    """
    A loop device on a sparse file of ``size`` bytes.
    """

    def __init__(self, directory, size):
        self.backing = os.path.join(directory, "disk.img")
        with open(self.backing, "wb") as f:
            f.truncate(size)
        self.path = run(["losetup", "--find", "--show",
                         self.backing]).strip()

    def grow(self, size):
        """
        Grow the backing file to ``size`` bytes and tell the loop device.
        """
        with open(self.backing, "r+b") as f:
            f.truncate(size)
        run(["losetup", "--set-capacity", self.path])

    def remove(self):
        for mountpoint in reversed(mounts_of(self.path)):
            run(["umount", mountpoint])
        run(["losetup", "-d", self.path])


@contextlib.contextmanager
def scratch_device(size):
    """
    A ``ScratchDevice`` of ``size`` bytes for the duration of the block;
    afterwards it is unmounted, detached and its file deleted, and the test
    fails if the loop device is still there.
    """
    directory = tempfile.mkdtemp(prefix="blockmover-scratch-")
    device = None
    try:
        device = ScratchDevice(directory, size)
        yield device
    finally:
        if device is not None:
            device.remove()
            left = run(["losetup", "-j", device.backing])
        shutil.rmtree(directory)
    assert not left.strip(), "loop device left behind: %s" % (left,)


def unmount_under(directory):
    """
    Unmount everything mounted at or below ``directory`` (a directory this
    test made, so whatever is mounted there is the test's), deepest first.
    """
    prefix = os.path.realpath(directory)
    for entry in reversed(current_mounts()):
        if entry.mountpoint == prefix or \
                entry.mountpoint.startswith(prefix + "/"):
            run(["umount", entry.mountpoint])


@contextlib.contextmanager
def scratch_directory():
    """
    A fresh directory, removed afterwards with whatever is mounted in it.
    """
    directory = os.path.realpath(tempfile.mkdtemp(prefix="blockmover-test-"))
    try:
        yield directory
    finally:
        unmount_under(directory)
        shutil.rmtree(directory)
