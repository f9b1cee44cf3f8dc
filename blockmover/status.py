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
         "trouble": TEXT | null,
         "lease": {"renewed_at": T | null,   # null: not since the
                                              # service started
                   "expires_at": T, "seconds": S} | null,
         "failure": {"state": "live" | "unresponsive" | "fencing"
                              | "fenced" | "confirmed-down" | "returning",
                     "down_since": T | null,  # proven down since
                     "returned_at": T | null,  # heard from after that
                     "fence": {"result": "started" | "fenced" | "failed",
                               "method": "backend" | "command" | "none",
                               "requested_by": WHO, "started_at": T,
                               "finished_at": T | null, "failures": N,
                               "error": TEXT | null,
                               "retry_at": T | null} | null,
                     "earlier_fences": [{...}],  # ended before, oldest
                                                 # first, as "fence"
                     "confirmed_down": {"by": WHO, "at": T} | null,
                     "removed": BOOL} | null,  # no longer configured
         "release": [APP]}},   # what its slice tells it to give up
     "applications": {APP: {
         "dataset_id": ID, "wanted_on": NODE | null,
         "running_on": [NODE], "ready_on": [NODE], "mounted_on": [NODE],
         "attached_to": [NODE],
         "ready": BOOL | null,  # serves where placed; null: placed nowhere
         "placed": BOOL,        # runs and serves where placed, only there
         "since": T | null,     # placed as it is since
         "placed_on": NODE | null,  # where it should run now: wanted_on,
                                    # unless it failed over from there
         "failover": {"from": NODE, "to": NODE, "decided_at": T} | null,
         "failover_blocked": TEXT | null}},  # why it cannot fail over
     "moves": [{"application": APP, "dataset_id": ID, "from": [NODE],
                "to": NODE | null, "phase": KIND | "waiting" | "pending",
                "node": NODE | null, "detail": TEXT | null,
                "since": T | null, "seconds": S | null}],
     "stuck_detaches": [{"volume_id": ID, "dataset_id": ID,
                         "application": APP | null, "server": BACKEND_ID,
                         "node": NODE, "reason": TEXT, "what_to_do": TEXT,
                         "attempts": N, "retry_at": T}],
     "stuck": [{"reason": "failing" | "blocked" | "held" | "slow"
                          | "trouble" | "silent" | "unfenced" | "down"
                          | "refused",
                "application": APP | null, "dataset_id": ID | null,
                "node": NODE | null, "detail": TEXT, "since": T | null}],
     "sites": {SITE: {"backend": NAME, "nodes": [NODE],
                      "volumes": N}},   # one site ("main") unless
                                        # cluster.yml names several
     "pushes": [{"application": APP, "dataset_id": ID, "push_id": ID,
                 "from": {"node": NODE, "site": SITE},
                 "to": {"node": NODE, "site": SITE},
                 "phase": "live" | "final" | "committed" | "failed"
                          | "cancelled",
                 "round": N | null, "bytes_sent": BYTES | null,
                 "bytes_left": BYTES | null,
                 "rate": BYTES_PER_SECOND | null,
                 "estimated_downtime": S | null, "settled": BOOL,
                 "error": TEXT | null, "started_at": T,
                 "ended_at": T | null}],  # under way, or ended less
                                          # than PUSH_SHOWN_FOR ago
     "replicas": {                        # null: a service of one replica
         "error": TEXT | null,            # they could not be read
         "leader": {"name": NAME, "address": URL, "since": T} | null,
         "replicas": [{"name": NAME, "address": URL, "leading": BOOL,
                       "since": T | null}],  # leading since
         "etcd": [{"endpoint": URL, "healthy": BOOL, "leader": BOOL,
                   "error": TEXT | null}]} | null}

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
``silent``, a move needs a node that does not report; ``unfenced``, a
node's lease lapsed and it is not fenced (its fence failed, or there is no
fencing method): nothing moves off it until it is fenced or an operator
confirms it down; ``down``, an application's node is proven down and the
application cannot fail over (no automatic failover, or no candidate can
take it); ``refused``, the cloud refuses to detach a volume from a node
proven down.

A push carries an application's volume to a node of another site, in
rounds while the application runs at the source (``live``), then in a last
round while it runs nowhere (``final``); its round, bytes and rate are
what the source last reported, the downtime what a last round would take
at that rate.

A node's lease is renewed by every long poll and report of its agent; a
node whose lease lapsed is ``unresponsive``, ``fencing`` while a fence
runs, ``fenced`` or ``confirmed-down`` once proven unable to write (only
then are its volumes detached and its applications failed over), and
``returning`` when its agent is heard from again, until it holds nothing
it should not.
"""

from blockmover.convergence import application_placed, stuck_detach_line

JSON_VERSION = 1

# How long a change may run, or a move wait between two changes, before it
# counts as stuck: an attach in a cloud takes tens of seconds at worst.
DEFAULT_STUCK_AFTER = 60.0

# An agent reports at least every 30 seconds, even when nothing changes
# (``agents.loop.HEARTBEAT``): three reports missed and it counts as silent.
SILENT_AFTER = 90.0

# How long a push that ended stays in the status: long enough to read
# what became of it after a deploy.
PUSH_SHOWN_FOR = 3600.0

# Push phases (``blockmover.control.push_rules``).
PUSH_LIVE = "live"
PUSH_FINAL = "final"
PUSH_COMMITTED = "committed"
PUSH_FAILED = "failed"

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
UNFENCED = "unfenced"
DOWN = "down"
REFUSED = "refused"

# Node failure states (``blockmover.control.failures``).
UNRESPONSIVE = "unresponsive"
FENCING = "fencing"

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
        "lease": info.get("lease"), "failure": info.get("failure"),
        "release": list(info.get("release") or []),
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
        # A control service before failovers says nothing of placed_on.
        placed_on = info["placed_on"] if "placed_on" in info else wanted_on
        applications[app] = {
            "dataset_id": info.get("dataset_id"),
            "wanted_on": wanted_on,
            "running_on": list(info.get("running_on") or []),
            "ready_on": list(info.get("ready_on") or []),
            "mounted_on": list(info.get("mounted_on") or []),
            "attached_to": list(info.get("attached_to") or []),
            "ready": (None if placed_on is None
                      else placed_on in (info.get("ready_on") or [])),
            "placed": application_placed(app, placed_on, state),
            "since": info.get("transitioned_at"),
            "placed_on": placed_on,
            "failover": info.get("failover"),
            "failover_blocked": info.get("failover_blocked"),
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
    wanted_on = app["placed_on"]
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
    for name, node in sorted(nodes.items()):
        failure = node["failure"] or {}
        if failure.get("state") in (UNRESPONSIVE, FENCING):
            add(UNFENCED, name, _unfenced(name, node, now),
                since=(node["lease"] or {}).get("expires_at"))
    for name, app in sorted(applications.items()):
        if app["failover_blocked"] and not app["placed"]:
            add(DOWN, app["placed_on"], app["failover_blocked"], name,
                app["dataset_id"])
    for stuck_detach in state.get("stuck_detaches") or []:
        add(REFUSED, stuck_detach["node"],
            stuck_detach_line(stuck_detach), stuck_detach["application"],
            stuck_detach["dataset_id"])
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


def _unfenced(name, node, now):
    """
    Why nothing moves off node ``name`` whose lease lapsed, and what the
    operator can do.
    """
    failure = node["failure"]
    fence = failure.get("fence")
    lapsed = (node["lease"] or {}).get("expires_at")
    said = "%s's lease lapsed %s ago" % (name, _ago(lapsed, now))
    if failure["state"] == FENCING:
        said += "; fencing it now"
    elif fence is not None and fence["result"] == "failed":
        said += "; its fence failed %s: %s" % (_times(fence["failures"]),
                                               fence["error"])
        if fence.get("retry_at") is not None:
            said += " (next try in %s)" % (duration(fence["retry_at"] - now),)
    else:
        said += "; it is not fenced"
    return (said + ". Nothing moves off it until it is fenced or confirmed "
            "down: once you know it is off, run blockmover node "
            "confirm-down %s" % (name,))


def _silent_node():
    # A holder the configuration does not name: nothing reports for it.
    return {"condition": UNREPORTED, "since": None, "running": [],
            "waiting": [], "errors": [], "trouble": None}


def _times(n):
    return "once" if n == 1 else "%d times" % (n,)


def push_summary(application, push):
    """
    ``application``'s push (an entry of ``GET /v1/state``'s ``pushes``) in
    the shape of the status's ``pushes``: its round, bytes and rate as its
    source reported them (its target's before the source said anything).
    """
    progress = (push.get("source_progress") or push.get("target_progress")
                or {})
    return {"application": application, "dataset_id": push["dataset_id"],
            "push_id": push["push_id"],
            "from": {"node": push["source_node"],
                     "site": push["source_site"]},
            "to": {"node": push["target_node"], "site": push["target_site"]},
            "phase": push["phase"], "round": progress.get("round"),
            "bytes_sent": progress.get("bytes_sent"),
            "bytes_left": progress.get("bytes_left"),
            "rate": progress.get("rate"),
            "estimated_downtime": progress.get("estimated_downtime"),
            "settled": bool(progress.get("settled")),
            "error": push.get("error") or progress.get("error"),
            "started_at": push["started_at"],
            "ended_at": push.get("ended_at")}


def _pushes(state, now):
    """
    The pushes under way, and those that ended less than
    ``PUSH_SHOWN_FOR`` ago, by application.
    """
    return [push_summary(app, push)
            for app, push in sorted((state.get("pushes") or {}).items())
            if push.get("ended_at") is None
            or now - push["ended_at"] <= PUSH_SHOWN_FOR]


def summarize(state, control, received_at, stuck_after=DEFAULT_STUCK_AFTER,
              silent_after=SILENT_AFTER, replicas=None):
    """
    The status of the cluster whose ``GET /v1/state`` answer is ``state``,
    in the shape the module's docstring shows.

    :param control: the control service's URL, as it may be printed.
    :param received_at: when the answer came, by this machine's clock;
        used only if the service did not say its own time.
    :param stuck_after: seconds a change may run, or a move wait, before
        it counts as stuck.
    :param replicas: ``GET /v1/replicas``'s answer, for a control service
        of several replicas on etcd (or ``{"error": TEXT}`` when it could
        not be read); None for a service of one.
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
        if app["placed_on"] is not None:
            busy.add(app["placed_on"])
    converged = not moves and not stuck and all(
        node["condition"] == CONVERGED or (
            node["condition"] in (UNREPORTED, SILENT) and name not in busy)
        for name, node in nodes.items())
    return {"version": JSON_VERSION, "cluster": state.get("cluster"),
            "control": control, "generation": state.get("generation", 0),
            "now": now, "listed_at": state.get("listed_at"),
            "converged": converged, "nodes": nodes,
            "applications": applications, "moves": moves, "stuck": stuck,
            "stuck_detaches": list(state.get("stuck_detaches") or []),
            "sites": dict(state.get("sites") or {}),
            "pushes": _pushes(state, now),
            "replicas": _replicas(replicas)}


def _replicas(answer):
    """
    The replicas and etcd's members, from ``GET /v1/replicas``'s answer.
    """
    if answer is None:
        return None
    if "error" in answer:
        return {"error": answer["error"], "replicas": [], "etcd": [],
                "leader": None}
    return {"error": None, "leader": answer.get("leader"),
            "replicas": [
                {"name": r.get("name"), "address": r.get("address"),
                 "leading": bool(r.get("leading")), "since": r.get("since")}
                for r in answer.get("replicas") or ()],
            "etcd": [{"endpoint": m.get("endpoint"),
                      "healthy": bool(m.get("healthy")),
                      "leader": bool(m.get("leader")),
                      "error": m.get("error")}
                     for m in answer.get("etcd") or ()]}


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


def size_text(size):
    """
    ``size`` bytes as a person reads them: ``512 B``, ``88 MiB``, ``1.2
    GiB`` (one decimal below ten of a unit).
    """
    size = max(0, size)
    for unit, name in ((1024 ** 4, "TiB"), (1024 ** 3, "GiB"),
                       (1024 ** 2, "MiB"), (1024, "KiB")):
        if size >= unit:
            value = size / unit
            if value < 10:
                return "%.1f %s" % (value, name)
            return "%d %s" % (round(value), name)
    return "%d B" % (size,)


def seconds_text(seconds):
    """
    A short duration as a person reads it: ``0.4s``, ``1.2s``, else as
    ``duration`` says.
    """
    if seconds < 10:
        return "%.1fs" % (max(0.0, seconds),)
    return duration(seconds)


def push_text(push):
    """
    How far ``push`` (a status ``pushes`` entry) is, in a few words: ``push
    round 2: 412 MiB sent, 88 MiB left, 310 MiB/s, downtime ~1.2s``, ``push
    failed: ERROR``.
    """
    phase = push["phase"]
    if phase == PUSH_FAILED:
        return "push failed: %s" % (push["error"] or "no reason given",)
    if phase == PUSH_COMMITTED:
        return "pushed to %s (%s)" % (push["to"]["node"],
                                      push["to"]["site"])
    if phase != PUSH_LIVE and phase != PUSH_FINAL:
        return "push %s%s" % (phase, ": " + push["error"]
                              if push["error"] else "")
    if not push["round"]:
        return "push starting: %s makes the volume to push into" % (
            push["to"]["node"],)
    said = "push %s %d" % ("final round" if phase == PUSH_FINAL
                           else "round", push["round"])
    parts = ["%s sent" % (size_text(push["bytes_sent"] or 0),),
             "%s left" % (size_text(push["bytes_left"] or 0),)]
    if push["rate"]:
        parts.append("%s/s" % (size_text(push["rate"]),))
    if phase == PUSH_LIVE and push["estimated_downtime"] is not None:
        parts.append("downtime ~%s" % (
            seconds_text(push["estimated_downtime"]),))
    return "%s: %s" % (said, ", ".join(parts))


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


def _lease(lease, now):
    """
    A node's lease for its row: when it lapses, or how long ago it did.
    """
    if not lease:
        return ""
    renewed = ("renewed %s ago" % (_ago(lease["renewed_at"], now),)
               if lease["renewed_at"] is not None
               else "not renewed since the service started")
    if lease["expires_at"] > now:
        return "%s, %s left" % (renewed, duration(lease["expires_at"] - now))
    return "%s, lapsed %s ago" % (renewed, _ago(lease["expires_at"], now))


def _fence(failure, now):
    """
    A node's fence and confirmation, for its row.
    """
    said = []
    fence = failure.get("fence")
    if fence is not None:
        when = fence["finished_at"] or fence["started_at"]
        said.append("%s by %s (%s, asked by %s, %s ago)%s" % (
            fence["result"], fence["method"],
            "%d failed" % (fence["failures"],) if fence["failures"]
            else "first try", fence["requested_by"], _ago(when, now),
            ": " + fence["error"] if fence["result"] == "failed"
            and fence["error"] else ""))
    confirmed = failure.get("confirmed_down")
    if confirmed is not None:
        said.append("confirmed down by %s %s ago"
                    % (confirmed["by"], _ago(confirmed["at"], now)))
    if failure.get("removed"):
        said.append("removed from the configuration")
    return "; ".join(said)


def _placed(app):
    """
    Where an application is placed, and why when it is not where it was
    asked to run.
    """
    if app["placed_on"] is None:
        return "no node"
    if app["failover"] is not None and app["placed_on"] != app["wanted_on"]:
        return "%s (failed over from %s)" % (app["placed_on"],
                                            app["failover"]["from"])
    return app["placed_on"]


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


def _push_row(push):
    """
    A push's row of the PUSHING table.
    """
    under_way = push["phase"] in (PUSH_LIVE, PUSH_FINAL)
    started = under_way and push["round"]

    def size(value):
        return size_text(value) if started and value is not None else ""
    return [push["application"],
            "%s (%s)" % (push["from"]["node"], push["from"]["site"]),
            "%s (%s)" % (push["to"]["node"], push["to"]["site"]),
            push["phase"], str(push["round"]) if started else "",
            size(push["bytes_sent"]), size(push["bytes_left"]),
            size_text(push["rate"]) + "/s" if started and push["rate"]
            else "",
            "~" + seconds_text(push["estimated_downtime"])
            if started and push["phase"] == PUSH_LIVE
            and push["estimated_downtime"] is not None else "",
            push["error"] or ""]


def _replica_lines(replicas, now):
    """
    The REPLICA and ETCD tables of a control service of several replicas.
    """
    if replicas["error"] is not None:
        return ["replicas: cannot be read (%s)" % (replicas["error"],)]
    out = table(["REPLICA", "ADDRESS", "ROLE", "SINCE"], [
        [r["name"], r["address"], "leader" if r["leading"] else "follower",
         _ago(r["since"], now) if r["leading"] and r["since"] else ""]
        for r in replicas["replicas"]])
    if replicas["leader"] is None:
        out.append("no replica leads now: configurations, fences and "
                   "failovers wait for one")
    out.append("")
    out += table(["ETCD", "HEALTH", "LEADER"], [
        [m["endpoint"], "healthy" if m["healthy"] else
         "unhealthy: %s" % (m["error"],), "yes" if m["leader"] else ""]
        for m in replicas["etcd"]])
    return out


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
    replicas = summary.get("replicas")
    if replicas is not None:
        out.append("")
        out += _replica_lines(replicas, now)
    nodes = summary["nodes"]
    if not summary["generation"] and not nodes:
        return out
    sites = summary.get("sites") or {}
    if len(sites) > 1:
        out.append("")
        out += table(["SITE", "BACKEND", "NODES", "VOLUMES"], [
            [name, site["backend"], ", ".join(site["nodes"]),
             str(site["volumes"])]
            for name, site in sorted(sites.items())])
    out.append("")
    if nodes:
        out += table(["NODE", "ADDRESS", "CONDITION", "SINCE", "DOING"], [
            [name, node["address"], node["condition"],
             _ago(node["since"], now),
             "" if node["condition"] == CONVERGED
             else _doing(name, node, now)]
            for name, node in sorted(nodes.items())])
        leased = [(name, node) for name, node in sorted(nodes.items())
                  if node["failure"] is not None]
        if leased:
            out.append("")
            out += table(["NODE", "STATE", "LEASE", "FENCE"], [
                [name, node["failure"]["state"], _lease(node["lease"], now),
                 _fence(node["failure"], now)]
                for name, node in leased])
    else:
        out.append("no nodes")
    applications = summary["applications"]
    out.append("")
    if applications:
        out += table(["APPLICATION", "WANTED ON", "RUNNING ON", "READY",
                      "SINCE", "PLACED ON"], [
            [name, app["wanted_on"] or "no node",
             ", ".join(app["running_on"]),
             {True: "yes", False: "no", None: ""}[app["ready"]],
             _ago(app["since"], now), _placed(app)]
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
    pushes = summary.get("pushes") or []
    if pushes or len(sites) > 1:
        out.append("")
    if pushes:
        out += table(["PUSHING", "FROM", "TO", "PHASE", "ROUND", "SENT",
                      "LEFT", "RATE", "DOWNTIME", "ERROR"], [
            _push_row(push) for push in pushes])
    elif len(sites) > 1:
        out.append("no pushes")
    out.append("")
    if summary["stuck"]:
        out += table(["STUCK", "NODE", "REASON", "SINCE", "DETAIL"], [
            [entry["application"] or entry["dataset_id"] or "", entry["node"],
             entry["reason"], _ago(entry["since"], now), entry["detail"]]
            for entry in summary["stuck"]])
    else:
        out.append("nothing stuck")
    return out
