"""
Finding the block device of a cloud volume on this node by its identity,
never by the device path the cloud reports.

On KVM a Cinder volume shows as ``/dev/disk/by-id/virtio-<first 20
characters of its id>`` (or the SCSI and WWN forms) and
``/sys/block/<dev>/serial`` holds the same 20 characters. Under the
OpenStack emulator a volume attached to a server is a loop device whose
backing file is ``.../<server id>/<volume id>``.
"""

import glob
import os

from blockmover.backends import loopdevice


def _by_id_links(volume_id):
    short = volume_id[:20]
    return [
        "/dev/disk/by-id/virtio-" + short,
        "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_" + short,
        "/dev/disk/by-id/wwn-0x" + volume_id.replace("-", ""),
    ]


def _by_serial(volume_id, sys_block="/sys/block"):
    short = volume_id[:20]
    for serial_file in glob.glob(os.path.join(sys_block, "*", "serial")):
        try:
            with open(serial_file) as f:
                serial = f.read().strip()
        except OSError:
            continue
        if serial and serial == short:
            return "/dev/" + serial_file.split("/")[-2]
    return None


def _by_emulator_loop(volume_id, instance_id):
    for device, backing in loopdevice.backing_files():
        server, volume = backing.split("/")[-2:]
        if volume == volume_id and server == instance_id:
            return device
    return None


def rescan_scsi():
    """
    Ask every SCSI host to look for new disks; new volumes can take seconds
    to appear without it.
    """
    for scan in glob.glob("/sys/class/scsi_host/*/scan"):
        try:
            with open(scan, "w") as f:
                f.write("- - -\n")
        except OSError:
            # A host that cannot scan (or a read-only sysfs) just is not
            # scanned; the by-id lookups still run.
            continue


def find_cloud_device(volume_id, instance_id):
    """
    The device path of ``volume_id`` on this node (server ``instance_id``),
    or None when it is not (yet) visible.
    """
    for link in _by_id_links(volume_id):
        if os.path.exists(link):
            return os.path.realpath(link)
    found = _by_serial(volume_id) or _by_emulator_loop(volume_id,
                                                       instance_id)
    if found is None:
        rescan_scsi()
    return found
