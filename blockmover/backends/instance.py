"""
How a node on OpenStack learns its own server id when no configuration
names it: the config drive, else the metadata service.
"""

import json
import os
import tempfile
import urllib.error
import urllib.request

from blockmover.backends.interface import NoInstanceId
from blockmover.command import CommandFailed, run

METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"
CONFIG_DRIVE = "/dev/disk/by-label/config-2"
_META_DATA = os.path.join("openstack", "latest", "meta_data.json")


def _from_config_drive(device):
    if not os.path.exists(device):
        return None
    where = tempfile.mkdtemp(prefix="blockmover-config-drive-")
    try:
        run(["mount", "-o", "ro", device, where])
        try:
            with open(os.path.join(where, _META_DATA)) as f:
                return json.load(f).get("uuid")
        finally:
            run(["umount", where])
    except (CommandFailed, OSError, ValueError):
        return None
    finally:
        os.rmdir(where)


def _from_metadata_service(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8")).get("uuid")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def discover(metadata_url=METADATA_URL, config_drive=CONFIG_DRIVE,
             timeout=5.0):
    """
    This server's Nova id, from the config drive or the metadata service.

    :raise NoInstanceId: neither answered.
    """
    found = (_from_config_drive(config_drive)
             or _from_metadata_service(metadata_url, timeout))
    if not found:
        raise NoInstanceId(
            "cannot find this node's server id: no config drive at %s and "
            "no answer from %s; set instance_id in agent.yml or on the node "
            "in cluster.yml" % (config_drive, metadata_url))
    return found
