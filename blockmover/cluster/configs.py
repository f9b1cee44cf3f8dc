"""
The files ``up`` writes for the services: ``cluster.yml`` (the nodes'
addresses and an empty deployment) and one ``agent.yml`` per node.
"""

import os

import yaml

BACKEND = "loopback"


def cluster_config(layout, deployment=None):
    """
    ``cluster.yml`` as data: the cluster's nodes and the shared loopback
    backend, with ``deployment`` (node -> application names) or none.
    """
    deployment = deployment or {}
    return {
        "version": 1,
        "cluster": {
            "name": layout.name,
            "control": layout.control_url,
            "backend": {"name": BACKEND, "root": layout.backend_root},
        },
        "nodes": {node.name: {"address": node.address}
                  for node in layout.nodes},
        "deployment": {node.name: list(deployment.get(node.name, []))
                       for node in layout.nodes},
    }


def agent_config(layout, node):
    """
    ``agent.yml`` of ``node`` as data.
    """
    return {
        "version": 1,
        "node": node.name,
        "control": layout.control_url,
        "state_dir": node.agent_state_dir,
        "log": node.agent_log,
        "backend": {"name": BACKEND, "root": layout.backend_root},
    }


def write_yaml(path, data):
    """
    Write ``data`` as YAML to ``path`` atomically.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)
