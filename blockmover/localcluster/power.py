"""
``blockmover cluster power off|on NODE``: the local cluster's power switch
for a namespace node, the fence a real cluster gets from IPMI or its
cloud.

Off is what pulling the plug does to a machine, in an order that lets
nothing out afterwards:

1. the node is recorded as off (so that ``cluster up`` leaves it off);
2. its link is cut: nothing it still sends reaches anyone;
3. every process inside its network namespace is killed (SIGKILL, as the
   power going would);
4. what it had mounted is unmounted, as a machine's mounts go with its
   power. Its processes are gone, so the unmount writes nothing new: only
   what the kernel held of writes made before the plug was pulled.

Once ``off`` returns, the node cannot write to any volume. Each step is
idempotent: ``off`` again after a crash half-way finishes the job.

On is a machine booting: the link is up again and its agent starts. It
starts no application: that is the agent's to decide, with the control
service.
"""

import time

from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import ClusterError, processes, state
from blockmover.localcluster.devices import loop_devices_under
from blockmover.localcluster.mounts import (
    is_mountpoint, node_made_mounts, unmount_in_namespace,
)
from blockmover.localcluster.services import agent_key

# How many times the processes inside a node are looked for and killed: a
# process may start another while it is being killed.
_ROUNDS = 20


def _load(state_file, node_name):
    current = state.load(state_file)
    if current is None:
        raise ClusterError("no cluster is recorded in %s; bring one up with "
                           "blockmover cluster up" % (state_file,))
    return current, current.layout.node(node_name)


def is_off(current, node_name):
    """
    Whether the node ``node_name`` of the cluster state ``current`` was
    powered off and not on again.
    """
    return node_name in current.powered_off


def power_off(state_file, node_name, echo=print):
    """
    Power the node ``node_name`` off (see the module's docstring); safe to
    repeat.

    :raise ClusterError: there is no such cluster or node, or a process
        inside it outlived SIGKILL.
    """
    current, node = _load(state_file, node_name)
    if not is_off(current, node_name):
        current = current.set(powered_off=current.powered_off.set(
            node_name, time.time()))
        state.save(current)
    run(["ip", "link", "set", "dev", node.veth, "down"])
    echo("%s: link %s cut" % (node_name, node.veth))
    killed = _kill_everything_inside(node)
    echo("%s: %d processes killed" % (node_name, killed))
    if is_mountpoint(node.mount_ns):
        devices = loop_devices_under(current.layout.backend_root)
        for mount in node_made_mounts(node.mount_ns, devices):
            unmount_in_namespace(node.mount_ns, mount.mountpoint)
            echo("%s: %s unmounted" % (node_name, mount.mountpoint))
    echo("%s is powered off" % (node_name,))


def _kill_everything_inside(node):
    """
    SIGKILL every process in ``node``'s network namespace until none is
    left; how many were killed.
    """
    killed = 0
    for _ in range(_ROUNDS):
        found = processes.records_in_netns(node.netns_path)
        if not found:
            return killed
        for record in found:
            try:
                if proc.kill(record) is not None:
                    killed += 1
            except proc.StillRunning as e:
                raise ClusterError("%s: process %d outlived SIGKILL (%s); "
                                   "the node is not powered off"
                                   % (node.name, record.pid, e))
    raise ClusterError("%s: processes kept appearing inside it after %d "
                       "rounds of killing; the node is not powered off"
                       % (node.name, _ROUNDS))


def power_on(state_file, node_name, echo=print, start_services=True):
    """
    Power the node ``node_name`` on: its link up, its agent started; safe
    to repeat. A node that was not off has only what is missing started.
    Without ``start_services`` no service is started (for a cluster made
    without them).

    :raise ClusterError: there is no such cluster or node.
    """
    # Late import: up starts the services, and its start skips nodes that
    # are off, which it asks this module about.
    from blockmover.localcluster.up import start_missing
    current, node = _load(state_file, node_name)
    run(["ip", "link", "set", "dev", node.veth, "up"])
    echo("%s: link %s up" % (node_name, node.veth))
    if is_off(current, node_name):
        current = current.set(powered_off=current.powered_off.remove(
            node_name))
        state.save(current)
    record = current.processes.get(agent_key(node))
    if record is not None and proc.is_running(record):
        echo("%s: agent already running (pid %d)" % (node_name, record.pid))
    if start_services:
        start_missing(current, echo)
    echo("%s is powered on" % (node_name,))
