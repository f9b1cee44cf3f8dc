"""
``blockmover status``: what runs where in a local cluster, from its state
file, the kernel and the control service.
"""

from blockmover import proc
from blockmover.client import ControlError, ControlUnreachable
from blockmover.localcluster import ClusterError, cloud, state, trust
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.namespaces import netns_exists
from blockmover.localcluster.services import CONTROL, agent_key


def control_state(url, credentials, timeout=5.0):
    """
    The control service's ``GET /v1/state`` answer to a client presenting
    ``credentials`` (``tls.Credentials``), or None when it does not answer.
    """
    try:
        return ask_control(url, lambda client: client.get_state(), timeout,
                           credentials)
    except (ControlUnreachable, ControlError):
        return None


def _process_line(current, key):
    record = current.processes.get(key)
    if record is None:
        return "not started"
    if proc.is_running(record):
        return "running (pid %d)" % (record.pid,)
    return "NOT RUNNING (was pid %d; `blockmover cluster up` restarts it)" \
        % (record.pid,)


def status_lines(state_file):
    """
    Lines for a person describing the cluster recorded in ``state_file``.
    """
    current = state.load(state_file)
    if current is None:
        return ["no cluster is recorded in %s; start one with "
                "`blockmover cluster up`" % (state_file,)]
    layout = current.layout
    lines = ["cluster %s (state in %s)" % (layout.name, layout.state_dir),
             "  control %s: %s" % (layout.control_url,
                                   _process_line(current, CONTROL))]
    if layout.backend == "openstack":
        lines.append("  OpenStack emulator %s: %s" % (
            layout.cloud_url, _process_line(current, cloud.CLOUD)))
    for node in layout.nodes:
        lines.append("  %s %s: namespace %s, agent %s" % (
            node.name, node.address,
            "present" if netns_exists(node.netns) else "MISSING",
            _process_line(current, agent_key(node))))
    lines.append("  " + trust.operator_hint(layout))
    try:
        operator = trust.operator_credentials(layout)
    except ClusterError as e:
        lines.append("  cannot ask the control service: %s" % (e,))
        return lines
    answer = control_state(layout.control_url, operator)
    if answer is None:
        lines.append("  the control service does not answer")
        return lines
    lines.append("  configuration generation %s" % (answer.get("generation"),))
    for name, node in sorted(answer.get("nodes", {}).items()):
        progress = node.get("progress") or {}
        running = ", ".join(
            "%s %s" % (r["step"]["kind"],
                       r["step"]["application"] or r["step"]["dataset_id"])
            for r in progress.get("running", []))
        lines.append("  %s: %s%s" % (
            name, "converged" if progress.get("converged") else
            "working on %s" % (running or "nothing yet",),
            "; errors: " + "; ".join(e["message"]
                                     for e in progress["errors"])
            if progress.get("errors") else ""))
    for name, app in sorted(answer.get("applications", {}).items()):
        lines.append("  application %s: wanted on %s, running on %s, "
                     "serving on %s, mounted on %s" % (
                         name, app.get("wanted_on") or "no node",
                         ", ".join(app.get("running_on") or []) or "none",
                         ", ".join(app.get("ready_on") or []) or "none",
                         ", ".join(app.get("mounted_on") or []) or "none"))
    return lines

