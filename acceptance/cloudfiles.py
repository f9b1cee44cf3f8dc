"""
The secrets of a cluster (its OpenStack emulator's password and token, its
TLS keys), read for tests that prove they never leak.
"""

import glob
import os
import stat

import yaml

from blockmover.localcluster.cloud import admin_token_path, config_path


def cloud_secrets(layout):
    """
    The emulator's password and admin token, after checking that every
    file holding them is readable by root only.
    """
    for path in (layout.clouds_yaml, admin_token_path(layout),
                 config_path(layout)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    with open(layout.clouds_yaml) as f:
        clouds = yaml.safe_load(f)["clouds"]
    (cloud,) = clouds.values()
    with open(admin_token_path(layout)) as f:
        token = f.read().strip()
    return [cloud["auth"]["password"], token]


def tls_key_lines(layout):
    """
    Every full base64 line of every private key of the cluster's CA,
    control service, operator and nodes, after checking that each key is
    readable by root only: a key leaked into a log, even escaped in JSON,
    shows them whole. (Short lines are left out: a few characters may
    occur anywhere by chance.)
    """
    keys = glob.glob(os.path.join(layout.tls_dir, "*", "*.key")) + [
        path for node in layout.nodes
        for path in glob.glob(os.path.join(node.tls_dir, "*.key"))]
    assert len(keys) == 3 + len(layout.nodes), keys
    lines = []
    for path in keys:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        with open(path) as f:
            lines += [line.strip() for line in f
                      if len(line.strip()) >= 40
                      and not line.startswith("-----")]
    return lines
