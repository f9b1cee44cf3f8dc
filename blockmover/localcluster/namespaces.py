"""
The network and mount namespaces of a local cluster's nodes and control
replicas: a bridge on the host, per node and per replica a network
namespace joined to it by a veth pair, and per node a persistent mount
namespace bound to a file. Every function here is idempotent: it makes (or
removes) what is missing and leaves the rest.
"""

import os
import random

from blockmover.command import CommandFailed, run
from blockmover.localcluster import ClusterError
from blockmover.localcluster.mounts import (
    is_mountpoint, namespace_mounts, unmount_in_namespace,
)


def link_exists(name, netns=None):
    argv = ["ip", "link", "show", "dev", name]
    if netns:
        argv = ["ip", "-n", netns] + argv[1:]
    return run(argv, check=False).returncode == 0


def delete_link(name):
    """
    Delete the link ``name`` if it is there. A veth whose other end was in a
    namespace just deleted goes away on its own a moment later, while the
    kernel tears the namespace down: a link that vanished between the look
    and the delete is gone, which is what was asked.
    """
    if not link_exists(name):
        return
    argv = ["ip", "link", "delete", "dev", name]
    result = run(argv, check=False)
    if result.returncode != 0 and link_exists(name):
        raise CommandFailed(argv, result.returncode, result.stdout,
                            result.stderr)


def netns_exists(netns):
    return os.path.exists("/run/netns/" + netns)


def bridge_exists(layout):
    return link_exists(layout.bridge)


def make_bridge(layout):
    """
    The host's bridge with the host's address on the cluster's subnet.
    """
    if not link_exists(layout.bridge):
        run(["ip", "link", "add", "name", layout.bridge, "type", "bridge"])
    address = layout.bridge_address + "/24"
    if address not in run(["ip", "-o", "addr", "show", "dev",
                           layout.bridge]):
        run(["ip", "addr", "add", address, "dev", layout.bridge])
    run(["ip", "link", "set", "dev", layout.bridge, "up"])


def make_node_network(layout, node, link_up=True):
    """
    The network namespace of ``node`` (a ``NodeLayout``, or a
    ``ReplicaLayout``: its ``netns``, ``veth`` and ``address``), with
    loopback up and ``eth0`` (the inside end of a veth pair whose host end
    is on the bridge) carrying its address. Without ``link_up`` the host
    end stays down, as for a node powered off.
    """
    if not netns_exists(node.netns):
        run(["ip", "netns", "add", node.netns])
    if not link_exists(node.veth):
        run(["ip", "link", "add", "name", node.veth, "type", "veth",
             "peer", "name", "eth0", "netns", node.netns])
    run(["ip", "link", "set", "dev", node.veth, "master", layout.bridge]
        + (["up"] if link_up else []))
    inside = ["ip", "-n", node.netns]
    address = node.address + "/24"
    if address not in run(inside + ["-o", "addr", "show", "dev", "eth0"]):
        run(inside + ["addr", "add", address, "dev", "eth0"])
    run(inside + ["link", "set", "dev", "eth0", "up"])
    run(inside + ["link", "set", "dev", "lo", "up"])


def make_mount_ns_dir(layout):
    """
    The directory holding the nodes' mount-namespace files, bind-mounted
    on itself and made private: a namespace file must not propagate into
    the namespaces it creates.
    """
    os.makedirs(layout.mount_ns_dir, exist_ok=True)
    if not is_mountpoint(layout.mount_ns_dir):
        run(["mount", "--bind", layout.mount_ns_dir, layout.mount_ns_dir])
    run(["mount", "--make-private", layout.mount_ns_dir])


def make_node_mount_ns(node):
    """
    The node's persistent mount namespace, bound at ``node.mount_ns``.
    Slave propagation: the host's unmounts still reach the node (so a node
    never pins a filesystem someone else unmounted), while the node's own
    mounts stay invisible to the host and to every other node.
    """
    if is_mountpoint(node.mount_ns):
        return
    with open(node.mount_ns, "a"):
        pass
    run(["unshare", "--mount=" + node.mount_ns, "--propagation", "slave",
         "true"])
    # The new namespace copied the host's mounts: a copy of someone else's
    # loop-device filesystem would keep their device busy after they
    # unmount it, so a fresh node drops them.
    for mount in reversed(namespace_mounts(node.mount_ns)):
        if mount.source.startswith("/dev/loop"):
            unmount_in_namespace(node.mount_ns, mount.mountpoint)


def nsenter_argv(node):
    """
    The argv prefix that runs a command inside ``node``: its network and
    its mount namespace.
    """
    return ["nsenter", "--net=" + node.netns_path,
            "--mount=" + node.mount_ns, "--"]


def netns_argv(netns_path):
    """
    The argv prefix that runs a command in the network namespace bound at
    ``netns_path`` alone (a control replica's: it shares the host's
    mounts).
    """
    return ["nsenter", "--net=" + netns_path, "--"]


def keep_host_netns(layout):
    """
    Bind the host's network namespace (ours) at
    ``/run/netns/<layout.host_netns>``, so that a command run inside a
    replica can enter it.
    """
    if not netns_exists(layout.host_netns):
        run(["ip", "netns", "attach", layout.host_netns, str(os.getpid())])


def forget_host_netns(layout):
    """
    Undo ``keep_host_netns``: only the binding goes, the namespace (the
    host's) stays.
    """
    if netns_exists(layout.host_netns):
        run(["ip", "netns", "delete", layout.host_netns])


def remove_node_mount_ns(node):
    if is_mountpoint(node.mount_ns):
        run(["umount", node.mount_ns])
    if os.path.exists(node.mount_ns):
        os.unlink(node.mount_ns)


def remove_node_network(node):
    # Deleting the namespace takes eth0 and so the veth pair with it, unless
    # a process still holds the namespace: remove the host end explicitly.
    if netns_exists(node.netns):
        run(["ip", "netns", "delete", node.netns])
    delete_link(node.veth)


def remove_mount_ns_dir(layout):
    if os.path.isdir(layout.mount_ns_dir):
        if is_mountpoint(layout.mount_ns_dir):
            run(["umount", layout.mount_ns_dir])
        os.rmdir(layout.mount_ns_dir)
    run_dir = os.path.dirname(layout.mount_ns_dir)
    if os.path.isdir(run_dir) and not os.listdir(run_dir):
        os.rmdir(run_dir)


def remove_bridge(layout):
    delete_link(layout.bridge)


def unused_subnet(prefix, tries=100):
    """
    A random ``<prefix>.<n>`` (a /24 given by its first three octets) that
    no interface on the host has an address in: for test clusters that
    must not meet a demo or each other.
    """
    used = run(["ip", "-o", "-4", "addr", "show"])
    for _ in range(tries):
        subnet = "%s.%d" % (prefix, random.randint(1, 254))
        if " %s." % (subnet,) not in used:
            return subnet
    raise ClusterError("no free %s.x/24 subnet on this machine; take some "
                       "clusters down" % (prefix,))
