"""
How far a deploy has got, read from the control service's ``GET
/v1/state``: one line per application for a person, and whether the
cluster has converged. Pure: plain data in, text and verdicts out.
"""

from blockmover.identity import dataset_id

# Short words for the steps of a move, in the order they happen.
STEP_WORDS = {
    "StopApplication": "stop",
    "UnmountFilesystem": "unmount",
    "DetachVolume": "detach",
    "CreateVolume": "create",
    "AttachVolume": "attach",
    "MakeFilesystem": "mkfs",
    "MountFilesystem": "mount",
    "GrowVolume": "grow",
    "GrowFilesystem": "growfs",
    "StartApplication": "start",
}


def _step(description):
    """
    ``("attach", SUBJECT)`` from a change's description, e.g.
    ``"AttachVolume 0f3c..."``.
    """
    kind, _, subject = description.partition(" ")
    return STEP_WORDS.get(kind, kind), subject.split(":")[0].strip()


def _concerns(text, names):
    return any(name in text for name in names)


def application_line(app, wanted_on, state, cluster_name, now):
    """
    One line saying where ``app`` goes, which step it is in, and how long
    each finished step took, from the nodes' reported progress in ``state``
    (the plain data of ``GET /v1/state``).
    """
    names = (app, dataset_id(cluster_name, app))
    info = state.get("applications", {}).get(app, {})
    running_on = info.get("running_on", [])
    target = wanted_on if wanted_on is not None else "no node"
    parts = []
    for node, node_info in sorted(state.get("nodes", {}).items()):
        progress = (node_info or {}).get("progress")
        if not progress:
            continue
        steps = []
        for finished in progress.get("finished", []):
            word, subject = _step(finished["change"])
            if subject in names:
                steps.append("%s %.1fs" % (word, finished["seconds"]))
        current = progress.get("current")
        if current and _concerns(current, names):
            since = progress.get("since")
            took = " (%.1fs)" % (now - since,) if since else ""
            if current.startswith("waiting"):
                steps.append(current + took)
            else:
                steps.append("%s...%s" % (_step(current)[0], took))
        for error in progress.get("errors", []):
            if _concerns(error.split(": ")[0], names):
                steps.append("error: " + error)
        if steps:
            parts.append("%s: %s" % (node, ", ".join(steps)))
    if application_placed(app, wanted_on, state):
        status = ("running on %s" % (wanted_on,) if wanted_on is not None
                  else "stopped")
    elif running_on:
        status = "running on %s" % (", ".join(running_on),)
    else:
        status = "not running"
    line = "%s -> %s [%s]" % (app, target, status)
    if parts:
        line += "  " + "; ".join(parts)
    return line


def application_placed(app, wanted_on, state):
    """
    Whether ``app`` runs exactly where it should: on ``wanted_on`` alone,
    or nowhere when ``wanted_on`` is None.
    """
    info = state.get("applications", {}).get(app, {})
    running_on = list(info.get("running_on", []))
    return running_on == ([wanted_on] if wanted_on is not None else [])


def pending(deployment, state, slice_generations):
    """
    The reasons the cluster has not converged yet on ``deployment``; empty
    once every application runs where it should and every node holding a
    slice reported itself converged on it.

    :param slice_generations: node -> the generation of its slice when the
        configuration was sent; a node's report must be at least as new.
    """
    reasons = []
    for app in sorted(deployment.applications):
        wanted_on = deployment.placement.get(app)
        if not application_placed(app, wanted_on, state):
            reasons.append("%s does not run where it should yet" % (app,))
    nodes = state.get("nodes", {})
    for node, generation in sorted(slice_generations.items()):
        progress = (nodes.get(node) or {}).get("progress")
        if progress is None:
            if deployment.applications_on(node):
                reasons.append("%s has not reported" % (node,))
            continue
        if progress.get("generation", -1) < generation:
            reasons.append("%s has not seen the new configuration"
                           % (node,))
        elif not progress.get("converged"):
            reasons.append("%s is still converging" % (node,))
    return reasons


class ErrorWatch(object):
    """
    Tells a persistent error from a passing one: an error a node keeps
    reporting for the same change for ``patience`` seconds is persistent.
    """

    def __init__(self, patience):
        self.patience = patience
        self._first_seen = {}

    def persistent(self, state, now):
        """
        The first persistent error in ``state`` as ``"NODE: ERROR"``, or
        None.
        """
        seen = {}
        for node, node_info in sorted(state.get("nodes", {}).items()):
            progress = (node_info or {}).get("progress") or {}
            for error in progress.get("errors", []):
                key = (node, error.split(": ")[0])
                seen[key] = (self._first_seen.get(key, (now, None))[0],
                             error)
        self._first_seen = seen
        for (node, _), (first, error) in sorted(seen.items()):
            if now - first >= self.patience:
                return "%s: %s" % (node, error)
        return None
