"""
Failover and coming back, with a real control service over mutual TLS
(loopback backend, no volume attached): an application without automatic
failover stays where the operator put it and the operator is told; a
deploy that moves it off a node proven down just works and ends any
failover. (Failover on a cloud, with its volume detached:
``test_control_failover_cloud``.)
"""

import json
import os
import subprocess

import pytest

from blockmover.poll import Backoff, poll
from blockmover.model import (
    Mount, NodeReport, NodeState, Progress, RunningApplication, to_data,
)
from tests.cluster_ca import OPERATOR
from tests.test_control_api import CLUSTER, Control, report
from tests.test_status import BLOCKMOVER, operator_dir

APP_WITH_FAILOVER = """\
version: 1
applications:
  mongodb:
    command: [secantusd-py, --port, "27017"]
    volume:
      mountpoint: /data/db
      maximum_size: 1G
    failover: {to: [node2], automatic: %s}
"""


@pytest.fixture
def control(tmp_path):
    service = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    service.start()
    yield service
    assert service.stop() in (0, None), "blockmover-control did not stop"


def confirm_down(control, node):
    status, answer = control.request(
        "POST", "/v1/nodes/%s/confirm-down" % (node,), {}, kind="user",
        name=OPERATOR)
    assert status == 200, answer
    return answer


def state(control):
    status, answer = control.request("GET", "/v1/state")
    assert status == 200
    return answer


def failed_over(control):
    """
    The application's state once the service decided its failover.
    """
    return poll(lambda: state(control)["applications"]["mongodb"]["failover"]
                and state(control)["applications"]["mongodb"], 30,
                "mongodb to fail over", Backoff(initial=0.05, maximum=0.5))


def desired(control, node):
    status, answer = control.request("GET", "/v1/nodes/%s/desired" % (node,))
    assert status == 200, answer
    return answer


def holding(node, running=(), mounted=()):
    """
    A report of ``node`` holding ``mounted`` datasets and running
    ``running`` applications.
    """
    return to_data(NodeReport(
        state=NodeState(
            node=node, backend_id=node,
            mounts={d: Mount(dataset_id=d, device="/dev/loop99",
                             mountpoint="/data/db") for d in mounted},
            running={a: RunningApplication(name=a, pid=4242, ready=True)
                     for a in running}),
        progress=Progress(converged=True, generation=1)))


def test_without_automatic_failover_the_operator_is_told_and_deploys(
        control, loopback_root):
    cluster = CLUSTER.format(root=loopback_root)
    status, answer = control.configure(cluster,
                                       APP_WITH_FAILOVER % ("false",))
    assert status == 200, answer
    confirm_down(control, "node1")
    app = state(control)["applications"]["mongodb"]
    assert (app["wanted_on"], app["placed_on"], app["failover"]) == (
        "node1", "node1", None)
    assert "node1 is down and mongodb has no automatic failover" in \
        app["failover_blocked"]
    shown = subprocess.run(
        [BLOCKMOVER, "status", "--control", control.url, "--tls-dir",
         operator_dir(), "--json"], capture_output=True, text=True,
        timeout=60)
    stuck = json.loads(shown.stdout)["stuck"]
    assert [(s["reason"], s["application"]) for s in stuck
            if s["reason"] == "down"] == [("down", "mongodb")]
    # The operator moves it off node1: that just works.
    moved = cluster.replace("node1: [mongodb]\n  node2: []",
                            "node1: []\n  node2: [mongodb]")
    status, answer = control.configure(moved, APP_WITH_FAILOVER % ("false",))
    assert status == 200, answer
    assert set(desired(control, "node2")["applications"]) == {"mongodb"}
    app = state(control)["applications"]["mongodb"]
    assert (app["wanted_on"], app["placed_on"]) == ("node2", "node2")


def test_a_failover_ends_when_the_operator_deploys_elsewhere(
        control, loopback_root):
    cluster = CLUSTER.format(root=loopback_root).replace(
        "  backend:", "  lease: 3600\n  backend:")
    status, answer = control.configure(cluster, APP_WITH_FAILOVER % ("true",))
    assert status == 200, answer
    # node2 is live (renews its lease); node1 is confirmed down.
    status, _ = control.request("PUT", "/v1/nodes/node2/state",
                                report("node2"))
    confirm_down(control, "node1")
    app = failed_over(control)
    assert (app["wanted_on"], app["placed_on"]) == ("node1", "node2")
    assert desired(control, "node1")["release"] == ["mongodb"]
    assert set(desired(control, "node2")["applications"]) == {"mongodb"}
    # The operator now places it on node2 themselves: no failover left.
    moved = cluster.replace("node1: [mongodb]\n  node2: []",
                            "node1: []\n  node2: [mongodb]")
    status, answer = control.configure(moved, APP_WITH_FAILOVER % ("true",))
    assert status == 200, answer
    app = state(control)["applications"]["mongodb"]
    assert (app["wanted_on"], app["placed_on"], app["failover"]) == (
        "node2", "node2", None)

    def failovers():
        with open(os.path.join(control.state_dir, "failures.json")) as f:
            return json.load(f)["failovers"]
    # Saved once the configuration is taken.
    poll(lambda: failovers() == {} or None, 30, "the failover to be ended",
         Backoff(initial=0.05, maximum=0.5))
