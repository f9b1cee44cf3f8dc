"""
Finding the block device of a cloud volume on this node by its identity,
never by the device path the cloud reports.

On KVM a Cinder volume shows as ``/dev/disk/by-id/virtio-<first 20
characters of its id>`` (or the SCSI and WWN forms) and
``/sys/block/<dev>/serial`` holds the same 20 characters.

The roots (``/dev/disk/by-id``, ``/sys/block``, ``/sys/class/scsi_host``)
are parameters: a node whose links live elsewhere (the OpenStack emulator
makes the same links in a directory per server) is configured with its
own by-id root, and the lookups can be shown on a directory laid out the
same way.
"""

import glob
import os


BY_ID = "/dev/disk/by-id"
SYS_BLOCK = "/sys/block"
SCSI_HOSTS = "/sys/class/scsi_host"


def link_names(volume_id):
    """
    The names a volume's device has in a by-id directory.
    """
    short = volume_id[:20]
    return ["virtio-" + short, "scsi-0QEMU_QEMU_HARDDISK_" + short,
            "wwn-0x" + volume_id.replace("-", "")]


def _by_serial(volume_id, sys_block=SYS_BLOCK):
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


def rescan_scsi(scsi_hosts=SCSI_HOSTS):
    """
    Ask every SCSI host to look for new disks; new volumes can take seconds
    to appear without it.
    """
    for scan in glob.glob(os.path.join(scsi_hosts, "*", "scan")):
        try:
            with open(scan, "w") as f:
                f.write("- - -\n")
        except OSError:
            # A host that cannot scan (or a read-only sysfs) just is not
            # scanned; the by-id lookups still run.
            continue


def find_cloud_device(volume_id, by_id=BY_ID, sys_block=SYS_BLOCK,
                      scsi_hosts=SCSI_HOSTS):
    """
    The device path of ``volume_id`` on this node: a link in ``by_id``,
    else the device whose serial is the volume's; or None when it is not
    (yet) visible, and then the SCSI hosts are asked to rescan, so a later
    look may find it. Reads only this node.
    """
    for name in link_names(volume_id):
        link = os.path.join(by_id, name)
        if os.path.exists(link):
            return os.path.realpath(link)
    found = _by_serial(volume_id, sys_block)
    if found is None:
        rescan_scsi(scsi_hosts)
    return found
