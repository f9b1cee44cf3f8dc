"""
Deploying to a local cluster: writing ``cluster.yml`` with a placement and
``app.yml``, running ``blockmover-deploy``, and reading how long each state
change of a move took from what the nodes reported.
"""

import os
import subprocess
import time

from blockmover.cluster import ClusterError
from blockmover.cluster.configs import cluster_config, write_yaml
from blockmover.cluster.services import script, service_env
from blockmover.cluster.status import control_state

DEPLOY_TIMEOUT = 300.0


def app_yml_path(layout):
    return os.path.join(layout.state_dir, "app.yml")


def write_configuration(layout, applications, placement):
    """
    Write ``app.yml`` with ``applications`` (name -> app.yml entry) and
    ``cluster.yml`` with ``placement`` (application -> node name).
    """
    deployment = {}
    for app, node in placement.items():
        deployment.setdefault(node, []).append(app)
    write_yaml(layout.cluster_yml, cluster_config(layout, deployment))
    write_yaml(app_yml_path(layout), {"version": 1,
                                      "applications": applications})


def deploy(layout, wait=True, timeout=DEPLOY_TIMEOUT, output=None):
    """
    Run ``blockmover-deploy`` on the cluster's files; return its seconds.
    ``output`` is a file for its progress display (default: ours).

    :raise ClusterError: the deploy failed or did not converge in time.
    """
    argv = [script("blockmover-deploy"), "--control", layout.control_url]
    if wait:
        argv += ["--wait", "--timeout", str(timeout)]
    argv += [layout.cluster_yml, app_yml_path(layout)]
    started = time.monotonic()
    result = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT
                            if output is not None else None,
                            env=service_env(), timeout=timeout + 60)
    if result.returncode != 0:
        raise ClusterError("blockmover-deploy exited %d; see its output "
                           "above" % (result.returncode,))
    return time.monotonic() - started


def finished_changes(layout):
    """
    ``[(node, change, seconds)]``: the state changes each node reports as
    finished for its current slice, in the order it ran them.
    """
    answer = control_state(layout.control_url) or {}
    found = []
    for node in layout.nodes:
        progress = (answer.get("nodes", {}).get(node.name) or {}).get(
            "progress") or {}
        for finished in progress.get("finished", []):
            found.append((node.name, finished["change"],
                          finished["seconds"]))
    return found
