"""
Deploying to a local cluster: writing ``cluster.yml`` with a placement and
``app.yml``, running ``blockmover-deploy``, and reading how long each state
change of a move took from what the nodes reported.
"""

import os
import subprocess
import threading
import time

from blockmover.localcluster import ClusterError, trust
from blockmover.localcluster.configs import cluster_config, write_yaml
from blockmover.localcluster.services import script, service_env
from blockmover.localcluster.status import control_state

DEPLOY_TIMEOUT = 300.0


def app_yml_path(layout):
    return os.path.join(layout.state_dir, "app.yml")


def write_configuration(layout, applications, placement, fencing=None,
                        without=()):
    """
    Write ``app.yml`` with ``applications`` (name -> app.yml entry) and
    ``cluster.yml`` with ``placement`` (application -> node name), and
    ``fencing`` in place of the local cluster's, naming no node of
    ``without``.
    """
    deployment = {}
    for app, node in placement.items():
        deployment.setdefault(node, []).append(app)
    write_yaml(layout.cluster_yml, cluster_config(layout, deployment,
                                                  fencing, without))
    write_yaml(app_yml_path(layout), {"version": 1,
                                      "applications": applications})


def deploy_argv(layout):
    """
    The command line of ``blockmover-deploy`` to the cluster's control
    service (every replica) as the operator, without options of the deploy
    itself or its files.
    """
    return [script("blockmover-deploy"), "--control", layout.control_option,
            "--tls-dir", layout.operator_tls_dir]


def deploy(layout, wait=True, timeout=DEPLOY_TIMEOUT, output=None):
    """
    Run ``blockmover-deploy`` on the cluster's files, as the operator;
    return its seconds. ``output`` is a file for its progress display
    (default: ours).

    :raise ClusterError: the deploy failed or did not converge in time.
    """
    argv = deploy_argv(layout)
    if wait:
        argv += ["--wait", "--timeout", str(timeout)]
    argv += [layout.cluster_yml, app_yml_path(layout)]
    started = time.monotonic()
    result = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT
                            if output is not None else None,
                            env=service_env(layout), timeout=timeout + 60)
    if result.returncode != 0:
        raise ClusterError("blockmover-deploy exited %d; see its output "
                           "above" % (result.returncode,))
    return time.monotonic() - started


def _progress(answer, node):
    return (answer.get("nodes", {}).get(node.name) or {}).get(
        "progress") or {}


def step_name(step, applications):
    """
    A change as the demo and the benchmarks print it: its kind and the
    application it is about, e.g. ``attach mongodb``; ``applications`` is
    the ``applications`` part of ``GET /v1/state``, which names each
    application's dataset.
    """
    names = {info.get("dataset_id"): app
             for app, info in applications.items()}
    return "%s %s" % (step["kind"], step.get("application")
                      or names.get(step["dataset_id"], step["dataset_id"]))


class ChangeTimes(object):
    """
    Collects, while a deploy runs, how long each state change took on each
    node, from the progress the nodes report to the control service. A
    node forgets its finished list when its next slice arrives, so the
    reports are read every ``interval`` seconds; a change seen running but
    gone before it was seen finished is timed from its start to when it
    was seen gone (within ``interval``). Changes reported before the
    collection began are left out. Use as a context manager; ``changes``
    is ``[(node, change, seconds)]`` in the order they finished, a change
    named by ``step_name``.
    """
    def __init__(self, layout, interval=0.05):
        self.layout = layout
        self.interval = interval
        self._operator = trust.operator_credentials(layout)
        self._baseline = None
        self._finished = {}
        self._running = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="change-times")

    def _keep(self, key, seconds):
        if key not in self._finished:
            self._finished[key] = (len(self._finished), seconds)

    def _collect(self):
        answer = control_state(self.layout.control, self._operator,
                               timeout=2.0)
        if answer is None:
            return
        now = time.time()
        reported = set()
        applications = answer.get("applications", {})
        for node in self.layout.nodes:
            progress = _progress(answer, node)
            for finished in progress.get("finished", []):
                key = (node.name, step_name(finished["step"], applications))
                reported.add(key)
                if self._baseline is not None and key not in self._baseline:
                    self._keep(key, finished["seconds"])
            running = {(node.name, step_name(r["step"], applications)):
                       r["since"] for r in progress.get("running", [])}
            for key, since in list(self._running.items()):
                if key[0] == node.name and key not in running and \
                        key not in reported:
                    self._keep(key, now - since)
                    del self._running[key]
            self._running.update(running)
        if self._baseline is None:
            self._baseline = reported

    def _run(self):
        while not self._stop.is_set():
            self._collect()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._collect()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self._collect()

    @property
    def changes(self):
        return [(node, change, seconds) for (node, change), (_, seconds)
                in sorted(self._finished.items(), key=lambda i: i[1][0])]
