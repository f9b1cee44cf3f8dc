"""
``blockmover``: keep the cluster's CA and its certificates (``ca``); show
what any cluster is doing (``status``); run a local cluster of namespace
nodes on this machine and demonstrate a move of MongoDB between its nodes.
"""

import argparse
import os
import sys

from blockmover import ca_command
from blockmover.command import CommandFailed
from blockmover.poll import Timeout

DESCRIPTION = """\
Keep the cluster's certificate authority and certificates (blockmover ca).

Show what a cluster is doing: its nodes, applications, moves in progress
and what is stuck (blockmover status).

Fence a failed node, or confirm it down, so that its volumes and
applications can move (blockmover node fence|confirm-down).

List the volumes pushes between sites keep, and remove them (blockmover
volume list|remove).

Run a local blockmover cluster on this machine (as root). Each node is a
network namespace on a Linux bridge with its own persistent mount
namespace; the control service runs on the host, one agent per node runs
inside its node, and all share one loopback backend (volumes are sparse
files attached as loop devices) or, with --backend openstack, an OpenStack
emulator on the host (blockmover-cloud, with slow attach and detach).
With --control-replicas 3 the control service runs as three replicas,
each in a network namespace of its own, on three etcd members on the host.
"""

EPILOG = """\
examples:
  blockmover ca init --cluster demo   # see: blockmover ca --help
  blockmover cluster up --nodes 2     # node1 at 10.77.0.11, node2 at .12
  blockmover status                   # also: the operator's TLS files
  blockmover status --cluster cluster.yml --watch   # any cluster
  blockmover node confirm-down node2 --cluster cluster.yml
  blockmover volume list --cluster cluster.yml
  blockmover-deploy --control https://10.77.0.1:4523 --wait \\
      --tls-dir /var/lib/blockmover/cluster/demo/tls/operator \\
      /var/lib/blockmover/cluster/demo/cluster.yml app.yml
  blockmover cluster down
  blockmover demo                     # up, move MongoDB node1 -> node2, down
  blockmover demo --ha                # the same on 3 control replicas, the
                                      # leading one killed mid-move
  blockmover cluster up --backend openstack --attach-latency 5
  blockmover cluster up --nodes 4 --sites east,west
  blockmover cluster up --control-replicas 3   # on a 3-member etcd

A local cluster makes its own CA in its state directory and talks mutual
TLS like any cluster: the control service, each agent and the operator
(for blockmover-deploy and blockmover status) have certificates of it.
"""


def _state_dir(args):
    from blockmover.localcluster.layout import default_state_dir
    return os.path.abspath(args.state_dir or default_state_dir(args.name))


def _common(parser, layout):
    parser.add_argument("--name", default=layout.DEFAULT_NAME,
                        help="the cluster's name (default %(default)s)")
    parser.add_argument("--state-dir", default=None,
                        help="where the cluster keeps its state, logs and "
                        "volumes (default /var/lib/blockmover/cluster/NAME)")


def _backend(parser, layout):
    parser.add_argument("--backend", default="loopback",
                        choices=layout.BACKENDS,
                        help="the block-storage backend: loopback, or "
                        "openstack on an OpenStack emulator run on this "
                        "machine (default %(default)s)")
    for step in ("attach", "detach"):
        parser.add_argument("--%s-latency" % (step,), type=float,
                            default=layout.DEFAULT_LATENCY,
                            metavar="SECONDS",
                            help="openstack: how long the emulator takes "
                            "to %s a volume (default %%(default)s)"
                            % (step,))


def _local_cluster(run):
    """
    ``run`` as a local-cluster command: it needs root, and the errors of
    the local cluster are printed as one line each.
    """
    def checked(args):
        # Imported late, as all of the local cluster: see below.
        from blockmover.localcluster import ClusterError
        if os.geteuid() != 0:
            print("blockmover: a local cluster needs root (namespaces, loop "
                  "devices, mounts); run it as root", file=sys.stderr)
            return 2
        try:
            return run(args)
        except (ClusterError, CommandFailed, Timeout) as e:
            print("blockmover: %s" % (e,), file=sys.stderr)
            return 1
    return checked


# Each command imports late what it runs: `ca` needs nothing of the local
# cluster (it runs where there is none), `status` none of the code that
# makes one, and no command but `demo` needs the demo's.


def _up(args):
    from blockmover.localcluster.layout import make_layout
    from blockmover.localcluster.up import up
    up(make_layout(args.name, args.nodes, args.subnet, _state_dir(args),
                   args.port, backend=args.backend,
                   attach_latency=args.attach_latency,
                   detach_latency=args.detach_latency,
                   sites=parse_sites(args.sites, args.backend),
                   control_replicas=args.control_replicas))
    return 0


def parse_sites(text, backend):
    """
    ``[(site, backend)]`` of ``--sites`` (None: no sites), each site's
    backend ``backend`` unless it says ``SITE=BACKEND``.
    """
    if not text:
        return []
    sites = []
    for part in text.split(","):
        name, _, site_backend = part.strip().partition("=")
        sites.append((name, site_backend or backend))
    return sites


def _down(args):
    from blockmover.localcluster.down import down
    down(os.path.join(_state_dir(args), "cluster.json"))
    return 0


def _status(args):
    """
    ``blockmover status``: of the cluster --cluster or --control names,
    else of the local cluster. Exits with the status its --help lists.
    """
    from blockmover import status_command
    local_options = args.name is not None or args.state_dir is not None
    try:
        if status_command.names_a_cluster(args):
            if local_options:
                raise status_command.BadInput(
                    "--name and --state-dir name a local cluster; leave "
                    "them out with --cluster or --control")
            target = status_command.cluster_target(args)
        else:
            target = _local_status_target(args, status_command)
    except status_command.BadInput as e:
        print("blockmover status: %s" % (e,), file=sys.stderr)
        return status_command.EXIT_BAD_INPUT
    return status_command.run(target, args)


def _node(args):
    """
    ``blockmover node fence|confirm-down NODE``: to the control service
    --cluster or --control names, else the local cluster's.
    """
    from blockmover import node_command
    return _to_control("node", node_command, args)


def _volume(args):
    """
    ``blockmover volume list|remove``: with the control service --cluster
    or --control names, else the local cluster's.
    """
    from blockmover import volume_command
    return _to_control("volume", volume_command, args)


def _to_control(name, command, args):
    """
    Run ``command`` (a module with ``run(target, args)`` and
    ``EXIT_BAD_INPUT``), the ``blockmover NAME`` command, against the
    control service --cluster or --control names, else the local
    cluster's.
    """
    from blockmover import status_command
    try:
        if status_command.names_a_cluster(args):
            target = status_command.cluster_target(args)
        else:
            args.name = args.state_dir = None
            target = _local_status_target(args, status_command)
    except status_command.BadInput as e:
        print("blockmover %s %s: %s" % (name, args.action, e),
              file=sys.stderr)
        return command.EXIT_BAD_INPUT
    return command.run(target, args)


def _local_status_target(args, status_command):
    """
    The local cluster's ``status_command.Target``.

    :raise status_command.BadInput: it cannot be asked from here.
    """
    from blockmover.localcluster import ClusterError
    from blockmover.localcluster.layout import DEFAULT_NAME
    from blockmover.localcluster.status import local_target
    if status_command.gives_tls_files(args):
        raise status_command.BadInput(
            "the local cluster is asked with its operator's certificate; "
            "give TLS files together with --cluster or --control")
    if os.geteuid() != 0:
        raise status_command.BadInput(
            "without --cluster or --control this shows the local cluster "
            "on this machine, which needs root; run it as root, or give "
            "--cluster cluster.yml or --control URL")
    args.name = args.name or DEFAULT_NAME
    try:
        return local_target(os.path.join(_state_dir(args), "cluster.json"))
    except ClusterError as e:
        raise status_command.BadInput(str(e))


def _power(args):
    from blockmover.localcluster import power
    state_file = os.path.join(_state_dir(args), "cluster.json")
    if args.switch == "off":
        power.power_off(state_file, args.node)
    else:
        # The emulator names the node's server after the node.
        power.power_on(state_file, args.node,
                       by_the_cloud=args.server is not None)
    return 0


def _demo(args):
    from blockmover.localcluster.demo import demo
    return demo(documents=args.documents, keep=args.keep,
                backend=args.backend, attach_latency=args.attach_latency,
                detach_latency=args.detach_latency, ha=args.ha)


def _local_cluster_options(cluster, status, demo):
    """
    Give the local-cluster commands their actions and options, whose
    defaults are the local cluster's.
    """
    from blockmover.localcluster import layout
    actions = cluster.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    up = actions.add_parser(
        "up", help="make the cluster (safe to run again: it makes what "
        "is missing and restarts services that died)")
    _common(up, layout)
    up.add_argument("--nodes", type=int, default=2,
                    help="how many nodes (default %(default)s)")
    up.add_argument("--subnet", default=layout.DEFAULT_SUBNET,
                    help="first three octets of the cluster's /24: the "
                    "host is .1, node k is .(10+k) (default %(default)s)")
    up.add_argument("--port", type=int, default=4523,
                    help="the control service's port (default "
                    "%(default)s)")
    _backend(up, layout)
    up.add_argument("--sites", default=None, metavar="SITE[=BACKEND],...",
                    help="put the nodes in several sites, node k in the "
                    "k-th site round the list, each on its own backend "
                    "(--backend's unless the site says: a loopback root "
                    "of its own, or a region of the emulated cloud named "
                    "after the site), such as east,west or "
                    "east=loopback,west=openstack")
    up.add_argument("--control-replicas", type=int, default=1,
                    choices=layout.CONTROL_REPLICAS, metavar="N",
                    help="run the control service as N replicas (3 or 5) "
                    "on an etcd cluster of N members, replica k in a "
                    "network namespace of its own at .(255-k), etcd on "
                    "the host's address; 1 (the default): one control "
                    "service with its file store")
    up.set_defaults(run=_local_cluster(_up))
    down = actions.add_parser(
        "down", help="remove everything the cluster made: processes, "
        "applications, mounts, loop devices, namespaces, bridge, state")
    _common(down, layout)
    down.set_defaults(run=_local_cluster(_down))
    power = actions.add_parser(
        "power", help="power a node off (its link cut, every process in it "
        "killed, its mounts gone) or on again (its agent started): the "
        "local cluster's fence",
        description="Power a node of a local cluster off or on, as a "
        "fence would. Off cuts the node's link, kills every process in its "
        "network namespace and unmounts what it had mounted: once it "
        "returns, the node cannot write to any volume. The node stays off "
        "(cluster up leaves it so) until powered on, which brings the link "
        "up and starts its agent. Both are safe to repeat. The OpenStack "
        "emulator of a local cluster runs this when a node's server is "
        "stopped or started, with the server's id after the node's name.")
    _common(power, layout)
    power.add_argument("switch", choices=["off", "on"],
                       help="which way to switch it")
    power.add_argument("node", help="the node's name, such as node1")
    power.add_argument("server", nargs="?", default=None,
                       help="what a caller names the node by besides its "
                       "name: the emulator passes the node's server id (and "
                       "then on does not start the server through Nova: "
                       "Nova is starting it), a fence command its address")
    power.set_defaults(run=_local_cluster(_power))

    local = status.add_argument_group(
        "local cluster", "which local cluster to show when neither "
        "--cluster nor --control is given")
    local.add_argument("--name", default=None,
                       help="its name (default %s)" % (layout.DEFAULT_NAME,))
    local.add_argument("--state-dir", default=None,
                       help="where it keeps its state (default "
                       "/var/lib/blockmover/cluster/NAME)")

    demo.add_argument("--keep", action="store_true",
                      help="leave the cluster running afterwards")
    demo.add_argument("--documents", type=int, default=10000,
                      help="how many documents to write (default "
                      "%(default)s)")
    demo.add_argument("--ha", action="store_true",
                      help="run the control service as 3 replicas on a "
                      "3-member etcd, and kill the leading one (SIGKILL) in "
                      "the middle of the move: another leads and the move "
                      "completes")
    _backend(demo, layout)
    demo.set_defaults(run=_local_cluster(_demo))


def parser(local_cluster=True):
    """
    The command line's parser. Without ``local_cluster`` the local-cluster
    commands are listed but take no options: their defaults come from the
    local cluster's code, which ``blockmover ca`` does not load.
    """
    top = argparse.ArgumentParser(
        prog="blockmover", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    ca_command.add_parser(commands)
    cluster = commands.add_parser(
        "cluster", help="bring a local cluster up or down",
        description="Bring a local cluster of namespace nodes up or down.")
    from blockmover import status_command
    status = commands.add_parser(
        "status", help="show what a cluster is doing: nodes, applications, "
        "moves in progress, what is stuck",
        description=status_command.DESCRIPTION,
        epilog=status_command.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    status_command.add_arguments(status)
    status.set_defaults(run=_status)
    from blockmover import node_command
    node = commands.add_parser(
        "node", help="fence a failed node, or confirm it down, so that its "
        "applications can move", description=node_command.DESCRIPTION,
        epilog=node_command.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    node_command.add_arguments(node)
    node.set_defaults(run=_node)
    from blockmover import volume_command
    volume = commands.add_parser(
        "volume", help="list the volumes pushes between sites keep, and "
        "remove them", description=volume_command.DESCRIPTION,
        epilog=volume_command.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    volume_command.add_arguments(volume)
    volume.set_defaults(run=_volume)
    demo = commands.add_parser(
        "demo", help="bring up 2 nodes, run MongoDB on node1 with data, "
        "move it to node2, verify every document, take the cluster down")
    if local_cluster:
        _local_cluster_options(cluster, status, demo)
    return top


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parser(local_cluster=argv[:1] != ["ca"]).parse_args(argv)
    if args.command == "ca":
        return ca_command.run(args, sys.stderr)
    return args.run(args)
