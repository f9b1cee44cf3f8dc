"""
The loop devices of the cluster's loopback backend: found by their backing
file under the backend's root, so no other loop device is ever touched.
"""

import os

from blockmover.backends import loopdevice
from blockmover.localcluster import ClusterError


def loop_devices_under(root):
    """
    ``{device: backing file}`` for every loop device whose backing file
    lies (or lay, before it was unlinked) under ``root``.
    """
    return dict(loopdevice.devices_under(os.path.realpath(root)))


def detach_loop_devices_under(root):
    """
    Detach every loop device backed by a file under ``root``; return the
    devices detached.

    :raise ClusterError: a device stays in use.
    """
    found = loop_devices_under(root)
    for backing in sorted(set(found.values())):
        try:
            loopdevice.detach_all(backing)
        except loopdevice.LoopDeviceError as e:
            raise ClusterError("cannot detach the loop devices of %s (%s): "
                               "something still uses them; unmount them and "
                               "run down again" % (backing, e))
    return sorted(found)
