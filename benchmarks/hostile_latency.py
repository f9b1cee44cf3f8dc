"""
How long an honest client waits while hostile clients are refused, against
a real blockmover-control over mutual TLS on this machine (issue 8 asks
for under 100 ms).

Starts one control service with a test CA of its own and a configuration.
For each hostile client of tests/hostile_clients.py (refused at the TLS
handshake, or let in and its request refused), --rounds times: hold it
half-way, time the operator's GET /v1/state on a connection of its own,
send the rest, time another, read the refusal. Prints each one's median,
99th percentile and worst, beside the same request with no hostile client.
Needs no root; leaves nothing behind.

    .venv/bin/python benchmarks/hostile_latency.py [--rounds 50]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.control_process import ControlProcess  # noqa: E402
from tests.hostile_clients import (  # noqa: E402
    HANDSHAKES, REQUESTS, Honest, configure, held, honest_meanwhile,
    work_begun,
)

# Issue 8: the service answers others within this meanwhile.
BOUND_MS = 100.0


def summary(name, seconds):
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    flag = "" if ms[-1] < BOUND_MS else "   OVER %d ms" % (BOUND_MS,)
    return "%-62s %7.1f %7.1f %7.1f%s" % (
        name, statistics.median(ms), p99, ms[-1], flag)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50,
                        help="times each hostile client is refused "
                        "(default %(default)s)")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="blockmover-bench-hostile-")
    try:
        for name in ("control-state", "loopback", "scratch"):
            os.makedirs(os.path.join(directory, name))
        root = os.path.join(directory, "loopback")
        scratch = os.path.join(directory, "scratch")
        control = ControlProcess(os.path.join(directory, "control-state"),
                                 os.path.join(directory, "control.log"),
                                 cluster="hostile-bench").start()
        try:
            generation = configure(control, root)
            honest = Honest(control)
            try:
                for _ in range(args.rounds * 2):
                    honest.state("nobody hostile")
                for case in HANDSHAKES + REQUESTS:
                    for _ in range(args.rounds):
                        slow = getattr(case, "slow", False)
                        honest_meanwhile(
                            honest, held(control, case, root, scratch),
                            case.name, generation,
                            begun=work_begun(control, case) if slow
                            else None)
            finally:
                honest.close()
        finally:
            control.stop()
        print("honest GET /v1/state, ms, over %d rounds each" % (
            args.rounds,))
        print("%-62s %7s %7s %7s" % ("beside", "median", "p99", "worst"))
        for beside, seconds in honest.latencies.items():
            print(summary(beside, seconds))
    finally:
        shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
