"""
The emulator's Nova servers as fencing needs them, on the wire and through
the real openstacksdk: stop and start through their task states, a server
in ERROR, a compute service forced down (a detach refused with 409, an
attach that times out), the power command told before the status changes,
and the admin API that drives it all.
"""

import os
import stat
import time

import pytest
from openstack import exceptions as os_exceptions

from blockmover.emulator.admin_client import AdminRefused
from blockmover.poll import Backoff, poll
from tests.emulator_process import RunningEmulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.2, "detach": 0.2, "extend": 0.05,
        "delete": 0.05, "stop": 0.3, "start": 0.3}
RPC_TIMEOUT = 1.0
# One server per test, so no test sees another's power or state.
SERVERS = ["wire", "sdk", "hooked", "hook-fails", "faulty", "broken",
           "down", "listed"]
QUICK = Backoff(initial=0.02, factor=1.5, maximum=0.2)

POWER_SCRIPT = """#!/bin/sh
# Records each call, and takes a moment, as a real power-off does.
echo "start $1 $2 $3" >> {log}
sleep 0.5
if [ -e {fail} ]; then exit 3; fi
echo "done $1 $2 $3" >> {log}
"""


@pytest.fixture(scope="module")
def power(tmp_path_factory):
    """
    The power command's files: ``script``, ``log`` (what it was told) and
    ``fail`` (while it exists, the command exits 3).
    """
    base = tmp_path_factory.mktemp("power")
    files = {"script": str(base / "power"), "log": str(base / "power.log"),
             "fail": str(base / "fail")}
    with open(files["script"], "w") as f:
        f.write(POWER_SCRIPT.format(**files))
    os.chmod(files["script"], stat.S_IRWXU)
    return files


@pytest.fixture(scope="module")
def cloud(power):
    emulator = RunningEmulator({
        "latency": FAST, "rpc_timeout": RPC_TIMEOUT,
        "servers": {name: {} for name in SERVERS},
        "power_command": [power["script"]]})
    emulator.start()
    yield emulator
    emulator.cleanup()


@pytest.fixture(autouse=True)
def no_faults(cloud):
    yield
    cloud.admin.clear_faults()


def server(cloud, name):
    status, _, body = cloud.request(
        "GET", "/compute/v2.1/servers/%s" % (cloud.servers[name],))
    assert status == 200, body
    return body["server"]


def power_of(cloud, name):
    record = server(cloud, name)
    return (record["status"], record["OS-EXT-STS:task_state"],
            record["OS-EXT-STS:vm_state"], record["OS-EXT-STS:power_state"])


def action(cloud, name, body):
    return cloud.request("POST", "/compute/v2.1/servers/%s/action"
                         % (cloud.servers.get(name, name),), body)


def wait_for_power(cloud, name, wanted, timeout=10):
    """
    Poll until the server's (status, task_state, vm_state, power_state)
    is ``wanted``; returns every value seen on the way.
    """
    seen = []

    def check():
        seen.append(power_of(cloud, name))
        return True if seen[-1] == wanted else None
    poll(check, timeout, "server %s to be %s" % (name, wanted), QUICK)
    return seen


def new_volume(cloud):
    status, _, body = cloud.request("POST", "/v3/volumes",
                                    {"volume": {"size": 1}})
    assert status == 202, body
    cloud.wait_for_status(body["volume"]["id"], "available")
    return body["volume"]["id"]


def attach(cloud, name, volume_id):
    return cloud.request(
        "POST", "/compute/v2.1/servers/%s/os-volume_attachments"
        % (cloud.servers[name],),
        {"volumeAttachment": {"volumeId": volume_id}})


def detach(cloud, name, volume_id):
    return cloud.request(
        "DELETE", "/compute/v2.1/servers/%s/os-volume_attachments/%s"
        % (cloud.servers[name], volume_id))


def conflict(message):
    return {"conflictingRequest": {"code": 409, "message": message}}


def told(power):
    try:
        with open(power["log"]) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


ACTIVE = ("ACTIVE", None, "active", 1)
POWERING_OFF = ("ACTIVE", "powering-off", "active", 1)
SHUTOFF = ("SHUTOFF", None, "stopped", 4)
POWERING_ON = ("SHUTOFF", "powering-on", "stopped", 4)


def test_stop_and_start_pass_through_their_task_states(cloud):
    server_id = cloud.servers["wire"]
    before = server(cloud, "wire")["updated"]
    assert power_of(cloud, "wire") == ACTIVE

    status, _, body = action(cloud, "wire", {"os-stop": None})
    assert (status, body) == (202, None)
    assert power_of(cloud, "wire") == POWERING_OFF
    # One stop at a time: Nova checks the task state too.
    status, _, body = action(cloud, "wire", {"os-stop": None})
    assert (status, body) == (409, conflict(
        "Cannot 'stop' instance %s while it is in task_state powering-off"
        % (server_id,)))
    wait_for_power(cloud, "wire", SHUTOFF)
    assert server(cloud, "wire")["updated"] != before

    status, _, body = action(cloud, "wire", {"os-stop": None})
    assert (status, body) == (409, conflict(
        "Cannot 'stop' instance %s while it is in vm_state stopped"
        % (server_id,)))

    status, _, body = action(cloud, "wire", {"os-start": None})
    assert (status, body) == (202, None)
    # Still SHUTOFF while it powers on: Nova's status follows the vm_state.
    assert power_of(cloud, "wire") == POWERING_ON
    wait_for_power(cloud, "wire", ACTIVE)
    status, _, body = action(cloud, "wire", {"os-start": None})
    assert (status, body) == (409, conflict(
        "Cannot 'start' instance %s while it is in vm_state active"
        % (server_id,)))


def test_actions_nova_does_not_know_are_refused(cloud):
    status, _, body = action(cloud, "wire", {"os-reboot": None})
    assert (status, body) == (400, {"badRequest": {
        "code": 400, "message": "There is no such action: os-reboot"}})
    status, _, body = action(cloud, "wire", {"os-stop": None, "bogus": 1})
    assert status == 400
    assert "'bogus' was unexpected" in body["badRequest"]["message"]
    status, _, body = action(cloud, "no-such-server", {"os-stop": None})
    assert (status, body) == (404, {"itemNotFound": {
        "code": 404,
        "message": "Instance no-such-server could not be found."}})
    assert power_of(cloud, "wire") == ACTIVE


def test_openstacksdk_stops_and_starts(cloud):
    conn = cloud.connect()
    server_id = cloud.servers["sdk"]
    conn.compute.stop_server(server_id)
    stopped = conn.compute.wait_for_server(
        conn.compute.get_server(server_id), "SHUTOFF", failures=["ERROR"],
        interval=0.05, wait=10)
    assert (stopped.vm_state, stopped.task_state, stopped.power_state) == (
        "stopped", None, 4)
    listed = {s.name: s.status for s in conn.compute.servers(details=True)}
    assert listed["sdk"] == "SHUTOFF"
    with pytest.raises(os_exceptions.ConflictException) as raised:
        conn.compute.stop_server(server_id)
    assert "vm_state stopped" in str(raised.value)
    conn.compute.start_server(server_id)
    started = conn.compute.wait_for_server(
        conn.compute.get_server(server_id), "ACTIVE", failures=["ERROR"],
        interval=0.05, wait=10)
    assert (started.vm_state, started.power_state) == ("active", 1)


def test_power_command_runs_before_the_status_says_so(cloud, power):
    server_id = cloud.servers["hooked"]
    action(cloud, "hooked", {"os-stop": None})
    seen = []

    def check():
        # What the server shows, and what the command had done by then.
        lines = told(power)
        seen.append((power_of(cloud, "hooked"), lines))
        return True if seen[-1][0] == SHUTOFF else None
    poll(check, 10, "the server to be SHUTOFF", QUICK)
    started = "start off hooked %s" % (server_id,)
    done = "done off hooked %s" % (server_id,)
    # Never SHUTOFF before the command finished; still powering off while
    # it ran.
    assert all(done in lines for state, lines in seen if state == SHUTOFF)
    assert any(state == POWERING_OFF and started in lines
               and done not in lines for state, lines in seen)
    action(cloud, "hooked", {"os-start": None})
    wait_for_power(cloud, "hooked", ACTIVE)
    assert "done on hooked %s" % (server_id,) in told(power)


def test_a_failing_power_command_leaves_the_server_on(cloud, power):
    with open(power["fail"], "w"):
        pass
    try:
        action(cloud, "hook-fails", {"os-stop": None})
        seen = wait_for_power(cloud, "hook-fails", ACTIVE)
    finally:
        os.remove(power["fail"])
    # The stop was taken, then reverted as Nova reverts a failed stop.
    assert POWERING_OFF in seen and SHUTOFF not in seen
    assert "start off hook-fails %s" % (
        cloud.servers["hook-fails"],) in told(power)


def test_power_error_fault_fails_one_stop(cloud):
    cloud.admin.set_faults({"power_errors": [
        {"operation": "stop", "server": "faulty", "count": 1}]})
    action(cloud, "faulty", {"os-stop": None})
    seen = wait_for_power(cloud, "faulty", ACTIVE)
    assert POWERING_OFF in seen and SHUTOFF not in seen
    assert cloud.admin.faults()["power_errors"][0]["count"] == 0
    # Used up: the next stop works.
    action(cloud, "faulty", {"os-stop": None})
    wait_for_power(cloud, "faulty", SHUTOFF)
    action(cloud, "faulty", {"os-start": None})
    wait_for_power(cloud, "faulty", ACTIVE)


def test_server_in_error_keeps_its_volumes(cloud):
    server_id = cloud.servers["broken"]
    volume_id = new_volume(cloud)
    assert attach(cloud, "broken", volume_id)[0] == 200
    cloud.wait_for_status(volume_id, "in-use")

    described = cloud.admin.reset_server_state("broken", "error")
    assert (described["status"], described["power_state"]) == ("ERROR", 1)
    # ERROR says nothing of the power: it may well still run.
    assert power_of(cloud, "broken") == ("ERROR", None, "error", 1)
    status, _, body = detach(cloud, "broken", volume_id)
    assert (status, body) == (409, conflict(
        "Cannot 'detach_volume' instance %s while it is in vm_state error"
        % (server_id,)))
    other = new_volume(cloud)
    status, _, body = attach(cloud, "broken", other)
    assert (status, body) == (409, conflict(
        "Cannot 'attach_volume' instance %s while it is in vm_state error"
        % (server_id,)))
    assert cloud.volume_status(volume_id) == "in-use"
    assert cloud.volume_status(other) == "available"

    cloud.admin.reset_server_state(server_id, "active")
    assert detach(cloud, "broken", volume_id)[0] == 202
    cloud.wait_for_status(volume_id, "available")
    for volume in (volume_id, other):
        cloud.request("DELETE", "/v3/volumes/%s" % (volume,))


def test_stop_of_a_server_in_error_is_allowed(cloud):
    # Nova stops a server from ACTIVE or ERROR.
    cloud.admin.reset_server_state("faulty", "error")
    assert action(cloud, "faulty", {"os-stop": None})[0] == 202
    wait_for_power(cloud, "faulty", SHUTOFF)
    action(cloud, "faulty", {"os-start": None})
    wait_for_power(cloud, "faulty", ACTIVE)


def test_compute_service_down(cloud):
    conn = cloud.connect()
    volume_id = new_volume(cloud)
    other = new_volume(cloud)
    assert attach(cloud, "down", volume_id)[0] == 200
    cloud.wait_for_status(volume_id, "in-use")

    service = cloud.admin.force_down("down")
    assert (service["host"], service["state"], service["servers"]) == (
        "compute-down", "down", ["down"])
    # The server's status cannot show it: Nova does not know.
    assert power_of(cloud, "down") == ACTIVE

    status, _, body = detach(cloud, "down", volume_id)
    assert (status, body) == (409, conflict(
        "Service is unavailable at this time."))
    with pytest.raises(os_exceptions.ConflictException) as raised:
        conn.compute.delete_volume_attachment(cloud.servers["down"],
                                              volume_id)
    assert "Service is unavailable at this time." in str(raised.value)
    assert cloud.volume_status(volume_id) == "in-use"

    # An attach waits for the compute service as long as Nova's RPC
    # timeout, then fails.
    began = time.monotonic()
    status, _, body = attach(cloud, "down", other)
    assert time.monotonic() - began >= RPC_TIMEOUT
    assert status == 500
    assert "MessagingTimeout" in body["computeFault"]["message"]
    assert cloud.volume_status(other) == "available"

    # A stop is taken, and never finished while the service is down.
    assert action(cloud, "down", {"os-stop": None})[0] == 202
    time.sleep(FAST["stop"] * 3)
    assert power_of(cloud, "down") == POWERING_OFF

    cloud.admin.force_down("compute-down", False)
    wait_for_power(cloud, "down", SHUTOFF)
    # A stopped server's volumes detach.
    assert detach(cloud, "down", volume_id)[0] == 202
    cloud.wait_for_status(volume_id, "available")
    action(cloud, "down", {"os-start": None})
    wait_for_power(cloud, "down", ACTIVE)
    for volume in (volume_id, other):
        cloud.request("DELETE", "/v3/volumes/%s" % (volume,))


def test_admin_lists_servers_and_services(cloud):
    servers = {s["name"]: s for s in cloud.admin.servers()}
    assert set(servers) == set(SERVERS)
    assert servers["listed"] == {
        "id": cloud.servers["listed"], "name": "listed",
        "host": "compute-listed", "status": "ACTIVE", "vm_state": "active",
        "task_state": None, "power_state": 1, "compute_service": "up"}
    services = {s["host"]: s for s in cloud.admin.compute_services()}
    assert services["compute-listed"] == {
        "host": "compute-listed", "binary": "nova-compute", "state": "up",
        "forced_down": False, "servers": ["listed"]}


@pytest.mark.parametrize("call, code", [
    (lambda admin: admin.reset_server_state("listed", "stopped"), 400),
    (lambda admin: admin.reset_server_state("nobody", "error"), 404),
    (lambda admin: admin.force_down("nowhere"), 404),
    (lambda admin: admin.set_faults({"power_errors": [
        {"operation": "stop", "volume": "v1"}]}), 400),
    (lambda admin: admin.set_faults({"stuck": [
        {"operation": "reboot", "seconds": 1}]}), 400),
])
def test_admin_refuses_what_it_cannot_do(cloud, call, code):
    with pytest.raises(AdminRefused) as raised:
        call(cloud.admin)
    assert raised.value.code == code
    assert power_of(cloud, "listed") == ACTIVE
    assert all(s["state"] == "up" for s in cloud.admin.compute_services())
