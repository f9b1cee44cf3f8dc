"""
Many moves at once against one: applications with volumes moved between
two nodes on the OpenStack emulator with slow attach and detach, first one
alone, then twenty at once, timed the same way side by side in one run.

Brings up a 2-node local cluster on the openstack backend, deploys
``--apps`` small applications (a process keeping a file open on its
volume) on node1, then moves one of them to node2 and back (``--repeat``
times, the median kept) and all of them to node2 at once. Each time is
from the control service accepting the configuration (its log) to
``blockmover-deploy --wait`` seeing every application serve where it
should. Needs root; leaves nothing behind.

    .venv/bin/python benchmarks/many_moves.py [--apps 20] [--latency 2]

The last line reads ``many_moves_ratio=X``: the time for all divided by
the time for one.
"""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.measuring import (  # noqa: E402
    benchmark_cluster, benchmark_log, benchmark_parser, messages_of,
    needs_root,
)
from blockmover.localcluster.deploying import (  # noqa: E402
    deploy, write_configuration,
)


def small_application(mountpoint):
    """
    ``app.yml``'s entry for a process that keeps a file open on its
    volume (so its volume is busy until it stops) and does nothing else.
    """
    return {
        "command": ["sh", "-c", "exec sleep 86400 < /dev/null 3> data"],
        "ports": [], "environment": {},
        "volume": {"mountpoint": mountpoint, "maximum_size": "1G"},
    }


def timed_deploy(layout, applications, placement, log):
    """
    Deploy ``placement`` and wait; seconds from the configuration accepted
    to every application serving where it should.
    """
    since = time.time()
    write_configuration(layout, applications, placement)
    deploy(layout, output=log)
    done = time.time()
    [configured] = messages_of(layout.control_log,
                               "blockmover:control:configured", since)
    return done - configured["timestamp"]


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--apps", type=int, default=20,
                        help="applications moved at once (default "
                        "%(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="moves of one application alone, there and "
                        "back, the median kept (default %(default)s)")
    args = parser.parse_args(argv)
    refused = needs_root()
    if refused:
        print(refused)
        return 2
    names = ["app%02d" % (i,) for i in range(args.apps)]
    print("bringing up a 2-node cluster on the emulator (attach and detach "
          "%.1fs), deploying %d applications on node1 ..."
          % (args.latency, args.apps), flush=True)
    with benchmark_log() as log, benchmark_cluster(
            2, log, backend="openstack", attach_latency=args.latency,
            detach_latency=args.latency,
            volume_quota=max(10, args.apps)) as layout:
        applications = {app: small_application(
            os.path.join(layout.state_dir, "data", app)) for app in names}
        node1, node2 = layout.nodes[0].name, layout.nodes[1].name
        placement = {app: node1 for app in names}
        first = timed_deploy(layout, applications, placement, log)
        print("  first deploy of %d: %.2fs" % (args.apps, first), flush=True)
        alone = []
        for _ in range(args.repeat):
            for target in (node2, node1):
                placement[names[0]] = target
                alone.append(timed_deploy(layout, applications, placement,
                                          log))
                print("  one to %s: %.2fs" % (target, alone[-1]),
                      flush=True)
        together = timed_deploy(layout, applications,
                                {app: node2 for app in names}, log)
        print("  %d at once to %s: %.2fs" % (args.apps, node2, together),
              flush=True)
    one = statistics.median(alone)
    print()
    print("moves on the emulator, attach and detach %.1fs" % (args.latency,))
    print("  %-34s %8s %8s %8s" % ("", "median", "min", "max"))
    print("  %-34s %7.2fs %7.2fs %7.2fs" % ("one application alone", one,
                                            min(alone), max(alone)))
    print("  %-34s %7.2fs" % ("%d applications at once" % (args.apps,),
                              together))
    print("many_moves_ratio=%.2f" % (together / one,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
