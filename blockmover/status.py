"""
What a cluster is doing, read from its control service's ``GET /v1/state``
(``blockmover status``). Pure: that state's plain data in; ``summarize``
makes the stable shape ``blockmover status --json`` prints, ``lines`` the
tables a person reads.

The shape (``version`` 1; times ``T`` are seconds since the epoch,
durations seconds; keys are only ever added)::

    {"version": 1, "cluster": NAME | null, "control": URL,
     "generation": N,          # the configuration's; 0: none deployed yet
     "now": T,                 # the control service's clock
     "listed_at": T | null,    # its volume listing's age
     "converged": BOOL,        # nothing left to do, nothing stuck
     "nodes": {NODE: {
         "address": ADDRESS | null,
         "condition": "converged" | "converging" | "failing" | "trouble"
                      | "silent" | "unreported",
         "since": T | null,    # converged or not since; silent: last report
         "reported_at": T | null,
         "generation": GEN | null,       # its slice's
         "seen_generation": GEN | null,  # the slice its report is about
         "running": [{"application": APP | null, "dataset_id": ID,
                      "kind": KIND, "since": T, "waiting_for": TEXT | null}],
         "waiting": [{"application": APP | null, "dataset_id": ID,
                      "reason": REASON, "detail": TEXT,
                      "holder": NODE | null}],
         "errors": [{"application": APP | null, "dataset_id": ID,
                     "kind": KIND, "error": TYPE, "message": TEXT,
                     "attempts": N, "retry_at": T | null}],
         "trouble": TEXT | null}},
     "applications": {APP: {
         "dataset_id": ID, "wanted_on": NODE | null,
         "running_on": [NODE], "ready_on": [NODE], "mounted_on": [NODE],
         "attached_to": [NODE],
         "ready": BOOL | null,  # serves where wanted; null: wanted nowhere
         "placed": BOOL,        # runs and serves where wanted, only there
         "since": T | null}},   # placed as it is since
     "moves": [{"application": APP, "dataset_id": ID, "from": [NODE],
                "to": NODE | null, "phase": KIND | "waiting" | "pending",
                "node": NODE | null, "detail": TEXT | null,
                "since": T | null, "seconds": S | null}],
     "stuck": [{"reason": "failing" | "blocked" | "held" | "slow"
                          | "trouble" | "silent",
                "application": APP | null, "dataset_id": ID | null,
                "node": NODE | null, "detail": TEXT, "since": T | null}]}

A node's ``condition``: ``unreported`` before its first report to this
control service, ``silent`` when its last is older than ``SILENT_AFTER``,
``trouble`` when it cannot look at itself or at a dataset, ``failing``
when a change of a dataset failed and waits to be tried again,
``converged`` when it has nothing to do on its latest slice, else
``converging``.

A move is an application that does not yet run and serve where it is
wanted and only there. Its ``phase`` is the change running for it on
``node`` (``stop``, ``unmount``, ``detach``, ``create``, ``attach``,
``mkfs``, ``mount``, ``grow``, ``growfs``, ``start``, ``ready``), or
``waiting`` (``node`` says why it cannot go on), or ``pending`` (no node
works on it); ``since`` is when that phase began, as far as the reports
tell (for ``waiting`` and ``pending``: the application's last change or
its last finished step, whichever came later).

Why something is stuck: ``failing``, a change failed and is tried again
(as the node reports it); ``blocked``, a node waits for a reason that does
not pass by itself (a foreign filesystem, a device never formatted, ...);
``held``, a volume is attached to a node that should not hold it and that
node does nothing about it; ``slow``, a change runs, or a move waits, for
longer than ``stuck_after``; ``trouble``, a node cannot look at itself;
``silent``, a move needs a node that does not report.
"""

from blockmover.convergence import application_placed

JSON_VERSION = 1

# How long a change may run, or a move wait between two changes, before it
# counts as stuck: an attach in a cloud takes tens of seconds at worst.
DEFAULT_STUCK_AFTER = 60.0

# An agent reports at least every 30 seconds, even when nothing changes
# (``agents.loop.HEARTBEAT``): three reports missed and it counts as silent.
SILENT_AFTER = 90.0

# Node conditions.
CONVERGED = "converged"
CONVERGING = "converging"
FAILING = "failing"
TROUBLE = "trouble"
SILENT = "silent"
UNREPORTED = "unreported"

# Why something is stuck (besides FAILING, TROUBLE and SILENT).
BLOCKED = "blocked"
HELD = "held"
SLOW = "slow"

# Phases of a move that are not a change running.
WAITING = "waiting"
PENDING = "pending"

# The reasons a node waits (``agents.plan``'s) that are normal phases of a
# move, passing by themselves: the node that held the volume is releasing
# it (HELD_ELSEWHERE), the next listing will show a volume just attached
# (NOT_LISTED). Any other wait needs a person.
_HELD_ELSEWHERE = "held elsewhere"
PASSING_WAITS = frozenset([_HELD_ELSEWHERE, "not listed yet"])


def _names(state):
    """
    Dataset id -> application name, of the configured applications.
    """
    return {info.get("dataset_id"): app
            for app, info in (state.get("applications") or {}).items()}


def _holders(state):
    """
    Backend id -> node name, from the nodes' reports (a wait names the
    node holding a volume by its backend id).
    """
    holders = {}
    for name, info in (state.get("nodes") or {}).items():
        backend_id = ((info or {}).get("state") or {}).get("backend_id")
        if backend_id:
            holders[backend_id] = name
    return holders


def _application(step, names):
    return step.get("application") or names.get(step.get("dataset_id"))


def _node(name, info, now, names, holders, silent_after):
    info = info or {}
    progress = info.get("progress")
    reported_at = info.get("reported_at")
    slice_generation = info.get("generation")
    node = {
        "address": info.get("address"),
        "reported_at": reported_at,
        "generation": slice_generation,
        "seen_generation": None,
        "running": [], "waiting": [], "errors": [], "trouble": None,
    }
    if progress is None:
        node.update(condition=UNREPORTED, since=None)
        return node
    node["seen_generation"] = progress.get("generation")
    node["running"] = [
        {"application": _application(r["step"], names),
         "dataset_id": r["step"]["dataset_id"], "kind": r["step"]["kind"],
         "since": r["since"], "waiting_for": r.get("waiting_for")}
        for r in progress.get("running", [])]
    node["waiting"] = [
        {"application": w.get("application") or names.get(w["dataset_id"]),
         "dataset_id": w["dataset_id"], "reason": w["reason"],
         "detail": w["detail"],
         "holder": holders.get(w.get("holder"), w.get("holder"))}
        for w in progress.get("waiting", [])]
    node["errors"] = [
        {"application": _application(e["step"], names),
         "dataset_id": e["step"]["dataset_id"], "kind": e["step"]["kind"],
         "error": e["kind"], "message": e["message"],
         "attempts": e.get("attempts", 1), "retry_at": e.get("retry_at")}
        for e in progress.get("errors", [])]
    node["trouble"] = progress.get("trouble")
    since = info.get("transitioned_at")
    behind = (slice_generation is not None
              and node["seen_generation"] is not None
              and node["seen_generation"] < slice_generation)
    if reported_at is not None and now - reported_at > silent_after:
        node.update(condition=SILENT, since=reported_at)
    elif node["trouble"]:
        node.update(condition=TROUBLE, since=since)
    elif node["errors"]:
        node.update(condition=FAILING, since=since)
    elif progress.get("converged") and not behind:
        node.update(condition=CONVERGED, since=since)
    else:
        node.update(condition=CONVERGING, since=since)
    return node


def _applications(state):
    applications = {}
    for app, info in sorted((state.get("applications") or {}).items()):
        wanted_on = info.get("wanted_on")
        applications[app] = {
            "dataset_id": info.get("dataset_id"),
            "wanted_on": wanted_on,
            "running_on": list(info.get("running_on") or []),
            "ready_on": list(info.get("ready_on") or []),
            "mounted_on": list(info.get("mounted_on") or []),
            "attached_to": list(info.get("attached_to") or []),
            "ready": (None if wanted_on is None
                      else wanted_on in (info.get("ready_on") or [])),
            "placed": application_placed(app, wanted_on, state),
            "since": info.get("transitioned_at"),
        }
    return applications


def _of(entries, dataset):
    return [entry for entry in entries if entry["dataset_id"] == dataset]


def _last_activity(app, dataset, state):
    """
    When anything last happened to ``app`` as far as the state tells: its
    last change of placement, or the last step a node finished for it.
    """
    times = [app["since"]] if app["since"] is not None else []
    for info in (state.get("nodes") or {}).values():
        progress = (info or {}).get("progress") or {}
        times += [f["finished_at"] for f in progress.get("finished", [])
                  if f["step"]["dataset_id"] == dataset]
    return max(times) if times else None


def _quiet(name, node, now):
    """
    Why node ``name`` (its summary ``node``) does nothing for a move, if
    it is silent or never reported; else None.
    """
    if node["condition"] == UNREPORTED:
        return ("%s has not reported to the control service; check that "
                "its blockmover-agent runs" % (name,))
    if node["condition"] == SILENT:
        return ("%s has not reported for %s; check that its "
                "blockmover-agent runs" % (name, _ago(node["since"], now)))
    return None


def _move(name, app, nodes, state, now):
    """
    The move of application ``name`` (its summary ``app``): from where,
    to where, in which phase on which node and since when.
    """
    dataset = app["dataset_id"]
    wanted_on = app["wanted_on"]
    sources = sorted((set(app["running_on"]) | set(app["mounted_on"])
                      | set(app["attached_to"])) - {wanted_on})
    move = {"application": name, "dataset_id": dataset, "from": sources,
            "to": wanted_on, "phase": PENDING, "node": None,
            "detail": None, "since": None, "seconds": None}
    # Releasing comes before taking: the source nodes' changes first.
    order = []
    for node in sources + [wanted_on] + sorted(nodes):
        if node in nodes and node not in order:
            order.append(node)
    running = [(node, r) for node in order
               for r in _of(nodes[node]["running"], dataset)]
    waiting = [(node, w) for node in order
               for w in _of(nodes[node]["waiting"], dataset)]
    if running:
        node, change = running[0]
        move.update(phase=change["kind"], node=node,
                    detail=change["waiting_for"], since=change["since"])
    elif waiting:
        node, wait = waiting[0]
        move.update(phase=WAITING, node=node, detail=wait["detail"],
                    since=_last_activity(app, dataset, state))
    else:
        move.update(detail=_why_pending(wanted_on, nodes, now),
                    since=_last_activity(app, dataset, state))
    if move["since"] is not None:
        move["seconds"] = max(0.0, now - move["since"])
    return move


def _why_pending(wanted_on, nodes, now):
    """
    Why no node works on a move to ``wanted_on``, as far as it can be told.
    """
    target = nodes.get(wanted_on)
    if target is not None:
        quiet = _quiet(wanted_on, target, now)
        if quiet is not None:
            return quiet
        if target["generation"] is not None and \
                (target["seen_generation"] or -1) < target["generation"]:
            return "%s has not seen its new slice yet" % (wanted_on,)
    return "no node works on it yet"


def _story(name, node, dataset, now):
    """
    What node ``name`` says of ``dataset``, for a person: its errors,
    trouble, waits, or that it says nothing.
    """
    quiet = _quiet(name, node, now)
    if quiet is not None:
        return quiet
    said = ["%s failed: %s" % (e["kind"], e["message"])
            for e in _of(node["errors"], dataset)]
    said += [w["detail"] for w in _of(node["waiting"], dataset)]
    if node["trouble"]:
        said.append(node["trouble"])
    if not said:
        return "%s reports nothing to do for it" % (name,)
    return "%s says: %s" % (name, "; ".join(said))


def _stuck(nodes, applications, moves, state, now, stuck_after):
    stuck = []

    def add(reason, node, detail, application=None, dataset=None,
            since=None):
        stuck.append({"reason": reason, "application": application,
                      "dataset_id": dataset, "node": node,
                      "detail": detail, "since": since})

    for name, node in sorted(nodes.items()):
        if node["trouble"]:
            add(TROUBLE, name, node["trouble"], since=node["since"])
        for error in node["errors"]:
            retry = ""
            if error["retry_at"] is not None:
                retry = "; next try in %s" % (
                    duration(error["retry_at"] - now),)
            add(FAILING, name, "%s failed %s: %s%s" % (
                error["kind"], _times(error["attempts"]), error["message"],
                retry), error["application"], error["dataset_id"])
        for wait in node["waiting"]:
            if wait["reason"] not in PASSING_WAITS:
                add(BLOCKED, name, wait["detail"], wait["application"],
                    wait["dataset_id"])
    for move in moves:
        app = applications[move["application"]]
        dataset = move["dataset_id"]
        involved = move["from"] + ([move["to"]] if move["to"] else [])
        quiet = [n for n in involved if n in nodes
                 and _quiet(n, nodes[n], now) is not None]
        for node in quiet:
            add(SILENT, node, _quiet(node, nodes[node], now),
                move["application"], dataset, nodes[node]["since"])
        if quiet or move["seconds"] is None or \
                move["seconds"] < stuck_after:
            continue
        holders = [n for n in app["attached_to"] if n != move["to"]]
        if move["phase"] not in (WAITING, PENDING):
            add(SLOW, move["node"], "%s running for %s%s" % (
                move["phase"], duration(move["seconds"]),
                ", waiting for " + move["detail"] if move["detail"] else ""),
                move["application"], dataset, move["since"])
        elif holders:
            for holder in holders:
                add(HELD, holder, "volume attached to %s, which should not "
                    "hold it; %s" % (holder, _story(
                        holder, nodes.get(holder, _silent_node()), dataset,
                        now)),
                    move["application"], dataset, move["since"])
        else:
            add(SLOW, move["node"], "%s for %s: %s" % (
                move["phase"], duration(move["seconds"]), move["detail"]),
                move["application"], dataset, move["since"])
    for volume in state.get("unwanted_attachments") or []:
        holder = volume["attached_to"]
        node = nodes.get(holder, _silent_node())
        if _of(node["running"], volume["dataset_id"]):
            continue
        add(HELD, holder, "volume %s (%s) attached to %s, but no application"
            " of the configuration uses it; %s" % (
                volume.get("name") or volume["volume_id"],
                volume["volume_id"], holder,
                _story(holder, node, volume["dataset_id"], now)),
            None, volume["dataset_id"])
    return stuck


def _silent_node():
    # A holder the configuration does not name: nothing reports for it.
    return {"condition": UNREPORTED, "since": None, "running": [],
            "waiting": [], "errors": [], "trouble": None}


def _times(n):
    return "once" if n == 1 else "%d times" % (n,)


def summarize(state, control, received_at, stuck_after=DEFAULT_STUCK_AFTER,
              silent_after=SILENT_AFTER):
    """
    The status of the cluster whose ``GET /v1/state`` answer is ``state``,
    in the shape the module's docstring shows.

    :param control: the control service's URL, as it may be printed.
    :param received_at: when the answer came, by this machine's clock;
        used only if the service did not say its own time.
    :param stuck_after: seconds a change may run, or a move wait, before
        it counts as stuck.
    """
    now = state.get("now")
    if now is None:
        now = received_at
    names = _names(state)
    holders = _holders(state)
    nodes = {name: _node(name, info, now, names, holders, silent_after)
             for name, info in sorted((state.get("nodes") or {}).items())}
    applications = _applications(state)
    moves = [_move(name, app, nodes, state, now)
             for name, app in sorted(applications.items())
             if not app["placed"]]
    stuck = _stuck(nodes, applications, moves, state, now, stuck_after)
    busy = set()
    for app in applications.values():
        busy.update(app["running_on"], app["mounted_on"], app["attached_to"])
        if app["wanted_on"] is not None:
            busy.add(app["wanted_on"])
    converged = not moves and not stuck and all(
        node["condition"] == CONVERGED or (
            node["condition"] in (UNREPORTED, SILENT) and name not in busy)
        for name, node in nodes.items())
    return {"version": JSON_VERSION, "cluster": state.get("cluster"),
            "control": control, "generation": state.get("generation", 0),
            "now": now, "listed_at": state.get("listed_at"),
            "converged": converged, "nodes": nodes,
            "applications": applications, "moves": moves, "stuck": stuck}


# --- for a person ----------------------------------------------------------

def duration(seconds):
    """
    ``seconds`` as a person reads an age: ``45s``, ``2m30s``, ``3h4m``,
    ``2d3h``.
    """
    seconds = int(max(0, seconds))
    if seconds < 60:
        return "%ds" % (seconds,)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return "%dm%ds" % (minutes, seconds) if seconds else "%dm" % (minutes,)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return "%dh%dm" % (hours, minutes) if minutes else "%dh" % (hours,)
    days, hours = divmod(hours, 24)
    return "%dd%dh" % (days, hours) if hours else "%dd" % (days,)


def _ago(when, now):
    return duration(now - when) if when is not None else "-"


def table(header, rows):
    """
    ``rows`` (lists of strings) under ``header`` in aligned columns, the
    last one as wide as it is.
    """
    rows = [header] + [[cell or "-" for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows)
              for i in range(len(header) - 1)]
    return ["  ".join([cell.ljust(width) for cell, width
                       in zip(row, widths)] + [row[-1]]).rstrip()
            for row in rows]


def _doing(name, node, now):
    """
    What a node does, for its row: its changes running, its waits, its
    failures, or why nothing is known.
    """
    if node["condition"] == UNREPORTED:
        return "no report yet"
    if node["condition"] == SILENT:
        return "no report for %s" % (_ago(node["reported_at"], now),)
    parts = ["%s %s (%s)" % (r["kind"], r["application"] or r["dataset_id"],
                             _ago(r["since"], now))
             for r in node["running"]]
    parts += ["%s waits: %s" % (w["application"] or w["dataset_id"],
                                w["detail"]) for w in node["waiting"]]
    parts += ["%s %s failed: %s" % (e["kind"], e["application"]
                                    or e["dataset_id"], e["message"])
              for e in node["errors"]]
    if node["trouble"]:
        parts.append("trouble: " + node["trouble"])
    if not parts and node["condition"] == CONVERGING:
        if node["generation"] is not None and \
                (node["seen_generation"] or -1) < node["generation"]:
            parts.append("slice %s not seen yet" % (node["generation"],))
        else:
            parts.append("looking")
    return "; ".join(parts)


def _headline(summary):
    where = "cluster %s at %s" % (summary["cluster"] or "?",
                                  summary["control"])
    if not summary["generation"]:
        return ["%s: no configuration deployed yet; deploy one with "
                "blockmover-deploy cluster.yml app.yml" % (where,)]
    if summary["converged"]:
        verdict = "converged"
    else:
        verdict = "converging"
        if summary["stuck"]:
            verdict += ", %d stuck" % (len(summary["stuck"]),)
    listing = ("volume listing %s old" % (
        _ago(summary["listed_at"], summary["now"]),)
        if summary["listed_at"] is not None else "no volume listing yet")
    return ["%s: generation %s, %s (%s)" % (
        where, summary["generation"], verdict, listing)]


def lines(summary):
    """
    The status a person reads: a headline, then tables of the nodes, the
    applications, the moves in progress and what is stuck.
    """
    now = summary["now"]
    out = _headline(summary)
    nodes = summary["nodes"]
    if not summary["generation"] and not nodes:
        return out
    out.append("")
    if nodes:
        out += table(["NODE", "ADDRESS", "CONDITION", "SINCE", "DOING"], [
            [name, node["address"], node["condition"],
             _ago(node["since"], now),
             "" if node["condition"] == CONVERGED
             else _doing(name, node, now)]
            for name, node in sorted(nodes.items())])
    else:
        out.append("no nodes")
    applications = summary["applications"]
    out.append("")
    if applications:
        out += table(["APPLICATION", "WANTED ON", "RUNNING ON", "READY",
                      "SINCE"], [
            [name, app["wanted_on"] or "no node",
             ", ".join(app["running_on"]),
             {True: "yes", False: "no", None: ""}[app["ready"]],
             _ago(app["since"], now)]
            for name, app in sorted(applications.items())])
    else:
        out.append("no applications")
    out.append("")
    if summary["moves"]:
        out += table(["MOVING", "FROM", "TO", "PHASE", "ON", "FOR",
                      "DETAIL"], [
            [move["application"], ", ".join(move["from"]),
             move["to"] or "no node", move["phase"], move["node"],
             _ago(move["since"], now), move["detail"]]
            for move in summary["moves"]])
    else:
        out.append("no moves in progress")
    out.append("")
    if summary["stuck"]:
        out += table(["STUCK", "NODE", "REASON", "SINCE", "DETAIL"], [
            [entry["application"] or entry["dataset_id"] or "", entry["node"],
             entry["reason"], _ago(entry["since"], now), entry["detail"]]
            for entry in summary["stuck"]])
    else:
        out.append("nothing stuck")
    return out
