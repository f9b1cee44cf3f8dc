"""
The loop devices of the cluster's loopback backend: found by their backing
file under the backend's root, so no other loop device is ever touched.
"""

import glob
import os

from blockmover.cluster import ClusterError
from blockmover.command import run


def _backing_file(sys_block):
    try:
        with open(os.path.join(sys_block, "loop", "backing_file")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def loop_devices_under(root):
    """
    ``{device: backing file}`` for every loop device whose backing file
    lies under ``root``.
    """
    root = os.path.realpath(root).rstrip("/") + "/"
    found = {}
    for sys_block in glob.glob("/sys/block/loop*"):
        backing = _backing_file(sys_block)
        if backing and backing.startswith(root):
            found["/dev/" + os.path.basename(sys_block)] = backing
    return found


def detach_loop_devices_under(root):
    """
    Detach every loop device backed by a file under ``root``; return the
    devices detached.
    """
    detached = []
    for device in sorted(loop_devices_under(root)):
        result = run(["losetup", "--detach", device], check=False)
        if result.returncode == 0 or "No such device" in result.stderr:
            detached.append(device)
        else:
            raise ClusterError("cannot detach %s (%s): something still "
                               "uses it; unmount it and run down again"
                               % (device, result.stderr.strip()))
    return detached
