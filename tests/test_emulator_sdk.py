"""
The real openstacksdk against the emulator: volumes, pagination, metadata
filters, extend, attach to a loop device, detach, delete, quotas.
"""

import os

import pytest

from blockmover.backends.loopdevice import devices_backing, devices_under
from tests.emulator_process import RunningEmulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.3, "detach": 0.3, "extend": 0.1,
        "delete": 0.05}


@pytest.fixture(scope="module")
def cloud():
    emulator = RunningEmulator({"latency": FAST,
                                "quotas": {"volumes": 8, "gigabytes": 20}})
    emulator.start()
    yield emulator
    emulator.cleanup()


@pytest.fixture(scope="module")
def conn(cloud):
    return cloud.connect()


@pytest.fixture
def volumes(conn):
    """
    Creates volumes for one test and deletes them after it.
    """
    made = []

    def create(**kwargs):
        kwargs.setdefault("size", 1)
        volume = conn.block_storage.create_volume(**kwargs)
        made.append(volume.id)
        return volume
    yield create
    for volume_id in made:
        volume = conn.block_storage.find_volume(volume_id)
        if volume is None:
            continue
        if volume.status not in ("available", "error", "deleting"):
            volume = conn.block_storage.wait_for_status(
                volume, "available", failures=["error"], wait=20,
                interval=0.1)
        conn.block_storage.delete_volume(volume)
        conn.block_storage.wait_for_delete(volume, wait=20, interval=0.1)


def available(conn, volume):
    # Re-fetch first: wait_for_status returns at once on a stale object.
    return conn.block_storage.wait_for_status(
        conn.block_storage.get_volume(volume.id), "available",
        failures=["error"], wait=20, interval=0.05)


def test_create_get_and_list(conn, volumes):
    volume = volumes(name="sdk-create", size=2, metadata={"a": "b"})
    assert volume.status == "creating"
    volume = available(conn, volume)
    assert (volume.name, volume.size, volume.metadata) == (
        "sdk-create", 2, {"a": "b"})
    assert volume.id in [v.id for v in conn.block_storage.volumes()]


def test_list_paginates_newest_first(conn, volumes):
    made = [volumes(name="page-%d" % i, metadata={"page-test": "yes"}).id
            for i in range(5)]
    listed = [v.id for v in conn.block_storage.volumes(
        limit=2, properties="{'page-test': 'yes'}")]
    assert listed == list(reversed(made))


def test_metadata_filter_selects(conn, volumes):
    wanted = volumes(name="tagged", metadata={"colour": "blue"})
    volumes(name="other", metadata={"colour": "red"})
    found = [v.id for v in conn.block_storage.volumes(
        properties="{'colour': 'blue'}")]
    assert found == [wanted.id]


def test_extend_grows_the_file(cloud, conn, volumes):
    volume = available(conn, volumes(name="grow"))
    conn.block_storage.extend_volume(volume, 3)
    volume = available(conn, volume)
    assert volume.size == 3
    path = os.path.join(cloud.state_dir, "volumes", volume.id)
    assert os.path.getsize(path) == 3 * 1024 ** 3


def test_attach_makes_a_loop_device_and_detach_removes_it(
        cloud, conn, volumes):
    volume = available(conn, volumes(name="attach"))
    server = cloud.servers["node1"]
    attachment = conn.compute.create_volume_attachment(server, volume.id)
    assert attachment.volume_id == volume.id
    volume = conn.block_storage.wait_for_status(
        conn.block_storage.get_volume(volume.id), "in-use",
        failures=["error", "available"], wait=20, interval=0.05)
    assert [a["server_id"] for a in volume.attachments] == [server]
    state_dir = os.path.realpath(cloud.state_dir)
    path = os.path.join(state_dir, "volumes", volume.id)
    link = os.path.join(state_dir, "attachments", server, volume.id)
    # The device is backed by a hard link named after the server, so each
    # server sees only its own volumes' devices.
    assert os.path.samefile(path, link)
    devices = devices_backing(link)
    assert len(devices) == 1
    assert devices_backing(path) == []
    loop = os.path.basename(devices[0])
    with open("/sys/block/%s/loop/backing_file" % (loop,)) as f:
        assert f.read().strip() == link
    listed = list(conn.compute.volume_attachments(server))
    assert [a.volume_id for a in listed] == [volume.id]

    conn.compute.delete_volume_attachment(server, volume.id)
    volume = available(conn, volume)
    assert volume.attachments == []
    assert not os.path.exists(link)
    assert os.path.exists(path)
    assert devices_under(state_dir) == []


def test_data_follows_the_volume_between_servers(cloud, conn, volumes):
    volume = available(conn, volumes(name="move"))
    state_dir = os.path.realpath(cloud.state_dir)
    marker = b"moved-" + volume.id.encode("ascii")
    for server in (cloud.servers["node1"], cloud.servers["node2"]):
        conn.compute.create_volume_attachment(server, volume.id)
        conn.block_storage.wait_for_status(
            conn.block_storage.get_volume(volume.id), "in-use",
            failures=["error", "available"], wait=20, interval=0.05)
        [device] = devices_backing(
            os.path.join(state_dir, "attachments", server, volume.id))
        fd = os.open(device, os.O_RDWR)
        try:
            if server == cloud.servers["node1"]:
                os.pwrite(fd, marker, 4096)
                os.fsync(fd)
            else:
                assert os.pread(fd, len(marker), 4096) == marker
        finally:
            os.close(fd)
        conn.compute.delete_volume_attachment(server, volume.id)
        available(conn, volume)


def test_quota_refuses_with_413(conn, volumes):
    from openstack import exceptions
    with pytest.raises(exceptions.HttpException) as error:
        volumes(name="too-big", size=21)
    assert error.value.status_code == 413
    assert "VolumeSizeExceedsAvailableQuota" in str(error.value)
