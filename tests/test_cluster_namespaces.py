"""
The local cluster's namespace infrastructure on its own (no services):
real bridge, veths, network and mount namespaces, brought up and down.
"""

import os
import socket
import sys
import uuid

import pytest

from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import processes, state, trust
from blockmover.localcluster.devices import loop_devices_under
from blockmover.localcluster.down import down
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.mounts import namespace_mounts
from blockmover.localcluster.namespaces import (
    link_exists, nsenter_argv, unused_subnet,
)
from blockmover.localcluster.up import up
from blockmover.mountinfo import process_mounts
from blockmover.poll import Backoff, poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="namespaces and mounts need root")


@pytest.fixture
def layout(tmp_path):
    # A unique name and subnet so concurrent runs and a demo never collide.
    name = "t" + uuid.uuid4().hex[:6]
    subnet = unused_subnet("10.78")
    layout = make_layout(name, 2, subnet, str(tmp_path / "cluster"))
    yield layout
    if state.load(layout.state_file) is not None:
        down(layout.state_file, echo=lambda line: None)
    assert leftovers(layout) == []


def quiet(line):
    pass


def test_node_has_its_address_and_reaches_the_bridge(layout):
    up(layout, echo=quiet, services=False)
    node = layout.nodes[0]
    addresses = run(["ip", "-n", node.netns, "-o", "addr", "show"])
    assert node.address + "/24" in addresses
    listener = socket.socket()
    listener.bind((layout.bridge_address, 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    try:
        client = processes.start(
            nsenter_argv(node) + [
                sys.executable, "-c",
                "import socket; s = socket.create_connection((%r, %d), 5);"
                " s.sendall(b'hello from ' + %r.encode())"
                % (layout.bridge_address, port, node.name)],
            os.path.join(layout.logs_dir, "client.out"))
        connection, peer = listener.accept()
        with connection:
            assert peer[0] == node.address
            assert connection.recv(100) == b"hello from node1"
        proc.stop(client, timeout=10)
    finally:
        listener.close()


def test_mount_in_a_node_is_invisible_elsewhere(layout, tmp_path):
    up(layout, echo=quiet, services=False)
    node1, node2 = layout.nodes
    target = str(tmp_path / "inside")
    os.mkdir(target)
    run(["nsenter", "--mount=" + node1.mount_ns, "--",
         "mount", "-t", "tmpfs", "blockmover-test", target])
    assert target in [m.mountpoint for m in namespace_mounts(node1.mount_ns)]
    assert target not in [m.mountpoint
                          for m in namespace_mounts(node2.mount_ns)]
    assert target not in [m.mountpoint for m in process_mounts()]
    # down unmounts what the node mounted, or its namespace file would not
    # be the last holder of the tmpfs.
    down(layout.state_file, echo=quiet)
    assert leftovers(layout) == []


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_up_twice_fixes_what_is_missing(layout):
    up(layout, echo=quiet, services=False)
    ca_certificate = _read(os.path.join(layout.ca_dir, "ca.crt"))
    node = layout.nodes[1]
    node_key = _read(trust.node_files(layout, node).key)
    run(["ip", "netns", "delete", node.netns])
    lines = []
    up(layout, echo=lines.append, services=False)
    assert any("already up" in line for line in lines)
    assert node.address + "/24" in run(["ip", "-n", node.netns, "-o",
                                        "addr", "show"])
    # The cluster keeps its CA and the certificates it issued.
    assert "cluster CA kept in %s (readable by root only)" \
        % (layout.ca_dir,) in lines
    assert not any("certificates issued" in line for line in lines)
    assert _read(os.path.join(layout.ca_dir, "ca.crt")) == ca_certificate
    assert _read(trust.node_files(layout, node).key) == node_key


def test_down_after_a_crash_cleans_up(layout):
    up(layout, echo=quiet, services=False)
    # A process recorded as an agent, plus one the "agent" left in the
    # node; then the cluster command dies: the state file stays behind.
    node = layout.nodes[0]
    agent = processes.start(nsenter_argv(node) + ["sleep", "600"],
                            os.path.join(layout.logs_dir, "agent.out"))
    current = state.load(layout.state_file)
    state.save(current.set(processes=current.processes.set(
        "agent-node1", agent)))
    orphan = processes.start(nsenter_argv(node) + ["sleep", "601"],
                             os.path.join(layout.logs_dir, "orphan.out"))
    proc.kill(agent)
    assert proc.is_running(orphan)
    assert down(layout.state_file, echo=quiet)
    assert leftovers(layout, [agent, orphan]) == []
    assert not down(layout.state_file, echo=quiet)


def test_a_node_never_pins_a_filesystem_mounted_on_the_host(layout, tmp_path):
    # Someone else's loop-device filesystem, mounted on the host while the
    # cluster comes up, must be freed the moment they unmount it.
    image = tmp_path / "other.img"
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    run(["mkfs.ext4", "-q", str(image)])
    device = run(["losetup", "--find", "--show", str(image)]).strip()
    target = tmp_path / "other"
    target.mkdir()
    try:
        run(["mount", device, str(target)])
        try:
            up(layout, echo=quiet, services=False)
            for node in layout.nodes:
                assert str(target) not in [
                    m.mountpoint for m in namespace_mounts(node.mount_ns)]
        finally:
            run(["umount", str(target)])
    finally:
        run(["losetup", "--detach", device])
    assert loop_devices_under(str(tmp_path)) == {}


def _session(sid):
    """
    The live processes of the session ``sid``.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                inside = os.getsid(int(entry)) == sid
            except ProcessLookupError:
                continue
            if inside and proc.find(int(entry)) is not None:
                found.append(int(entry))
    return found


def test_down_after_up_was_killed_half_way(layout):
    # Kill `blockmover cluster up` as soon as it has made anything, then
    # take down whatever it left: nothing may remain.
    command = [os.path.join(os.path.dirname(sys.executable), "blockmover"),
               "cluster", "up", "--name", layout.name, "--subnet",
               layout.subnet, "--state-dir", layout.state_dir]
    started = processes.start(command, str(layout.state_dir) + ".out")
    try:
        poll(lambda: True if link_exists(layout.bridge) else None, 60,
             "cluster up to make its bridge",
             backoff=Backoff(initial=0.01, factor=1.0, maximum=0.01))
    finally:
        proc.kill(started)
        # A command it ran (ip, mount) may still finish its work, as after
        # a real crash: down runs once it has.
        poll(lambda: None if _session(started.pid) else True, 30,
             "the commands cluster up started to end")
        os.unlink(str(layout.state_dir) + ".out")
    assert state.load(layout.state_file) is not None
    assert down(layout.state_file, echo=quiet)
    assert leftovers(layout) == []
