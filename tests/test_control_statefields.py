"""
What ``GET /v1/state`` adds for ``blockmover status``: since when nodes
and applications are as they are, and where the listing shows volumes.
"""

from blockmover.control.statefields import Transitions, attachments
from blockmover.identity import dataset_id, volume_metadata
from blockmover.model import (
    Application, BackendConfig, Deployment, Node, NodeReport, NodeState,
    Progress, RunningApplication, Volume,
)


def deployment(placement, applications=("db", "web")):
    return Deployment(
        cluster_name="demo", control_url="https://c:4523",
        backend=BackendConfig(name="loopback"),
        nodes={"node1": Node(name="node1", address="10.0.0.1",
                             instance_id="i-1"),
               "node2": Node(name="node2", address="10.0.0.2")},
        applications={a: Application(name=a, command=["x"])
                      for a in applications},
        placement=placement)


def report(node, converged, running=()):
    return NodeReport(
        state=NodeState(node=node, backend_id=node, running={
            name: RunningApplication(name=name, pid=1, ready=ready)
            for name, ready in running}),
        progress=Progress(converged=converged, generation=1))


def test_configuration_changes_only_what_it_moves():
    transitions = Transitions()
    first = deployment({"db": "node1", "web": "node1"})
    transitions.configured(None, first, 10.0)
    assert transitions.application("db") == 10.0
    moved = deployment({"db": "node2", "web": "node1"})
    transitions.configured(first, moved, 20.0)
    assert (transitions.application("db"), transitions.application("web")) \
        == (20.0, 10.0)
    transitions.configured(moved, deployment({"db": "node2"}, ["db"]), 30.0)
    assert transitions.application("web") is None
    assert transitions.application("db") == 20.0


def test_reports_change_what_they_change():
    transitions = Transitions()
    known = {"db", "web"}
    transitions.reported("node1", None, report("node1", False), 1.0, known)
    assert transitions.node("node1") == 1.0
    # Started, not ready yet: db changed; node still converging.
    started = report("node1", False, [("db", False), ("stranger", True)])
    transitions.reported("node1", report("node1", False), started, 2.0,
                         known)
    assert (transitions.node("node1"), transitions.application("db")) == (
        1.0, 2.0)
    # A name the configuration does not know is not kept.
    assert transitions.application("stranger") is None
    ready = report("node1", True, [("db", True)])
    transitions.reported("node1", started, ready, 3.0, known)
    assert (transitions.node("node1"), transitions.application("db")) == (
        3.0, 3.0)
    transitions.reported("node1", ready, ready, 4.0, known)
    assert (transitions.node("node1"), transitions.application("db")) == (
        3.0, 3.0)


def test_attachments_by_node_name():
    placed = deployment({"db": "node2"})
    db = dataset_id("demo", "db")
    old = dataset_id("demo", "old")
    volumes = [
        Volume(volume_id="v-db", dataset_id=db, size=1, attached_to="i-1",
               metadata=volume_metadata("demo", "db")),
        Volume(volume_id="v-old", dataset_id=old, size=1,
               attached_to="node2", metadata=volume_metadata("demo", "old")),
        Volume(volume_id="v-free", dataset_id=old, size=1),
        Volume(volume_id="v-theirs", dataset_id="x", size=1,
               attached_to="node2",
               metadata=volume_metadata("other", "x")),
    ]
    attached, unwanted = attachments(placed, volumes)
    # node1 is i-1 to the backend.
    assert attached == {db: ["node1"], old: ["node2"]}
    assert unwanted == [{"volume_id": "v-old", "dataset_id": old,
                         "name": "blockmover-demo-old",
                         "attached_to": "node2"}]
    assert attachments(None, volumes) == ({}, [])
    assert attachments(placed, None) == ({}, [])
