"""
The secrets of a cluster's OpenStack emulator, read for tests that prove
they never leak.
"""

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
