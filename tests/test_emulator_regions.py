"""
Several regions in one emulator, and several emulators on one machine:
openstacksdk picks a region's endpoints by its clouds.yaml's region_name,
each region keeps its own volumes, servers, quotas, faults and counters
(through a restart too), a volume attaches only to a server of its own
region, and two emulators side by side share nothing.
"""

import os

import pytest
from openstack import exceptions as os_exceptions

from blockmover.backends.loopdevice import devices_backing, devices_under
from blockmover.emulator.admin_client import AdminRefused, EmulatorAdmin
from tests.emulator_process import RunningEmulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.1, "detach": 0.1, "extend": 0.05,
        "delete": 0.05}
TWO = "RegionTwo"


@pytest.fixture(scope="module")
def cloud():
    emulator = RunningEmulator({
        "regions": ["RegionOne", TWO],
        "latency": FAST,
        "quotas": {"volumes": 2},
        "servers": {"node1": {}, "node3": {"region": TWO}}})
    emulator.start()
    yield emulator
    emulator.cleanup()


def create(cloud, name, region=None):
    status, _, body = cloud.request(
        "POST", "%s/v3/volumes" % (cloud.prefix(region),),
        {"volume": {"size": 1, "name": name}})
    assert status == 202, body
    volume_id = body["volume"]["id"]
    cloud.wait_for_status(volume_id, "available", region=region)
    return volume_id


def remove(cloud, volume_id, region=None):
    status, _, _ = cloud.request("DELETE", "%s/v3/volumes/%s"
                                 % (cloud.prefix(region), volume_id))
    assert status == 202
    cloud.wait_for_status(volume_id, None, region=region)


def attach(cloud, server, volume_id, region=None):
    return cloud.request(
        "POST", "%s/compute/v2.1/servers/%s/os-volume_attachments"
        % (cloud.prefix(region), cloud.servers[server]),
        {"volumeAttachment": {"volumeId": volume_id}})


def detach(cloud, server, volume_id, region=None):
    status, _, _ = cloud.request(
        "DELETE", "%s/compute/v2.1/servers/%s/os-volume_attachments/%s"
        % (cloud.prefix(region), cloud.servers[server], volume_id))
    assert status == 202
    cloud.wait_for_status(volume_id, "available", region=region)


def test_the_catalog_lists_each_region(cloud):
    status, _, body = cloud.request(
        "POST", "/identity/v3/auth/tokens", token=False, body={
            "auth": {"identity": {"methods": ["password"], "password": {
                "user": {"name": "demo", "password": "demo-password",
                         "domain": {"name": "Default"}}}}}})
    assert status == 201
    endpoints = {(entry["type"], e["region"], e["region_id"]): e["url"]
                 for entry in body["token"]["catalog"]
                 for e in entry["endpoints"]}
    for kind in ("block-storage", "volumev3", "compute"):
        one = endpoints[(kind, "RegionOne", "RegionOne")]
        two = endpoints[(kind, TWO, TWO)]
        assert one != two
        assert two == one.replace(cloud.url, cloud.url + "/regions/" + TWO)


def test_openstacksdk_sees_each_regions_volumes_only(cloud):
    one, two = cloud.connect(), cloud.connect(TWO)
    assert "/regions/%s/" % (TWO,) in two.block_storage.get_endpoint()
    assert "/regions/" not in one.block_storage.get_endpoint()
    first = one.block_storage.create_volume(size=1, name="in-one")
    second = two.block_storage.create_volume(size=1, name="in-two")
    try:
        assert [v.id for v in one.block_storage.volumes()] == [first.id]
        assert [v.id for v in two.block_storage.volumes()] == [second.id]
        with pytest.raises(os_exceptions.NotFoundException):
            two.block_storage.get_volume(first.id)
        # Each region counts its own quota: two volumes each.
        assert two.block_storage.get_limits().absolute.total_volumes_used \
            == 1
        assert [s.name for s in two.compute.servers()] == ["node3"]
        assert [s.name for s in one.compute.servers()] == ["node1"]
    finally:
        for conn, volume in ((one, first), (two, second)):
            volume = conn.block_storage.wait_for_status(
                conn.block_storage.get_volume(volume.id), "available",
                failures=["error"], wait=20, interval=0.05)
            conn.block_storage.delete_volume(volume)
            conn.block_storage.wait_for_delete(volume, wait=20,
                                               interval=0.05)


def test_a_volume_attaches_only_in_its_own_region(cloud):
    two = cloud.connect(TWO)
    volume_id = create(cloud, "regional")
    try:
        # Nova of RegionTwo asks its own Cinder, which has no such volume.
        with pytest.raises(os_exceptions.NotFoundException) as refused:
            two.compute.create_volume_attachment(cloud.servers["node3"],
                                                 volume_id=volume_id)
        assert "Volume %s could not be found." % (volume_id,) in str(
            refused.value)
        # Nor is RegionTwo's server known to RegionOne's Nova.
        status, _, body = attach(cloud, "node3", volume_id)
        assert status == 404, body
        assert cloud.volume_status(volume_id) == "available"
        status, _, body = attach(cloud, "node1", volume_id)
        assert status == 200, body
        cloud.wait_for_status(volume_id, "in-use")
        detach(cloud, "node1", volume_id)
    finally:
        remove(cloud, volume_id)


def test_a_regions_server_gets_its_devices(cloud):
    volume_id = create(cloud, "two-attached", TWO)
    try:
        status, _, body = attach(cloud, "node3", volume_id, TWO)
        assert status == 200, body
        cloud.wait_for_status(volume_id, "in-use", region=TWO)
        link = os.path.join(cloud.by_id_root("node3"),
                            "virtio-" + volume_id[:20])
        assert os.path.realpath(link).startswith("/dev/loop")
        detach(cloud, "node3", volume_id, TWO)
        assert not os.path.lexists(link)
    finally:
        remove(cloud, volume_id, TWO)


def test_quotas_are_per_region(cloud):
    made = [(create(cloud, "q-one-%d" % i), None) for i in range(2)]
    try:
        status, _, body = cloud.request("POST", "/v3/volumes",
                                        {"volume": {"size": 1}})
        assert status == 413, body
        made.append((create(cloud, "q-two", TWO), TWO))
    finally:
        for volume_id, region in made:
            remove(cloud, volume_id, region)


def test_the_admin_api_addresses_a_region(cloud):
    two = cloud.admin.in_region(TWO)
    assert cloud.admin.regions() == ["RegionOne", TWO]
    assert [s["name"] for s in two.servers()] == ["node3"]
    assert [s["name"] for s in cloud.admin.servers()] == ["node1"]
    two.set_faults({"errors": [{"match": "GET *", "status": 503}]})
    try:
        assert cloud.admin.faults() == {}
        status, _, _ = cloud.request("GET", "/regions/%s/v3/volumes/detail"
                                     % (TWO,))
        assert status == 503
        status, _, _ = cloud.request("GET", "/v3/volumes/detail")
        assert status == 200
    finally:
        two.clear_faults()
    two.reset_counters()
    cloud.admin.reset_counters()
    cloud.request("GET", "/regions/%s/v3/volumes/detail" % (TWO,))
    assert two.counters() == {
        "GET /regions/%s/v3/volumes/detail" % (TWO,): 1}
    assert cloud.admin.counters() == {}
    # A server is found only in its own region.
    with pytest.raises(AdminRefused) as refused:
        two.reset_server_state("node1", "error")
    assert refused.value.code == 404
    assert two.reset_server_state("node3", "active")["status"] == "ACTIVE"
    with pytest.raises(AdminRefused) as refused:
        cloud.admin.in_region("RegionNine").servers()
    assert refused.value.code == 404


def test_restart_keeps_each_regions_state(cloud):
    one = create(cloud, "kept-one")
    two = create(cloud, "kept-two", TWO)
    try:
        cloud.admin.in_region(TWO).force_down("node3")
        cloud.restart()
        _, _, body = cloud.request("GET", "/v3/volumes")
        assert [v["id"] for v in body["volumes"]] == [one]
        _, _, body = cloud.request("GET", "/regions/%s/v3/volumes" % (TWO,))
        assert [v["id"] for v in body["volumes"]] == [two]
        [service] = cloud.admin.in_region(TWO).compute_services()
        assert service["state"] == "down"
        assert cloud.admin.compute_services()[0]["state"] == "up"
    finally:
        cloud.admin.in_region(TWO).force_down("node3", False)
        remove(cloud, one)
        remove(cloud, two, TWO)


def test_two_emulators_side_by_side_share_nothing():
    first = RunningEmulator({"latency": FAST, "admin_token": "first-token"})
    second = RunningEmulator({"latency": FAST, "admin_token": "second-token"})
    try:
        first.start()
        second.start()
        assert first.url != second.url
        # The same config names the same server ids in both clouds.
        assert first.servers["node1"] == second.servers["node1"]
        volumes = {}
        for cloud in (first, second):
            volumes[cloud] = create(cloud, "side")
            status, _, body = attach(cloud, "node1", volumes[cloud])
            assert status == 200, body
        for cloud in (first, second):
            cloud.wait_for_status(volumes[cloud], "in-use")
            assert [v["id"] for v in cloud.admin.volumes()] == [
                volumes[cloud]]
        devices = {cloud: devices_under(os.path.realpath(cloud.state_dir))
                   for cloud in (first, second)}
        assert len(devices[first]) == len(devices[second]) == 1
        assert devices[first][0][0] != devices[second][0][0]
        links = [os.path.realpath(os.path.join(
            cloud.by_id_root("node1"), "virtio-" + volumes[cloud][:20]))
            for cloud in (first, second)]
        assert links == [devices[first][0][0], devices[second][0][0]]
        # Neither answers the other's admin token.
        with pytest.raises(AdminRefused) as refused:
            EmulatorAdmin(second.url, token="first-token").volumes()
        assert refused.value.code == 403

        # Cleaning one up leaves the other's device and files alone.
        first.cleanup()
        [(device, backing)] = devices_under(
            os.path.realpath(second.state_dir))
        assert device == devices[second][0][0]
        assert devices_backing(backing) == [device]
        detach(second, "node1", volumes[second])
        remove(second, volumes[second])
    finally:
        first.cleanup()
        second.cleanup()
