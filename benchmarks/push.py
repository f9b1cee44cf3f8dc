"""
How long a database moved to another site is down, pushed while it runs:
a MongoDB-compatible server on a volume half full of random data, a writer
inserting at a steady rate (``w: 1, j: true``), moved from a node of site
east to a node of site west of a local cluster, beside dd and beside a
naive stop, full copy and start, measured in the same run.

What is measured, per volume size (the application's ``maximum_size``):

- dd: ``dd if=<source device> bs=4M`` in the source node's network
  namespace, piped over a plain TCP connection between the two nodes'
  namespaces (the bridge the pushes cross) into ``dd of=<a scratch device
  as big> bs=4M iflag=fullblock oflag=direct`` in the target's: every byte
  of the device, no TLS, no hashing. Best of two, after which the source
  device is as warm in the page cache as it is for the push's first round.
- the push's rounds, from the source agent's log: bytes sent and seconds
  of each, the first one beside dd (device bytes a second: size / time).
  Only the first move of a volume pushes into a blank volume; a move back
  pushes into the copy the earlier move left, so its first round is short.
- downtime: from the last write the source acknowledged to the first the
  target acknowledged, as the writers saw them.
- naive: the same stop and start, with the last round and check (the
  ``push_final`` step) replaced by dd's copy of the whole device:
  downtime - last round and check + dd. With ``--bandwidth`` the copy
  goes over a link of that bandwidth too: at least size / bandwidth.
- lost: acknowledged writes missing on the target (must be 0).

Moves of the biggest volume go back and forth at each ``--rates``, to show
how downtime grows with the write rate. The last line is
``throughput_vs_dd=X downtime_vs_naive_4g=X downtime_4g_s=X lost_writes=N``
(the biggest volume's first move; the worst ratio of its moves and that
move's downtime). Needs root; run it alone (``flock
/tmp/blockmover-heavy.lock``).

    .venv/bin/python benchmarks/push.py [--quick] [--backend openstack]
        [--sizes 1G,4G] [--rates 20,100,400] [--bandwidth 100M]
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from blockmover.localcluster.configs import (  # noqa: E402
    cluster_config, write_yaml,
)
from blockmover.localcluster.database import (  # noqa: E402
    application, wait_for_server,
)
from blockmover.localcluster.deploying import (  # noqa: E402
    app_yml_path, deploy,
)
from blockmover.localcluster.mounts import namespace_mounts  # noqa: E402
from blockmover.localcluster.namespaces import nsenter_argv  # noqa: E402
from blockmover.localcluster.writer import (  # noqa: E402
    Writer, lost, read_writes,
)
from blockmover.poll import Backoff, poll  # noqa: E402
from blockmover.units import MiB, format_size, parse_size  # noqa: E402

from benchmarks.measuring import (  # noqa: E402
    benchmark_cluster, benchmark_log, needs_root, read_log,
)
from tests.scratch_devices import scratch_device  # noqa: E402

SOURCE, TARGET = "node1", "node2"
SITES = ("east", "west")
DD_PORT = 9700
DEPLOY_TIMEOUT = 900
# What each document adds to the database besides its id.
PAYLOAD = 1024

# The TCP ends of dd's path: standard input to a connection, a connection
# to standard output, 4 MiB at a time.
_SEND = """
import os, socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
buf = bytearray(4 << 20)
view = memoryview(buf)
while True:
    n = os.readv(0, [buf])
    if not n:
        break
    s.sendall(view[:n])
s.close()
"""
_RECEIVE = """
import os, socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(1)
print("listening", file=sys.stderr, flush=True)
c, _ = l.accept()
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
buf = bytearray(4 << 20)
view = memoryview(buf)
while True:
    n = c.recv_into(buf)
    if not n:
        break
    done = 0
    while done < n:
        done += os.write(1, view[done:n])
"""


class Bench(object):
    """
    One cluster of two sites (node1 in east, node2 in west) and what the
    moves measured on it.
    """

    def __init__(self, layout, log, bandwidth):
        self.layout = layout
        self.log = log
        self.bandwidth = bandwidth
        self.applications = {}
        self.placement = {}
        self.next_id = 1

    def configure(self):
        config = cluster_config(self.layout, {
            node: [a for a, n in self.placement.items() if n == node]
            for node in set(self.placement.values())})
        if self.bandwidth is not None:
            config["cluster"]["push"] = {"bandwidth": self.bandwidth}
        write_yaml(self.layout.cluster_yml, config)
        write_yaml(app_yml_path(self.layout), {
            "version": 1, "applications": self.applications})
        return deploy(self.layout, timeout=DEPLOY_TIMEOUT, output=self.log)

    def place(self, app, node, size=None):
        if size is not None:
            self.applications[app] = application(
                self.mountpoint(app), size=size)
        self.placement[app] = node
        return self.configure()

    def remove(self, app):
        del self.applications[app]
        del self.placement[app]
        self.configure()

    def mountpoint(self, app):
        return os.path.join(self.layout.state_dir, "data", app)

    def node(self, name):
        return self.layout.node(name)

    def address(self, name):
        return self.node(name).address

    def in_node(self, name, argv, **kwargs):
        return subprocess.run(nsenter_argv(self.node(name)) + argv,
                              check=True, **kwargs)

    def device_of(self, name, mountpoint):
        """
        The device mounted at ``mountpoint`` in node ``name``.
        """
        for mount in namespace_mounts(self.node(name).mount_ns):
            if mount.mountpoint == mountpoint:
                return mount.source
        raise RuntimeError("nothing is mounted at %s in %s"
                           % (mountpoint, name))

    def fill_half(self, name, mountpoint, size):
        """
        Write a file of random data filling half of the ``size``-byte
        volume mounted at ``mountpoint`` in node ``name``, synced.
        """
        chunks = size // 2 // (4 * MiB)
        self.in_node(name, ["dd", "if=/dev/urandom",
                            "of=" + mountpoint + "/fill", "bs=4M",
                            "count=%d" % (chunks,), "conv=fsync",
                            "status=none"])

    def dd_over_tcp(self, source_device, target_device):
        """
        Seconds dd takes to copy ``source_device`` on node1 to
        ``target_device`` (a path on the host, written from node2's
        namespace) over TCP between the nodes.
        """
        receiver = subprocess.Popen(
            nsenter_argv(self.node(TARGET)) + [
                "sh", "-c", "%s -c '%s' %d | dd of=%s bs=4M iflag=fullblock "
                "oflag=direct status=none" % (
                    sys.executable, _RECEIVE, DD_PORT, target_device)],
            stderr=subprocess.PIPE, text=True)
        try:
            receiver.stderr.readline()
            started = time.monotonic()
            self.in_node(SOURCE, [
                "sh", "-c", "dd if=%s bs=4M status=none | %s -c '%s' %s %d"
                % (source_device, sys.executable, _SEND,
                   self.address(TARGET), DD_PORT)])
            if receiver.wait(120) != 0:
                raise RuntimeError("dd's receiving end failed: %s"
                                   % (receiver.stderr.read(),))
            return time.monotonic() - started
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()

    def move(self, app, source, target, rate):
        """
        Move ``app`` from ``source`` to ``target`` while a writer writes
        ``rate`` a second; the move's figures.
        """
        wait_for_server(self.address(source))
        old = Writer(self.address(source), self.next_id, pause=0.02,
                     timeout=0.5, rate=rate, payload=PAYLOAD).start()
        new = Writer(self.address(target), self.next_id + 10 ** 8,
                     pause=0.02, timeout=0.5, rate=rate, payload=PAYLOAD)
        self.next_id += 10 ** 7
        poll(lambda: True if len(old.acknowledged) >= 5 else None, 60,
             "the writer's first writes")
        since = time.time()
        new.start()
        try:
            seconds = self.place(app, target)
            poll(lambda: True if new.acknowledged else None, 120,
                 "a write acknowledged on %s" % (target,),
                 Backoff(initial=0.01, factor=1.0, maximum=0.01))
        finally:
            old.stop()
            new.stop()
        last_old = max(a.at for a in old.acknowledged)
        downtime = new.acknowledged[0].at - last_old
        missing = lost(old.acknowledged + new.acknowledged,
                       read_writes(self.address(target)))
        received = [m["seconds"] for m in read_log(self.node(target).agent_log)
                    if m.get("message_type") ==
                    "blockmover:push:round-received"
                    and m["timestamp"] >= since]
        return {"rounds": push_rounds(self.node(source).agent_log, since),
                "received": received,
                "downtime": downtime, "lost": len(missing),
                "rate": old.achieved(), "deploy": seconds,
                "writes": len(old.acknowledged) + len(new.acknowledged)}


def push_rounds(agent_log, since):
    """
    ``[(kind, bytes sent, seconds)]`` of the push rounds (``round``, and
    ``final`` for the last round with the check) the agent logged in
    ``agent_log`` since ``since``, in order; failed ones as ``failed``.
    """
    kinds = {"blockmover:agent:push_round": "round",
             "blockmover:agent:push_final": "final"}
    started, rounds = {}, []
    for message in read_log(agent_log):
        kind = kinds.get(message.get("action_type"))
        if kind is None:
            continue
        key = (message["task_uuid"], tuple(message["task_level"][:-1]))
        if message.get("action_status") == "started":
            started[key] = message
        elif key in started:
            start = started.pop(key)
            if start["timestamp"] < since:
                continue
            if message.get("action_status") != "succeeded":
                kind = "failed"
            rounds.append((kind, message.get("bytes_sent", 0),
                           message["timestamp"] - start["timestamp"]))
    return rounds


def mb_s(amount, seconds):
    return amount / seconds / 1e6 if seconds > 0 else 0.0


def run_size(bench, size, rates, moves_done):
    """
    Put an application with a ``size`` volume on node1, fill half of it,
    time dd, then move it once per rate (back and forth); its figures.
    """
    app = "db" + format_size(size).lower()
    mountpoint = bench.mountpoint(app)
    bench.place(app, SOURCE, size=format_size(size))
    wait_for_server(bench.address(SOURCE))
    bench.fill_half(SOURCE, mountpoint, size)
    device = bench.device_of(SOURCE, mountpoint)
    with scratch_device(size) as scratch:
        dd = min(bench.dd_over_tcp(device, scratch.path) for _ in range(2))
    print("%s: dd over TCP between the nodes %.2f s, %.0f MB/s"
          % (format_size(size), dd, mb_s(size, dd)), flush=True)
    # The naive copy goes over the same link as the push: at most the
    # cap's bytes a second, when there is one.
    naive_copy = dd
    if bench.bandwidth is not None:
        naive_copy = max(dd, size / parse_size(bench.bandwidth))
        print("%s: the naive copy over a link of %s/s takes %.2f s"
              % (format_size(size), bench.bandwidth, naive_copy), flush=True)
    moves = []
    here, there = SOURCE, TARGET
    for rate in rates:
        move = bench.move(app, here, there, rate)
        move.update(size=size, dd=dd, target_rate=rate,
                    first_into_blank=(here == SOURCE and not moves))
        final = [r for r in move["rounds"] if r[0] == "final"]
        move["final"] = final[-1][2] if final else None
        if move["final"] is not None:
            move["naive"] = move["downtime"] - move["final"] + naive_copy
        moves.append(move)
        moves_done.append(move)
        print_move(move)
        here, there = there, here
    bench.remove(app)
    return moves


def print_move(move):
    rounds = ", ".join(
        "%s %.0f MiB %.1f s" % (kind, sent / MiB, seconds)
        for kind, sent, seconds in move["rounds"])
    print("  %s at %.0f writes/s: downtime %.2f s; rounds: %s; lost %d"
          % (format_size(move["size"]), move["rate"], move["downtime"],
             rounds, move["lost"]), flush=True)


def first_round_table(moves):
    print()
    print("first round into a blank volume, half full of random data, "
          "beside dd over TCP between the same two node namespaces")
    print("(before blocks: the TLS handshake and the target reading its "
          "device for its hashes)")
    print("%-6s %8s %9s %10s %10s %12s %10s %7s" % (
        "size", "dd s", "dd MB/s", "round 1 s", "before s", "device MB/s",
        "sent MB/s", "vs dd"))
    ratios = {}
    for move in moves:
        if not move["first_into_blank"] or not move["rounds"]:
            continue
        kind, sent, seconds = move["rounds"][0]
        ratio = move["dd"] / seconds
        ratios[move["size"]] = ratio
        before = seconds - move["received"][0] if move["received"] else None
        print("%-6s %8.2f %9.0f %10.2f %10s %12.0f %10.0f %7.2f" % (
            format_size(move["size"]), move["dd"],
            mb_s(move["size"], move["dd"]), seconds,
            "-" if before is None else "%.2f" % (before,),
            mb_s(move["size"], seconds), mb_s(sent, seconds), ratio))
    return ratios


def downtime_table(moves):
    print()
    print("downtime: last write acknowledged on the source to first on the "
          "target; naive = downtime - (last round + check) + dd's full copy")
    print("%-6s %8s %7s %10s %10s %9s %8s %8s %6s" % (
        "size", "writes/s", "rounds", "last+chk s", "downtime s",
        "naive s", "vs naive", "MiB sent", "lost"))
    for move in moves:
        naive = move.get("naive")
        print("%-6s %8.0f %7d %10s %10.2f %9s %8s %8.0f %6d" % (
            format_size(move["size"]), move["rate"], len(move["rounds"]),
            "-" if move["final"] is None else "%.2f" % (move["final"],),
            move["downtime"],
            "-" if naive is None else "%.2f" % (naive,),
            "-" if naive is None else "%.2f" % (move["downtime"] / naive,),
            sum(r[1] for r in move["rounds"]) / MiB, move["lost"]))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1G,4G",
                        help="volume sizes; the last is moved once per "
                        "rate, the others once (default %(default)s)")
    parser.add_argument("--rates", default="20,100,400",
                        help="writes a second of the biggest volume's "
                        "moves; the others use the first (default "
                        "%(default)s)")
    parser.add_argument("--backend", default="loopback",
                        choices=["loopback", "openstack"],
                        help="both sites on loopback, or each a region of "
                        "the emulated cloud (default %(default)s)")
    parser.add_argument("--latency", type=float, default=2.0,
                        help="the emulator's attach and detach latency, "
                        "seconds (default %(default)s)")
    parser.add_argument("--bandwidth", default=None,
                        help="cluster.push.bandwidth, such as 100M (a WAN); "
                        "default none")
    parser.add_argument("--quick", action="store_true",
                        help="a short check: 256M and 512M, one rate")
    args = parser.parse_args(argv)
    problem = needs_root()
    if problem:
        parser.error(problem)
    if args.quick:
        args.sizes, args.rates = "256M,512M", "50"
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    latency = args.latency if args.backend == "openstack" else 0.0
    print("push benchmark: %s, sizes %s, writes/s %s, bandwidth %s, "
          "%d CPUs" % (args.backend, ", ".join(map(format_size, sizes)),
                       args.rates, args.bandwidth or "unlimited",
                       os.cpu_count()), flush=True)
    moves = []
    with benchmark_log() as log, benchmark_cluster(
            2, log, backend=args.backend, attach_latency=latency,
            detach_latency=latency,
            sites=[(site, args.backend) for site in SITES]) as layout:
        bench = Bench(layout, log, args.bandwidth)
        for size in sizes[:-1]:
            run_size(bench, size, rates[:1], moves)
        run_size(bench, sizes[-1], rates, moves)
    ratios = first_round_table(moves)
    downtime_table(moves)
    biggest = [m for m in moves if m["size"] == sizes[-1]
               and m.get("naive") is not None]
    worst = max(biggest, key=lambda m: m["downtime"] / m["naive"],
                default=None)
    print()
    print("throughput_vs_dd=%s downtime_vs_naive_%s=%s downtime_%s_s=%s "
          "lost_writes=%d" % (
              "%.2f" % ratios[sizes[-1]] if sizes[-1] in ratios else "-",
              format_size(sizes[-1]).lower(),
              "-" if worst is None else "%.2f" % (
                  worst["downtime"] / worst["naive"],),
              format_size(sizes[-1]).lower(),
              "-" if worst is None else "%.2f" % (worst["downtime"],),
              sum(m["lost"] for m in moves)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
