"""
Calls a converged cluster makes to its cloud, at 2 nodes and at 4, side by
side, and a move's time against the cloud's attach and detach latency.

Brings up a local cluster on the openstack backend (the OpenStack emulator
on this machine) with 2 nodes, then with 4, deploys one idle process per
node and MongoDB with a volume, and counts the emulator's requests over a
window while nothing changes. On the 2-node cluster it then moves MongoDB
back and forth between node1 and node2 and prints each step's median time
over the moves. Needs root; leaves nothing behind.

    .venv/bin/python benchmarks/listing_calls.py [--window 60] [--moves 5]
"""

import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.measuring import (  # noqa: E402
    benchmark_cluster, benchmark_log, benchmark_parser, needs_root,
)
from blockmover.localcluster.cloudcalls import (  # noqa: E402
    DATABASE, count_calls, deploy_workload,
)
from blockmover.localcluster.deploying import (  # noqa: E402
    ChangeTimes, deploy, write_configuration,
)
from blockmover.localcluster.database import wait_for_server  # noqa: E402


def run_cluster(nodes, args, log, move):
    """
    Bring up ``nodes`` nodes, count a window's calls, optionally time
    ``args.moves`` moves of MongoDB back and forth; take the cluster down.
    :return: (CallCounts, [(changes, total) of each move]).
    """
    moved = []
    print("%d nodes: bringing up, deploying, counting for %.0fs ..."
          % (nodes, args.window), flush=True)
    with benchmark_cluster(nodes, log, backend="openstack",
                           attach_latency=args.latency,
                           detach_latency=args.latency,
                           refresh_interval=args.refresh) as layout:
        applications, placement = deploy_workload(layout, output=log)
        counts = count_calls(layout, args.window)
        for number in range(args.moves if move else 0):
            target = layout.nodes[1 - number % 2]
            placement[DATABASE] = target.name
            write_configuration(layout, applications, placement)
            with ChangeTimes(layout) as times:
                total = deploy(layout, output=log)
            wait_for_server(target.address)
            moved.append((times.changes, total))
    return counts, moved


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds to count calls (default %(default)s)")
    parser.add_argument("--refresh", type=float, default=10.0,
                        help="the control service's refresh interval "
                        "(default %(default)s)")
    parser.add_argument("--moves", type=int, default=5,
                        help="moves of MongoDB to time, back and forth "
                        "(default %(default)s)")
    args = parser.parse_args(argv)
    refused = needs_root()
    if refused:
        print(refused)
        return 2
    with benchmark_log() as log:
        two, moved = run_cluster(2, args, log, move=True)
        four, _ = run_cluster(4, args, log, move=False)

    print()
    print("converged cluster, window %.0fs, control refresh every %.0fs"
          % (args.window, args.refresh))
    print("  %-34s %10s %10s %8s" % ("per minute", "2 nodes", "4 nodes",
                                     "4 / 2"))
    for label, attribute in (("volume list calls", "list_calls"),
                             ("Cinder + Nova calls", "cloud_calls")):
        a = two.per_minute(getattr(two, attribute))
        b = four.per_minute(getattr(four, attribute))
        print("  %-34s %10.1f %10.1f %8s" % (
            label, a, b, "%.2f" % (b / a,) if a else "-"))
    for counts, nodes in ((two, 2), (four, 4)):
        print("  endpoints at %d nodes: %s" % (nodes, ", ".join(
            "%s=%d" % item for item in sorted(counts.counters.items()))))
    print()
    print("%d moves of %s between node1 and node2, emulator attach %.1fs, "
          "detach %.1fs" % (len(moved), DATABASE, args.latency,
                            args.latency))
    print("  %-40s %8s %8s %8s" % ("step", "median", "min", "max"))
    steps = {}
    for changes, total in moved:
        for _node, change, seconds in changes:
            steps.setdefault(change.split()[0], []).append(seconds)
        steps.setdefault("total (deploy to converged)", []).append(total)
    for step, times in steps.items():
        print("  %-40s %7.2fs %7.2fs %7.2fs" % (
            step, statistics.median(times), min(times), max(times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
