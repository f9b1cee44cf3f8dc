"""
A node that comes back, with a real control service over mutual TLS
(loopback backend, no volume attached): a node fenced or confirmed down
that reports again is returning, told what to release, and live again once
it holds nothing it should not; a node removed from the configuration
gets a slice releasing everything instead of a 404, until it holds
nothing.
"""

import json
import os

import pytest

from blockmover.poll import Backoff, poll
from tests.test_control_api import CLUSTER, DATASET, Control, report
from tests.test_control_failover import (
    APP_WITH_FAILOVER, confirm_down, desired, failed_over, holding, state,
)
from tests.test_control_fencing import wait_for_failure


@pytest.fixture
def control(tmp_path):
    service = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    service.start()
    yield service
    assert service.stop() in (0, None), "blockmover-control did not stop"


def test_a_node_that_comes_back_releases_then_returns_to_service(
        control, loopback_root):
    cluster = CLUSTER.format(root=loopback_root).replace(
        "  backend:", "  lease: 3600\n  backend:")
    status, answer = control.configure(cluster, APP_WITH_FAILOVER % ("true",))
    assert status == 200, answer
    status, _ = control.request("PUT", "/v1/nodes/node2/state",
                                report("node2"))
    confirm_down(control, "node1")
    failed_over(control)
    # node1 comes back still running mongodb on its volume: it is told to
    # release it, and stays returning while it holds it.
    status, _ = control.request(
        "PUT", "/v1/nodes/node1/state",
        holding("node1", running=["mongodb"], mounted=[DATASET]))
    assert status == 200
    node1 = state(control)["nodes"]["node1"]
    assert node1["failure"]["state"] == "returning"
    assert node1["release"] == ["mongodb"]
    slice1 = desired(control, "node1")
    assert slice1["applications"] == {} and slice1["datasets"] == {}
    assert slice1["release"] == ["mongodb"]
    # It released everything: live again, its records gone.
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                holding("node1"))
    wait_for_failure(control, "node1", lambda f: f["state"] == "live",
                     "node1 to return to service")
    with open(os.path.join(control.state_dir, "failures.json")) as f:
        recorded = json.load(f)
    assert recorded["nodes"] == {}
    # mongodb stays where it failed over to: no failback.
    app = state(control)["applications"]["mongodb"]
    assert app["placed_on"] == "node2"


def test_a_removed_node_is_told_to_release_everything(control,
                                                      loopback_root):
    cluster = CLUSTER.format(root=loopback_root)
    status, answer = control.configure(cluster)
    assert status == 200, answer
    without = cluster.replace("  node1: {address: 10.77.0.11}\n", "") \
        .replace("  node1: [mongodb]\n  node2: []", "  node2: [mongodb]")
    status, answer = control.configure(without)
    assert status == 200, answer
    slice1 = desired(control, "node1")
    assert slice1["applications"] == {} and slice1["datasets"] == {}
    # Recorded removed once saved, just after the configuration's answer.
    poll(lambda: state(control)["nodes"]["node1"]["failure"]["removed"]
         or None, 30, "node1 to be recorded removed",
         Backoff(initial=0.05, maximum=0.5))
    # Its report is taken; once it holds nothing it is forgotten.
    status, _ = control.request(
        "PUT", "/v1/nodes/node1/state",
        holding("node1", running=["mongodb"], mounted=[DATASET]))
    assert status == 200
    assert desired(control, "node1")["node"] == "node1"
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                holding("node1"))
    assert status == 200
    poll(lambda: control.request("GET", "/v1/nodes/node1/desired")[0] == 404
         or None, 30, "node1 to be forgotten",
         Backoff(initial=0.05, maximum=0.5))


def test_a_node_holds_nothing_until_it_is_back_in_service(control,
                                                          loopback_root):
    """
    mongodb has no automatic failover and stays placed on node1. While
    node1 is down and while it comes back its slice wants nothing (it
    could otherwise take its volume while the records still say it is
    down); once it holds nothing it is live and gets mongodb back.
    """
    cluster = CLUSTER.format(root=loopback_root)
    status, answer = control.configure(cluster,
                                       APP_WITH_FAILOVER % ("false",))
    assert status == 200, answer
    # (Asking for node1's slice as node1 would renew its lease.)
    confirm_down(control, "node1")
    poll(lambda: state(control)["nodes"]["node1"]["release"]
         == ["mongodb"] or None, 30, "node1's slice to release mongodb",
         Backoff(initial=0.05, maximum=0.5))
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                holding("node1", running=["mongodb"],
                                        mounted=[DATASET]))
    assert state(control)["nodes"]["node1"]["failure"]["state"] == \
        "returning"
    slice1 = desired(control, "node1")
    assert (slice1["applications"], slice1["datasets"],
            slice1["release"]) == ({}, {}, ["mongodb"])
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                holding("node1"))
    wait_for_failure(control, "node1", lambda f: f["state"] == "live",
                     "node1 to return to service")
    poll(lambda: set(desired(control, "node1")["applications"])
         == {"mongodb"} or None, 30, "node1 to get mongodb back",
         Backoff(initial=0.05, maximum=0.5))
    assert desired(control, "node1")["release"] == []


def test_a_node_heard_from_after_its_proof_needs_a_new_one(tmp_path,
                                                           loopback_root):
    """
    node1 is confirmed down, then reports again (it was not off after
    all) and falls silent: the old confirmation proves nothing any more,
    also after a restart of the service; only a new one does.
    """
    directory = str(tmp_path)

    def start():
        return Control(os.path.join(directory, "state"),
                       os.path.join(directory, "control.log")).start()

    control = start()
    try:
        cluster = CLUSTER.format(root=loopback_root).replace(
            "  backend:", "  lease: 1\n  fencing: {method: none}\n"
            "  backend:")
        status, answer = control.configure(cluster,
                                           APP_WITH_FAILOVER % ("false",))
        assert status == 200, answer
        first = confirm_down(control, "node1")["failure"]
        status, _ = control.request(
            "PUT", "/v1/nodes/node1/state",
            holding("node1", running=["mongodb"], mounted=[DATASET]))
        returned = wait_for_failure(
            control, "node1", lambda f: f["returned_at"] and f,
            "node1's return to be saved")
        assert returned["state"] in ("returning", "unresponsive")
        wait_for_failure(control, "node1",
                         lambda f: f["state"] == "unresponsive",
                         "node1 to fall silent")
    finally:
        control.stop()
    control = start()
    try:
        # Not proven down: nothing is detached from it. (Returning while
        # the lease the service's start gave it holds, since it may still
        # hold what it should release.)
        assert state(control)["nodes"]["node1"]["failure"]["state"] in (
            "returning", "unresponsive")
        again = confirm_down(control, "node1")["failure"]
        assert again["state"] == "confirmed-down"
        assert again["down_since"] > first["down_since"]
    finally:
        control.stop()
