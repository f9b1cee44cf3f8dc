"""
What a block device on this machine says of itself, read from sysfs: one
reader for the agents (observing their node) and the backends (checking
the devices they make).
"""

import os

from blockmover.command import run


def device_size(device):
    """
    The size in bytes of block device ``device`` (a path, symlinks allowed).
    Blocks: call it off the reactor.
    """
    name = os.path.basename(os.path.realpath(device))
    try:
        with open("/sys/class/block/%s/size" % (name,)) as f:
            return int(f.read()) * 512
    except OSError:
        # A device sysfs does not show under that name (a device-mapper
        # alias, a container without /sys): the kernel's answer by ioctl.
        return int(run(["blockdev", "--getsize64", device]))
