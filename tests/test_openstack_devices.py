"""
Finding a cloud volume's device on this node by its identity: the by-id
links and serials a KVM guest has (on a directory laid out like /dev and
/sys), and the emulator's loop devices backed by per-server links.
"""

import os
import shutil
import tempfile
import uuid

import pytest

from blockmover.backends import loopdevice
from blockmover.backends.devices import find_cloud_device

VOLUME = "3f2a1c9e-7b4d-4e8a-9c1f-0d5e6b7a8c9d"
SERVER = "5b1e2f3a-0c4d-4e5f-8a9b-1c2d3e4f5a6b"


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


def find(volume_id, roots, server=SERVER):
    return find_cloud_device(volume_id, server, **roots)


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


@pytest.fixture
def emulator_dir():
    """
    A directory laid out like the emulator's state; afterwards every loop
    device backed by a file in it is removed.
    """
    directory = os.path.realpath(
        tempfile.mkdtemp(prefix="blockmover-devices-"))
    try:
        yield directory
    finally:
        for _device, backing in loopdevice.devices_under(directory):
            loopdevice.detach_all(backing)
        shutil.rmtree(directory)


def attachment(directory, server, volume_id):
    link = os.path.join(directory, "attachments", server, volume_id)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    with open(link, "wb") as f:
        f.truncate(1024 * 1024)
    return link, loopdevice.attach(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
def test_emulator_loop_device_of_this_server_only(roots, emulator_dir):
    volume_id = str(uuid.uuid4())
    link, device = attachment(emulator_dir, SERVER, volume_id)
    assert find(volume_id, roots) == device
    assert find(volume_id, roots, server=str(uuid.uuid4())) is None
    # Gone once its link is unlinked, even while the device lingers.
    os.remove(link)
    assert find(volume_id, roots) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
def test_loop_device_outside_an_attachments_directory_is_not_a_volume(
        roots, emulator_dir):
    volume_id = str(uuid.uuid4())
    path = os.path.join(emulator_dir, "elsewhere", SERVER, volume_id)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.truncate(1024 * 1024)
    loopdevice.attach(path)
    assert find(volume_id, roots) is None
