"""
One dataset never waits for another: on the OpenStack emulator, two
applications with volumes move from node1 to node2 at once while the
attach of one of them hangs in the cloud; the other is attached, mounted,
started and serving on node2 while that attach still hangs, and the slow
one follows once the cloud lets it.
"""

import os

import pytest

from blockmover.localcluster.deploying import deploy, write_configuration
from blockmover.localcluster.status import control_state
from blockmover.poll import Backoff, poll

# How long the cloud holds the slow dataset's attach: far longer than a
# whole move of the other one takes.
HANG = 45.0


def application(layout, name):
    """
    A process that keeps a file open on its volume, so the volume is busy
    while it runs.
    """
    return {"command": ["sh", "-c", "exec sleep 100000 3> data"],
            "volume": {"mountpoint": os.path.join(layout.state_dir, "data",
                                                  name),
                       "maximum_size": "1G"}}


def _where(state, app):
    return state["applications"][app]["ready_on"]


def _attach_running(state, node, dataset):
    progress = state["nodes"][node]["progress"] or {}
    return [r for r in progress.get("running", [])
            if r["step"]["dataset_id"] == dataset
            and r["step"]["kind"] == "attach"]


@pytest.mark.parametrize("cluster", ["openstack"], indirect=True)
def test_a_hanging_attach_delays_no_other_dataset(cluster):
    layout = cluster.layout
    apps = {name: application(layout, name) for name in ("slow", "quick")}
    with open(cluster.log_path, "a") as output:
        write_configuration(layout, apps, {"slow": "node1", "quick": "node1"})
        deploy(layout, timeout=240, output=output)
    cloud = cluster.cloud()
    cloud.set_faults({"stuck": [{
        "operation": "attach", "seconds": HANG, "count": 1,
        "name": "blockmover-%s-slow" % (layout.name,), "server": "node2"}]})
    try:
        with open(cluster.log_path, "a") as output:
            write_configuration(layout, apps,
                                {"slow": "node2", "quick": "node2"})
            deploy(layout, wait=False, output=output)

        def quick_serves():
            state = control_state(layout.control_url, cluster.operator)
            if state is not None and _where(state, "quick") == ["node2"]:
                return state
            return None
        state = poll(quick_serves, HANG, "quick to serve on node2",
                     Backoff(initial=0.1, maximum=0.5))
        # ... while the slow one's attach still hangs in the cloud.
        slow = state["applications"]["slow"]
        assert _where(state, "slow") == [], state["applications"]
        assert _attach_running(state, "node2", slow["dataset_id"]), \
            state["nodes"]["node2"]["progress"]
        # The hang was the cloud's own, and the slow one follows after it.
        assert cloud.faults()["stuck"][0]["count"] == 0
        with open(cluster.log_path, "a") as output:
            deploy(layout, timeout=240, output=output)
        state = control_state(layout.control_url, cluster.operator)
        assert _where(state, "slow") == ["node2"]
        assert _where(state, "quick") == ["node2"]
    finally:
        cloud.clear_faults()
