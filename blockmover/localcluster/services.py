"""
How the cluster's services are started: the control service on the host,
on the bridge's address, with the cluster's TLS files, or its replicas,
each in its own network namespace, on etcd members on the host; and one
agent inside each node (its network and mount namespace), each from the
scripts installed next to this Python.
"""

import os
import shutil
import sys

from blockmover import proc
from blockmover.client import ControlError, ControlUnreachable
from blockmover.localcluster import ClusterError, etcd, trust
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.namespaces import netns_argv, nsenter_argv
from blockmover.localcluster.processes import wait_until_ready
from blockmover.localcluster.trust import revocation_list
from blockmover.poll import Backoff, Timeout, poll

CONTROL = "control"
READY_TIMEOUT = 30.0
# A new etcd cluster elects its leader within seconds of its members
# meeting; a member started again catches up first.
ETCD_READY_TIMEOUT = 60.0


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


def _control_argv(layout, address, state_dir, log):
    return [script("blockmover-control"),
            "--listen", "tcp:%d:interface=%s" % (layout.control_port,
                                                 address),
            "--tls-dir", layout.control_tls_dir,
            "--crl", revocation_list(layout),
            "--state-dir", state_dir,
            "--refresh-interval", repr(layout.refresh_interval),
            # A few nodes reconnect within a second of a restart: a lease
            # is grace enough.
            "--startup-grace", repr(layout.lease),
            "--log", log]


def control_argv(layout):
    """
    The one control service, on the bridge's address with its file store.
    """
    return _control_argv(layout, layout.bridge_address,
                         layout.control_state_dir, layout.control_log)


def replica_argv(layout, replica):
    """
    Control replica ``replica`` (a ``ReplicaLayout`` of ``layout``) in its
    network namespace, on the cluster's etcd members.
    """
    return netns_argv(replica.netns_path) + _control_argv(
        layout, replica.address, replica.state_dir, replica.log) + [
            "--etcd", ",".join(layout.etcd_endpoints),
            "--replica-name", replica.name,
            "--advertise", replica.url]


def etcd_argv(layout, member):
    """
    etcd member ``member`` (an ``EtcdMemberLayout`` of ``layout``), on its
    ``etcd`` certificate, refusing what the cluster's CA revokes.
    """
    return etcd.member_argv(
        member.name, member.data_dir, member.client_url, member.peer_url,
        layout.etcd_initial_cluster, layout.etcd_token,
        trust.etcd_files(layout, member), crl=revocation_list(layout))


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
                     deadline=READY_TIMEOUT, replica=None):
    """
    Wait until the control service (or ``replica``, a ``ReplicaLayout``)
    answers the operator (``credentials``): a refusal, or a replica's
    naming the leader or that none is known yet, is an answer. Fail early
    if its process (``still_running()`` False) is gone.

    :raise ClusterError: it did not answer in time (saying why the last
        attempt failed: a TLS refusal never goes away by waiting) or
        exited.
    """
    if replica is None:
        url, what, output = (layout.control_url, "the control service",
                             output_path(layout, CONTROL))
    else:
        url, what, output = (replica.url, "control replica %s"
                             % (replica.name,), replica.output)
    last = [None]

    def answers():
        last[0] = unanswered(url, credentials, timeout=1.0)
        return last[0] is None
    try:
        wait_until_ready(answers, still_running, deadline,
                         "%s at %s" % (what, url), output)
    except ClusterError as e:
        if last[0] is None:
            raise
        raise ClusterError("%s (last: %s)" % (e, last[0]))


def unhealthy_etcd_members(layout, context):
    """
    The etcd members of ``layout`` that do not answer a client with
    ``context`` (``etcd.client_context``) that they are healthy. Blocks.
    """
    return [member for member in layout.etcd_members
            if not etcd.healthy(member.client_url, context, timeout=1.0)]


def wait_for_etcd(layout, records, deadline=ETCD_READY_TIMEOUT):
    """
    Wait until every etcd member of ``layout`` answers the control
    service's certificate that it is healthy (it knows a leader); fail
    early when a member's process (``records``: name -> ``Process``) is
    gone.

    :raise ClusterError: a member exited, or not all were healthy in time.
    """
    context = etcd.client_context(trust.control_files(layout))
    waiting = [layout.etcd_members]

    def check():
        for member in layout.etcd_members:
            if not proc.is_running(records[member.name]):
                raise ClusterError("etcd member %s exited at once; see %s"
                                   % (member.name, member.output))
        waiting[0] = unhealthy_etcd_members(layout, context)
        return True if not waiting[0] else None
    try:
        poll(check, deadline, "etcd's members to be healthy",
             backoff=Backoff(initial=0.1, maximum=1.0))
    except Timeout as e:
        raise ClusterError("%s: %s not; see %s" % (
            e, ", ".join(m.name for m in waiting[0]),
            ", ".join(m.output for m in waiting[0])))
