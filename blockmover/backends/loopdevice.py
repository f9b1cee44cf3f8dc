"""
Loop devices on this machine, found by the file that backs them.

A loop device is known by what ``/sys/block/loopN/loop/backing_file``
says, never by a path stored somewhere: devices come and go (a reboot, an
operator's ``losetup -d``) and numbers are reused. Every function here
blocks; call them off the reactor.
"""

import glob
import os

from blockmover.backends.interface import BlockDeviceError
from blockmover.command import CommandFailed, run
from blockmover.poll import Backoff, Timeout, poll

# The kernel appends this to backing_file once the file has been unlinked.
_DELETED = " (deleted)"

# Attaching races with every other losetup on the machine for a free device;
# detaching waits for udev and other openers to let go.
ATTACH_DEADLINE = 20.0
DETACH_DEADLINE = 20.0
_BACKOFF = Backoff(initial=0.05, factor=1.5, maximum=1.0)


class LoopDeviceError(BlockDeviceError):
    """
    A loop device could not be made, resized or removed.
    """


class LoopDeviceBusy(LoopDeviceError):
    """
    A loop device is still open (mounted, or held by a process) after it
    was asked to go away.
    """
    def __init__(self, path, devices):
        self.path = path
        self.devices = list(devices)
        LoopDeviceError.__init__(
            self, "loop device %s of %s is still in use; unmount it (and "
            "stop whatever holds it open), then detach again"
            % (", ".join(self.devices), path))


def backing_files():
    """
    Pairs of (device path, backing file as the kernel reports it, with a
    `` (deleted)`` suffix once the file was unlinked) for every bound loop
    device on the machine.
    """
    pairs = []
    for name in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(name) as f:
                backing = f.read().rstrip("\n")
        except FileNotFoundError:
            # Unbound between the glob and the read.
            continue
        device = "/dev/" + name.split("/")[3]
        pairs.append((device, backing))
    return pairs


def devices_backing(path, include_deleted=False):
    """
    The loop devices (``/dev/loopN``) whose backing file is ``path`` (an
    absolute, resolved path), sorted. With ``include_deleted``, devices
    whose backing file was ``path`` before it was unlinked count too.
    """
    wanted = {path}
    if include_deleted:
        wanted.add(path + _DELETED)
    return sorted((device for device, backing in backing_files()
                   if backing in wanted), key=_device_number)


def devices_under(directory):
    """
    Every loop device whose backing file is (or was, before it was
    unlinked) inside ``directory``, as (device, backing file) pairs.
    """
    prefix = directory.rstrip("/") + "/"
    found = []
    for device, backing in backing_files():
        if backing.endswith(_DELETED):
            backing = backing[:-len(_DELETED)]
        if backing.startswith(prefix):
            found.append((device, backing))
    return sorted(found, key=lambda pair: _device_number(pair[0]))


def _device_number(device):
    return int(device[len("/dev/loop"):])


def attach(path):
    """
    A loop device backed by ``path``: the first existing one, else a new one
    made with ``losetup --find --show``. Idempotent, but not safe against a
    concurrent ``attach`` of the same file: the caller holds a lock.
    """
    if not os.path.isfile(path):
        raise LoopDeviceError("cannot attach %s: the file is missing; the "
                              "volume's data is gone" % (path,))
    errors = []

    def try_attach():
        existing = devices_backing(path)
        if existing:
            return existing[0]
        try:
            return run(["losetup", "--find", "--show", path]).strip()
        except CommandFailed as e:
            # Another losetup may have taken the free device we were given.
            errors.append(e)
            return None

    try:
        return poll(try_attach, ATTACH_DEADLINE, "a loop device for %s"
                    % (path,), backoff=_BACKOFF)
    except Timeout:
        raise LoopDeviceError("could not make a loop device for %s: %s; "
                              "check free loop devices with losetup -a"
                              % (path, errors[-1] if errors else "timed out"))


def detach_all(path):
    """
    Remove every loop device backed by ``path`` (also one whose file was
    unlinked) and wait until none remains. Idempotent.

    :raise LoopDeviceBusy: a device is still open after the deadline.
    """
    def gone():
        remaining = devices_backing(path, include_deleted=True)
        if not remaining:
            return True
        for device in remaining:
            # Gone already, or freed by autoclear in between: fine, the next
            # look decides.
            run(["losetup", "--detach", device], check=False)
        return None

    try:
        poll(gone, DETACH_DEADLINE, "loop devices of %s to go" % (path,),
             backoff=_BACKOFF)
    except Timeout:
        raise LoopDeviceBusy(path, devices_backing(path, include_deleted=True))


def refresh_capacity(path):
    """
    Make every loop device backed by ``path`` show the file's current size.
    """
    for device in devices_backing(path):
        run(["losetup", "--set-capacity", device])
