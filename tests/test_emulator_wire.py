"""
Exact status codes and bodies on the wire, through raw HTTP: what a real
Keystone, Cinder and Nova answer, as OPENSTACK.md records it.
"""

import os
import time

import pytest

from tests.emulator_process import RunningEmulator


pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.2, "detach": 0.2, "extend": 0.05,
        "delete": 0.05}


@pytest.fixture(scope="module")
def cloud():
    emulator = RunningEmulator({"latency": FAST, "max_disk_devices": 2,
                                "servers": {"node1": {}, "node2": {}}})
    emulator.start()
    yield emulator
    emulator.cleanup()


@pytest.fixture
def volume(cloud):
    """
    A factory of available volumes, deleted (detached first) after the
    test.
    """
    made = []

    def create(size=1, **spec):
        spec["size"] = size
        status, _, body = cloud.request(
            "POST", "/v3/%s/volumes" % (cloud.project_id,),
            {"volume": spec})
        assert status == 202, body
        made.append(body["volume"]["id"])
        cloud.wait_for_status(body["volume"]["id"], "available")
        return body["volume"]["id"]
    yield create
    for volume_id in made:
        for server in cloud.servers.values():
            status, _, _ = cloud.request(
                "DELETE", "/compute/v2.1/servers/%s/os-volume_attachments/%s"
                % (server, volume_id))
            if status == 202:
                cloud.wait_for_status(volume_id, "available")
        cloud.request("DELETE", "/v3/volumes/%s" % (volume_id,))
        cloud.wait_for_status(volume_id, None)


def attach(cloud, server, volume_id):
    return cloud.request(
        "POST", "/compute/v2.1/servers/%s/os-volume_attachments" % (server,),
        {"volumeAttachment": {"volumeId": volume_id}})


def test_keystone_discovery_and_token(cloud):
    status, _, body = cloud.request("GET", "/identity", token=False)
    assert status == 300
    assert body["versions"]["values"][0]["id"] == "v3.14"
    status, headers, body = cloud.request(
        "POST", "/identity/v3/auth/tokens", token=False, body={
            "auth": {"identity": {"methods": ["password"], "password": {
                "user": {"name": "demo", "password": "demo-password",
                         "domain": {"name": "Default"}}}},
                     "scope": {"project": {"name": "demo",
                                           "domain": {"name": "Default"}}}}})
    assert status == 201
    assert headers["x-subject-token"]
    types = {entry["type"]: entry["endpoints"][0]["url"]
             for entry in body["token"]["catalog"]}
    assert types["block-storage"] == types["volumev3"]
    assert types["block-storage"].endswith("/v3/" + cloud.project_id)
    assert "compute" in types


def test_wrong_password_is_401_and_not_echoed(cloud):
    status, _, body = cloud.request(
        "POST", "/identity/v3/auth/tokens", token=False, body={
            "auth": {"identity": {"methods": ["password"], "password": {
                "user": {"name": "demo", "password": "wrong-secret-xyz",
                         "domain": {"name": "Default"}}}}}})
    assert status == 401
    assert body["error"]["code"] == 401
    assert "wrong-secret-xyz" not in repr(body)
    with open(cloud.log_path) as f:
        log = f.read()
    assert "wrong-secret-xyz" not in log
    assert "demo-password" not in log
    assert cloud.token() not in log


def test_no_token_is_401(cloud):
    status, headers, body = cloud.request("GET", "/v3/volumes/detail",
                                          token=False)
    assert status == 401
    assert body == {"unauthorized": {
        "code": 401,
        "message": "The request you have made requires authentication."}}
    assert headers["www-authenticate"].startswith("Keystone uri=")
    status, _, _ = cloud.request("GET", "/v3/volumes/detail", token=False,
                                 headers={"X-Auth-Token": "not-a-token"})
    assert status == 401


def test_cinder_discovery_and_microversions(cloud):
    status, _, body = cloud.request("GET", "/", token=False)
    assert status == 300
    assert body["versions"][0]["version"] == "3.71"
    status, headers, _ = cloud.request(
        "GET", "/v3/volumes/detail",
        headers={"OpenStack-API-Version": "volume 3.71"})
    assert status == 200
    assert headers["openstack-api-version"] == "volume 3.71"
    assert headers["vary"] == "OpenStack-API-Version"
    status, _, body = cloud.request(
        "GET", "/v3/volumes/detail",
        headers={"OpenStack-API-Version": "volume 3.99"})
    assert status == 406
    assert body == {"computeFault": {
        "code": 406, "message": "Version 3.99 is not supported by the API. "
                                "Minimum is 3.0 and maximum is 3.71."}}


def test_nova_discovery(cloud):
    status, _, body = cloud.request("GET", "/compute/v2.1", token=False)
    assert status == 200
    assert body["version"]["version"] == "2.104"


def test_volume_body_keys(cloud, volume):
    volume_id = volume(name="keys")
    status, _, body = cloud.request("GET", "/v3/volumes/%s" % (volume_id,))
    assert status == 200
    assert set(body["volume"]) == {
        "id", "status", "size", "availability_zone", "created_at",
        "updated_at", "name", "description", "volume_type", "snapshot_id",
        "source_volid", "metadata", "links", "user_id", "bootable",
        "encrypted", "multiattach", "attachments", "replication_status",
        "consistencygroup_id", "group_id", "shared_targets", "service_uuid",
        "volume_type_id", "consumes_quota", "os-vol-tenant-attr:tenant_id"}
    assert body["volume"]["bootable"] == "false"


def test_unknown_volume_is_404(cloud):
    status, _, body = cloud.request("GET", "/v3/volumes/nope")
    assert status == 404
    assert body == {"itemNotFound": {
        "code": 404, "message": "Volume nope could not be found."}}


def test_pagination_markers(cloud, volume):
    ids = [volume(name="p%d" % i, metadata={"wire-page": "1"})
           for i in range(3)]
    query = "/v3/%s/volumes/detail?limit=2&metadata=%s" % (
        cloud.project_id, "%7B%27wire-page%27%3A+%271%27%7D")
    status, _, body = cloud.request("GET", query)
    assert status == 200
    assert [v["id"] for v in body["volumes"]] == [ids[2], ids[1]]
    link = body["volumes_links"][0]
    assert link["rel"] == "next" and "marker=" + ids[1] in link["href"]
    status, _, body = cloud.request("GET", query + "&marker=" + ids[1])
    assert [v["id"] for v in body["volumes"]] == [ids[0]]
    assert "volumes_links" not in body
    status, _, body = cloud.request("GET", query + "&marker=" + ids[0])
    assert (status, body) == (200, {"volumes": []})
    status, _, body = cloud.request("GET", query + "&marker=unknown")
    assert status == 404
    assert body["itemNotFound"]["message"] == (
        "Volume unknown could not be found.")


def test_updated_at_filter(cloud, volume):
    first = volume(name="older")
    time.sleep(0.05)
    _, _, body = cloud.request("GET", "/v3/volumes/%s" % (first,))
    since = body["volume"]["updated_at"]
    second = volume(name="newer")
    status, _, body = cloud.request(
        "GET", "/v3/volumes/detail?updated_at=gt:%s" % (since,),
        headers={"OpenStack-API-Version": "volume 3.60"})
    assert status == 200
    ids = [v["id"] for v in body["volumes"]]
    assert second in ids and first not in ids


def test_metadata_merge_replace_delete(cloud, volume):
    volume_id = volume(metadata={"a": "1"})
    path = "/v3/volumes/%s/metadata" % (volume_id,)
    status, _, body = cloud.request("POST", path, {"metadata": {"b": "2"}})
    assert (status, body) == (200, {"metadata": {"a": "1", "b": "2"}})
    status, _, body = cloud.request("PUT", path, {"metadata": {"c": "3"}})
    assert (status, body) == (200, {"metadata": {"c": "3"}})
    status, _, _ = cloud.request("DELETE", path + "/c")
    assert status == 200
    _, _, body = cloud.request("GET", "/v3/volumes/%s" % (volume_id,))
    assert body["volume"]["metadata"] == {}


def test_shrink_is_400(cloud, volume):
    volume_id = volume(size=2)
    status, _, body = cloud.request(
        "POST", "/v3/volumes/%s/action" % (volume_id,),
        {"os-extend": {"new_size": 1}})
    assert status == 400
    assert body == {"badRequest": {"code": 400, "message": (
        "Invalid input received: New size for extend must be greater than "
        "current size. (current: 2, extended: 1).")}}


def test_attached_volume_refusals(cloud, volume):
    node1, node2 = cloud.servers["node1"], cloud.servers["node2"]
    volume_id = volume()
    status, _, body = attach(cloud, node1, volume_id)
    assert status == 200
    assert body["volumeAttachment"]["volumeId"] == volume_id
    assert body["volumeAttachment"]["device"] == "/dev/vdb"

    status, _, body = attach(cloud, node2, volume_id)
    assert status == 400
    assert body["badRequest"]["message"] == (
        "Invalid volume: volume %s is already attached to instances: %s"
        % (volume_id, node1))
    cloud.wait_for_status(volume_id, "in-use")

    status, _, body = cloud.request("DELETE", "/v3/volumes/%s" % (volume_id,))
    assert status == 400
    assert body["badRequest"]["message"].startswith(
        "Invalid volume: Volume status must be available or error")

    status, _, body = cloud.request(
        "DELETE", "/compute/v2.1/servers/%s/os-volume_attachments/%s"
        % (node2, volume_id))
    assert status == 404
    assert body["itemNotFound"]["message"] == (
        "Instance %s is not attached to volume %s" % (node2, volume_id))

    status, _, body = cloud.request(
        "GET", "/compute/v2.1/servers/%s/os-volume_attachments" % (node1,))
    assert [a["volumeId"] for a in body["volumeAttachments"]] == [volume_id]


def test_device_limit_is_403(cloud, volume):
    node2 = cloud.servers["node2"]
    first, second, third = volume(), volume(), volume()
    assert attach(cloud, node2, first)[0] == 200
    assert attach(cloud, node2, second)[0] == 200
    status, _, body = attach(cloud, node2, third)
    assert status == 403
    assert body == {"forbidden": {"code": 403, "message": (
        "The maximum allowed number of disk devices (2) to attach to a "
        "single instance has been exceeded.")}}
    cloud.wait_for_status(first, "in-use")
    cloud.wait_for_status(second, "in-use")


def test_unknown_server_is_404(cloud, volume):
    status, _, body = attach(cloud, "no-such-server", volume())
    assert status == 404
    assert body["itemNotFound"]["message"] == (
        "Instance no-such-server could not be found.")


def test_volume_quota_is_413(cloud, volume):
    path = "/v3/os-quota-sets/%s" % (cloud.project_id,)
    status, _, _ = cloud.request("PUT", path, {"quota_set": {"volumes": 1}})
    assert status == 200
    try:
        volume()
        status, headers, body = cloud.request(
            "POST", "/v3/volumes", {"volume": {"size": 1}})
        assert status == 413
        assert body == {"overLimit": {
            "code": 413, "retryAfter": "0",
            "message": "VolumeLimitExceeded: Maximum number of volumes "
                       "allowed (1) exceeded for quota 'volumes'."}}
        assert headers["retry-after"] == "0"
        status, _, body = cloud.request("GET", path + "?usage=True")
        assert body["quota_set"]["volumes"] == {
            "limit": 1, "in_use": 1, "reserved": 0, "allocated": 0}
        status, _, body = cloud.request("GET", "/v3/limits")
        assert body["limits"]["absolute"]["maxTotalVolumes"] == 1
        assert body["limits"]["absolute"]["totalVolumesUsed"] == 1
    finally:
        cloud.request("PUT", path, {"quota_set": {"volumes": 10}})


def test_extend_in_use_grows_the_loop_device(cloud, volume):
    volume_id = volume(size=1)
    assert attach(cloud, cloud.servers["node1"], volume_id)[0] == 200
    cloud.wait_for_status(volume_id, "in-use")
    [mine] = [v for v in cloud.admin.volumes() if v["id"] == volume_id]
    assert mine["server_id"] == cloud.servers["node1"]
    loop = os.path.basename(mine["loop"])
    # In-use extend needs microversion 3.42.
    status, _, body = cloud.request(
        "POST", "/v3/volumes/%s/action" % (volume_id,),
        {"os-extend": {"new_size": 2}})
    assert status == 400
    status, _, _ = cloud.request(
        "POST", "/v3/volumes/%s/action" % (volume_id,),
        {"os-extend": {"new_size": 2}},
        headers={"OpenStack-API-Version": "volume 3.42"})
    assert status == 202
    cloud.wait_for_status(volume_id, "in-use")
    with open("/sys/block/%s/size" % (loop,)) as f:
        assert int(f.read()) * 512 == 2 * 1024 ** 3
