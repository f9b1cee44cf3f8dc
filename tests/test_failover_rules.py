"""
Where an application goes when its node failed (``control.failover``):
the operator's placement with the decisions that still hold, and the
first live candidate that can take the application within the limits.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from blockmover.config import load_deployment
from blockmover.control import failover
from blockmover.control.failurestore import FailoverDecision

CLUSTER = """\
version: 1
cluster:
  name: demo
  control: https://10.0.0.1:4523
  backend: {name: loopback, limits: {volumes_per_node: 1}}
nodes:
  node1: {address: 10.0.0.11}
  node2: {address: 10.0.0.12}
  node3: {address: 10.0.0.13}
  node4: {address: 10.0.0.14}
deployment:
  node1: [db]
  node2: [cache]
  node3: [web]
"""

APP = """\
version: 1
applications:
  db:
    command: [db]
    ports: [{internal: 80, external: 8080}]
    volume: {mountpoint: /srv/db}
    failover: {to: [node1, node2, node3, node4], automatic: true}
  cache:
    command: [cache]
    volume: {mountpoint: /srv/cache}
  web:
    command: [web]
    ports: [{internal: 80, external: 8080}]
"""

DEPLOYMENT = load_deployment(CLUSTER, APP)


def decision(from_node, to_node):
    return FailoverDecision(from_node=from_node, to_node=to_node,
                            decided_at=1.0)


def test_the_first_live_candidate_within_the_limits():
    """
    node1 is where db was (it failed), node2 holds a volume already (the
    most volumes_per_node allows), node3 runs web on the same external
    port: db goes to node4.
    """
    node, reasons = failover.choose(DEPLOYMENT, dict(DEPLOYMENT.placement),
                                    "db", lambda n: True)
    assert node == "node4"
    assert reasons == [
        "node1: it is the node that failed",
        "node2: it holds 1 volumes already, the most volumes_per_node "
        "allows",
        "node3: web there uses external port 8080 too"]


def test_no_candidate_says_why_each_was_passed_over():
    node, reasons = failover.choose(DEPLOYMENT, dict(DEPLOYMENT.placement),
                                    "db", lambda n: n != "node4")
    assert node is None
    assert reasons[-1] == "node4: not live"


def test_overlapping_mountpoints_are_refused():
    app = APP.replace("/srv/cache", "/srv/db/cache")
    deployment = load_deployment(
        CLUSTER.replace("volumes_per_node: 1", "volumes_per_node: 5"), app)
    node, reasons = failover.choose(deployment, dict(deployment.placement),
                                    "db", lambda n: n in ("node2",))
    assert node is None
    assert "node2: cache there mounts /srv/db/cache, which overlaps " \
        "/srv/db" in reasons


def test_a_decision_holds_while_the_configuration_keeps_its_node():
    failovers = {"db": decision("node1", "node4")}
    assert failover.effective_placement(DEPLOYMENT, failovers)["db"] == \
        "node4"
    effective = failover.effective(DEPLOYMENT, failovers)
    assert effective.placement["db"] == "node4"
    # The operator's configuration is not changed.
    assert DEPLOYMENT.placement["db"] == "node1"
    # Deployed elsewhere by the operator: the operator's word wins.
    moved = DEPLOYMENT.set(placement=DEPLOYMENT.placement.set("db", "node2"))
    assert not failover.holds(moved, "db", failovers["db"])
    assert failover.effective(moved, failovers) is moved
    # No decision: the deployment itself.
    assert failover.effective(DEPLOYMENT, {}) is DEPLOYMENT


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(["node1", "node2", "node3", "node4"])),
       st.permutations(["node1", "node2", "node3", "node4"]))
def test_the_choice_is_the_first_candidate_that_can_take_it(live, order):
    """
    Whatever is live and in whatever order the candidates come: the node
    chosen is live, a candidate, not where the application is, and no
    candidate before it could have taken it; with none chosen, every
    candidate says why not.
    """
    app = DEPLOYMENT.applications["db"]
    deployment = DEPLOYMENT.set(applications=DEPLOYMENT.applications.set(
        "db", app.set(failover=app.failover.set(to=order))))
    placement = dict(deployment.placement)
    node, reasons = failover.choose(deployment, placement, "db",
                                    lambda n: n in live)
    if node is None:
        assert len(reasons) == len(order)
        return
    assert node in live and node != placement["db"]
    before = order[:order.index(node)]
    assert [r.split(":")[0] for r in reasons] == before
