"""
A node fails on the OpenStack emulator, with a real control service over
mutual TLS: its lease lapses, the service fences it (by the backend: Nova
stops its server; or by the operator's command), then, and only then,
detaches its volume through Nova and fails its application over to the
first live candidate, decided once across a restart. Where Nova refuses
the detach (the node's compute service is down), nothing moves, the state
says which volume is stuck on which server and why, and the detach is
tried again until it succeeds.

Uses the emulator and loop devices: run under the heavy lock.
"""

import json
import os
import signal
import threading

import pytest

from blockmover import identity
from blockmover.backends import loopdevice
from blockmover.poll import Backoff, poll
from tests.control_process import ControlProcess
from tests.emulator_process import CLOUD, RunningEmulator
from tests.test_control_api import report
from tests.test_control_fencing import fence_script

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

CLUSTER_NAME = "failover"
FAST = {"create": 0.05, "attach": 0.1, "detach": 0.1, "extend": 0.05,
        "delete": 0.05, "stop": 0.3, "start": 0.3}

CLUSTER = """\
version: 1
cluster:
  name: failover
  control: https://127.0.0.1:4523
  lease: {lease}
{fencing}  backend: {{name: openstack, cloud: {cloud}, deadline: "60"}}
nodes:
  node1: {{address: 10.9.0.1, instance_id: {node1}}}
  node2: {{address: 10.9.0.2, instance_id: {node2}}}
  node3: {{address: 10.9.0.3, instance_id: {node3}}}
deployment:
  node1: [app]
  node2: []
  node3: []
"""

APP = """\
version: 1
applications:
  app:
    command: [sleep, "3600"]
    volume: {mountpoint: /srv/app, maximum_size: 1G}
    failover: {to: [node3, node2], automatic: true}
"""

DATASET = identity.dataset_id(CLUSTER_NAME, "app")
QUICK = Backoff(initial=0.1, maximum=0.5)


@pytest.fixture
def cloud():
    emulator = RunningEmulator({"latency": FAST,
                                "servers": ["node1", "node2", "node3"]})
    emulator.start()
    try:
        yield emulator
    finally:
        state_dir = os.path.realpath(emulator.state_dir)
        emulator.cleanup()
    assert loopdevice.devices_under(state_dir) == []


def start_control(cloud, directory):
    return ControlProcess(
        os.path.join(directory, "state"),
        os.path.join(directory, "control.log"), cluster=CLUSTER_NAME,
        env={"OS_CLIENT_CONFIG_FILE": cloud.clouds_yaml}).start()


def configure(control, cloud, lease, fencing=""):
    status, answer = control.request("PUT", "/v1/configuration", {
        "cluster_yml": CLUSTER.format(cloud=CLOUD, lease=lease,
                                      fencing=fencing, **cloud.servers),
        "app_yml": APP})
    assert status == 200, answer


def attached_volume(control, cloud):
    """
    node1 makes the app's volume and attaches it, as its agent would
    through the control service.
    """
    status, answer = control.request("POST", "/v1/nodes/node1/volumes/create",
                                     {"dataset_id": DATASET})
    assert status == 200, answer
    volume_id = answer["volume"]["volume_id"]
    status, answer = control.request("POST", "/v1/nodes/node1/volumes/attach",
                                     {"volume_id": volume_id})
    assert status == 200, answer
    assert answer["volume"]["attached_to"] == cloud.servers["node1"]
    return volume_id


class Renewing(object):
    """
    Agents of ``nodes`` that report (renewing their leases) until
    stopped.
    """

    def __init__(self, control, nodes):
        self._control = control
        self._nodes = nodes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            for node in self._nodes:
                self._control.request("PUT", "/v1/nodes/%s/state" % (node,),
                                      report(node))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def state(control):
    status, answer = control.request("GET", "/v1/state")
    assert status == 200
    return answer


def wait_for(control, check, what):
    return poll(lambda: check(state(control)) or None, 60, what, QUICK)


def server_status(cloud, name):
    [server] = [s for s in cloud.admin.servers()
                if s["id"] == cloud.servers[name]]
    return server["status"]


def volume_holder(cloud, volume_id):
    [volume] = [v for v in cloud.admin.volumes() if v["id"] == volume_id]
    return volume["server_id"]


@needs_root
def test_fenced_by_the_backend_detached_and_failed_over_once(cloud,
                                                            tmp_path):
    control = start_control(cloud, str(tmp_path))
    try:
        configure(control, cloud, lease=3600)
        volume_id = attached_volume(control, cloud)
        with Renewing(control, ["node2", "node3"]):
            # node1 stops renewing its lease.
            configure(control, cloud, lease=1)
            placed = wait_for(
                control, lambda s: s["applications"]["app"]["failover"]
                is not None and s, "app to fail over")
            node1 = placed["nodes"]["node1"]["failure"]
            assert node1["state"] == "fenced"
            assert node1["fence"]["method"] == "backend"
            assert server_status(cloud, "node1") == "SHUTOFF"
            app = placed["applications"]["app"]
            # Asked on node1, placed on node3, the first live candidate.
            assert (app["wanted_on"], app["placed_on"]) == ("node1", "node3")
            assert (app["failover"]["from"], app["failover"]["to"]) == (
                "node1", "node3")
            decided_at = app["failover"]["decided_at"]
            # Nova detached it from the fenced server: node3 may take it.
            poll(lambda: volume_holder(cloud, volume_id) is None or None,
                 60, "the volume to be detached", QUICK)
            status, desired = control.request("GET",
                                              "/v1/nodes/node3/desired")
            assert set(desired["applications"]) == {"app"}
            status, desired = control.request("GET",
                                              "/v1/nodes/node1/desired")
            assert desired["applications"] == {}
            assert desired["release"] == ["app"]
            # The configuration stays as the operator wrote it.
            status, shown = control.request("GET", "/v1/configuration")
            assert "node1: [app]" in shown["cluster_yml"]
    finally:
        # Killed, not stopped: what it decided is on disk already.
        control.stop(signal.SIGKILL)
    with open(os.path.join(str(tmp_path), "state", "failures.json")) as f:
        recorded = json.load(f)
    assert recorded["failovers"]["app"]["to_node"] == "node3"
    control = start_control(cloud, str(tmp_path))
    try:
        with Renewing(control, ["node2", "node3"]):
            app = state(control)["applications"]["app"]
            assert app["placed_on"] == "node3"
            assert app["failover"]["decided_at"] == decided_at
    finally:
        control.stop()


@needs_root
def test_a_detach_nova_refuses_moves_nothing_until_it_succeeds(cloud,
                                                              tmp_path):
    command, _ = fence_script(str(tmp_path), "exit 0")
    fencing = "  fencing: {method: command, command: [%s]}\n" % (command,)
    control = start_control(cloud, str(tmp_path))
    try:
        configure(control, cloud, lease=3600, fencing=fencing)
        volume_id = attached_volume(control, cloud)
        # node1's host is lost: its compute service is down.
        cloud.admin.force_down("node1", True)
        with Renewing(control, ["node2", "node3"]):
            configure(control, cloud, lease=1, fencing=fencing)
            stuck = wait_for(control, lambda s: s["stuck_detaches"],
                             "the refused detach to be reported")
            [entry] = stuck
            assert (entry["volume_id"], entry["server"], entry["node"],
                    entry["application"]) == (
                volume_id, cloud.servers["node1"], "node1", "app")
            assert entry["reason"] and "compute service" in \
                entry["what_to_do"]
            assert volume_holder(cloud, volume_id) == cloud.servers["node1"]
            # The compute service comes back: the next try detaches it.
            cloud.admin.force_down("node1", False)
            poll(lambda: volume_holder(cloud, volume_id) is None or None,
                 120, "the volume to be detached", QUICK)
            wait_for(control, lambda s: s["stuck_detaches"] == [],
                     "nothing stuck any more")
    finally:
        control.stop()


@needs_root
def test_nothing_moves_off_an_unfenced_node_until_confirmed_down(cloud,
                                                                 tmp_path):
    """
    No fencing method: node1's lease lapses and it keeps its volume and
    its application; once an operator confirms it down, the volume is
    detached and the application fails over.
    """
    fencing = "  fencing: {method: none}\n"
    control = start_control(cloud, str(tmp_path))
    try:
        configure(control, cloud, lease=3600, fencing=fencing)
        volume_id = attached_volume(control, cloud)
        with Renewing(control, ["node2", "node3"]):
            configure(control, cloud, lease=1, fencing=fencing)
            lapsed = wait_for(
                control, lambda s: s["nodes"]["node1"]["failure"]["state"]
                == "unresponsive" and s, "node1 to be unresponsive")
            assert lapsed["applications"]["app"]["placed_on"] == "node1"
            assert lapsed["applications"]["app"]["failover"] is None
            assert volume_holder(cloud, volume_id) == cloud.servers["node1"]
            assert server_status(cloud, "node1") == "ACTIVE"
            status, answer = control.request(
                "POST", "/v1/nodes/node1/confirm-down", {}, kind="user",
                name="operator")
            assert status == 200, answer
            assert answer["failure"]["state"] == "confirmed-down"
            poll(lambda: volume_holder(cloud, volume_id) is None or None,
                 60, "the volume to be detached", QUICK)
            app = wait_for(control, lambda s: s["applications"]["app"][
                "failover"] is not None and s["applications"]["app"],
                "app to fail over")
            assert app["placed_on"] == "node3"
    finally:
        control.stop()


@needs_root
def test_a_server_in_error_is_not_fenced_until_confirmed_down(cloud,
                                                              tmp_path):
    """
    node1's server is in ERROR: Nova cannot say it is off, so the backend's
    fence fails, nothing moves and the state says why; once an operator
    confirms node1 down, its volume is detached... unless Nova refuses
    that too (a server in ERROR), which the state says; reset out of
    ERROR, the detach goes through and the application fails over.
    """
    control = start_control(cloud, str(tmp_path))
    try:
        configure(control, cloud, lease=3600)
        volume_id = attached_volume(control, cloud)
        cloud.admin.reset_server_state(cloud.servers["node1"], "error")
        with Renewing(control, ["node2", "node3"]):
            configure(control, cloud, lease=1)
            failed = wait_for(
                control, lambda s: (s["nodes"]["node1"]["failure"]["fence"]
                                    or {}).get("result") == "failed" and s,
                "the fence to fail")
            failure = failed["nodes"]["node1"]["failure"]
            assert failure["down_since"] is None
            assert "ERROR" in failure["fence"]["error"]
            assert failed["applications"]["app"]["placed_on"] == "node1"
            assert volume_holder(cloud, volume_id) == cloud.servers["node1"]
            status, answer = control.request(
                "POST", "/v1/nodes/node1/confirm-down", {}, kind="user",
                name="operator")
            assert status == 200, answer
            stuck = wait_for(control, lambda s: s["stuck_detaches"],
                             "Nova to refuse the detach")
            assert stuck[0]["server"] == cloud.servers["node1"]
            assert volume_holder(cloud, volume_id) == cloud.servers["node1"]
            cloud.admin.reset_server_state(cloud.servers["node1"], "active")
            poll(lambda: volume_holder(cloud, volume_id) is None or None,
                 120, "the volume to be detached", QUICK)
            app = wait_for(control, lambda s: s["applications"]["app"][
                "failover"] is not None and s["applications"]["app"],
                "app to fail over")
            assert app["placed_on"] == "node3"
    finally:
        control.stop()


@needs_root
def test_a_removed_node_confirmed_down_lets_its_volume_go(cloud, tmp_path):
    """
    node1 dies holding app's volume and is removed from the configuration,
    app deployed on node2: the volume stays where it is until an operator
    confirms node1 down (it cannot be fenced by an address the
    configuration no longer has), then it is detached.
    """
    control = start_control(cloud, str(tmp_path))
    try:
        configure(control, cloud, lease=3600,
                  fencing="  fencing: {method: none}\n")
        volume_id = attached_volume(control, cloud)
        without = CLUSTER.format(
            cloud=CLOUD, lease=3600, fencing="  fencing: {method: none}\n",
            **cloud.servers).replace(
            "  node1: {address: 10.9.0.1, instance_id: %s}\n"
            % (cloud.servers["node1"],), "").replace(
            "  node1: [app]\n  node2: []", "  node2: [app]")
        status, answer = control.request("PUT", "/v1/configuration", {
            "cluster_yml": without, "app_yml": APP})
        assert status == 200, answer
        assert state(control)["nodes"]["node1"]["failure"]["removed"]
        assert volume_holder(cloud, volume_id) == cloud.servers["node1"]
        status, answer = control.request(
            "POST", "/v1/nodes/node1/fence", {}, kind="user",
            name="operator")
        assert status == 409 and "confirm it down" in answer["errors"][0]
        status, answer = control.request(
            "POST", "/v1/nodes/node1/confirm-down", {}, kind="user",
            name="operator")
        assert status == 200, answer
        poll(lambda: volume_holder(cloud, volume_id) is None or None,
             60, "the volume to be detached", QUICK)
    finally:
        control.stop()
