"""
Injected faults and request counters, through the admin API of a running
emulator.
"""

import os
import socket
import time

import pytest

from blockmover.backends.loopdevice import devices_backing
from blockmover.emulator.admin_client import (
    AdminRefused, AdminUnreachable, EmulatorAdmin,
)
from tests.emulator_process import RunningEmulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.2, "detach": 0.2, "extend": 0.05,
        "delete": 0.05}


@pytest.fixture(scope="module")
def cloud():
    emulator = RunningEmulator({"latency": FAST})
    emulator.start()
    yield emulator
    emulator.cleanup()


@pytest.fixture(autouse=True)
def no_faults(cloud):
    yield
    cloud.admin.clear_faults()
    assert cloud.admin.faults() == {}


def new_volume(cloud, name=None):
    """
    A 1 GiB volume of the emulator's first user, once it is available.
    """
    volume = {"size": 1}
    if name is not None:
        volume["name"] = name
    status, _, body = cloud.request("POST", "/v3/volumes",
                                    {"volume": volume})
    assert status == 202
    cloud.wait_for_status(body["volume"]["id"], "available")
    return body["volume"]["id"]


def remove_volume(cloud, volume_id):
    """
    Detach the volume from node1 if it is attached (once it settled), and
    delete it.
    """
    if cloud.volume_status(volume_id) != "available":
        cloud.wait_for_status(volume_id, "in-use")
        cloud.request("DELETE", "/compute/v2.1/servers/%s/"
                      "os-volume_attachments/%s"
                      % (cloud.servers["node1"], volume_id))
        cloud.wait_for_status(volume_id, "available")
    cloud.request("DELETE", "/v3/volumes/%s" % (volume_id,))
    cloud.wait_for_status(volume_id, None)


@pytest.fixture
def volume_id(cloud):
    volume_id = new_volume(cloud)
    yield volume_id
    cloud.admin.clear_faults()
    remove_volume(cloud, volume_id)


def attach(cloud, volume_id):
    return cloud.request(
        "POST", "/compute/v2.1/servers/%s/os-volume_attachments"
        % (cloud.servers["node1"],),
        {"volumeAttachment": {"volumeId": volume_id}})


def test_error_fraction_one_fails_every_matching_request(cloud):
    assert cloud.admin.set_faults({"errors": [
        {"match": "GET /v3/{project}/volumes/detail", "status": 503,
         "fraction": 1.0}]})["errors"]
    for _ in range(3):
        status, _, body = cloud.request(
            "GET", "/v3/%s/volumes/detail" % (cloud.project_id,))
        assert status == 503
        assert body["serviceUnavailable"]["code"] == 503
    # Other endpoints are untouched.
    assert cloud.request("GET", "/v3/%s/limits" % (cloud.project_id,))[0] \
        == 200


def test_error_fraction_zero_never_fails(cloud):
    cloud.admin.set_faults({"errors": [
        {"match": "*", "status": 500, "fraction": 0.0}]})
    assert cloud.request("GET", "/v3/volumes/detail")[0] == 200


def test_over_limit_for_the_next_n_requests(cloud):
    cloud.admin.set_faults({"over_limit": [
        {"match": "GET /v3/*", "count": 2, "retry_after": 3}]})
    for _ in range(2):
        status, headers, body = cloud.request("GET", "/v3/volumes/detail")
        assert status == 413
        assert headers["retry-after"] == "3"
        assert body["overLimit"]["retryAfter"] == "3"
    assert cloud.request("GET", "/v3/volumes/detail")[0] == 200


def test_added_latency(cloud):
    cloud.admin.set_faults({"latency": [
        {"match": "GET /v3/{project}/limits", "seconds": 0.5}]})
    started = time.monotonic()
    assert cloud.request("GET", "/v3/%s/limits" % (cloud.project_id,))[0] \
        == 200
    assert time.monotonic() - started >= 0.5


def test_counters_count_per_endpoint_template(cloud):
    cloud.admin.reset_counters()
    for _ in range(3):
        cloud.request("GET", "/v3/%s/volumes/detail" % (cloud.project_id,))
    cloud.request("GET", "/v3/volumes/detail")
    assert cloud.admin.counters() == {"GET /v3/{project}/volumes/detail": 3,
                                "GET /v3/volumes/detail": 1}


def test_bad_fault_data_is_400_and_changes_nothing(cloud):
    cloud.admin.set_faults({"latency": [{"seconds": 0.01}]})
    with pytest.raises(AdminRefused) as refused:
        cloud.admin.set_faults({"nonsense": []})
    assert refused.value.code == 400
    assert cloud.admin.faults()["latency"]


def test_stuck_detaching(cloud, volume_id):
    assert attach(cloud, volume_id)[0] == 200
    cloud.wait_for_status(volume_id, "in-use")
    cloud.admin.set_faults({"stuck": [
        {"operation": "detach", "seconds": 1.5, "count": 1}]})
    started = time.monotonic()
    status, _, _ = cloud.request(
        "DELETE", "/compute/v2.1/servers/%s/os-volume_attachments/%s"
        % (cloud.servers["node1"], volume_id))
    assert status == 202
    time.sleep(1.0)
    assert cloud.volume_status(volume_id) == "detaching"
    cloud.wait_for_status(volume_id, "available")
    assert time.monotonic() - started >= 1.5


def test_attach_error_returns_volume_to_available(cloud, volume_id):
    cloud.admin.set_faults({"attach_errors": [{"count": 1}]})
    assert attach(cloud, volume_id)[0] == 200
    seen = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = cloud.volume_status(volume_id)
        seen.add(status)
        if status == "available" and "attaching" in seen:
            break
        time.sleep(0.02)
    assert "attaching" in seen and status == "available"
    state_dir = os.path.realpath(cloud.state_dir)
    link = os.path.join(state_dir, "attachments", cloud.servers["node1"],
                        volume_id)
    assert not os.path.exists(link)
    assert devices_backing(link, include_deleted=True) == []
    status, _, body = cloud.request(
        "GET", "/compute/v2.1/servers/%s/os-volume_attachments"
        % (cloud.servers["node1"],))
    assert body["volumeAttachments"] == []
    # The fault was used up: the next attach works.
    assert attach(cloud, volume_id)[0] == 200
    cloud.wait_for_status(volume_id, "in-use")


def test_stuck_attach_of_one_volume_only(cloud):
    """
    A hang narrowed by name holds that volume's attach while another
    volume's attach on the same server goes through.
    """
    slow = new_volume(cloud, "blockmover-demo-slowdb")
    fast = new_volume(cloud, "blockmover-demo-web")
    try:
        cloud.admin.set_faults({"stuck": [
            {"operation": "attach", "seconds": 3.0,
             "name": "*-slowdb", "server": "node1"}]})
        assert attach(cloud, slow)[0] == 200
        assert attach(cloud, fast)[0] == 200
        cloud.wait_for_status(fast, "in-use")
        assert cloud.volume_status(slow) == "attaching"
        cloud.wait_for_status(slow, "in-use")
    finally:
        cloud.admin.clear_faults()
        for volume_id in (slow, fast):
            remove_volume(cloud, volume_id)


def test_admin_token_is_sent_and_required():
    with RunningEmulator({"admin_token": "s3cret"}) as cloud:
        assert cloud.admin.faults() == {}
        with pytest.raises(AdminRefused) as refused:
            EmulatorAdmin(cloud.url).faults()
        assert refused.value.code == 403
        with pytest.raises(AdminRefused) as refused:
            EmulatorAdmin(cloud.url, token="wrong").reset_counters()
        assert refused.value.code == 403


def test_admin_api_not_answering():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % (s.getsockname()[1],)
        with pytest.raises(AdminUnreachable):
            EmulatorAdmin(url, timeout=2.0).counters()
