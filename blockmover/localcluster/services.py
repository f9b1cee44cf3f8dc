"""
How the cluster's services are started: the control service on the host,
on the bridge's address, with the cluster's TLS files, and one agent inside
each node (its network and mount namespace), each from the scripts
installed next to this Python.
"""

import os
import shutil
import sys

from blockmover.client import ControlError, ControlUnreachable
from blockmover.localcluster import ClusterError
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.namespaces import nsenter_argv
from blockmover.localcluster.processes import wait_until_ready
from blockmover.localcluster.trust import revocation_list

CONTROL = "control"
READY_TIMEOUT = 30.0


def agent_key(node):
    """
    The name under which the state file records ``node``'s agent.
    """
    return "agent-" + node.name


def script(name):
    """
    The absolute path of the installed script ``name``: next to the running
    Python first (a virtualenv), then on PATH.
    """
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        raise ClusterError("%s is not installed: install blockmover "
                           "(pip install -e .) and try again" % (name,))
    return found


def service_env(layout=None, cloud_credentials=True):
    """
    The environment of the services: the scripts' directory first on PATH,
    so applications named by command (``secantusd-py``) are found; on the
    openstack backend, the cluster's clouds.yaml in OS_CLIENT_CONFIG_FILE.
    Without ``cloud_credentials`` (the agents: their cloud calls go through
    the control service), no clouds.yaml and no ``OS_*`` variable at all.
    """
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(script("blockmover-agent")) + \
        os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if not cloud_credentials:
        return {name: value for name, value in env.items()
                if not name.startswith("OS_")}
    if layout is not None and layout.uses_cloud:
        env["OS_CLIENT_CONFIG_FILE"] = layout.clouds_yaml
    return env


def control_argv(layout):
    return [script("blockmover-control"),
            "--listen", "tcp:%d:interface=%s" % (layout.control_port,
                                                 layout.bridge_address),
            "--tls-dir", layout.control_tls_dir,
            "--crl", revocation_list(layout),
            "--state-dir", layout.control_state_dir,
            "--refresh-interval", repr(layout.refresh_interval),
            # A few nodes reconnect within a second of a restart: a lease
            # is grace enough.
            "--startup-grace", repr(layout.lease),
            "--log", layout.control_log]


def agent_argv(node):
    return nsenter_argv(node) + [script("blockmover-agent"),
                                 "--config", node.agent_config]


def output_path(layout, key):
    """
    Where the stdout and stderr of the process ``key`` go.
    """
    return os.path.join(layout.logs_dir, key + ".out")


def unanswered(url, credentials, timeout=2.0):
    """
    Why the control service at ``url`` does not answer a client presenting
    ``credentials`` (a ``ControlUnreachable``: not listening, TLS refused
    either way, no answer in time), or None when it answers (a refusal is
    an answer).
    """
    try:
        ask_control(url, lambda client: client.get_state(), timeout,
                    credentials)
    except ControlError:
        return None
    except ControlUnreachable as e:
        return e
    return None


def control_answers(url, credentials, timeout=2.0):
    """
    Whether the control service at ``url`` answers a client presenting
    ``credentials`` at all (a refusal is an answer).
    """
    return unanswered(url, credentials, timeout) is None


def wait_for_control(layout, credentials, still_running,
                     deadline=READY_TIMEOUT):
    """
    Wait until the control service answers the operator (``credentials``);
    fail early if its process (``still_running()`` False) is gone.

    :raise ClusterError: it did not answer in time (saying why the last
        attempt failed: a TLS refusal never goes away by waiting) or
        exited.
    """
    last = [None]

    def answers():
        last[0] = unanswered(layout.control_url, credentials, timeout=1.0)
        return last[0] is None
    try:
        wait_until_ready(answers, still_running, deadline,
                         "the control service at %s" % (layout.control_url,),
                         output_path(layout, CONTROL))
    except ClusterError as e:
        if last[0] is None:
            raise
        raise ClusterError("%s (last: %s)" % (e, last[0]))
