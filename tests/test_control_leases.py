"""
Leases: every long poll and report of an agent renews its node's lease;
a node whose lease lapses is unresponsive, and is live again once heard
from. The pure ``Leases`` alone, then a real control service over TLS.
"""

import pytest

from blockmover.control.leases import Leases, poll_limit
from blockmover.poll import Backoff, poll
from tests.test_control_api import CLUSTER, Control, report


def test_a_lease_lasts_from_its_last_renewal():
    leases = Leases(20.0, started_at=100.0, grace=0.0)
    # Before any renewal, a whole lease from the service's start.
    assert leases.renewed_at("node1") is None
    assert leases.expires_at("node1") == 120.0
    assert leases.live("node1", 119.9) and not leases.live("node1", 120.0)
    leases.renew("node1", 130.0)
    assert leases.renewed_at("node1") == 130.0
    assert leases.live("node1", 149.0) and not leases.live("node1", 150.0)
    leases.forget("node1")
    assert leases.renewed_at("node1") is None


def test_after_a_start_a_node_has_the_grace_if_longer_than_a_lease():
    leases = Leases(20.0, started_at=100.0, grace=60.0)
    assert leases.expires_at("node1") == 160.0
    assert leases.live("node1", 159.9) and not leases.live("node1", 160.0)
    # Once heard from, a lease is a lease.
    leases.renew("node1", 110.0)
    assert leases.expires_at("node1") == 130.0
    assert Leases(90.0, started_at=0.0, grace=60.0).expires_at("n") == 90.0


def test_next_expiry_is_the_earliest_still_to_come():
    leases = Leases(10.0, started_at=0.0)
    leases.renew("node1", 5.0)
    leases.renew("node2", 8.0)
    assert leases.next_expiry(["node1", "node2"], 6.0) == 15.0
    assert leases.next_expiry(["node1", "node2"], 16.0) == 18.0
    assert leases.next_expiry(["node1", "node2"], 20.0) is None


def test_a_poll_ends_often_enough_to_renew_the_lease():
    assert poll_limit(20.0) < 20.0 / 2


@pytest.fixture
def control(tmp_path):
    service = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    service.start()
    yield service
    assert service.stop() in (0, None), "blockmover-control did not stop"


def node_failure(control, node):
    status, state = control.request("GET", "/v1/state")
    assert status == 200
    info = state["nodes"][node]
    return info["failure"]["state"], info["lease"]


def test_polls_and_reports_renew_the_lease_until_it_lapses(control,
                                                           loopback_root):
    cluster = CLUSTER.format(root=loopback_root).replace(
        "  backend:", "  lease: 1\n  backend:")
    status, answer = control.configure(cluster)
    assert status == 200, answer
    # A long poll asking for a minute is answered within a third of the
    # lease (the client would give up after 30 s): the agent's next poll
    # renews the lease.
    status, desired = control.request("GET", "/v1/nodes/node1/desired")
    status, _ = control.request(
        "GET", "/v1/nodes/node1/desired?after=%d&timeout=60"
        % (desired["generation"],), timeout=30)
    assert status == 204
    state, lease = node_failure(control, "node1")
    assert lease["renewed_at"] is not None and lease["seconds"] == 1.0
    assert lease["expires_at"] == lease["renewed_at"] + 1.0

    # Nothing heard from node1 any more: its lease lapses.
    poll(lambda: node_failure(control, "node1")[0] == "unresponsive"
         or None, 20, "node1 to be unresponsive",
         Backoff(initial=0.1, maximum=0.5))
    # A report renews it.
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                report("node1"))
    assert status == 200
    state, renewed = node_failure(control, "node1")
    assert renewed["renewed_at"] > lease["renewed_at"]
    # Live again, unless this machine was slow enough for the 1 s lease
    # to lapse again between the report and the look.
    assert state == "live" or renewed["expires_at"] <= \
        control.request("GET", "/v1/state")[1]["now"]
