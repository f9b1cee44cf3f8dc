"""
How long a node's failure keeps MongoDB from taking writes: a node of a
local cluster running MongoDB with a writer (``w: 1, j: true``) is powered
off (``blockmover cluster power off``: its link cut, every process in it
killed), and the application fails over to the other node by itself.

Each run prints, from the power-off: detection (until the service started
the fence: the lease lapsing), the fence, the detach (from the fence's end
until the new node began its attach: the service's force-detach, the
listing, the new slice), the new node's attach, mount, start and ready,
and the total until the first write acknowledged on the new node; and how
many acknowledged writes are missing there (it must be 0). Then the node
is powered on again (it releases, starts nothing) and the next run fails
the application back the other way.

Medians of ``--runs`` runs on loopback and on the OpenStack emulator
(attach, detach and server stop each taking 2 s); the last line is
``lease_s=X loopback_total_s=X emulator_total_s=X lost_writes=N``.
Needs root; run it alone (``flock /tmp/blockmover-heavy.lock``).
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

from blockmover.localcluster import power, trust  # noqa: E402
from blockmover.localcluster.database import (  # noqa: E402
    application, wait_for_server,
)
from blockmover.localcluster.deploying import (  # noqa: E402
    deploy, write_configuration,
)
from blockmover.localcluster.down import down  # noqa: E402
from blockmover.localcluster.layout import make_layout  # noqa: E402
from blockmover.localcluster.namespaces import unused_subnet  # noqa: E402
from blockmover.localcluster.blocking import ask_control  # noqa: E402
from blockmover.localcluster.up import up  # noqa: E402
from blockmover.localcluster.writer import (  # noqa: E402
    Writer, lost, read_writes,
)
from blockmover.poll import Backoff, poll  # noqa: E402

APP = "mongodb"
PHASES = ["detection", "fence", "detach", "attach", "mount", "start",
          "ready", "total"]
EMULATOR_LATENCY = 2.0


class Bench(object):
    def __init__(self, layout, log):
        self.layout = layout
        self.log = log
        self._credentials = None

    @property
    def credentials(self):
        # Issued by the cluster's up.
        if self._credentials is None:
            self._credentials = trust.operator_credentials(self.layout)
        return self._credentials

    def echo(self, line):
        self.log.write(line + "\n")
        self.log.flush()

    def place(self, node):
        other = [n.name for n in self.layout.nodes if n.name != node]
        app = application(os.path.join(self.layout.state_dir, "data", APP))
        app["failover"] = {"to": other, "automatic": True}
        write_configuration(self.layout, {APP: app}, {APP: node})
        deploy(self.layout, timeout=300, output=self.log)

    def state(self):
        return ask_control(self.layout.control_url,
                           lambda client: client.get_state(), 10,
                           self.credentials)


def _finished(state, node, kind):
    """
    The last finished change ``kind`` on ``node``, from its report.
    """
    progress = (state["nodes"].get(node) or {}).get("progress") or {}
    found = [f for f in progress.get("finished") or []
             if f["step"]["kind"] == kind]
    return found[-1] if found else None


def one_run(bench, source, target, first_id):
    """
    Fail MongoDB over from ``source`` to ``target``; the phases' seconds
    and the acknowledged writes missing on ``target``.
    """
    layout = bench.layout
    # The node of the run before is back in service: a candidate again.
    poll(lambda: True if all(
        ((node.get("failure") or {}).get("state") or "live") == "live"
        for node in bench.state()["nodes"].values()) else None, 300,
        "every node to be live", Backoff(initial=0.2, maximum=1.0))
    bench.place(source)
    source_address = layout.node(source).address
    target_address = layout.node(target).address
    wait_for_server(source_address)
    old = Writer(source_address, first_id=first_id).start()
    poll(lambda: True if len(old.acknowledged) >= 10 else None, 60,
         "the writer's first acknowledged writes")
    new = Writer(target_address, first_id=first_id + 10 ** 6, pause=0.02,
                 timeout=0.5)
    powered_off_at = time.time()
    power.power_off(layout.state_file, source, echo=bench.echo)
    # Measured from the moment the power went, in monotonic time too.
    cut = time.monotonic()
    new.start()
    try:
        poll(lambda: True if new.acknowledged else None, 600,
             "a write acknowledged on %s" % (target,),
             Backoff(initial=0.01, factor=1.0, maximum=0.01))
    finally:
        old.stop()
        new.stop()
    total = new.acknowledged[0].at - cut
    state = bench.state()
    fence = ((state["nodes"][source].get("failure") or {}).get("fence")
             or {})
    steps = {kind: _finished(state, target, kind)
             for kind in ("attach", "mount", "start", "ready")}
    phases = {"total": total}
    if fence.get("started_at") is not None:
        phases["detection"] = fence["started_at"] - powered_off_at
    if fence.get("finished_at") is not None:
        phases["fence"] = fence["finished_at"] - fence["started_at"]
    if steps["attach"] is not None and fence.get("finished_at") is not None:
        attach = steps["attach"]
        phases["detach"] = (attach["finished_at"] - attach["seconds"]
                            - fence["finished_at"])
    for kind, step in steps.items():
        if step is not None and step["finished_at"] >= powered_off_at:
            phases[kind] = step["seconds"]
    missing = lost(old.acknowledged + new.acknowledged,
                   read_writes(target_address))
    # The node comes back, releases and starts nothing.
    power.power_on(layout.state_file, source, echo=bench.echo)
    return phases, len(missing)


def run_backend(backend, args):
    name = "b" + uuid.uuid4().hex[:6]
    state_dir = os.path.join(tempfile.gettempdir(),
                             "blockmover-failover-bench-" + name)
    latency = EMULATOR_LATENCY if backend == "openstack" else 0.0
    layout = make_layout(name, 2, unused_subnet("10.82"), state_dir,
                         backend=backend, attach_latency=latency,
                         detach_latency=latency, lease=args.lease)
    log_path = state_dir + ".log"
    print("%s: cluster %s (log %s) ..." % (backend, name, log_path),
          flush=True)
    runs, lost_writes = [], 0
    with open(log_path, "a") as log:
        bench = Bench(layout, log)
        try:
            up(layout, echo=bench.echo)
            nodes = ["node1", "node2"]
            for i in range(args.runs):
                source, target = nodes[i % 2], nodes[(i + 1) % 2]
                phases, missing = one_run(bench, source, target,
                                          first_id=1 + i * 10 ** 7)
                lost_writes += missing
                runs.append(phases)
                print("%s run %d (%s -> %s): %s; lost %d" % (
                    backend, i + 1, source, target, ", ".join(
                        "%s %.2f" % (p, phases[p]) for p in PHASES
                        if p in phases), missing), flush=True)
        finally:
            down(layout.state_file, echo=bench.echo)
    return runs, lost_writes


def median(runs, phase):
    values = [run[phase] for run in runs if phase in run]
    return statistics.median(values) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5,
                        help="failovers per backend (default %(default)s)")
    parser.add_argument("--lease", type=float, default=20.0,
                        help="the cluster's lease in seconds (default "
                        "%(default)s, cluster.yml's default)")
    parser.add_argument("--backend", action="append",
                        choices=["loopback", "openstack"],
                        help="run on this backend only (may be given "
                        "again); default both")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: namespaces, loop devices and mounts")
    results, lost_writes = {}, 0
    for backend in args.backend or ["loopback", "openstack"]:
        runs, missing = run_backend(backend, args)
        results[backend] = runs
        lost_writes += missing
    print()
    print("seconds from power-off, median of %d runs; lease %.0f s"
          % (args.runs, args.lease))
    print("%-10s" % ("backend",) + "".join("%10s" % (p,) for p in PHASES))
    for backend, runs in results.items():
        print("%-10s" % (backend,) + "".join(
            "%10s" % ("-" if median(runs, p) is None
                      else "%.2f" % (median(runs, p),)) for p in PHASES))

    def total(backend):
        value = median(results.get(backend, []), "total")
        return "-" if value is None else "%.2f" % (value,)
    print("lease_s=%g loopback_total_s=%s emulator_total_s=%s "
          "lost_writes=%d" % (args.lease, total("loopback"),
                              total("openstack"), lost_writes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
