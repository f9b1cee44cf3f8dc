"""
The files ``up`` writes for the services: ``cluster.yml`` (the nodes'
addresses, the control service's https URL or its replicas' URLs, the
lease, the fence and an empty deployment) and one ``agent.yml`` per node,
naming the control service (or its replicas) and the node's TLS files.
"""

import os

import yaml

from blockmover.emulator.store import BY_ID_DIR
from blockmover.files import write_atomically
from blockmover.localcluster.cloud import cloud_name, server_id
from blockmover.localcluster.namespaces import netns_argv
from blockmover.localcluster.services import script


def backend_config(layout, site=""):
    """
    The ``backend`` section of both files for ``site`` ("" for a cluster
    of one site): its loopback root, or the cluster's emulated cloud (by
    its clouds.yaml name; credentials stay in clouds.yaml), in the region
    named after the site.
    """
    if layout.site_backend(site) == "openstack":
        config = {"name": "openstack", "cloud": cloud_name(layout)}
        if site:
            config["region"] = site
        return config
    return {"name": "loopback", "root": layout.site_root(site)}


def _node(layout, node):
    entry = {"address": node.address}
    if node.site:
        entry["site"] = node.site
    if layout.site_backend(node.site) == "openstack":
        entry["instance_id"] = server_id(layout, node)
    return entry


def fencing_config(layout):
    """
    The ``fencing`` section of ``cluster.yml``: on the emulator, the
    backend's (it stops the node's server, which powers the namespace node
    off); on loopback, ``blockmover cluster power off`` as the fence
    command (given the node's name and address), which a control replica
    runs in the host's network namespace, where the nodes' links are.
    """
    if all(layout.site_backend(node.site) == "openstack"
           for node in layout.nodes):
        return {"method": "backend"}
    command = [script("blockmover"), "cluster", "power", "--name",
               layout.name, "--state-dir", layout.state_dir, "off"]
    if layout.replicated:
        command = netns_argv(layout.host_netns_path) + command
    return {"method": "command", "command": command, "deadline": 60}


def cluster_config(layout, deployment=None, fencing=None, without=()):
    """
    ``cluster.yml`` as data: the cluster's nodes (but those named in
    ``without``) and its backend, its lease and fencing (``fencing`` in
    place of ``fencing_config``'s), with ``deployment`` (node ->
    application names) or none.
    """
    deployment = deployment or {}
    nodes = [node for node in layout.nodes if node.name not in without]
    cluster = {
        "name": layout.name,
        "control": layout.control,
        "backend": backend_config(layout),
        "lease": layout.lease,
        "fencing": fencing or fencing_config(layout),
    }
    if layout.election:
        cluster["election"] = dict(layout.election)
    if layout.sites:
        del cluster["backend"]
        cluster["sites"] = {site: {"backend": backend_config(layout, site)}
                            for site in sorted(layout.sites)}
    return {
        "version": 1,
        "cluster": cluster,
        "nodes": {node.name: _node(layout, node) for node in nodes},
        "deployment": {node.name: list(deployment.get(node.name, []))
                       for node in nodes},
    }


def agent_config(layout, node):
    """
    ``agent.yml`` of ``node`` as data: the node's certificate, key and the
    CA's certificate are in its ``tls_dir``; it names every control
    replica.
    """
    config = {
        "version": 1,
        "node": node.name,
        "cluster": layout.name,
        "control": layout.control,
        "state_dir": node.agent_state_dir,
        "log": node.agent_log,
        "backend": backend_config(layout, node.site),
        "tls": {"directory": node.tls_dir},
    }
    if layout.site_backend(node.site) == "openstack":
        # No cloud credentials on the node: its cloud calls go through the
        # control service, which checks them against the node's slice.
        config["instance_id"] = server_id(layout, node)
        config["backend"] = {
            "name": "openstack", "calls": "control",
            "device_root": os.path.join(layout.backend_root, BY_ID_DIR,
                                        server_id(layout, node))}
    return config


def write_yaml(path, data):
    """
    Write ``data`` as YAML to ``path`` atomically.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, yaml.dump(data, Dumper=_PlainDumper,
                                     default_flow_style=False,
                                     sort_keys=False))


class _PlainDumper(yaml.SafeDumper):
    """
    Writes a value used twice out twice: blockmover refuses YAML anchors
    and aliases.
    """

    def ignore_aliases(self, data):
        return True
