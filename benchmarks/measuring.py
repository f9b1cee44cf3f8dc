"""
What the benchmarks run on and measure with: a local cluster of their own
(up, then down with nothing left behind), the structured logs of the
control service, the agents and the emulator (eliot JSON lines) and a
probe inside a node that notes the moment a port first accepts a
connection: each figure measured where it happens.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager

from blockmover.localcluster.down import down
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.namespaces import unused_subnet
from blockmover.localcluster.up import up

# Connects every 2 ms until the port accepts, then prints when it did.
_PROBE = """
import socket, sys, time
port = int(sys.argv[1])
print("probing", flush=True)
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        time.sleep(0.002)
        continue
    print(repr(time.time()), flush=True)
    break
"""


def read_log(path):
    """
    Every eliot message in the file ``path``, in order (none if missing).
    """
    messages = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        messages.append(json.loads(line))
                    except ValueError:
                        continue
    except FileNotFoundError:
        return []
    return messages


def messages_of(path, message_type, since=0.0):
    return [m for m in read_log(path)
            if m.get("message_type") == message_type
            and m.get("timestamp", 0) >= since]


def action_durations(path, action_type, since=0.0):
    """
    ``[(started, seconds, start message)]`` of every finished eliot action
    of ``action_type`` in ``path`` that started at or after ``since``.
    """
    started = {}
    found = []
    for m in read_log(path):
        if m.get("action_type") != action_type:
            continue
        key = (m["task_uuid"], tuple(m["task_level"][:-1]))
        if m.get("action_status") == "started":
            started[key] = m
        elif key in started:
            start = started.pop(key)
            if start["timestamp"] >= since:
                found.append((start["timestamp"],
                              m["timestamp"] - start["timestamp"], start))
    return found


class PortProbe(object):
    """
    A probe in the network namespace ``netns`` noting when ``port`` on
    that node first accepts a connection (seconds since the epoch).
    """

    def __init__(self, netns, port):
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _PROBE,
             str(port)], stdout=subprocess.PIPE, text=True)
        # Started and probing before the move begins.
        self.process.stdout.readline()

    def accepted_at(self, timeout=300):
        """
        When the port first accepted; waits for it up to ``timeout``.
        """
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return float(out.strip())

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def log_paths(layout):
    """
    ``(control log, {node: agent log}, emulator log or None)``.
    """
    agents = {node.name: node.agent_log for node in layout.nodes}
    cloud = os.path.join(layout.logs_dir, "cloud.log") \
        if layout.backend == "openstack" else None
    return layout.control_log, agents, cloud


def benchmark_parser(doc):
    """
    The command line of a benchmark described by ``doc`` (its first
    paragraph is the description), with the emulator's ``--latency``.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=2.0,
                        help="the emulator's attach and detach latency "
                        "(default %(default)s)")
    return parser


def needs_root():
    """
    None as root, else the message a benchmark exits with.
    """
    if os.geteuid() != 0:
        return "needs root (namespaces, loop devices, mounts)"
    return None


@contextmanager
def benchmark_cluster(nodes, log, **layout_options):
    """
    A local cluster of ``nodes`` nodes of its own (its name and subnet
    unused by anything else), up for the ``with`` block, then down; what
    it left behind is printed. Its progress lines go to ``log``.
    ``layout_options`` go to ``make_layout`` (backend, latencies ...).
    """
    name = "b" + uuid.uuid4().hex[:6]
    layout = make_layout(
        name, nodes, unused_subnet("10.79"),
        os.path.join(tempfile.gettempdir(), "blockmover-bench-" + name),
        **layout_options)

    def echo(line):
        log.write(line + "\n")
        log.flush()
    try:
        up(layout, echo=echo)
        yield layout
    finally:
        down(layout.state_file, echo=echo)
    left = leftovers(layout)
    if left:
        print("LEFT BEHIND: %s" % (left,))


@contextmanager
def benchmark_log():
    """
    A file for the clusters' progress and the deploys' output, removed
    afterwards unless the benchmark failed (then its path is printed).
    """
    log = tempfile.NamedTemporaryFile(
        mode="w", prefix="blockmover-bench-", suffix=".log", delete=False)
    try:
        with log:
            yield log
    except BaseException:
        print("the clusters' log: %s" % (log.name,))
        raise
    os.unlink(log.name)
