"""
Fixtures shared by the test modules.
"""

import os
import shutil
import tempfile

import pytest

from blockmover.backends import loopdevice
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from tests.control_process import started_control


@pytest.fixture
def loopback_root():
    """
    A fresh, uniquely named directory for a loopback backend's root.
    Afterwards any loop device still backed by a file in it is removed and
    the directory deleted; a leaked loop device fails the test.
    """
    root = os.path.realpath(tempfile.mkdtemp(prefix="blockmover-loopback-"))
    try:
        yield root
    finally:
        leaked = loopdevice.devices_under(root)
        for _device, backing in leaked:
            loopdevice.detach_all(backing)
        shutil.rmtree(root)
    assert not leaked, "loop devices left behind: %r" % (leaked,)


@pytest.fixture
def make_loopback(loopback_root):
    """
    A factory ``make_loopback(instance_id=None, cluster_name="test")`` of
    loopback backends sharing ``loopback_root``.
    """
    def make(instance_id=None, cluster_name="test"):
        return LoopbackBlockDeviceAPI(loopback_root, cluster_name,
                                      instance_id)
    return make


@pytest.fixture
def workdir():
    """
    A fresh directory for a test's files, deleted afterwards.
    """
    directory = os.path.realpath(tempfile.mkdtemp(prefix="blockmover-test-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def control(workdir):
    """
    ``blockmover-control`` running as a child process on 127.0.0.1 with its
    state in ``workdir``; ended (by its pid) afterwards.
    """
    service = started_control(workdir)
    try:
        yield service
    finally:
        service.stop()
