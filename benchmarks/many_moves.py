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

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.measuring import messages_of  # noqa: E402
from blockmover.cluster.deploying import (  # noqa: E402
    deploy, write_configuration,
)
from blockmover.cluster.down import down  # noqa: E402
from blockmover.cluster.layout import make_layout  # noqa: E402
from blockmover.cluster.leftovers import leftovers  # noqa: E402
from blockmover.cluster.namespaces import unused_subnet  # noqa: E402
from blockmover.cluster.up import up  # noqa: E402


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=20,
                        help="applications moved at once (default "
                        "%(default)s)")
    parser.add_argument("--latency", type=float, default=2.0,
                        help="the emulator's attach and detach latency "
                        "(default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="moves of one application alone, the median "
                        "kept (default %(default)s)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (namespaces, loop devices, mounts)")
        return 2
    name = "n" + uuid.uuid4().hex[:6]
    layout = make_layout(
        name, 2, unused_subnet("10.79"),
        os.path.join(tempfile.gettempdir(), "blockmover-bench-" + name),
        backend="openstack", attach_latency=args.latency,
        detach_latency=args.latency)
    log = tempfile.NamedTemporaryFile(
        mode="w", prefix="blockmover-bench-", suffix=".log", delete=False)

    def echo(line):
        log.write(line + "\n")
        log.flush()
    names = ["app%02d" % (i,) for i in range(args.apps)]
    applications = {app: small_application(
        os.path.join(layout.state_dir, "data", app)) for app in names}
    node1, node2 = layout.nodes[0].name, layout.nodes[1].name
    placement = {app: node1 for app in names}
    with log:
        print("bringing up a 2-node cluster on the emulator (attach and "
              "detach %.1fs), deploying %d applications on %s ..."
              % (args.latency, args.apps, node1), flush=True)
        try:
            up(layout, echo=echo)
            first = timed_deploy(layout, applications, placement, log)
            print("  first deploy of %d: %.2fs" % (args.apps, first),
                  flush=True)
            alone = []
            for _ in range(args.repeat):
                for target in (node2, node1):
                    placement[names[0]] = target
                    alone.append(timed_deploy(layout, applications,
                                              placement, log))
                    print("  one to %s: %.2fs" % (target, alone[-1]),
                          flush=True)
            together = timed_deploy(layout, applications,
                                    {app: node2 for app in names}, log)
            print("  %d at once to %s: %.2fs" % (args.apps, node2, together),
                  flush=True)
        finally:
            down(layout.state_file, echo=echo)
    left = leftovers(layout)
    if left:
        print("LEFT BEHIND: %s" % (left,))
    os.unlink(log.name)
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
