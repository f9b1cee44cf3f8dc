"""
Node failure on a local cluster of its own (a short lease, so that a
failure is noticed in seconds), once on each backend: loopback fences with
``blockmover cluster power off`` as the fence command, openstack by
stopping the node's server in the emulator, which powers the namespace
node off the same way.

- A node powered off with a writer running: MongoDB fails over to the
  other node with every acknowledged write, and no write is acknowledged
  by both. The node powered on again releases, starts nothing and returns
  to service.
- A partition (the link cut, the processes living on): nothing moves until
  the fence has powered the node off.
- A fence that fails: nothing moves, status says why, and the application
  moves once the operator confirms the node down.
- (openstack) Nova refusing the detach: nothing moves, the stuck volume is
  reported with its server; once the compute service is back, the
  failover completes.
- A node removed from cluster.yml while it was away, unfenced: nothing
  moves until it comes back, is told to release everything, and does.
- The control service killed in the middle of a failover: restarted, it
  completes it, decided once.
- A node's certificate cannot ask for a fence.

The safety watcher looks the whole time: the volume mounted, and the
server running, on at most one node at every moment.
"""

import json
import os
import subprocess
import sys
import tempfile
import uuid

import pytest

from acceptance.clusters import WatchedCluster, watched
from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import power, state, trust
from blockmover.localcluster.cloud import admin as cloud_admin, server_id
from blockmover.localcluster.database import (
    application, read_documents, wait_for_server, write_documents,
)
from blockmover.localcluster.deploying import deploy, write_configuration
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.namespaces import unused_subnet
from blockmover.localcluster.services import CONTROL
from blockmover.localcluster.up import up
from blockmover.localcluster.writer import (
    Writer, lost, overlapping, read_writes,
)
from blockmover.poll import poll

APP = "mongodb"
LEASE = 8.0
# From power-off to serving elsewhere: the lease, the fence, detach and
# attach (2 s each on the emulator), the server's start; with room for a
# busy machine.
FAILOVER_WITHIN = 120.0
BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")


class FailingCluster(WatchedCluster):
    def place(self, node, automatic=True, fencing=None, without=(),
              wait=True):
        """
        Deploy MongoDB on ``node`` (and ``wait``), failing over to the
        other node, ``automatic`` or not; ``fencing`` replaces the
        cluster's; the nodes named in ``without`` are left out.
        """
        other = [n.name for n in self.layout.nodes
                 if n.name != node and n.name not in without]
        app = application(os.path.join(self.layout.state_dir, "data", APP))
        if other:
            app["failover"] = {"to": other, "automatic": automatic}
        write_configuration(self.layout, {APP: app}, {APP: node},
                            fencing=fencing, without=without)
        with open(self.log_path, "a") as output:
            deploy(self.layout, wait=wait, timeout=240, output=output)

    def wait_status(self, check, what, deadline=FAILOVER_WITHIN):
        return WatchedCluster.wait_status(self, check, what, deadline)

    def cloud(self):
        return cloud_admin(self.layout)

    def node_command(self, *args):
        return subprocess.run(
            [BLOCKMOVER, "node"] + list(args) + [
                "--control", self.layout.control_url, "--tls-dir",
                self.layout.operator_tls_dir],
            capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=["loopback", "openstack"])
def failing(request):
    if os.geteuid() != 0:
        pytest.skip("the acceptance tests need root: namespaces, loop "
                    "devices and mounts")
    name = "f" + uuid.uuid4().hex[:6]
    layout = make_layout(name, 2, unused_subnet("10.81"),
                         os.path.join(tempfile.gettempdir(),
                                      "blockmover-failover-" + name),
                         backend=request.param, attach_latency=2.0,
                         detach_latency=2.0, lease=LEASE)
    with watched(FailingCluster, layout, "failover") as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def every_node_on(failing):
    """
    Each test starts with every node powered on and live, and ends with
    the watcher having seen nothing wrong.
    """
    for node in failing.layout.nodes:
        power.power_on(failing.layout.state_file, node.name,
                       echo=failing.echo)
    failing.wait_status(lambda s: all(
        (n.get("failure") or {}).get("state", "live") == "live"
        for n in s["nodes"].values()), "every node live")
    yield
    assert failing.watcher.violations == [], failing.watcher.violations


def _serving_on(node):
    def check(status):
        app = status["applications"].get(APP) or {}
        return app.get("running_on") == [node] and app.get("ready")
    return check


def _node_state(node, *states):
    def check(status):
        failure = status["nodes"][node].get("failure") or {}
        return failure.get("state", "live") in states
    return check


def test_power_off_with_a_writer(failing):
    failing.place("node1")
    node1, node2 = failing.node("node1"), failing.node("node2")
    wait_for_server(node1.address)
    write_documents(node1.address, 100)
    old = Writer(node1.address).start()
    poll(lambda: True if len(old.acknowledged) >= 20 else None, 60,
         "the writer's first acknowledged writes")
    power.power_off(failing.layout.state_file, "node1", echo=failing.echo)
    status = failing.wait_status(_serving_on("node2"),
                                 "MongoDB to serve on node2")
    old.stop()
    assert status["nodes"]["node1"]["failure"]["state"] in (
        "fenced", "confirmed-down")
    assert status["applications"][APP]["failover"]["from"] == "node1"
    assert status["applications"][APP]["failover"]["to"] == "node2"
    # The operator's configuration still says node1.
    assert status["applications"][APP]["wanted_on"] == "node1"
    new = Writer(node2.address, first_id=10 ** 6).start()
    poll(lambda: True if new.acknowledged else None, 60,
         "a write acknowledged on node2")
    new.stop()
    assert lost(old.acknowledged + new.acknowledged,
                read_writes(node2.address)) == []
    assert overlapping(old.acknowledged, new.acknowledged) == []
    assert len(read_documents(node2.address)) == 100

    # node1 comes back: it releases, starts nothing, returns to service.
    power.power_on(failing.layout.state_file, "node1", echo=failing.echo)
    failing.wait_status(_node_state("node1", "live"), "node1 live again")
    status = failing.status()
    assert _serving_on("node2")(status)
    # Its slice still names MongoDB to release while the configuration
    # places it there and the failover holds.
    assert status["nodes"]["node1"]["release"] == [APP]
    # The operator takes the failover into the configuration.
    failing.place("node2")


def test_partition(failing):
    failing.place("node2")
    node2 = failing.node("node2")
    wait_for_server(node2.address)
    old = Writer(node2.address).start()
    poll(lambda: True if old.acknowledged else None, 60,
         "the writer's first acknowledged write")
    # Cut the link only: the agent and the server live on, unheard.
    run(["ip", "link", "set", "dev", node2.veth, "down"])
    failing.wait_status(_serving_on("node1"), "MongoDB to serve on node1")
    old.stop()
    # The fence powered node2 off before anything moved: the watcher saw
    # the server on one node at a time.
    assert state.load(failing.layout.state_file).powered_off.get("node2")
    assert lost(old.acknowledged, read_writes(
        failing.node("node1").address)) == []
    failing.place("node1")


def test_a_fence_that_fails(failing):
    layout = failing.layout
    if layout.backend == "openstack":
        cloud = failing.cloud()
        failing.place("node1")
        # The server goes to ERROR: its power state is unknown, not off.
        cloud.reset_server_state("node1", "error")
    else:
        failing.place("node1", fencing={"method": "command",
                                        "command": ["false"]})
    try:
        power.power_off(layout.state_file, "node1", echo=failing.echo)
        status = failing.wait_status(
            lambda s: any(x["reason"] == "unfenced" and x["node"] == "node1"
                          for x in s["stuck"]), "the failed fence to show")
        # Nothing moved: MongoDB is still placed on node1 (which may still
        # run it, for all anyone can prove), and not on node2.
        assert status["applications"][APP]["placed_on"] == "node1"
        assert "node2" not in status["applications"][APP]["running_on"]
        fence = status["nodes"]["node1"]["failure"]["fence"]
        assert fence["result"] in ("started", "failed")
        # The operator knows the node is off, and says so.
        result = failing.node_command("confirm-down", "node1")
        assert result.returncode == 0, result.stdout + result.stderr
        if layout.backend == "openstack":
            # Nova refuses to detach from a server in ERROR: status says
            # so, with the server, until the operator resets it.
            status = failing.wait_status(
                lambda s: any(x["reason"] == "refused" and
                              x["node"] == "node1" for x in s["stuck"]),
                "the refused detach to show")
            assert "node2" not in status["applications"][APP]["running_on"]
            cloud.reset_server_state("node1", "active")
        status = failing.wait_status(_serving_on("node2"),
                                     "MongoDB to serve on node2")
        confirmed = status["nodes"]["node1"]["failure"]["confirmed_down"]
        assert "operator" in confirmed["by"], confirmed
    finally:
        if layout.backend == "openstack":
            cloud.reset_server_state("node1", "active")
    failing.place("node2")


# Only Nova refuses a detach: loopback has no compute service.
@pytest.mark.parametrize("failing", ["openstack"], indirect=True)
def test_nova_refuses_the_detach(failing):
    failing.place("node2")
    cloud = failing.cloud()
    cloud.force_down("node2")
    try:
        power.power_off(failing.layout.state_file, "node2",
                        echo=failing.echo)
        status = failing.wait_status(
            _node_state("node2", "unresponsive", "fencing", "fenced"),
            "node2's lease to lapse")
        if status["nodes"]["node2"]["failure"]["state"] != "fenced":
            # Nova leaves the stop unfinished: the operator confirms.
            result = failing.node_command("confirm-down", "node2")
            assert result.returncode == 0, result.stdout + result.stderr
        status = failing.wait_status(
            lambda s: any(x["reason"] == "refused" for x in s["stuck"]),
            "the refused detach to show")
        [stuck] = [x for x in status["stuck"] if x["reason"] == "refused"]
        assert stuck["node"] == "node2"
        assert "stuck on server %s" % (failing_server(failing, "node2"),) \
            in stuck["detail"]
        assert status["applications"][APP]["running_on"] == []
    finally:
        cloud.force_down("node2", forced_down=False)
    failing.wait_status(_serving_on("node1"), "MongoDB to serve on node1")
    failing.place("node1")


def failing_server(failing, node):
    return server_id(failing.layout, failing.node(node))


def test_a_node_removed_while_dead_releases_when_it_returns(failing):
    layout = failing.layout
    # No fence: nothing can prove node1 down, so nothing is detached from
    # it while it is away.
    failing.place("node1", fencing={"method": "none"})
    power.power_off(layout.state_file, "node1", echo=failing.echo)
    failing.wait_status(_node_state("node1", "unresponsive"),
                        "node1's lease to lapse")
    failing.place("node2", fencing={"method": "none"}, without=("node1",),
                  wait=False)
    status = failing.status()
    assert status["nodes"]["node1"]["failure"]["removed"]
    # Not proven off, node1 may still run it: nothing moves.
    assert "node2" not in status["applications"][APP]["running_on"]
    # Back, it is told to release everything, and MongoDB moves.
    power.power_on(layout.state_file, "node1", echo=failing.echo)
    failing.wait_status(_serving_on("node2"), "MongoDB to serve on node2")
    # node1 holds none of it any more, and joins again.
    failing.wait_status(lambda s: "node1" not in s["applications"][APP][
        "mounted_on"] and "node1" not in s["applications"][APP][
        "attached_to"], "node1 to hold nothing of MongoDB")
    failing.place("node2")


def _failovers_logged(layout, since):
    """
    The failover decisions the control service logged after byte
    ``since`` of its log.
    """
    with open(layout.control_log) as f:
        f.seek(since)
        return [json.loads(line) for line in f
                if '"blockmover:control:failover"' in line]


def test_control_killed_mid_failover(failing):
    layout = failing.layout
    failing.place("node1")
    since = os.path.getsize(layout.control_log)
    power.power_off(layout.state_file, "node1", echo=failing.echo)
    failing.wait_status(_node_state("node1", "fencing", "fenced"),
                        "the fence to start")
    control = state.load(layout.state_file).processes[CONTROL]
    proc.kill(control)
    up(layout, echo=failing.echo)
    status = failing.wait_status(_serving_on("node2"),
                                 "MongoDB to serve on node2")
    assert status["applications"][APP]["failover"]["to"] == "node2"
    decided = _failovers_logged(layout, since)
    assert [(d["application"], d["from_node"], d["to_node"])
            for d in decided] == [(APP, "node1", "node2")], decided
    failing.place("node2")


def test_credentials_of_the_operator_only(failing):
    # node fence is an operator's command: a node's certificate is refused.
    layout = failing.layout
    node_tls = trust.node_files(layout, layout.nodes[0])
    result = subprocess.run(
        [BLOCKMOVER, "node", "fence", "node2", "--control",
         layout.control_url, "--ca", node_tls.ca, "--certificate",
         node_tls.certificate, "--key", node_tls.key],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "403" in result.stderr or "may not" in result.stderr
