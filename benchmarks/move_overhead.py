"""
blockmover's own part of a move: MongoDB moved back and forth between two
nodes, on the loopback backend and on the OpenStack emulator with slow
attach and detach, and each move's time split into what the application,
the backend and blockmover itself spent.

For each move: the total, from the control service accepting the
configuration (its log) to MongoDB accepting connections on the target
(a probe inside the target node); the application's own stop time
(SIGTERM to exit, as the agent's runtime saw it); the backend's own detach
and attach (the loopback backend's actions in the agents' logs, or the
emulator's requests to status changes in its log); the application's own
time to serve (its process started, as the agent logged it, to the probe's
first connection). blockmover's own part is the total less those four.
Needs root; leaves nothing behind.

    .venv/bin/python benchmarks/move_overhead.py [--moves 5] [--latency 2]

The last line reads ``overhead_median_s=X``: the worse of the two
backends' median of blockmover's own part.
"""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.measuring import (  # noqa: E402
    PortProbe, action_durations, benchmark_cluster, benchmark_log,
    benchmark_parser, messages_of, needs_root,
)
from blockmover.localcluster.deploying import (  # noqa: E402
    deploy, write_configuration,
)
from blockmover.localcluster.database import (  # noqa: E402
    PORT, application, wait_for_server,
)

DATABASE = "mongodb"
PARTS = ("total", "application stop", "backend detach", "backend attach",
         "application ready", "blockmover")


def _after(messages, since):
    return [m for m in messages if m["timestamp"] >= since]


def backend_times(layout, source, target, since):
    """
    ``(detach, attach)``: the backend's own seconds for the move that
    began at ``since``.
    """
    if layout.backend == "loopback":
        detaches = action_durations(source.agent_log,
                                    "blockmover:loopback:detach_volume",
                                    since)
        attaches = action_durations(target.agent_log,
                                    "blockmover:loopback:attach_volume",
                                    since)
        return (max(s for _, s, _ in detaches),
                max(s for _, s, _ in attaches))
    log = os.path.join(layout.logs_dir, "cloud.log")
    requests = messages_of(log, "blockmover:emulator:request", since)
    statuses = messages_of(log, "blockmover:emulator:volume-status", since)
    detached = next(m["timestamp"] for m in requests
                    if m["method"] == "DELETE"
                    and "os-volume_attachments" in m["path"])
    available = next(m["timestamp"] for m in statuses
                     if m["status"] == "available"
                     and m["timestamp"] >= detached)
    attached = next(m["timestamp"] for m in requests
                    if m["method"] == "POST"
                    and "os-volume_attachments" in m["path"]
                    and m["timestamp"] >= available)
    in_use = next(m["timestamp"] for m in statuses
                  if m["status"] == "in-use" and m["timestamp"] >= attached)
    return available - detached, in_use - attached


def measure_move(layout, applications, source, target, log):
    """
    Move MongoDB from ``source`` to ``target`` (node layouts) and split the
    move's time; returns ``{part: seconds}``.
    """
    probe = PortProbe(target.netns, PORT)
    since = time.time()
    try:
        write_configuration(layout, applications, {DATABASE: target.name})
        deploy(layout, output=log)
        ready_at = probe.accepted_at()
    finally:
        probe.stop()
    [configured] = messages_of(layout.control_log,
                               "blockmover:control:configured", since)
    [stopped] = messages_of(source.agent_log,
                            "blockmover:agent:application-stopped", since)
    starts = [started + seconds for started, seconds, m in action_durations(
        target.agent_log, "blockmover:agent:change", since)
        if m.get("change") == "StartApplication"]
    detach, attach = backend_times(layout, source, target, since)
    parts = {
        "total": ready_at - configured["timestamp"],
        "application stop": stopped["seconds"],
        "backend detach": detach,
        "backend attach": attach,
        "application ready": ready_at - max(starts),
    }
    parts["blockmover"] = parts["total"] - sum(
        parts[p] for p in PARTS[1:-1])
    return parts


def run(backend, args, log):
    """
    Bring up a 2-node cluster on ``backend``, deploy MongoDB on node1, move
    it ``args.moves`` times back and forth; take the cluster down.
    """
    print("%s: bringing up a 2-node cluster, deploying %s ..."
          % (backend, DATABASE), flush=True)
    moves = []
    with benchmark_cluster(2, log, backend=backend,
                           attach_latency=args.latency,
                           detach_latency=args.latency) as layout:
        applications = {DATABASE: application(
            os.path.join(layout.state_dir, "data", DATABASE))}
        nodes = list(layout.nodes)
        write_configuration(layout, applications, {DATABASE: nodes[0].name})
        deploy(layout, output=log)
        wait_for_server(nodes[0].address)
        for number in range(args.moves):
            source, target = nodes[number % 2], nodes[1 - number % 2]
            parts = measure_move(layout, applications, source, target, log)
            print("  move %d %s -> %s: %s" % (
                number + 1, source.name, target.name, ", ".join(
                    "%s %.3fs" % (p, parts[p]) for p in PARTS)), flush=True)
            moves.append(parts)
    return moves


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--moves", type=int, default=5,
                        help="moves back and forth per backend (default "
                        "%(default)s)")
    parser.add_argument("--backends", default="loopback,openstack",
                        help="comma-separated (default %(default)s)")
    args = parser.parse_args(argv)
    refused = needs_root()
    if refused:
        print(refused)
        return 2
    results = {}
    with benchmark_log() as log:
        for backend in args.backends.split(","):
            results[backend] = run(backend, args, log)
    print()
    worst = 0.0
    for backend, moves in results.items():
        print("%s, %d moves of %s (emulator attach and detach %.1fs)"
              % (backend, len(moves), DATABASE, args.latency)
              if backend == "openstack" else
              "%s, %d moves of %s" % (backend, len(moves), DATABASE))
        print("  %-20s %9s %9s %9s" % ("part", "median", "min", "max"))
        for part in PARTS:
            times = [m[part] for m in moves]
            print("  %-20s %8.3fs %8.3fs %8.3fs" % (
                part, statistics.median(times), min(times), max(times)))
        worst = max(worst, statistics.median(m["blockmover"] for m in moves))
    print("overhead_median_s=%.3f" % (worst,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
