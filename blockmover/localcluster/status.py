"""
``blockmover status`` of a local cluster: the status of any cluster
(``blockmover.status_command``), asked with the cluster's operator
certificate, plus what only the local cluster knows, from its state file
and the kernel: its processes and their pids (the control service's or
each replica's and each etcd member's), its nodes' and replicas'
namespaces, where the operator's TLS files are.
"""

from blockmover import proc
from blockmover.client import ControlError, ControlUnreachable
from blockmover.localcluster import ClusterError, cloud, state, trust
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.namespaces import netns_exists
from blockmover.poll import Backoff, poll
from blockmover.localcluster.services import CONTROL, agent_key
from blockmover.status_command import LocalFacts, Target


def control_state(url, credentials, timeout=5.0):
    """
    The control service's ``GET /v1/state`` answer to a client presenting
    ``credentials`` (``tls.Credentials``), or None when it does not answer.
    ``url`` is the service's, or the list of its replicas' (a layout's
    ``control``).
    """
    try:
        return ask_control(url, lambda client: client.get_state(), timeout,
                           credentials)
    except (ControlUnreachable, ControlError):
        return None


def replicas_answer(layout, credentials, timeout=5.0):
    """
    ``GET /v1/replicas`` of the first of the cluster's control replicas
    that answers, or None when none does.
    """
    for replica in layout.replicas:
        try:
            return ask_control(replica.url,
                               lambda client: client.get_replicas(),
                               timeout, credentials)
        except (ControlUnreachable, ControlError):
            continue
    return None


def leading_replica(layout, credentials, other_than=None, serving=False,
                    timeout=120.0):
    """
    The ``ReplicaLayout`` of the replica that leads, once one (other than
    the replica named ``other_than``) does, as the replicas say; with
    ``serving``, once its service answers too.

    :raise blockmover.poll.Timeout: none does within ``timeout`` seconds.
    """
    def found():
        answer = replicas_answer(layout, credentials)
        leader = answer and answer["leader"]
        if not leader or leader["name"] == other_than:
            return None
        replica = layout.replica(leader["name"])
        if serving and control_state(replica.url, credentials) is None:
            return None
        return replica
    return poll(found, timeout, "a replica of the control service to lead",
                Backoff(initial=0.1, maximum=0.5))


def _process(current, key):
    """
    ``(line, data, running)`` of the process recorded under ``key``.
    """
    record = current.processes.get(key)
    if record is None:
        return "not started", {"pid": None, "running": False}, False
    running = proc.is_running(record)
    data = {"pid": record.pid, "running": running}
    if running:
        return "running (pid %d)" % (record.pid,), data, True
    return ("NOT RUNNING (was pid %d; `blockmover cluster up` restarts it)"
            % (record.pid,), data, False)


def local_facts(state_file):
    """
    The ``LocalFacts`` of the cluster recorded in ``state_file``. Blocks
    (reads the state file, /proc and /run/netns): call it in a thread.

    Its ``data`` (``--json``'s ``local``)::

        {"name": NAME, "state_dir": DIR, "backend": NAME,
         "operator_tls_dir": DIR,
         "processes": {"control": {"url": URL, "pid": PID | null,
                                   "running": BOOL},
                       "cloud": {...}},          # openstack only
         "nodes": {NODE: {"address": ADDRESS, "namespace": NAME,
                          "namespace_present": BOOL,
                          "powered_off": BOOL,  # cluster power off
                          "agent": {"pid": PID | null, "running": BOOL}}},
         # With control replicas, in place of processes' "control":
         "replicas": {NAME: {"url": URL, "address": ADDRESS,
                             "namespace": NAME, "namespace_present": BOOL,
                             "pid": PID | null, "running": BOOL}},
         "etcd": {NAME: {"url": URL, "pid": PID | null, "running": BOOL}}}
    """
    try:
        current = state.load(state_file)
    except ClusterError as e:
        return LocalFacts([str(e)], {"error": str(e)}, False)
    if current is None:
        message = ("no cluster is recorded in %s any more" % (state_file,))
        return LocalFacts([message], {"error": message}, False)
    layout = current.layout
    healthy = True
    lines = ["cluster %s (state in %s)" % (layout.name, layout.state_dir)]
    processes = {}
    facts = {"name": layout.name, "state_dir": layout.state_dir,
             "backend": layout.backend,
             "operator_tls_dir": layout.operator_tls_dir,
             "processes": processes}
    if layout.replicated:
        facts["replicas"], facts["etcd"], running = _replicas(current, lines)
        healthy &= running
    else:
        line, data, running = _process(current, CONTROL)
        healthy &= running
        lines.append("  control %s: %s" % (layout.control_url, line))
        processes["control"] = dict(data, url=layout.control_url)
    if layout.uses_cloud:
        line, data, running = _process(current, cloud.CLOUD)
        healthy &= running
        lines.append("  OpenStack emulator %s: %s" % (layout.cloud_url,
                                                      line))
        processes["cloud"] = dict(data, url=layout.cloud_url)
    nodes = {}
    for node in layout.nodes:
        present = netns_exists(node.netns)
        off = node.name in current.powered_off
        if off:
            # Down on purpose: its agent is not expected to run.
            line, data = ("down with it (`blockmover cluster power on %s` "
                          "boots it)" % (node.name,),
                          {"pid": None, "running": False})
        else:
            line, data, running = _process(current, agent_key(node))
            healthy &= running and present
        lines.append("  %s %s: %snamespace %s, agent %s" % (
            node.name, node.address, "POWERED OFF, " if off else "",
            "present" if present else "MISSING", line))
        nodes[node.name] = {"address": node.address, "namespace": node.netns,
                            "namespace_present": present, "agent": data,
                            "powered_off": off}
    lines.append("  " + trust.operator_hint(layout))
    facts["nodes"] = nodes
    return LocalFacts(lines, facts, healthy)


def _replicas(current, lines):
    """
    ``(replicas, etcd, running)`` of a cluster of control replicas: the
    ``--json`` data of each replica and etcd member, and whether all of
    them run (and every replica's namespace is there); a line for each
    is added to ``lines``.
    """
    layout = current.layout
    running = True
    replicas = {}
    for replica in layout.replicas:
        present = netns_exists(replica.netns)
        line, data, alive = _process(current, replica.name)
        running &= alive and present
        lines.append("  %s %s: namespace %s, %s" % (
            replica.name, replica.url,
            "present" if present else "MISSING", line))
        replicas[replica.name] = dict(
            data, url=replica.url, address=replica.address,
            namespace=replica.netns, namespace_present=present)
    members = {}
    for member in layout.etcd_members:
        line, data, alive = _process(current, member.name)
        running &= alive
        lines.append("  %s %s: %s" % (member.name, member.client_url, line))
        members[member.name] = dict(data, url=member.client_url)
    return replicas, members, running


def local_target(state_file):
    """
    The ``status_command.Target`` of the local cluster recorded in
    ``state_file``: its control service, asked with its operator's
    certificate, and its local facts.

    :raise ClusterError: no cluster is recorded there, or its operator's
        TLS files cannot be used.
    """
    current = state.load(state_file)
    if current is None:
        raise ClusterError(
            "no cluster is recorded in %s; start one with `blockmover "
            "cluster up`, or give --cluster cluster.yml or --control URL "
            "for a cluster elsewhere" % (state_file,))
    layout = current.layout
    return Target(layout.control, trust.operator_credentials(layout),
                  local=lambda: local_facts(state_file))
