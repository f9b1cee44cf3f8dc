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

On the emulator a node is also its server: the emulator runs this command
(with the server's id after the node's name) when the server is stopped
or started. Powering a node on from the command line starts its server
through Nova when Nova has it stopped, so that Nova never says SHUTOFF of
a node that runs (a fence would take that for proof); Nova's start then
powers the node on here.
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
        devices = [d for root in current.layout.loopback_roots
                   for d in loop_devices_under(root)]
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


def _start_server(current, node, echo):
    """
    On the emulator, start ``node``'s server through Nova if Nova has it
    stopped, and wait until it is ACTIVE: the emulator powers the node on
    (this module, with the server's id) before it says so. True when it
    did.
    """
    # Late: only the emulator's clusters need openstacksdk.
    import openstack
    from openstack.config import loader
    from blockmover.localcluster.cloud import cloud_name, server_id
    layout = current.layout
    cloud = loader.OpenStackConfig(
        config_files=[layout.clouds_yaml]).get_one(
            cloud=cloud_name(layout), region_name=node.site or None)
    connection = openstack.connection.Connection(config=cloud)
    try:
        server = connection.compute.get_server(server_id(layout, node))
        if server.status != "SHUTOFF":
            return False
        echo("%s: starting its server %s through Nova" % (node.name,
                                                           server.id))
        connection.compute.start_server(server)
        connection.compute.wait_for_server(server, status="ACTIVE",
                                           interval=0.5, wait=120)
        return True
    finally:
        connection.close()


def power_on(state_file, node_name, echo=print, start_services=True,
             by_the_cloud=False):
    """
    Power the node ``node_name`` on: its link up, its agent started; safe
    to repeat. A node that was not off has only what is missing started.
    Without ``start_services`` no service is started (for a cluster made
    without them). ``by_the_cloud``: the emulator asks, as it starts the
    node's server.

    :raise ClusterError: there is no such cluster or node.
    """
    # Late import: up starts the services, and its start skips nodes that
    # are off, which it asks this module about.
    from blockmover.localcluster.up import start_missing
    current, node = _load(state_file, node_name)
    if current.layout.site_backend(node.site) == "openstack" and \
            not by_the_cloud and \
            _start_server(current, node, echo):
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
