"""
The control service as three replicas on a three-member etcd, on a local
cluster of its own: four loopback nodes in two sites (node1 and node3 in
east, node2 and node4 in west), short election times (a 6 s lease) and a
short node lease, so that failures are noticed in seconds.

- The leader is killed (SIGKILL) in the middle of a move, of a push
  between the sites and of a failover: each completes, with every
  document, the push under the same push id, the failover decided once.
- The leader is cut off from etcd (its link down) in the middle of a
  move: it stops acting before its lease can end (before another is
  elected), another leads, and the move completes.
- One etcd member is killed: a move goes on as before.

The safety watcher looks the whole time: the volume mounted, and MongoDB
running, on at most one node at every moment.
"""

import json
import os
import tempfile
import uuid

import pytest

from acceptance.clusters import APP, WatchedCluster, watched
from acceptance.moving import wait_for_stop_on
from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import power, state, trust
from blockmover.localcluster.database import (
    application, checksum, missing_or_wrong, read_documents,
    refuses_connections, wait_for_server, write_documents,
)
from blockmover.localcluster.deploying import deploy, write_configuration
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.namespaces import unused_subnet
from blockmover.localcluster.status import leading_replica, replicas_answer
from blockmover.localcluster.up import up

DOCUMENTS = 1000
ELECTION = {"lease": 6, "renew_deadline": 4, "retry": 1}
NODE_LEASE = 8.0
# A move, a push or a failover, with a leader lost on the way: the lease,
# an election, the work itself, on a busy machine.
WITHIN = 240.0


class HACluster(WatchedCluster):
    def __init__(self, layout, log_path):
        WatchedCluster.__init__(self, layout, log_path)
        self.checksum = None

    @property
    def operator(self):
        # The cluster issues them as it comes up.
        return trust.operator_credentials(self.layout)

    def place(self, node, wait=True, failover=()):
        app = application(os.path.join(self.layout.state_dir, "data", APP))
        if failover:
            app["failover"] = {"to": list(failover), "automatic": True}
        write_configuration(self.layout, {APP: app}, {APP: node})
        with open(self.log_path, "a") as output:
            deploy(self.layout, wait=wait, timeout=WITHIN, output=output)

    def wait_status(self, check, what, deadline=WITHIN):
        return WatchedCluster.wait_status(self, check, what, deadline)

    def replicas(self):
        """
        ``GET /v1/replicas`` from the first replica that answers.
        """
        return replicas_answer(self.layout, self.operator)

    def leader(self, other_than=None):
        """
        The ``ReplicaLayout`` of the replica leading (and serving), once
        one other than ``other_than`` does.
        """
        return leading_replica(self.layout, self.operator, other_than,
                               serving=True, timeout=WITHIN)

    def kill(self, name):
        """
        SIGKILL the process ``name`` (a replica, an etcd member).
        """
        proc.kill(state.load(self.layout.state_file).processes[name])

    def log_sizes(self):
        return {r.name: os.path.getsize(r.log) for r in self.layout.replicas}

    def logged(self, message_type, since):
        """
        Every message ``message_type`` the replicas logged after
        ``since`` (``log_sizes``), with the replica's name.
        """
        found = []
        for replica in self.layout.replicas:
            with open(replica.log) as f:
                f.seek(since.get(replica.name, 0))
                for line in f:
                    if '"%s"' % (message_type,) in line:
                        found.append(dict(json.loads(line),
                                          replica=replica.name))
        return found

    def write(self, node):
        address = self.node(node).address
        wait_for_server(address)
        write_documents(address, DOCUMENTS)
        self.checksum = checksum(read_documents(address))

    def check_on(self, node, previous):
        address = self.node(node).address
        wait_for_server(address)
        documents = read_documents(address)
        assert missing_or_wrong(documents, DOCUMENTS) == []
        assert checksum(documents) == self.checksum
        assert refuses_connections(self.node(previous).address)


@pytest.fixture(scope="module")
def ha():
    if os.geteuid() != 0:
        pytest.skip("the acceptance tests need root: namespaces, loop "
                    "devices and mounts")
    name = "h" + uuid.uuid4().hex[:6]
    layout = make_layout(
        name, 4, unused_subnet("10.83"),
        os.path.join(tempfile.gettempdir(), "blockmover-ha-" + name),
        backend="loopback", sites=(("east", "loopback"),
                                   ("west", "loopback")),
        control_replicas=3, election=ELECTION, lease=NODE_LEASE)
    with watched(HACluster, layout, "ha") as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def every_part_running(ha):
    """
    Each test starts with every replica, etcd member and node running,
    every link up, and ends with the watcher having seen nothing wrong.
    """
    for replica in ha.layout.replicas:
        run(["ip", "link", "set", "dev", replica.veth, "up"])
    for node in ha.layout.nodes:
        power.power_on(ha.layout.state_file, node.name, echo=ha.echo)
    up(ha.layout, echo=ha.echo)
    ha.leader()
    yield
    assert ha.watcher.violations == [], ha.watcher.violations


def _serving_on(node):
    def check(status):
        app = status["applications"].get(APP) or {}
        return app.get("running_on") == [node] and app.get("ready")
    return check


def test_a_move_goes_on_when_the_leader_is_killed(ha):
    ha.place("node1")
    ha.write("node1")
    ha.place("node3", wait=False)
    wait_for_stop_on(ha.watcher, "node1")
    killed = ha.leader()
    ha.kill(killed.name)
    ha.wait_status(_serving_on("node3"), "MongoDB to serve on node3")
    ha.check_on("node3", "node1")
    assert ha.leader(other_than=killed.name).name != killed.name


def test_a_push_goes_on_under_its_id_when_the_leader_is_killed(ha):
    ha.place("node3")
    ha.write("node3")
    ha.place("node2", wait=False)

    def live(status):
        pushes = [p for p in status["pushes"] if p["application"] == APP
                  and p["phase"] == "live"]
        return pushes[0] if pushes else None
    push = live(ha.wait_status(live, "the push to node2 to be under way"))
    killed = ha.leader()
    ha.kill(killed.name)
    status = ha.wait_status(_serving_on("node2"), "MongoDB to serve on node2")
    [done] = [p for p in status["pushes"] if p["application"] == APP]
    assert (done["push_id"], done["phase"]) == (push["push_id"],
                                                "committed")
    ha.check_on("node2", "node3")


def test_a_failover_is_decided_once_when_the_leader_is_killed(ha):
    layout = ha.layout
    ha.place("node2", failover=["node4"])
    ha.write("node2")
    since = ha.log_sizes()
    power.power_off(layout.state_file, "node2", echo=ha.echo)
    ha.wait_status(lambda s: (s["nodes"]["node2"].get("failure") or {}).get(
        "state") in ("fencing", "fenced"), "node2's fence to start")
    killed = ha.leader()
    ha.kill(killed.name)
    status = ha.wait_status(_serving_on("node4"), "MongoDB to serve on node4")
    assert status["applications"][APP]["failover"]["to"] == "node4"
    decided = ha.logged("blockmover:control:failover", since)
    assert [(d["application"], d["from_node"], d["to_node"])
            for d in decided] == [(APP, "node2", "node4")], decided
    power.power_on(layout.state_file, "node2", echo=ha.echo)
    ha.wait_status(lambda s: (s["nodes"]["node2"].get("failure") or {}).get(
        "state", "live") == "live", "node2 live again")
    ha.check_on("node4", "node2")
    ha.place("node4", failover=["node2"])


def test_a_leader_cut_off_from_etcd_stops_before_another_leads(ha):
    ha.place("node4")
    ha.write("node4")
    since = ha.log_sizes()
    ha.place("node2", wait=False)
    wait_for_stop_on(ha.watcher, "node4")
    cut = ha.leader()
    run(["ip", "link", "set", "dev", cut.veth, "down"])
    new = ha.leader(other_than=cut.name)
    ha.wait_status(_serving_on("node2"), "MongoDB to serve on node2")
    ha.check_on("node2", "node4")
    # The cut leader said it lost the lead (its renew deadline passed)
    # before the new one was elected: its lease outlives its deadline.
    lost = ha.logged("blockmover:control:lost-lead", since)
    elected = [m for m in ha.logged("blockmover:election:elected", since)
               if m["replica"] == new.name]
    assert [m["replica"] for m in lost] == [cut.name], lost
    assert "not renewed" in lost[0]["reason"]
    assert lost[0]["timestamp"] < elected[0]["timestamp"]
    run(["ip", "link", "set", "dev", cut.veth, "up"])


def test_a_move_goes_on_with_one_etcd_member_killed(ha):
    ha.place("node2")
    ha.write("node2")
    ha.kill(ha.layout.etcd_members[0].name)
    ha.place("node4")
    ha.check_on("node4", "node2")
    answer = ha.replicas()
    assert [m["healthy"] for m in answer["etcd"]] == [False, True, True]
