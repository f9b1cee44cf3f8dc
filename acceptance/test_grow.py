"""
Growing a volume through ``maximum_size``: on both backends, for ext4
(offline: stop, unmount, grow, check, mount, start) and xfs (online), the
filesystem the application sees grows and its data stays; a smaller size is
refused by the deploy before anything changes.
"""

import os
import subprocess

import pytest

from blockmover.localcluster.deploying import (
    app_yml_path, deploy, deploy_argv, write_configuration,
)
from blockmover.localcluster.namespaces import nsenter_argv
from blockmover.localcluster.services import service_env
from blockmover.units import GiB, MiB

# Sizes the backend can hold: the emulator counts whole GiB; xfs needs more
# than 300 MB.
SIZES = {
    ("loopback", "ext4"): (64 * MiB, 128 * MiB),
    ("loopback", "xfs"): (320 * MiB, 400 * MiB),
    ("openstack", "ext4"): (GiB, 2 * GiB),
    ("openstack", "xfs"): (GiB, 2 * GiB),
}


def in_node(node, argv):
    return subprocess.run(nsenter_argv(node) + argv, capture_output=True,
                          text=True, check=True, timeout=60).stdout


def filesystem_size(node, mountpoint):
    """
    The size in bytes of the filesystem mounted at ``mountpoint`` in the
    node, as the application sees it.
    """
    return int(in_node(node, ["findmnt", "--bytes", "--noheadings",
                              "--output", "SIZE", mountpoint]).strip())


@pytest.mark.parametrize("filesystem", ["ext4", "xfs"])
def test_grow_keeps_the_data_and_shrink_is_refused(cluster, filesystem):
    layout = cluster.layout
    node = layout.node("node1")
    name = "grow" + filesystem
    mountpoint = os.path.join(layout.state_dir, "data", name)
    small, big = SIZES[(cluster.backend, filesystem)]

    def configure(size):
        write_configuration(layout, {name: {
            "command": ["sleep", "100000"],
            "volume": {"mountpoint": mountpoint, "maximum_size": size,
                       "filesystem": filesystem}}}, {name: "node1"})

    def run_deploy():
        with open(cluster.log_path, "a") as output:
            deploy(layout, timeout=240, output=output)

    configure(small)
    run_deploy()
    before = filesystem_size(node, mountpoint)
    # What the application sees; the filesystem keeps some for itself.
    assert 0.5 * small < before <= small
    in_node(node, ["sh", "-c", "echo kept > %s/data" % (mountpoint,)])

    configure(big)
    run_deploy()
    after = filesystem_size(node, mountpoint)
    assert 0.5 * big < after <= big
    assert after > before
    assert in_node(node, ["cat", os.path.join(mountpoint, "data")]) == \
        "kept\n"

    configure(small)
    refused = subprocess.run(
        deploy_argv(layout) + [layout.cluster_yml, app_yml_path(layout)],
        capture_output=True, text=True, env=service_env(layout), timeout=120)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "cannot shrink" in refused.stdout + refused.stderr
    assert filesystem_size(node, mountpoint) == after

    # Give the node back: nothing of this test runs on.
    write_configuration(layout, {}, {})
    run_deploy()
