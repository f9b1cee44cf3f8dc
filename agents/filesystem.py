"""
Filesystems on block devices: what a device holds (probed, never from a
cache), making a filesystem stamped with its dataset id only on a blank
device, and growing one to fill its device.

Blocking: call from a thread, never on the reactor.
"""

import re

from pyrsistent import PClass, field

from blockmover import identity
from blockmover.command import CommandFailed, run
from blockmover.model import FILESYSTEMS


class FilesystemError(Exception):
    """
    Base of the errors of filesystems and mounts a person may meet.
    """


class FilesystemPresent(FilesystemError):
    """
    The device already holds a filesystem or another signature, so no
    filesystem is made on it.
    """
    def __init__(self, device, found):
        self.device = device
        self.found = found
        FilesystemError.__init__(
            self, "%s already holds %s; refusing to make a filesystem on "
            "it. Check that the right volume is attached; wipe it by hand "
            "only if its data is not wanted." % (device, found))


class UnsupportedFilesystem(FilesystemError):
    def __init__(self, filesystem):
        FilesystemError.__init__(
            self, "filesystem %r is not supported: use one of %s"
            % (filesystem, ", ".join(FILESYSTEMS)))


class FilesystemMounted(FilesystemError):
    """
    The operation needs the filesystem unmounted.
    """


class FilesystemNotMounted(FilesystemError):
    """
    The operation needs the filesystem mounted.
    """


class Probe(PClass):
    """
    What ``blkid -p`` found on a device: the filesystem's type, UUID and
    label, or ``signature`` alone for something that is no filesystem (a
    partition table, RAID member ...). All None on a blank device.
    """
    type = field(initial=None)
    uuid = field(initial=None)
    label = field(initial=None)
    signature = field(initial=None)

    @property
    def blank(self):
        return self.signature is None


def probe(device):
    """
    Probe ``device`` directly (bypassing blkid's cache) for any signature.
    A path that does not exist probes blank.
    """
    result = run(["blkid", "-p", "-o", "export", device], check=False)
    if result.returncode == 2:
        return Probe()
    if result.returncode == 8:
        # Several signatures at once: certainly not blank.
        return Probe(signature="several signatures (%s)"
                     % (result.stderr.strip(),))
    if result.returncode != 0:
        raise CommandFailed(["blkid", "-p", "-o", "export", device],
                            result.returncode, result.stdout, result.stderr)
    values = dict(line.split("=", 1) for line in result.stdout.splitlines()
                  if "=" in line)
    kind = values.get("TYPE") or values.get("PTTYPE") or "a signature"
    return Probe(type=values.get("TYPE"), uuid=values.get("UUID"),
                 label=values.get("LABEL"),
                 signature="%s%s" % (kind, " filesystem"
                                     if "TYPE" in values else ""))


def make_filesystem(device, filesystem, dataset_id):
    """
    Make a ``filesystem`` (ext4 or xfs) on ``device`` whose UUID is
    ``dataset_id`` and whose label is the dataset's, only if the device
    holds no signature of any kind.

    :raise FilesystemPresent: the device is not blank.
    :raise UnsupportedFilesystem: neither ext4 nor xfs.
    """
    label = identity.filesystem_label(dataset_id)
    if filesystem == "ext4":
        # No -F: mke2fs keeps its own refusal of a device in use.
        argv = ["mkfs.ext4", "-q", "-U", dataset_id, "-L", label, device]
    elif filesystem == "xfs":
        # No -f: mkfs.xfs keeps its own refusal of an existing signature.
        argv = ["mkfs.xfs", "-q", "-m", "uuid=" + dataset_id, "-L", label,
                device]
    else:
        raise UnsupportedFilesystem(filesystem)
    found = probe(device)
    if not found.blank:
        raise FilesystemPresent(device, found.signature)
    run(argv, input="")


_XFS_DATA = re.compile(r"^data\s+=\s+bsize=(\d+)\s+blocks=(\d+)", re.M)


def filesystem_size(device, filesystem, mountpoint=None):
    """
    The size in bytes of the ``filesystem`` on ``device`` (which may be
    mounted; xfs is read at ``mountpoint`` when it is).
    """
    if filesystem == "ext4":
        out = run(["dumpe2fs", "-h", device])
        fields = dict(line.split(":", 1) for line in out.splitlines()
                      if ":" in line)
        return (int(fields["Block count"]) * int(fields["Block size"]))
    if filesystem == "xfs":
        out = run(["xfs_info", mountpoint or device])
        match = _XFS_DATA.search(out)
        if match is None:
            raise FilesystemError("cannot read the size of the xfs "
                                  "filesystem on %s" % (device,))
        return int(match.group(1)) * int(match.group(2))
    raise UnsupportedFilesystem(filesystem)


def grow_ext4(device):
    """
    Check, then grow the unmounted ext4 filesystem on ``device`` to fill
    it. Idempotent: a filesystem already filling its device is left as it
    is. The caller makes sure it is not mounted.
    """
    result = run(["e2fsck", "-f", "-p", device], check=False)
    # 1: errors corrected; 2: corrected, reboot advised (not for us).
    if result.returncode not in (0, 1, 2):
        raise FilesystemError(
            "e2fsck found errors it could not fix on %s (exit %d); run "
            "e2fsck -f on it by hand before growing it"
            % (device, result.returncode))
    run(["resize2fs", device])


def grow_xfs(mountpoint):
    """
    Grow the mounted xfs filesystem at ``mountpoint`` to fill its device.
    Idempotent.
    """
    run(["xfs_growfs", mountpoint])
