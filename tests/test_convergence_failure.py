"""
What ``blockmover-deploy --wait`` and ``blockmover status`` say of node
failure, from ``GET /v1/state``'s plain data: an application that failed
over is placed where it runs now, and a volume the cloud refuses to detach
is named with its server, the cloud's reason and what to do.
"""

from blockmover import status
from blockmover.config import load_deployment
from blockmover.convergence import (
    ErrorWatch, application_line, pending, placed_on,
)
from tests.test_config import APP, CLUSTER

DEPLOYMENT = load_deployment(CLUSTER, APP)

STUCK = {"volume_id": "vol-1", "dataset_id": "ds-1",
         "application": "mongodb", "server": "srv-1", "node": "node1",
         "reason": "Service is unavailable at this time.",
         "what_to_do": "bring the server's compute service back",
         "attempts": 3, "retry_at": 130.0}


def failed_over_state(running_on, stuck=()):
    return {
        "now": 100.0, "generation": 2, "cluster": "demo",
        "nodes": {"node1": {"failure": {"state": "fenced"}},
                  "node2": {}},
        "applications": {"mongodb": {
            "dataset_id": "ds-1", "wanted_on": "node1", "placed_on": "node2",
            "running_on": running_on, "ready_on": running_on,
            "mounted_on": running_on, "attached_to": [],
            "failover": {"from": "node1", "to": "node2", "decided_at": 90.0},
            "failover_blocked": None, "transitioned_at": 90.0}},
        "stuck_detaches": list(stuck)}


def test_a_failed_over_application_is_placed_where_it_runs_now():
    state = failed_over_state(["node2"])
    assert placed_on("mongodb", "node1", state) == "node2"
    assert pending(DEPLOYMENT, state, {}) == []
    line = application_line("mongodb", "node1", state, "demo", 100.0)
    assert line.startswith("mongodb -> node2 (failed over from node1) "
                           "[running on node2]")
    summary = status.summarize(state, "https://c:4523", 100.0)
    app = summary["applications"]["mongodb"]
    assert (app["wanted_on"], app["placed_on"], app["placed"]) == (
        "node1", "node2", True)
    assert summary["moves"] == []
    [row] = [line for line in status.lines(summary)
             if line.startswith("mongodb ")]
    assert row.endswith("node2 (failed over from node1)")


def test_a_refused_detach_is_said_with_its_server_and_what_to_do():
    state = failed_over_state([], stuck=[STUCK])
    reasons = pending(DEPLOYMENT, state, {})
    said = ("volume vol-1 of mongodb is stuck on server srv-1 (node node1, "
            "proven down): the cloud refused to detach it 3 times (Service "
            "is unavailable at this time.); bring the server's compute "
            "service back")
    assert said in reasons
    # A deploy waiting on it fails once it lasts (not while it passes).
    watch = ErrorWatch(patience=30)
    assert watch.persistent(state, 100.0) is None
    assert watch.persistent(state, 131.0) == "node1: " + said
    summary = status.summarize(state, "https://c:4523", 100.0)
    assert summary["stuck_detaches"] == [STUCK]
    assert [(s["reason"], s["node"], s["detail"]) for s in summary["stuck"]
            if s["reason"] == "refused"] == [("refused", "node1", said)]


def test_status_shows_each_nodes_lease_and_state():
    state = failed_over_state(["node2"])
    state["nodes"]["node1"] = {
        "lease": {"renewed_at": 40.0, "expires_at": 60.0, "seconds": 20.0},
        "failure": {"state": "fenced", "down_since": 70.0,
                    "returned_at": None, "confirmed_down": None,
                    "removed": False,
                    "fence": {"result": "fenced", "method": "command",
                              "requested_by": "control service",
                              "started_at": 65.0, "finished_at": 70.0,
                              "failures": 0, "error": None,
                              "retry_at": None}}}
    state["nodes"]["node2"] = {
        "lease": {"renewed_at": 95.0, "expires_at": 115.0, "seconds": 20.0},
        "failure": {"state": "live", "down_since": None,
                    "returned_at": None, "confirmed_down": None,
                    "removed": False, "fence": None}}
    summary = status.summarize(state, "https://c:4523", 100.0)
    assert summary["nodes"]["node1"]["lease"]["expires_at"] == 60.0
    assert summary["nodes"]["node1"]["failure"]["state"] == "fenced"
    shown = status.lines(summary)
    header = [i for i, line in enumerate(shown)
              if line.split()[:4] == ["NODE", "STATE", "LEASE", "FENCE"]]
    assert len(header) == 1
    node1, node2 = shown[header[0] + 1], shown[header[0] + 2]
    assert node1.split()[:2] == ["node1", "fenced"]
    assert "renewed 1m ago, lapsed 40s ago" in node1
    assert "fenced by command (first try, asked by control service, 30s " \
        "ago)" in node1
    assert node2.split()[:2] == ["node2", "live"]
    assert "renewed 5s ago, 15s left" in node2
