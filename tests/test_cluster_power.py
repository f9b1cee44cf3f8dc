"""
The local cluster's power switch on real namespaces (no services): a node
powered off has its link cut, no process left inside it and nothing of a
volume mounted, and stays off until powered on.
"""

import os
import subprocess
import sys
import uuid

import pytest

from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import power, processes, state
from blockmover.localcluster.down import down
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.mounts import namespace_mounts
from blockmover.localcluster.namespaces import nsenter_argv, unused_subnet
from blockmover.localcluster.up import up, wanted_services

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="namespaces and mounts need root")


@pytest.fixture
def layout(tmp_path):
    name = "p" + uuid.uuid4().hex[:6]
    layout = make_layout(name, 2, unused_subnet("10.78"),
                         str(tmp_path / "cluster"))
    yield layout
    if state.load(layout.state_file) is not None:
        down(layout.state_file, echo=lambda line: None)
    assert leftovers(layout) == []


def quiet(line):
    pass


def _link_up(node):
    return ",UP" in run(["ip", "-o", "link", "show", "dev", node.veth])


def _volume_mounted_in(layout, node):
    """
    A loop-device filesystem under the backend's root, mounted inside
    ``node`` at a mountpoint of its own; the mountpoint.
    """
    image = os.path.join(layout.backend_root, "volume.img")
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    run(["mkfs.ext4", "-q", image])
    device = run(["losetup", "--find", "--show", image]).strip()
    mountpoint = os.path.join(layout.state_dir, "data", "app")
    os.makedirs(mountpoint)
    run(nsenter_argv(node) + ["mount", device, mountpoint])
    return mountpoint


def test_off_leaves_nothing_that_can_write(layout):
    up(layout, echo=quiet, services=False)
    node1, node2 = layout.nodes
    mountpoint = _volume_mounted_in(layout, node1)
    # A writer inside the node, its working directory on the volume, and
    # a child it started in a session of its own.
    writer = processes.start(
        nsenter_argv(node1) + [sys.executable, "-c",
                               "import os, subprocess, time; "
                               "os.chdir(%r); "
                               "subprocess.Popen(['sleep', '600'], "
                               "start_new_session=True); "
                               "time.sleep(600)" % (mountpoint,)],
        os.path.join(layout.logs_dir, "writer.out"))
    neighbour = processes.start(nsenter_argv(node2) + ["sleep", "600"],
                                os.path.join(layout.logs_dir, "n2.out"))
    lines = []
    try:
        power.power_off(layout.state_file, "node1", echo=lines.append)
        assert not proc.is_running(writer)
        assert processes.records_in_netns(node1.netns_path) == []
        assert not _link_up(node1)
        assert mountpoint not in [m.mountpoint for m in
                                  namespace_mounts(node1.mount_ns)]
        assert "node1 is powered off" in lines
        assert "node1" in state.load(layout.state_file).powered_off
        # The other node runs on.
        assert proc.is_running(neighbour) and _link_up(node2)
        # Again: nothing left to do, and no error.
        power.power_off(layout.state_file, "node1", echo=lines.append)
        assert "node1: 0 processes killed" in lines
    finally:
        proc.stop(neighbour, processes.STOP_TIMEOUT)


def _agents(current):
    return sorted(key for key, _ in wanted_services(current)
                  if key.startswith("agent-"))


def test_a_node_off_stays_off_until_powered_on(layout):
    up(layout, echo=quiet, services=False)
    node1 = layout.nodes[0]
    assert _agents(state.load(layout.state_file)) == ["agent-node1",
                                                      "agent-node2"]
    power.power_off(layout.state_file, "node1", echo=quiet)
    # cluster up leaves it off.
    assert _agents(state.load(layout.state_file)) == ["agent-node2"]
    up(layout, echo=quiet, services=False)
    assert not _link_up(node1)
    lines = []
    power.power_on(layout.state_file, "node1", echo=lines.append,
                   start_services=False)
    assert _link_up(node1)
    assert _agents(state.load(layout.state_file)) == ["agent-node1",
                                                      "agent-node2"]
    assert "node1 is powered on" in lines
    # And on again changes nothing.
    power.power_on(layout.state_file, "node1", echo=quiet,
                   start_services=False)
    assert _link_up(node1)


def test_unknown_node_is_refused_and_nothing_changes(layout):
    up(layout, echo=quiet, services=False)
    before = state.load(layout.state_file)
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "blockmover"),
         "cluster", "power", "--name", layout.name, "--state-dir",
         layout.state_dir, "off", "node9"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "has no node 'node9'" in result.stderr
    assert state.load(layout.state_file) == before
    assert all(_link_up(node) for node in layout.nodes)
