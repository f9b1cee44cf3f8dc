"""
Fencing with the openstack backend, and the detach Nova refuses: first the
backend's reading of a server's states against a scripted cloud (every
path, quickly), then the real openstacksdk against the emulator (stop,
ERROR, a failed power-off, a compute service that is down).
"""

import json
import os
import uuid

import pytest
import requests
from openstack import exceptions as os_exceptions

from blockmover.backends.interface import (
    POWER_OFF, POWER_ON, POWER_UNKNOWN, DetachRefused, FenceFailed,
    FenceTimedOut, PowerStateUnknown,
)
from blockmover.backends.openstack import OpenStackBlockDeviceAPI
from blockmover.identity import CLUSTER_KEY, DATASET_KEY
from blockmover.poll import Backoff

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

QUICK = Backoff(initial=0.02, factor=1.5, maximum=0.2)


def cloud_error(status, fault, message):
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(
        {fault: {"code": status, "message": message}}).encode("utf-8")
    response.headers["Content-Type"] = "application/json"
    try:
        os_exceptions.raise_from_response(response)
    except os_exceptions.HttpException as e:
        return e
    raise AssertionError("not an error response")


class _Server(object):
    def __init__(self, status, task_state):
        self.status = status
        self.task_state = task_state


class ScriptedServer(object):
    """
    A cloud whose server ``s1`` shows ``looks`` one look after another (the
    last one from then on), each ``(status, task_state)``; ``None`` for no
    such server. A stop is recorded, or refused with ``stop_error``.
    """

    def __init__(self, looks, stop_error=None):
        self.looks = list(looks)
        self.stop_error = stop_error
        self.stops = []
        self.compute = self

    def get_server(self, server_id):
        look = self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]
        if look is None:
            raise cloud_error(404, "itemNotFound",
                              "Instance %s could not be found." % (server_id,))
        return _Server(*look)

    def stop_server(self, server_id):
        self.stops.append(server_id)
        if self.stop_error is not None:
            raise self.stop_error


def scripted(cloud, deadline=30.0):
    return OpenStackBlockDeviceAPI(
        connection=cloud, cluster_name="c", instance_id="control",
        deadline=deadline, backoff=Backoff(initial=0.001, factor=1.0,
                                           maximum=0.001),
        sleep=lambda seconds: None)


def test_active_server_is_stopped_once_and_waited_for():
    cloud = ScriptedServer([("ACTIVE", None), ("ACTIVE", "powering-off"),
                            ("ACTIVE", "powering-off"), ("SHUTOFF", None)])
    fenced = scripted(cloud).fence("s1")
    assert (fenced.power, fenced.status) == (POWER_OFF, "SHUTOFF")
    assert cloud.stops == ["s1"]


def test_server_already_off_is_fenced_without_a_stop():
    cloud = ScriptedServer([("SHUTOFF", None)])
    assert scripted(cloud).fence("s1").power == POWER_OFF
    assert cloud.stops == []


def test_a_stop_under_way_is_waited_for_not_repeated():
    cloud = ScriptedServer([("ACTIVE", "powering-off"), ("SHUTOFF", None)])
    assert scripted(cloud).fence("s1").power == POWER_OFF
    assert cloud.stops == []


def test_a_server_being_started_is_not_off():
    # SHUTOFF while powering on: Nova's status lags; the guest is booting.
    cloud = ScriptedServer([("SHUTOFF", "powering-on"), ("ACTIVE", None),
                            ("ACTIVE", "powering-off"), ("SHUTOFF", None)])
    api = scripted(cloud)
    assert api.power_state("s1").power == POWER_UNKNOWN
    assert api.fence("s1").power == POWER_OFF
    assert cloud.stops == ["s1"]


@pytest.mark.parametrize("status", ["ERROR", "PAUSED", "SUSPENDED",
                                    "SHELVED_OFFLOADED"])
def test_any_other_status_is_unknown_and_nothing_is_sent(status):
    cloud = ScriptedServer([(status, None)])
    with pytest.raises(PowerStateUnknown) as raised:
        scripted(cloud).fence("s1")
    assert (raised.value.node, raised.value.status) == ("s1", status)
    assert "neither ACTIVE nor SHUTOFF" in str(raised.value)
    assert "confirm it down" in str(raised.value)
    assert cloud.stops == []


def test_error_during_the_stop_is_unknown():
    cloud = ScriptedServer([("ACTIVE", None), ("ACTIVE", "powering-off"),
                            ("ERROR", None)])
    with pytest.raises(PowerStateUnknown) as raised:
        scripted(cloud).fence("s1")
    assert raised.value.status == "ERROR"


def test_no_such_server_is_unknown():
    cloud = ScriptedServer([None])
    api = scripted(cloud)
    assert api.power_state("s1").power == POWER_UNKNOWN
    with pytest.raises(PowerStateUnknown) as raised:
        api.fence("s1")
    assert "no such server" in str(raised.value)
    assert cloud.stops == []


def test_stop_taken_then_active_again_is_a_failed_fence():
    cloud = ScriptedServer([("ACTIVE", None), ("ACTIVE", "powering-off"),
                            ("ACTIVE", None)])
    with pytest.raises(FenceFailed) as raised:
        scripted(cloud).fence("s1")
    assert type(raised.value) is FenceFailed
    assert "power-off failed" in str(raised.value)
    assert cloud.stops == ["s1"]


def test_stop_refused_for_a_race_looks_again():
    # Another stop won the race: Nova's 409, then the server goes off.
    cloud = ScriptedServer(
        [("ACTIVE", None), ("ACTIVE", "powering-off"), ("SHUTOFF", None)],
        stop_error=cloud_error(409, "conflictingRequest",
                               "Cannot 'stop' instance s1 while it is in "
                               "task_state powering-off"))
    assert scripted(cloud).fence("s1").power == POWER_OFF
    assert cloud.stops == ["s1"]


def test_fence_times_out_with_the_last_status():
    cloud = ScriptedServer([("ACTIVE", None), ("ACTIVE", "powering-off")])
    with pytest.raises(FenceTimedOut) as raised:
        scripted(cloud, deadline=0.05).fence("s1")
    assert raised.value.status == "ACTIVE, powering-off"
    assert "compute service may be down" in str(raised.value)
    assert cloud.stops == ["s1"]


def test_power_state_reads_active_as_on_even_while_stopping():
    for looks, power in ([("ACTIVE", None)], POWER_ON), (
            [("ACTIVE", "powering-off")], POWER_ON), (
            [("SHUTOFF", None)], POWER_OFF), ([("ERROR", None)],
                                              POWER_UNKNOWN):
        assert scripted(ScriptedServer(looks)).power_state("s1").power \
            == power


class AttachedVolume(object):
    """
    A cloud where volume ``v`` is in-use on ``s1`` and Nova answers a
    detach with ``detach_error``.
    """

    def __init__(self, detach_error):
        self.detach_error = detach_error
        self.block_storage = self
        self.compute = self

    def get_volume(self, volume_id):
        return _Raw(id=volume_id, status="in-use", size=1,
                    metadata={CLUSTER_KEY: "c", DATASET_KEY: "d"},
                    attachments=[{"server_id": "s1"}])

    def delete_volume_attachment(self, server, volume_id):
        raise self.detach_error


class _Raw(object):
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_detach_refused_by_nova_says_why():
    cloud = AttachedVolume(cloud_error(409, "conflictingRequest",
                                       "Service is unavailable at this "
                                       "time."))
    with pytest.raises(DetachRefused) as raised:
        scripted(cloud).detach_volume("v", "s1")
    refused = raised.value
    assert (refused.volume_id, refused.node, refused.reason) == (
        "v", "s1", "Service is unavailable at this time.")
    assert "volume v from s1" in str(refused)
    assert "compute service is down" in str(refused)


# --- against the emulator ----------------------------------------------------

FAST = {"create": 0.05, "attach": 0.2, "detach": 0.2, "extend": 0.05,
        "delete": 0.05, "stop": 0.3, "start": 0.3}
SERVERS = ["control", "plain", "busy", "broken", "faulty", "down",
           "detach-down", "detach-broken", "fenced-detach"]
ACTIONS = "POST /compute/v2.1/servers/{server}/action"


@pytest.fixture(scope="module")
def cloud():
    # Late: only these tests need a running emulator.
    from tests.emulator_process import RunningEmulator
    emulator = RunningEmulator({"latency": FAST, "rpc_timeout": 1.0,
                                "servers": SERVERS})
    emulator.start()
    yield emulator
    emulator.cleanup()


@pytest.fixture(scope="module")
def conn(cloud):
    return cloud.connect()


@pytest.fixture
def control(cloud, conn):
    """
    The backend as the control service uses it (from a server of its
    own), for a cluster of this test; afterwards its volumes are gone and
    every server is on and healthy again.
    """
    api = OpenStackBlockDeviceAPI(
        conn, "fence-%s" % (uuid.uuid4().hex[:8],),
        instance_id=cloud.servers["control"], deadline=20.0, backoff=QUICK,
        device_root=cloud.by_id_root("control"), watch_devices=False)
    yield api
    cloud.admin.clear_faults()
    for service in cloud.admin.compute_services():
        if service["forced_down"]:
            cloud.admin.force_down(service["host"], False)
    for server in cloud.admin.servers():
        if server["vm_state"] == "error":
            cloud.admin.reset_server_state(server["id"], "active")
    for volume in api.list_volumes():
        if volume.attached_to is not None:
            api.detach_volume(volume.volume_id, volume.attached_to)
        api.destroy_volume(volume.volume_id)
    for server in cloud.admin.servers():
        if server["status"] == "SHUTOFF":
            conn.compute.start_server(server["id"])
    for server in cloud.admin.servers():
        conn.compute.wait_for_server(conn.compute.get_server(server["id"]),
                                     "ACTIVE", interval=0.05, wait=20)


def stops(cloud):
    return cloud.admin.counters().get(ACTIONS, 0)


def attached_volume(api, server):
    volume = api.create_volume(str(uuid.uuid4()), 1, {})
    return api.attach_volume(volume.volume_id, server)


@needs_root
def test_fence_stops_the_server_once(cloud, control):
    server = cloud.servers["plain"]
    assert control.power_state(server).power == POWER_ON
    cloud.admin.reset_counters()
    fenced = control.fence(server)
    assert (fenced.power, fenced.status) == (POWER_OFF, "SHUTOFF")
    assert stops(cloud) == 1
    [listed] = [s for s in cloud.admin.servers() if s["id"] == server]
    assert (listed["status"], listed["power_state"]) == ("SHUTOFF", 4)
    # Again: already off, nothing sent.
    assert control.fence(server).power == POWER_OFF
    assert stops(cloud) == 1


@needs_root
def test_fence_waits_for_a_stop_already_sent(cloud, conn, control):
    server = cloud.servers["busy"]
    conn.compute.stop_server(server)
    cloud.admin.reset_counters()
    assert control.fence(server).power == POWER_OFF
    assert stops(cloud) == 0


@needs_root
def test_fence_refuses_a_server_in_error(cloud, control):
    server = cloud.servers["broken"]
    cloud.admin.reset_server_state(server, "error")
    cloud.admin.reset_counters()
    with pytest.raises(PowerStateUnknown) as raised:
        control.fence(server)
    assert raised.value.status == "ERROR"
    assert stops(cloud) == 0
    [listed] = [s for s in cloud.admin.servers() if s["id"] == server]
    # Nothing touched it: still ERROR, still running.
    assert (listed["status"], listed["power_state"]) == ("ERROR", 1)


@needs_root
def test_fence_fails_when_the_power_off_fails(cloud, control):
    server = cloud.servers["faulty"]
    cloud.admin.set_faults({"power_errors": [
        {"operation": "stop", "server": "faulty", "count": 1}]})
    with pytest.raises(FenceFailed) as raised:
        control.fence(server)
    assert type(raised.value) is FenceFailed
    assert control.power_state(server).power == POWER_ON


@needs_root
def test_fence_times_out_while_the_compute_service_is_down(cloud, control):
    server = cloud.servers["down"]
    cloud.admin.force_down("down")
    impatient = OpenStackBlockDeviceAPI(
        control._cloud, control._cluster, instance_id="control",
        deadline=1.5, backoff=QUICK)
    cloud.admin.reset_counters()
    with pytest.raises(FenceTimedOut) as raised:
        impatient.fence(server)
    assert raised.value.status == "ACTIVE, powering-off"
    assert control.power_state(server).power == POWER_ON
    # The service comes back and finishes the stop it was sent: fencing
    # again confirms it without a second stop.
    cloud.admin.force_down("down", False)
    assert control.fence(server).power == POWER_OFF
    assert stops(cloud) == 1


@needs_root
def test_detach_from_a_server_whose_compute_is_down_is_refused(cloud,
                                                               control):
    server = cloud.servers["detach-down"]
    volume = attached_volume(control, server)
    cloud.admin.force_down("detach-down")
    with pytest.raises(DetachRefused) as raised:
        control.detach_volume(volume.volume_id, server)
    assert raised.value.reason == "Service is unavailable at this time."
    assert (raised.value.volume_id, raised.value.node) == (
        volume.volume_id, server)
    assert control.get_volume(volume.volume_id).attached_to == server
    cloud.admin.force_down("detach-down", False)
    assert control.detach_volume(volume.volume_id,
                                 server).attached_to is None


@needs_root
def test_detach_from_a_server_in_error_is_refused(cloud, control):
    server = cloud.servers["detach-broken"]
    volume = attached_volume(control, server)
    cloud.admin.reset_server_state(server, "error")
    with pytest.raises(DetachRefused) as raised:
        control.detach_volume(volume.volume_id, server)
    assert raised.value.reason == (
        "Cannot 'detach_volume' instance %s while it is in vm_state error"
        % (server,))
    assert control.get_volume(volume.volume_id).attached_to == server


@needs_root
def test_a_fenced_nodes_volume_detaches(cloud, control):
    # What failover does: fence first, then take the volume away.
    server = cloud.servers["fenced-detach"]
    volume = attached_volume(control, server)
    control.fence(server)
    assert control.detach_volume(volume.volume_id,
                                 server).attached_to is None
    assert cloud.volume_status(volume.volume_id) == "available"
