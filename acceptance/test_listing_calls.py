"""
No request storms: a converged cluster on the openstack backend lists the
cloud's volumes once per refresh of the control service's ONE listing, not
once per node, so a window's list calls at 4 nodes are those at 2 nodes
(give or take a refresh at the window's edges). Counts, read from the
emulator's counters, not times.
"""

import contextlib
import os
import tempfile
import uuid

import pytest

from blockmover.localcluster import state
from blockmover.localcluster.cloudcalls import count_calls, deploy_workload
from blockmover.localcluster.down import down
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.namespaces import unused_subnet
from blockmover.localcluster.up import up

REFRESH_INTERVAL = 2.0
WINDOW = 20.0
# A window may hold one refresh more or less at either edge, and one
# full listing may hold an incremental one's place.
SLACK = 2


@contextlib.contextmanager
def converged_cluster(nodes, log):
    """
    A cluster of ``nodes`` nodes on the openstack backend with the
    workload of ``blockmover.localcluster.cloudcalls`` running; taken down
    after, leaving nothing.
    """
    name = "l" + uuid.uuid4().hex[:6]
    layout = make_layout(
        name, nodes, unused_subnet("10.79"),
        os.path.join(tempfile.gettempdir(), "blockmover-calls-" + name),
        backend="openstack", attach_latency=0.5, detach_latency=0.5,
        refresh_interval=REFRESH_INTERVAL)

    def echo(line):
        log.write(line + "\n")
        log.flush()
    records = []
    try:
        up(layout, echo=echo)
        records = list(state.load(layout.state_file).processes.values())
        deploy_workload(layout, output=log)
        yield layout
    finally:
        down(layout.state_file, echo=echo)
    assert leftovers(layout, records) == []


def test_list_calls_do_not_grow_with_nodes():
    if os.geteuid() != 0:
        pytest.skip("the acceptance tests need root: namespaces, loop "
                    "devices and mounts")
    log = tempfile.NamedTemporaryFile(
        mode="w", prefix="blockmover-calls-", suffix=".log", delete=False)
    counts = {}
    with log:
        for nodes in (2, 4):
            with converged_cluster(nodes, log) as layout:
                counts[nodes] = count_calls(layout, WINDOW)
    two, four = counts[2], counts[4]
    # The control service does list on its timer in the window (or this
    # proves nothing).
    assert two.list_calls >= WINDOW / REFRESH_INTERVAL / 2, two.counters
    assert four.list_calls <= two.list_calls + SLACK, (
        two.counters, four.counters)
    os.unlink(log.name)
