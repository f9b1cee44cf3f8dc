"""
The ``blockmover`` command itself: ``cluster up`` (twice), ``status`` and
``cluster down`` of a cluster of its own, run as a user runs them.
"""

import os
import subprocess
import sys
import tempfile
import uuid

from blockmover.cluster import state
from blockmover.cluster.leftovers import leftovers
from blockmover.cluster.namespaces import unused_subnet

BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")


def blockmover(*args):
    result = subprocess.run([BLOCKMOVER] + list(args), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_up_twice_status_and_down(cluster):
    # ``cluster`` only so that this runs where the acceptance cluster can:
    # this test brings up a second, separate one.
    name = "c" + uuid.uuid4().hex[:6]
    subnet = unused_subnet("10.79")
    state_dir = os.path.join(tempfile.gettempdir(),
                             "blockmover-cli-" + name)
    where = ["--name", name, "--state-dir", state_dir]
    recorded = None
    try:
        first = blockmover("cluster", "up", "--nodes", "2", "--subnet",
                           subnet, *where)
        assert "cluster %s is up" % (name,) in first
        recorded = state.load(os.path.join(state_dir, "cluster.json"))
        again = blockmover("cluster", "up", "--nodes", "2", "--subnet",
                           subnet, *where)
        assert "already up" in again
        assert "started" not in again
        status = blockmover("status", *where)
        assert "node1 %s.11: namespace present, agent running" % (subnet,) \
            in status
        assert "node2 %s.12: namespace present, agent running" % (subnet,) \
            in status
        assert "control http://%s.1:4523: running" % (subnet,) in status
    finally:
        down = blockmover("cluster", "down", *where)
    assert "cluster %s is down" % (name,) in down
    assert recorded is not None
    assert leftovers(recorded.layout,
                     list(recorded.processes.values())) == []
