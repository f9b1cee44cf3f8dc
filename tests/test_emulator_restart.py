"""
The emulator's state outlives a restart, lost loop devices come back, and
``blockmover-cloud cleanup`` leaves nothing behind.
"""

import os

import pytest

from blockmover.command import run
from blockmover.emulator.harness import RunningEmulator
from blockmover.emulator.loops import devices_of
from blockmover.poll import poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.1, "detach": 0.1, "extend": 0.05,
        "delete": 0.05}


def test_restart_keeps_volumes_tokens_and_attachments():
    cloud = RunningEmulator({"latency": FAST})
    try:
        cloud.start()
        status, _, body = cloud.request(
            "POST", "/v3/volumes",
            {"volume": {"size": 1, "name": "kept", "metadata": {"k": "v"}}})
        volume_id = body["volume"]["id"]
        cloud.wait_for_status(volume_id, "available")
        server = cloud.servers["node1"]
        cloud.request("POST", "/compute/v2.1/servers/%s/os-volume_attachments"
                      % (server,), {"volumeAttachment": {"volumeId": volume_id}})
        cloud.wait_for_status(volume_id, "in-use")
        path = os.path.join(cloud.state_dir, "volumes", volume_id)
        [device] = devices_of(path)

        cloud.stop()
        # The loop device is lost, as after a reboot of the host.
        run(["losetup", "-d", device])
        assert devices_of(path) == []
        cloud.start()

        # The token issued before the restart is still good.
        status, _, body = cloud.request("GET", "/v3/volumes/%s"
                                        % (volume_id,))
        assert status == 200
        assert (body["volume"]["name"], body["volume"]["metadata"],
                body["volume"]["status"]) == ("kept", {"k": "v"}, "in-use")
        assert body["volume"]["attachments"][0]["server_id"] == server

        def relinked():
            return devices_of(path) or None
        assert len(poll(relinked, 10, "loop device re-created")) == 1
    finally:
        state_dir = cloud.state_dir
        cloud.cleanup()
    assert not os.path.exists(state_dir)
    assert devices_of(path) == []


def test_transition_interrupted_by_restart_finishes():
    cloud = RunningEmulator({"latency": dict(FAST, create=30.0)})
    try:
        cloud.start()
        status, _, body = cloud.request("POST", "/v3/volumes",
                                        {"volume": {"size": 1}})
        volume_id = body["volume"]["id"]
        assert cloud.volume_status(volume_id) == "creating"
        cloud.restart()
        cloud.wait_for_status(volume_id, "available", timeout=10)
    finally:
        cloud.cleanup()
