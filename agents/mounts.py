"""
Mounts on this node: what is mounted where (the mount namespace the agent
runs in, read by ``blockmover.mountinfo``), mounting a dataset's filesystem
only after checking its stamp, and unmounting that refuses while busy.

Blocking: call from a thread, never on the reactor.
"""

import os

from blockmover.command import CommandFailed, run
from blockmover.mountinfo import process_mounts

from blockmover.identity import stamped

from agents.filesystem import FilesystemError, probe


class WrongFilesystem(FilesystemError):
    """
    The device's filesystem does not carry the dataset's stamp, so it is not
    mounted: the device is not the volume the plan names.
    """
    def __init__(self, device, dataset_id, found):
        self.device = device
        self.dataset_id = dataset_id
        self.found = found
        FilesystemError.__init__(
            self, "%s holds filesystem %s, not dataset %s's; refusing to "
            "mount it. Check which volume is attached at %s."
            % (device, found or "(none)", dataset_id, device))


class MountpointTaken(FilesystemError):
    """
    Something else is already mounted where the dataset should go, or the
    dataset's device is mounted somewhere else.
    """


class FilesystemBusy(FilesystemError):
    """
    The filesystem cannot be unmounted because processes use it.
    """
    def __init__(self, mountpoint, holders):
        self.mountpoint = mountpoint
        self.holders = holders
        if holders:
            who = ", ".join("%s (pid %d)" % (name, pid)
                            for pid, name in holders)
        else:
            who = "unknown processes"
        FilesystemError.__init__(
            self, "%s is busy, held by %s; stop them, then unmount again"
            % (mountpoint, who))


def current_mounts():
    """
    Every mount of this node's mount namespace, in mount order.
    """
    return process_mounts()


def device_number(device):
    """
    The ``(major, minor)`` of a block device path, or None if it is gone.
    """
    try:
        rdev = os.stat(device).st_rdev
    except FileNotFoundError:
        return None
    return (os.major(rdev), os.minor(rdev))


def mounts_of(device, mounts=None):
    """
    The mountpoints where ``device`` is mounted, matched by device number
    (not by path, which may be a symlink or another name of it).
    """
    number = device_number(device)
    if number is None:
        return []
    if mounts is None:
        mounts = current_mounts()
    return [m.mountpoint for m in mounts if m.dev == number]


def mount_at(mountpoint, mounts=None):
    """
    The topmost ``blockmover.mountinfo.MountEntry`` at ``mountpoint``, or
    None.
    """
    if mounts is None:
        mounts = current_mounts()
    mountpoint = os.path.normpath(mountpoint)
    found = [m for m in mounts if m.mountpoint == mountpoint]
    return found[-1] if found else None


def mount(device, mountpoint, dataset_id):
    """
    Mount ``device`` at ``mountpoint`` (made if missing) once its
    filesystem's UUID is ``dataset_id``. Idempotent: already mounted there,
    nothing happens.

    :raise WrongFilesystem: the filesystem is not the dataset's.
    :raise MountpointTaken: another filesystem is mounted there, or the
        device is mounted elsewhere.
    """
    mountpoint = os.path.normpath(mountpoint)
    found = probe(device)
    if not stamped(found.uuid, dataset_id):
        raise WrongFilesystem(device, dataset_id, found.uuid)
    mounts = current_mounts()
    where = mounts_of(device, mounts)
    if mountpoint in where:
        return
    if where:
        raise MountpointTaken(
            "%s is already mounted at %s; unmount it there before mounting "
            "it at %s" % (device, ", ".join(where), mountpoint))
    top = mount_at(mountpoint, mounts)
    if top is not None and top.mountpoint != "/":
        raise MountpointTaken(
            "%s is already a mountpoint of %s; unmount that before mounting "
            "dataset %s there" % (mountpoint, top.source, dataset_id))
    os.makedirs(mountpoint, exist_ok=True)
    run(["mount", "-t", found.type, device, mountpoint])


def holders(mountpoint):
    """
    ``(pid, command name)`` of the processes using the filesystem mounted
    at ``mountpoint``, as ``fuser -m`` finds them; empty if fuser is
    missing.
    """
    try:
        result = run(["fuser", "-m", mountpoint], check=False)
    except CommandFailed:
        return []
    found = []
    for word in result.stdout.split():
        pid = "".join(c for c in word if c.isdigit())
        if not pid:
            continue
        try:
            with open("/proc/%s/comm" % (pid,)) as f:
                name = f.read().strip()
        except OSError:
            name = "?"
        found.append((int(pid), name))
    return found


def unmount(mountpoint, dataset_id=None):
    """
    Unmount the filesystem at ``mountpoint``; never lazily. Idempotent:
    nothing mounted there, nothing happens. With ``dataset_id``, a
    filesystem there that is not the dataset's is left alone.

    :raise FilesystemBusy: processes use it.
    """
    mountpoint = os.path.normpath(mountpoint)
    top = mount_at(mountpoint)
    if top is None or mountpoint == "/":
        return
    if dataset_id is not None and not stamped(probe(top.source).uuid,
                                              dataset_id):
        return
    result = run(["umount", mountpoint], check=False)
    if result.returncode == 0:
        return
    if "busy" in result.stderr:
        raise FilesystemBusy(mountpoint, holders(mountpoint))
    raise CommandFailed(["umount", mountpoint], result.returncode,
                        result.stdout, result.stderr)
