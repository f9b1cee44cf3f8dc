"""
How far a deploy has got, read from the control service's ``GET
/v1/state``: one line per application for a person, and whether the
cluster has converged. Pure: plain data in (the nodes' structured
progress, see ``model.Progress``), text and verdicts out.
"""

from blockmover.identity import dataset_id

# The node failure states (``GET /v1/state``'s ``failure.state``) of a
# node proven unable to write: fenced, or confirmed down by an operator.
PROVEN_DOWN = ("fenced", "confirmed-down")

def _of(dataset, step):
    return step.get("dataset_id") == dataset


def _dataset_steps(dataset, progress, now):
    """
    What one node's ``progress`` says of ``dataset``: each finished change
    and its time, the change running now, why it waits, its error.
    """
    steps = []
    for finished in progress.get("finished", []):
        if _of(dataset, finished["step"]):
            steps.append("%s %.1fs" % (finished["step"]["kind"],
                                       finished["seconds"]))
    for running in progress.get("running", []):
        if _of(dataset, running["step"]):
            steps.append("%s... (%.1fs)" % (running["step"]["kind"],
                                            now - running["since"]))
    for waiting in progress.get("waiting", []):
        if waiting.get("dataset_id") == dataset:
            steps.append("waiting: " + waiting["detail"])
    for error in progress.get("errors", []):
        if _of(dataset, error["step"]):
            steps.append("error: " + error["message"])
    return steps


def placed_on(app, wanted_on, state):
    """
    Where ``app`` should run now: where the control service placed it
    (``wanted_on``, the configuration's node, unless it failed over from
    there), as ``state`` (``GET /v1/state``) says.
    """
    info = state.get("applications", {}).get(app, {})
    return info["placed_on"] if "placed_on" in info else wanted_on


def application_line(app, wanted_on, state, cluster_name, now):
    """
    One line saying where ``app`` goes, whether it serves there, which
    step it is in, and how long each finished step took, from the nodes'
    reported progress in ``state`` (the plain data of ``GET /v1/state``).
    ``now`` is the time in seconds since the epoch.
    """
    dataset = dataset_id(cluster_name, app)
    info = state.get("applications", {}).get(app, {})
    running_on = info.get("running_on", [])
    asked, wanted_on = wanted_on, placed_on(app, wanted_on, state)
    target = wanted_on if wanted_on is not None else "no node"
    if wanted_on != asked:
        target += " (failed over from %s)" % (asked,)
    parts = []
    for node, node_info in sorted(state.get("nodes", {}).items()):
        progress = (node_info or {}).get("progress")
        if not progress:
            continue
        steps = _dataset_steps(dataset, progress, now)
        if steps:
            parts.append("%s: %s" % (node, ", ".join(steps)))
    if application_placed(app, wanted_on, state):
        status = ("running on %s" % (wanted_on,) if wanted_on is not None
                  else "stopped")
    elif running_on == [wanted_on]:
        status = "starting on %s, not ready yet" % (wanted_on,)
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
    Whether ``app`` runs exactly where it should and serves there: on
    ``wanted_on`` alone, ready, or nowhere when ``wanted_on`` is None.
    """
    info = state.get("applications", {}).get(app, {})
    running_on = list(info.get("running_on", []))
    if wanted_on is None:
        return running_on == []
    return running_on == [wanted_on] and wanted_on in info.get("ready_on", [])


def pending(deployment, state, slice_generations):
    """
    The reasons the cluster has not converged yet on ``deployment``; empty
    once every application serves where it should and every node holding a
    slice reported itself converged on it.

    :param slice_generations: node -> the generation of its slice when the
        configuration was sent; a node's report must be at least as new.
    """
    reasons = []
    for app in sorted(deployment.applications):
        wanted_on = placed_on(app, deployment.placement.get(app), state)
        if not application_placed(app, wanted_on, state):
            reasons.append("%s does not run and serve where it should yet"
                           % (app,))
    reasons += [stuck_detach_line(stuck)
                for stuck in state.get("stuck_detaches") or []]
    nodes = state.get("nodes", {})
    for node, generation in sorted(slice_generations.items()):
        failure = (nodes.get(node) or {}).get("failure") or {}
        if failure.get("state") in PROVEN_DOWN:
            # Off: it sees nothing until it comes back, and then it
            # releases what it held.
            continue
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


def stuck_detach_line(stuck):
    """
    A sentence for a person about a volume the cloud refused to detach
    from a node proven down (an entry of ``GET /v1/state``'s
    ``stuck_detaches``): which volume, on which server, why, and what to
    do.
    """
    return ("volume %s%s is stuck on server %s (node %s, proven down): the "
            "cloud refused to detach it %s (%s); %s" % (
                stuck["volume_id"],
                " of %s" % (stuck["application"],)
                if stuck.get("application") else "",
                stuck["server"], stuck["node"],
                "once" if stuck["attempts"] == 1
                else "%d times" % (stuck["attempts"],),
                stuck["reason"], stuck["what_to_do"]))


class ErrorWatch(object):
    """
    Tells a persistent error from a passing one: an error a node keeps
    reporting for the same change of the same dataset (or trouble of the
    node itself) for ``patience`` seconds is persistent.
    """

    def __init__(self, patience):
        self.patience = patience
        self._first_seen = {}

    def persistent(self, state, now):
        """
        The first persistent error in ``state`` as ``"NODE: MESSAGE"``, or
        None.
        """
        seen = {}
        for node, node_info in sorted(state.get("nodes", {}).items()):
            progress = (node_info or {}).get("progress") or {}
            found = [((step["dataset_id"], step["kind"]), error["message"])
                     for error in progress.get("errors", [])
                     for step in [error["step"]]]
            if progress.get("trouble"):
                # The node itself is in trouble (cannot look at itself,
                # refuses its slice): as persistent as any error.
                found.append((("", "trouble"), progress["trouble"]))
            for stuck in state.get("stuck_detaches") or []:
                if stuck.get("node") == node:
                    found.append(((stuck["volume_id"], "force-detach"),
                                  stuck_detach_line(stuck)))
            for (dataset, kind), message in found:
                key = (node, dataset, kind)
                seen[key] = (self._first_seen.get(key, (now, None))[0],
                             message)
        self._first_seen = seen
        for (node, _, _), (first, message) in sorted(seen.items()):
            if now - first >= self.patience:
                return "%s: %s" % (node, message)
        return None
