"""
The emulator's state outlives a restart, lost loop devices and their by-id
links come back, links no attachment explains go, servers keep their power
and compute services their state (a stop under way finishes), and
``blockmover-cloud cleanup`` leaves nothing behind.
"""

import os

import pytest
import yaml

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
        by_id = cloud.by_id_root("node1")
        device_link = os.path.join(by_id, "virtio-" + volume_id[:20])
        assert os.path.realpath(device_link) == device

        cloud.stop()
        # The loop device is lost, as after a reboot of the host, and a
        # crash left a link of a volume that is attached no more.
        run(["losetup", "-d", device])
        assert devices_backing(link) == []
        stale = os.path.join(by_id, "virtio-0b0b0b0b-7b4d-4e8a-9")
        os.symlink(device, stale)
        cloud.start()
        assert not os.path.lexists(stale)
        # Every server's directory is there to be watched, attached or not.
        assert os.path.isdir(cloud.by_id_root("node2"))

        # The token issued before the restart is still good.
        status, _, body = cloud.request("GET", "/v3/volumes/%s"
                                        % (volume_id,))
        assert status == 200
        assert (body["volume"]["name"], body["volume"]["metadata"],
                body["volume"]["status"]) == ("kept", {"k": "v"}, "in-use")
        assert body["volume"]["attachments"][0]["server_id"] == server

        def relinked():
            return devices_backing(link) or None
        [again] = poll(relinked, 10, "loop device re-created")
        # Re-made on the same hard link of the volume's file, and linked.
        assert os.path.samefile(
            link, os.path.join(state_dir, "volumes", volume_id))
        poll(lambda: os.path.realpath(device_link) == again or None, 10,
             "the by-id link to point at the new device")

        cloud.request("DELETE", "/compute/v2.1/servers/%s/"
                      "os-volume_attachments/%s" % (server, volume_id))
        cloud.wait_for_status(volume_id, "available")
        assert not os.path.lexists(device_link)
        assert devices_backing(link) == []
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


def test_restart_keeps_servers_power_and_compute_services():
    cloud = RunningEmulator({
        "latency": dict(FAST, stop=0.05, start=0.05),
        "servers": ["stopped", "broken", "down", "slow"],
        # Only this run holds the slow server's stop back.
        "faults": {"stuck": [{"operation": "stop", "server": "slow",
                              "seconds": 60}]}})
    try:
        cloud.start()

        def power(name):
            _, _, body = cloud.request("GET", "/compute/v2.1/servers/%s"
                                       % (cloud.servers[name],))
            server = body["server"]
            return (server["status"], server["OS-EXT-STS:task_state"],
                    server["OS-EXT-STS:power_state"])

        def stop(name):
            status, _, _ = cloud.request(
                "POST", "/compute/v2.1/servers/%s/action"
                % (cloud.servers[name],), {"os-stop": None})
            assert status == 202

        def until(name, wanted):
            poll(lambda: True if power(name) == wanted else None, 10,
                 "server %s to be %s" % (name, wanted))

        stop("stopped")
        until("stopped", ("SHUTOFF", None, 4))
        cloud.admin.reset_server_state("broken", "error")
        cloud.admin.force_down("down")
        stop("down")
        stop("slow")
        assert power("slow") == ("ACTIVE", "powering-off", 1)

        # The config's fault goes with this run: the next one has none.
        cloud.config_data.pop("faults")
        with open(cloud.config_path, "w") as f:
            yaml.safe_dump(cloud.config_data, f)
        cloud.restart()

        assert power("stopped") == ("SHUTOFF", None, 4)
        assert power("broken") == ("ERROR", None, 1)
        # Still down, so its stop still waits...
        assert {s["host"]: s["state"] for s in
                cloud.admin.compute_services()}["compute-down"] == "down"
        assert power("down") == ("ACTIVE", "powering-off", 1)
        # ...and a stop caught by the restart finishes.
        until("slow", ("SHUTOFF", None, 4))
        cloud.admin.force_down("down", False)
        until("down", ("SHUTOFF", None, 4))
    finally:
        cloud.cleanup()
