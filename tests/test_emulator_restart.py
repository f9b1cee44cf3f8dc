"""
The emulator's state outlives a restart, lost loop devices come back, and
``blockmover-cloud cleanup`` leaves nothing behind.
"""

import os

import pytest

from blockmover.backends.loopdevice import devices_backing, devices_under
from blockmover.command import run
from blockmover.poll import poll
from tests.emulator_process import RunningEmulator

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
                      % (server,),
                      {"volumeAttachment": {"volumeId": volume_id}})
        cloud.wait_for_status(volume_id, "in-use")
        state_dir = os.path.realpath(cloud.state_dir)
        link = os.path.join(state_dir, "attachments", server, volume_id)
        [device] = devices_backing(link)

        cloud.stop()
        # The loop device is lost, as after a reboot of the host.
        run(["losetup", "-d", device])
        assert devices_backing(link) == []
        cloud.start()

        # The token issued before the restart is still good.
        status, _, body = cloud.request("GET", "/v3/volumes/%s"
                                        % (volume_id,))
        assert status == 200
        assert (body["volume"]["name"], body["volume"]["metadata"],
                body["volume"]["status"]) == ("kept", {"k": "v"}, "in-use")
        assert body["volume"]["attachments"][0]["server_id"] == server

        def relinked():
            return devices_backing(link) or None
        assert len(poll(relinked, 10, "loop device re-created")) == 1
        # Re-made on the same hard link of the volume's file.
        assert os.path.samefile(
            link, os.path.join(state_dir, "volumes", volume_id))
    finally:
        state_dir = os.path.realpath(cloud.state_dir)
        cloud.cleanup()
    assert not os.path.exists(state_dir)
    assert devices_under(state_dir) == []


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
