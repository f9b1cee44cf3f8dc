"""
What of a local cluster is still there: used after ``down`` (and by the
tests) to prove that nothing was left behind.
"""

import os

from blockmover import proc
from blockmover.localcluster.devices import loop_devices_under
from blockmover.localcluster.namespaces import link_exists, netns_exists
from blockmover.mountinfo import process_mounts


def leftovers(layout, records=()):
    """
    Descriptions of every part of the cluster ``layout`` that still exists,
    including any of the ``records`` (``ProcessRecord``) still running;
    empty when the cluster is entirely gone.
    """
    found = []
    for node in layout.nodes:
        if netns_exists(node.netns):
            found.append("network namespace %s" % (node.netns,))
        if link_exists(node.veth):
            found.append("veth %s" % (node.veth,))
        if os.path.exists(node.mount_ns):
            found.append("mount namespace file %s" % (node.mount_ns,))
    for replica in layout.replicas:
        if netns_exists(replica.netns):
            found.append("network namespace %s" % (replica.netns,))
        if link_exists(replica.veth):
            found.append("veth %s" % (replica.veth,))
    if layout.replicated and netns_exists(layout.host_netns):
        found.append("the host's network namespace bound as %s"
                     % (layout.host_netns,))
    if link_exists(layout.bridge):
        found.append("bridge %s" % (layout.bridge,))
    if os.path.exists(layout.mount_ns_dir):
        found.append("directory %s" % (layout.mount_ns_dir,))
    for mount in process_mounts():
        if mount.mountpoint.startswith(layout.state_dir + "/") or \
                mount.mountpoint.startswith(layout.mount_ns_dir):
            found.append("mount %s" % (mount.mountpoint,))
    for root in layout.loopback_roots:
        for device in loop_devices_under(root):
            found.append("loop device %s" % (device,))
    for record in records:
        if proc.is_running(record):
            found.append("process %d (%s)" % (record.pid,
                                              " ".join(record.argv)))
    if os.path.exists(layout.tls_dir):
        # Named apart: a CA's and nodes' keys left behind matter most.
        found.append("the cluster's CA and certificates in %s"
                     % (layout.tls_dir,))
    if os.path.exists(layout.state_dir):
        found.append("state directory %s" % (layout.state_dir,))
    return found
