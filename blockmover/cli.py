"""
``blockmover``: run a local cluster of namespace nodes on this machine,
show it, and demonstrate a move of MongoDB between its nodes.
"""

import argparse
import os
import sys

from blockmover.command import CommandFailed
from blockmover.localcluster import ClusterError
from blockmover.localcluster.layout import (
    BACKENDS, DEFAULT_LATENCY, DEFAULT_NAME, DEFAULT_SUBNET,
    default_state_dir, make_layout,
)
from blockmover.poll import Timeout

DESCRIPTION = """\
Run a local blockmover cluster on this machine (as root). Each node is a
network namespace on a Linux bridge with its own persistent mount
namespace; the control service runs on the host, one agent per node runs
inside its node, and all share one loopback backend (volumes are sparse
files attached as loop devices) or, with --backend openstack, an OpenStack
emulator on the host (blockmover-cloud, with slow attach and detach).
"""

EPILOG = """\
examples:
  blockmover cluster up --nodes 2     # node1 at 10.77.0.11, node2 at .12
  blockmover status
  blockmover-deploy --control http://10.77.0.1:4523 --wait \\
      /var/lib/blockmover/cluster/demo/cluster.yml app.yml
  blockmover cluster down
  blockmover demo                     # up, move MongoDB node1 -> node2, down
  blockmover cluster up --backend openstack --attach-latency 5
"""


def _state_dir(args):
    return os.path.abspath(args.state_dir or default_state_dir(args.name))


def _common(parser):
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="the cluster's name (default %(default)s)")
    parser.add_argument("--state-dir", default=None,
                        help="where the cluster keeps its state, logs and "
                        "volumes (default /var/lib/blockmover/cluster/NAME)")


def _backend(parser):
    parser.add_argument("--backend", default="loopback", choices=BACKENDS,
                        help="the block-storage backend: loopback, or "
                        "openstack on an OpenStack emulator run on this "
                        "machine (default %(default)s)")
    for step in ("attach", "detach"):
        parser.add_argument("--%s-latency" % (step,), type=float,
                            default=DEFAULT_LATENCY, metavar="SECONDS",
                            help="openstack: how long the emulator takes "
                            "to %s a volume (default %%(default)s)"
                            % (step,))


# Each command imports late what it runs: `status` needs none of the code
# that makes a cluster, and no command but `demo` needs the demo's.


def _up(args):
    from blockmover.localcluster.up import up
    up(make_layout(args.name, args.nodes, args.subnet, _state_dir(args),
                   args.port, backend=args.backend,
                   attach_latency=args.attach_latency,
                   detach_latency=args.detach_latency))
    return 0


def _down(args):
    from blockmover.localcluster.down import down
    down(os.path.join(_state_dir(args), "cluster.json"))
    return 0


def _status(args):
    from blockmover.localcluster.status import status_lines
    for line in status_lines(os.path.join(_state_dir(args),
                                          "cluster.json")):
        print(line)
    return 0


def _demo(args):
    from blockmover.localcluster.demo import demo
    return demo(documents=args.documents, keep=args.keep,
                backend=args.backend, attach_latency=args.attach_latency,
                detach_latency=args.detach_latency)


def parser():
    top = argparse.ArgumentParser(
        prog="blockmover", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    cluster = commands.add_parser(
        "cluster", help="bring a local cluster up or down",
        description="Bring a local cluster of namespace nodes up or down.")
    actions = cluster.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    up = actions.add_parser(
        "up", help="make the cluster (safe to run again: it makes what "
        "is missing and restarts services that died)")
    _common(up)
    up.add_argument("--nodes", type=int, default=2,
                    help="how many nodes (default %(default)s)")
    up.add_argument("--subnet", default=DEFAULT_SUBNET,
                    help="first three octets of the cluster's /24: the "
                    "host is .1, node k is .(10+k) (default %(default)s)")
    up.add_argument("--port", type=int, default=4523,
                    help="the control service's port (default "
                    "%(default)s)")
    _backend(up)
    up.set_defaults(run=_up)
    down = actions.add_parser(
        "down", help="remove everything the cluster made: processes, "
        "applications, mounts, loop devices, namespaces, bridge, state")
    _common(down)
    down.set_defaults(run=_down)

    status = commands.add_parser(
        "status", help="show the nodes, services and applications")
    _common(status)
    status.set_defaults(run=_status)

    demo = commands.add_parser(
        "demo", help="bring up 2 nodes, run MongoDB on node1 with data, "
        "move it to node2, verify every document, take the cluster down")
    demo.add_argument("--keep", action="store_true",
                      help="leave the cluster running afterwards")
    demo.add_argument("--documents", type=int, default=10000,
                      help="how many documents to write (default "
                      "%(default)s)")
    _backend(demo)
    demo.set_defaults(run=_demo)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("blockmover: a local cluster needs root (namespaces, loop "
              "devices, mounts); run it as root", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ClusterError, CommandFailed, Timeout) as e:
        print("blockmover: %s" % (e,), file=sys.stderr)
        return 1
