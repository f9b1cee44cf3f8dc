"""
Finding a cloud volume's device on this node by its identity: the by-id
links and serials a KVM guest has, on a directory laid out like /dev and
/sys (the emulator's per-server by-id directories are such a root).
"""

import os

import pytest

from blockmover.backends.devices import find_cloud_device

VOLUME = "3f2a1c9e-7b4d-4e8a-9c1f-0d5e6b7a8c9d"


@pytest.fixture
def roots(tmp_path):
    """
    Empty stand-ins for /dev/disk/by-id, /sys/block and
    /sys/class/scsi_host with one SCSI host.
    """
    by_id = tmp_path / "by-id"
    sys_block = tmp_path / "block"
    scsi = tmp_path / "scsi_host"
    for directory in (by_id, sys_block, scsi / "host0"):
        directory.mkdir(parents=True)
    (scsi / "host0" / "scan").write_text("")
    return {"by_id": str(by_id), "sys_block": str(sys_block),
            "scsi_hosts": str(scsi)}


def find(volume_id, roots):
    return find_cloud_device(volume_id, **roots)


def rescanned(roots):
    with open(os.path.join(roots["scsi_hosts"], "host0", "scan")) as f:
        return f.read() == "- - -\n"


@pytest.mark.parametrize("name", [
    "virtio-" + VOLUME[:20],
    "scsi-0QEMU_QEMU_HARDDISK_" + VOLUME[:20],
    "wwn-0x" + VOLUME.replace("-", ""),
])
def test_by_id_link(roots, tmp_path, name):
    device = tmp_path / "vdc"
    device.write_text("")
    os.symlink(str(device), os.path.join(roots["by_id"], name))
    assert find(VOLUME, roots) == os.path.realpath(str(device))
    assert not rescanned(roots)


def test_by_serial(roots):
    for name, serial in (("vdb", "0" * 20), ("vdc", VOLUME[:20])):
        os.mkdir(os.path.join(roots["sys_block"], name))
        with open(os.path.join(roots["sys_block"], name, "serial"), "w") as f:
            f.write(serial + "\n")
    assert find(VOLUME, roots) == "/dev/vdc"


def test_absent_device_is_none_and_asks_for_a_rescan(roots):
    os.mkdir(os.path.join(roots["sys_block"], "vdb"))
    with open(os.path.join(roots["sys_block"], "vdb", "serial"), "w") as f:
        f.write("0" * 20)
    assert find(VOLUME, roots) is None
    assert rescanned(roots)


def test_a_link_of_another_volume_is_not_this_one(roots, tmp_path):
    device = tmp_path / "vdc"
    device.write_text("")
    os.symlink(str(device), os.path.join(
        roots["by_id"], "virtio-" + "0b0b0b0b-7b4d-4e8a-9c1f"[:20]))
    assert find(VOLUME, roots) is None
