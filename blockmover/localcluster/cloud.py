"""
The OpenStack emulator a local cluster on the openstack backend runs on
the host, at the bridge's address so the nodes reach it: its files (a
config with a random password and admin token, and the clouds.yaml the
services read, both readable by root only), how it is started, waited for,
asked about faults and counters, and cleaned up. Secrets are read from
those files and never printed.
"""

import os
import secrets
import uuid

import yaml

from blockmover.command import run
from blockmover.emulator.admin_client import EmulatorAdmin
from blockmover.emulator.config import EmulatorConfig
from blockmover.emulator.main import clouds_yaml
from blockmover.emulator.store import URL_FILE
from blockmover.files import write_atomically
from blockmover.localcluster.processes import wait_until_ready
from blockmover.localcluster.services import script

CLOUD = "cloud"
READY_TIMEOUT = 30.0
# Fixed, so a cluster's server ids are the same every time it is made.
_SERVERS = uuid.UUID("6f1c0a52-93a4-4d8e-9a55-0d3c1b7e2f40")


def cloud_name(layout):
    """
    The cluster's cloud in its clouds.yaml.
    """
    return "blockmover-" + layout.name


def server_id(layout, node):
    """
    The Nova server id of ``node``: stable for the cluster's name and the
    node's, distinct between clusters.
    """
    return str(uuid.uuid5(_SERVERS, "%s/%s" % (layout.name, node.name)))


def config_path(layout):
    return os.path.join(layout.cloud_dir, "emulator.yml")


def admin_token_path(layout):
    return os.path.join(layout.cloud_dir, "admin-token")


def log_path(layout):
    return os.path.join(layout.logs_dir, "cloud.log")


def _write_private(path, text):
    # 0600 from the start: a secret is never readable by others.
    write_atomically(path, text, mode=0o600)


def emulator_config(layout, password, admin_token):
    """
    The emulator's config as data: one user with ``password``, a server
    per node (in a cluster of sites, per node of an openstack site, in the
    region named after its site), the layout's attach and detach latencies
    and volume quota (in each region), ``admin_token``.
    """
    config = {
        "users": {"blockmover": {"password": password,
                                 "project": "blockmover"}},
        "projects": {"blockmover": {}},
        "servers": {node.name: {"id": server_id(layout, node)}
                    for node in layout.nodes},
        # A server stops and starts as slowly as a volume detaches and
        # attaches.
        "latency": {"attach": layout.attach_latency,
                    "detach": layout.detach_latency,
                    "stop": layout.detach_latency,
                    "start": layout.attach_latency},
        "quotas": {"volumes": layout.volume_quota},
        "admin_token": admin_token,
        # Stopping a node's server powers the namespace node off, starting
        # it powers it on: the emulator's SHUTOFF means the node is off.
        "power_command": [script("blockmover"), "cluster", "power",
                          "--name", layout.name,
                          "--state-dir", layout.state_dir],
    }
    if layout.sites:
        # Each openstack site is a region of its name, with the servers
        # of its nodes.
        config["regions"] = sorted(site for site, backend in
                                   layout.sites.items()
                                   if backend == "openstack")
        config["servers"] = {
            node.name: {"id": server_id(layout, node), "region": node.site}
            for node in layout.nodes
            if layout.site_backend(node.site) == "openstack"}
    return config


def write_files(layout):
    """
    Write the emulator's config, its admin token and the clouds.yaml the
    services use, each mode 0600, unless already written: the secrets
    made the first time stay.
    """
    os.makedirs(layout.cloud_dir, mode=0o700, exist_ok=True)
    if os.path.exists(layout.clouds_yaml):
        return
    password = secrets.token_urlsafe(24)
    token = secrets.token_urlsafe(32)
    data = emulator_config(layout, password, token)
    _write_private(admin_token_path(layout), token + "\n")
    _write_private(config_path(layout), yaml.safe_dump(data))
    _write_private(layout.clouds_yaml, clouds_yaml(
        EmulatorConfig(data), layout.cloud_url, cloud_name(layout)))


def cloud_argv(layout):
    return [script("blockmover-cloud"), "serve",
            "--listen", "tcp:%d:interface=%s" % (layout.cloud_port,
                                                 layout.bridge_address),
            "--state-dir", layout.backend_root,
            "--config", config_path(layout),
            "--log", log_path(layout)]


def forget_url(layout):
    """
    Remove the URL a previous run of the emulator wrote, so that waiting
    for it waits for the run about to start.
    """
    try:
        os.remove(os.path.join(layout.backend_root, URL_FILE))
    except FileNotFoundError:
        return


def wait_for_cloud(layout, still_running, output,
                   deadline=READY_TIMEOUT):
    """
    Wait until the emulator listens (it writes its URL once it does); fail
    early if its process (``still_running()`` False) is gone.
    """
    url_file = os.path.join(layout.backend_root, URL_FILE)
    wait_until_ready(lambda: os.path.exists(url_file), still_running,
                     deadline, "the OpenStack emulator at %s"
                     % (layout.cloud_url,), output)


def cleanup(layout):
    """
    Detach the emulator's loop devices and remove its state (run once it
    has stopped): no attachment link or loop device is left.
    """
    if os.path.isdir(layout.backend_root):
        run([script("blockmover-cloud"), "cleanup", "--state-dir",
             layout.backend_root])


def admin(layout):
    """
    The running emulator's admin API (faults, counters), authorised with
    the cluster's admin token.
    """
    with open(admin_token_path(layout)) as f:
        return EmulatorAdmin(layout.cloud_url, token=f.read().strip())
