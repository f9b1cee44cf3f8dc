"""
The mounts of a local cluster's nodes, each in its own mount namespace
(read by ``blockmover.mountinfo``), and clearing the mounts a node made
there.
"""

import os

from blockmover.command import run
from blockmover.mountinfo import parse_mountinfo, process_mounts


def is_mountpoint(path, pid="self"):
    """
    Whether ``path`` is a mountpoint in the mount namespace of ``pid``.
    """
    path = os.path.realpath(path)
    return any(m.mountpoint == path for m in process_mounts(pid))


def namespace_mounts(mount_ns):
    """
    The mounts inside the persistent mount namespace bound at ``mount_ns``.
    """
    return parse_mountinfo(run(["nsenter", "--mount=" + mount_ns, "--",
                                "cat", "/proc/self/mountinfo"]))


def node_made_mounts(mount_ns, loop_devices):
    """
    The mounts in the namespace at ``mount_ns`` that the host does not
    have, or whose source is one of ``loop_devices``: what the node mounted
    itself, deepest first so they can be unmounted in order.
    """
    host = set((m.mountpoint, m.source) for m in process_mounts())
    devices = set(loop_devices)
    made = [m for m in namespace_mounts(mount_ns)
            if m.source in devices or (m.mountpoint, m.source) not in host]
    return list(reversed(made))


def unmount_in_namespace(mount_ns, mountpoint):
    """
    Unmount ``mountpoint`` inside the namespace at ``mount_ns``; a
    mountpoint already gone is fine.
    """
    result = run(["nsenter", "--mount=" + mount_ns, "--",
                  "umount", mountpoint], check=False)
    if result.returncode != 0 and "not mounted" not in result.stderr:
        # A lazy unmount still frees the device once nothing uses it.
        run(["nsenter", "--mount=" + mount_ns, "--",
             "umount", "--lazy", mountpoint])
