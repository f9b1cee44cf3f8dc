"""
One control service and thousands of agents: how long a configuration
change takes to reach the agents it changes, what a listing refresh costs
the service, its memory, and how long all agents take to hold their slices
again after it restarts; at 100, 1,000, 3,000 and 10,000 nodes.

A real ``blockmover-control`` (its command line, mutual TLS, API and
service; ``benchmarks/scale_control.py``) on 127.0.0.1, over an in-memory
cloud that lists as the OpenStack backend does (whole, or the volumes
changed since a time) instead of the loopback backend, whose own reading
of 110,000 volume files would cost seconds of CPU a listing. N simulated
agents (``benchmarks/scale_agents.py``, in ``--workers`` processes) each
hold a long poll over HTTPS with the certificate of their own node, from
their own loopback address, polling as ``agents.loop`` does. Each node runs
one application with a volume attached to it; the cloud also holds ten
unattached volumes per node of applications no longer configured.

The cluster's lease is 90 s unless ``--lease`` says otherwise: the agents'
long polls then last their own 30 s, as before leases, and the refreshes
are measured between their bursts. Under a lease of L seconds an agent
polls again every L/3 s at most, and at 10,000 nodes and 20 s that is
1,500 polls a second: the ``idle rate`` column shows what that costs.

For each N it prints: the seconds from sending a configuration that moves
1 % of the applications to each agent it changes holding its new slice
(p50, p99, max; and p99 from the service having read the configuration,
which it logs) and the same for one that moves them all; the control
service's CPU seconds (all its threads) for a listing refresh that finds
nothing new and for one that finds 1 % of the volumes changed (from the
ask until its CPU is back to its rate before, less that rate); its
resident memory alone, with every long poll held, and at its peak; and
the seconds from starting it again after a stop to every agent holding a
slice of the new process, with what that took. The last line is
``nodes=N p99_all_s=X p99_one_percent_s=X idle_refresh_cpu_s=X rss_mb=X
reconnect_s=X`` for the largest N run. A phase that does not finish within
``--timeout`` seconds prints ``timeout``.

    flock /tmp/blockmover-heavy.lock .venv/bin/python benchmarks/scale.py \\
        [--nodes N] [--workers 3] [--timeout 600]

Leaves nothing behind: its processes are stopped by their pids and its
directory removed.
"""

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.scale_control import (  # noqa: E402
    application_name, node_name, volume_ids,
)
from blockmover import ca, certificates  # noqa: E402
from blockmover.certificates import CONTROL, NODE, USER  # noqa: E402
from blockmover.model import (  # noqa: E402
    NodeReport, NodeState, Progress, to_data,
)

SIZES = (100, 1000, 3000, 10000)
CLUSTER = "scale"
OPERATOR = "operator"
# As agents.loop polls.
POLL_TIMEOUT = 30.0
# Seconds of each CPU window around a listing refresh.
WINDOW = 2.0
IDLE_REFRESHES = 3
# What a refresh's measure takes at least: the connection's settling, the
# window before and the window after, with room.
REFRESH_SECONDS = 0.5 + 2 * WINDOW + 2.0


# --- certificates ------------------------------------------------------------

def _issue_nodes(job):
    """
    In a worker process: keys and certificates for nodes ``first`` to
    ``last`` - 1, written as ``node-NAME.crt`` and ``.key`` in ``out``.
    """
    ca_pem, ca_key_pem, first, last, out = job
    ca_certificate = certificates.load_certificate(ca_pem)
    ca_key = certificates.load_key(ca_key_pem)
    now = datetime.datetime.now(datetime.timezone.utc)
    for i in range(first, last):
        holder = certificates.identity(CLUSTER, NODE, node_name(i))
        key = certificates.new_key()
        certificate = certificates.issue(ca_certificate, ca_key, holder,
                                         key.public_key(), now, 2)
        stem = os.path.join(out, holder.file_stem)
        with open(stem + ".key", "w") as f:
            f.write(certificates.key_pem(key))
        with open(stem + ".crt", "w") as f:
            f.write(certificates.certificate_pem(certificate))


class Certificates(object):
    """
    The cluster's CA in ``directory``, the control service's certificate
    for 127.0.0.1, an operator's, and one of each of ``nodes`` nodes
    (issued in a pool of processes: ECDSA keys, about a millisecond each).
    """

    def __init__(self, directory, nodes, processes=2):
        self.ca_dir = os.path.join(directory, "ca")
        self.authority = authority = ca.init(self.ca_dir, CLUSTER)
        self.control_dir = os.path.join(directory, "control-tls")
        self.user_dir = os.path.join(directory, "user-tls")
        self.nodes_dir = os.path.join(directory, "nodes-tls")
        for d in (self.control_dir, self.user_dir, self.nodes_dir):
            os.makedirs(d)
        ca.write_issued(authority.issue(authority.identity(CONTROL),
                                        ["127.0.0.1"]), self.control_dir)
        ca.write_issued(authority.issue(authority.identity(USER, OPERATOR)),
                        self.user_dir)
        self.ca = os.path.join(self.control_dir, ca.CA_CERTIFICATE)
        self.crl = os.path.join(self.ca_dir, ca.CRL)
        with open(os.path.join(self.ca_dir, ca.CA_KEY)) as f:
            ca_key_pem = f.read()
        with open(os.path.join(self.ca_dir, ca.CA_CERTIFICATE)) as f:
            ca_pem = f.read()
        step = max(1, nodes // (processes * 4))
        jobs = [(ca_pem, ca_key_pem, first, min(nodes, first + step),
                 self.nodes_dir) for first in range(0, nodes, step)]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_issue_nodes, jobs)

    def node_files(self, node):
        stem = os.path.join(self.nodes_dir, "node-" + node)
        return stem + ".crt", stem + ".key"

    def context(self, certificate, key):
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(certificate, key)
        return context

    def operator(self):
        stem = os.path.join(self.user_dir, "user-" + OPERATOR)
        return self.context(stem + ".crt", stem + ".key")

    def node(self, node):
        return self.context(*self.node_files(node))


# --- the configuration -------------------------------------------------------

def configuration(nodes, placement, lease, election=None):
    """
    ``(cluster_yml, app_yml)``: ``nodes`` nodes, application ``i`` on node
    ``placement[i]``, a lease of ``lease`` seconds; with ``election``
    (``(lease, renew_deadline, retry)``), the times of the election of
    the control service's leader.
    """
    cluster = ["version: 1", "cluster:", "  name: %s" % (CLUSTER,),
               "  control: https://127.0.0.1:4523",
               "  lease: %g" % (lease,)]
    if election is not None:
        cluster.append("  election: {lease: %g, renew_deadline: %g, "
                       "retry: %g}" % tuple(election))
    cluster += [
               # Replaced by scale_control's in-memory cloud.
               "  backend: {name: loopback, root: /nonexistent/scale}",
               "nodes:"]
    for i in range(nodes):
        cluster.append("  %s: {address: 10.%d.%d.%d}" % (
            node_name(i), 100 + i // 65536, (i // 256) % 256, i % 256))
    on = {}
    for app, node in enumerate(placement):
        on.setdefault(node, []).append(application_name(app))
    cluster.append("deployment:")
    for i in range(nodes):
        cluster.append("  %s: [%s]" % (node_name(i), ", ".join(on.get(i, []))))
    apps = ["version: 1", "applications:"]
    for i in range(nodes):
        apps.append("  %s: {command: [serve], volume: {mountpoint: /data/%s, "
                    "maximum_size: 1G}}" % (application_name(i),
                                            application_name(i)))
    return "\n".join(cluster) + "\n", "\n".join(apps) + "\n"


def placements(nodes):
    """
    The three placements in turn: every application on its own node; 1 %
    of them (at least one) moved half-way round; every one moved one node
    on from there.
    """
    first = list(range(nodes))
    step = max(1, nodes // max(1, nodes // 100))
    moved = [i for i in range(0, nodes, step)][:max(1, nodes // 100)]
    second = list(first)
    for i in moved:
        second[i] = (i + nodes // 2) % nodes
    third = [(node + 1) % nodes for node in second]
    return first, second, third


def changed_nodes(before, after):
    """
    The nodes whose slice a change of placement changes: where a moved
    application was and where it goes.
    """
    nodes = set()
    for app, (old, new) in enumerate(zip(before, after)):
        if old != new:
            nodes.update((node_name(old), node_name(new)))
    return nodes


def stored(cluster_yml, app_yml):
    """
    The configuration as ``blockmover-control`` keeps it (in its state
    directory, or in etcd), as if deployed once.
    """
    return {"version": 1, "generation": 1, "counter": 1,
            "cluster_yml": cluster_yml, "app_yml": app_yml,
            "cluster_path": "cluster.yml", "app_path": "app.yml"}


def write_stored(state_dir, cluster_yml, app_yml):
    """
    The configuration as ``blockmover-control`` keeps it, as if deployed
    before it started (the first deploy is not what is measured).
    """
    os.makedirs(state_dir, mode=0o700)
    with open(os.path.join(state_dir, "configuration.json"), "w") as f:
        json.dump(stored(cluster_yml, app_yml), f)
    os.chmod(os.path.join(state_dir, "configuration.json"), 0o600)


# --- the processes -----------------------------------------------------------

# What the service's systemd unit sets (etc/systemd/blockmover-control.service).
CONTROL_ENVIRONMENT = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX",
                                                          "2")}


class Control(object):
    """
    ``scale_control`` (blockmover-control over the in-memory cloud) as a
    child process, started again on the same port.
    """

    def __init__(self, directory, certs, nodes, profile=None):
        self.directory = directory
        self.profile = profile
        self.starts = 0
        self.certs = certs
        self.nodes = nodes
        self.state_dir = os.path.join(directory, "control-state")
        self.changes = os.path.join(directory, "changes.json")
        self.listings = os.path.join(directory, "listings")
        self.log = os.path.join(directory, "control.log")
        self.port = 0
        self.process = None

    def start(self):
        stderr_path = os.path.join(self.directory, "control.stderr")
        self.starts += 1
        command = [sys.executable, os.path.join(HERE, "scale_control.py"),
                   "--fake-nodes", str(self.nodes), "--changes",
                   self.changes, "--listings", self.listings]
        if self.profile is not None:
            command += ["--profile", os.path.join(
                self.profile, "control-%d-%d.prof" % (self.nodes,
                                                      self.starts))]
        command += ["--"] + self.options()
        with open(stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stderr,
                env=dict(os.environ, **CONTROL_ENVIRONMENT))
        deadline = time.time() + 600
        while time.time() < deadline:
            with open(stderr_path) as f:
                for line in f:
                    if "listening on" in line:
                        self.port = int(line.rsplit(":", 1)[1])
                        return
            if self.process.poll() is not None:
                with open(stderr_path) as f:
                    raise RuntimeError("the control service exited: %s"
                                       % (f.read(),))
            time.sleep(0.05)
        raise RuntimeError("the control service did not listen")

    def options(self):
        """
        ``blockmover-control``'s options.
        """
        return [
            "--listen",
            "tcp:%d:interface=127.0.0.1:backlog=4096" % (self.port,),
            "--tls-dir", self.certs.control_dir, "--crl", self.certs.crl,
            "--state-dir", self.state_dir, "--log", self.log,
            "--refresh-interval", "3600"]

    def kill(self):
        """
        SIGKILL it, as a crash would; return once it is gone.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu(self):
        """
        CPU seconds of every thread of this process of the service so far.
        """
        return _cpu_of(self.process.pid)

    def memory_mb(self):
        """
        ``(resident, peak resident)`` in MB.
        """
        values = {}
        with open("/proc/%d/status" % (self.process.pid,)) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(value.split()[0]) / 1024.0
        return values["VmRSS"], values["VmHWM"]

    def messages(self, offset):
        """
        The service's log messages from byte ``offset`` of its log on.
        """
        with open(self.log, "rb") as f:
            f.seek(offset)
            lines = f.read().splitlines()
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def listings_since(self, since, times=False):
        """
        ``[(kind, count)]`` (with ``times``, ``[(kind, count, time)]``) of
        the listings the cloud made since ``since``.
        """
        try:
            with open(self.listings) as f:
                lines = [line.split() for line in f]
        except FileNotFoundError:
            return []
        return [(kind, int(count)) + ((float(at),) if times else ())
                for kind, count, at in lines if float(at) >= since]

    def request(self, method, path, body, context, timeout, connection=None):
        own = connection is None
        if own:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=context)
        try:
            connection.request(method, path, body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            if own:
                connection.close()


def _cpu_of(pid):
    """
    CPU seconds every thread of the process ``pid`` spent so far.
    """
    total = 0
    task_dir = "/proc/%d/task" % (pid,)
    for task in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, task, "schedstat")) as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            continue
    return total / 1e9


def source_address(i):
    """
    Node ``i``'s own address on the loopback network, from 127.1.0.1 on:
    the service's limits count clients by address.
    """
    n = (1 << 16) + 1 + i
    return "127.%d.%d.%d" % (n >> 16, (n >> 8) & 255, n & 255)


class Agents(object):
    """
    The simulated agents, in ``workers`` processes, and every slice they
    received: ``received[node]`` is ``[(generation, time, port), ...]``.
    ``port`` is the service's, or a list of its replicas' (agent ``i``
    asks the ``i % len(port)``-th first).
    """

    def __init__(self, directory, certs, nodes, port, workers):
        ports = list(port) if isinstance(port, (list, tuple)) else [port]
        self.received = {node_name(i): [] for i in range(nodes)}
        self.refused = []
        self._lock = threading.Lock()
        self.processes = []
        self._readers = []
        for w in range(workers):
            plan = {"ports": ports, "ca": certs.ca, "timeout": POLL_TIMEOUT,
                    "agents": [[node_name(i), source_address(i)]
                               + list(certs.node_files(node_name(i)))
                               + [i % len(ports)]
                               for i in range(w, nodes, workers)]}
            path = os.path.join(directory, "agents-%d.json" % (w,))
            with open(path, "w") as f:
                json.dump(plan, f)
            process = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "scale_agents.py"), path],
                stdout=subprocess.PIPE, text=True)
            self.processes.append(process)
            reader = threading.Thread(target=self._read, args=(process,),
                                      daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, process):
        for line in process.stdout:
            parts = line.split()
            with self._lock:
                if parts[0] == "R":
                    self.received[parts[1]].append(
                        (int(parts[2]), float(parts[3]), int(parts[4])))
                else:
                    self.refused.append(parts[1:])

    def first(self, node, generation, since):
        """
        When ``node`` first held a slice of ``generation`` or later
        received at or after ``since``; None if it has not yet.
        """
        with self._lock:
            for held, at, _ in self.received[node]:
                if held >= generation and at >= since:
                    return at
        return None

    def answers(self, node):
        """
        ``[(generation, time, port), ...]``: the slices ``node`` received.
        """
        with self._lock:
            return list(self.received[node])

    def latest(self, node):
        with self._lock:
            held = self.received[node]
            return held[-1][0] if held else None

    def wait(self, wanted, since, timeout):
        """
        ``{node: seconds from since}`` once every node of ``wanted`` (node
        -> generation) holds that generation or a later one received after
        ``since``; None if they do not within ``timeout``.
        """
        deadline = since + timeout
        while True:
            times = {node: self.first(node, generation, since)
                     for node, generation in wanted.items()}
            if all(t is not None for t in times.values()):
                return {node: t - since for node, t in times.items()}
            if time.time() > deadline:
                return None
            time.sleep(0.05)

    def cpu(self):
        """
        CPU seconds the agents' processes spent so far.
        """
        return sum(_cpu_of(process.pid) for process in self.processes)

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(10)


# --- the measurements --------------------------------------------------------

def percentiles(seconds):
    """
    ``(p50, p99, max)`` of ``seconds``, or Nones.
    """
    if not seconds:
        return None, None, None
    ordered = sorted(seconds)

    def at(fraction):
        return ordered[min(len(ordered) - 1,
                           int(round(fraction * (len(ordered) - 1))))]
    return at(0.5), at(0.99), ordered[-1]


def change(control, certs, agents, nodes, before, after, timeout, lease,
           election=None):
    """
    Send the configuration of placement ``after``. :return: ``(times,
    answered, read)``: the seconds from sending it to each node it changes
    holding its new slice (None if not within ``timeout``), the seconds
    the PUT took to be answered, and the seconds from sending it to the
    service having read it (its ``blockmover:control:read`` message; None
    where it logs none). ``election`` as ``configuration`` takes it.
    """
    cluster_yml, app_yml = configuration(nodes, after, lease, election)
    logged = os.path.getsize(control.log)
    start = time.time()
    try:
        status, answer = control.request(
            "PUT", "/v1/configuration",
            {"cluster_yml": cluster_yml, "app_yml": app_yml},
            certs.operator(), timeout)
    except socket.timeout:
        return None, None, None
    answered = time.time() - start
    if status != 200:
        raise RuntimeError("the configuration was refused: %s" % (answer,))
    generation = answer["generation"]
    times = agents.wait({node: generation
                         for node in changed_nodes(before, after)},
                        start, timeout)
    read = [m["timestamp"] for m in control.messages(logged)
            if m.get("message_type") == "blockmover:control:read"]
    return times, answered, (read[0] - start if read else None)


def settled(control, timeout):
    """
    Once the service has listed and its CPU has gone quiet (or after
    ``timeout`` seconds).
    """
    deadline = time.time() + timeout
    quiet = 0
    last = control.cpu()
    while time.time() < deadline and quiet < 2:
        time.sleep(0.5)
        now = control.cpu()
        listed = control.listings_since(0)
        quiet = quiet + 1 if listed and now - last < 0.025 else 0
        last = now


def between_polls(answered, seconds):
    """
    Wait, if need be, until the next ``seconds`` fall between two bursts
    of the agents' polls: they were answered between the times
    ``answered`` (first, last), so they poll again ``POLL_TIMEOUT`` seconds
    later, and every ``POLL_TIMEOUT`` seconds after that while nothing
    changes for them.
    """
    first, last = answered
    margin = 2.0
    now = time.time()
    k = max(0, int((now - first) // POLL_TIMEOUT))
    while True:
        quiet_from = last + POLL_TIMEOUT * k + margin if k else now
        quiet_to = first + POLL_TIMEOUT * (k + 1) - margin
        begin = max(now, quiet_from)
        if begin + seconds <= quiet_to:
            time.sleep(begin - now)
            return
        k += 1


def refresh_cpu(control, certs, timeout, stamp=None, volume_ids=()):
    """
    The service's CPU seconds for one listing refresh (asked for as a node
    asks, by a report that changed the backend), less what it spends
    anyway (its rate over a window just before); and the kinds of listing
    it made. Measured until its CPU is back to that rate (at least
    ``WINDOW`` seconds, at most ``timeout``). With ``stamp``,
    ``volume_ids`` change in the cloud first.
    """
    report = to_data(NodeReport(
        state=NodeState(node=node_name(0), backend_id=node_name(0)),
        progress=Progress(converged=True), changed_backend=True))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", control.port, timeout=60,
        context=certs.node(node_name(0)))
    try:
        # The connection and its handshake before the windows.
        control.request("PUT", "/v1/nodes/%s/state" % (node_name(0),),
                        dict(report, changed_backend=False), None, 60,
                        connection)
        time.sleep(0.5)
        if stamp is not None:
            with open(control.changes + ".tmp", "w") as f:
                json.dump({"stamp": stamp, "volume_ids": list(volume_ids)}, f)
            os.rename(control.changes + ".tmp", control.changes)
        before = control.cpu()
        time.sleep(WINDOW)
        start = control.cpu()
        rate = (start - before) / WINDOW
        asked = time.time()
        status, answer = control.request(
            "PUT", "/v1/nodes/%s/state" % (node_name(0),), report, None, 60,
            connection)
        if status != 200:
            raise RuntimeError("the report was refused: %s" % (answer,))
        samples = [(asked, start)]
        while True:
            time.sleep(0.5)
            samples.append((time.time(), control.cpu()))
            elapsed = samples[-1][0] - asked
            if elapsed > timeout:
                break
            if elapsed >= WINDOW and len(samples) >= 3:
                (t0, c0), (t1, c1) = samples[-3], samples[-1]
                if (c1 - c0) / (t1 - t0) <= rate + 0.02:
                    break
        end_time, end = samples[-1]
    finally:
        connection.close()
    return ((end - start) - rate * (end_time - asked),
            control.listings_since(asked), rate)


def restart(control, agents, nodes, timeout):
    """
    Stop the service and start it again. :return: a dict of the seconds
    from starting it to every agent holding a slice of the new process
    (``reconnect``; None if not within ``timeout``), to it listening
    (``listening``) and to its first listing's end (``listed``), and the
    CPU seconds the service and the agents spent meanwhile.
    """
    held = {node_name(i): agents.latest(node_name(i)) for i in range(nodes)}
    control.stop()
    agents_cpu = agents.cpu()
    start = time.time()
    control.start()
    listening = time.time() - start
    times = agents.wait({node: generation + 1
                         for node, generation in held.items()},
                        start, timeout)
    listed = [at for kind, count, at in control.listings_since(start,
                                                               times=True)]
    return {"reconnect": None if times is None else max(times.values()),
            "listening": listening,
            "listed": min(listed) - start if listed else None,
            "control_cpu": control.cpu(),
            "agents_cpu": agents.cpu() - agents_cpu}


def figure(value, digits=3):
    if value is None:
        return "timeout"
    return "%.*f" % (digits, value)


def record_change(result, name, times, answered):
    """
    Put the figures of the change ``name`` in ``result``: when its PUT
    was ``answered`` and the p50, p99 and max of ``times`` (node ->
    seconds to its agent holding its slice; None when they timed out).
    """
    result[name + "_put_s"] = figure(answered)
    p50, p99, most = percentiles(list(times.values()) if times else [])
    for label, value in (("p50", p50), ("p99", p99), ("max", most)):
        result["%s_%s_s" % (label, name)] = figure(value)


def run_size(nodes, args):
    """
    Every figure of one size, as a dict of printed strings.
    """
    result = {"nodes": str(nodes)}
    directory = tempfile.mkdtemp(prefix="blockmover-scale-")
    control = agents = None
    try:
        print("%d nodes: certificates ..." % (nodes,), flush=True)
        certs = Certificates(directory, nodes)
        first, second, third = placements(nodes)
        write_stored(os.path.join(directory, "control-state"),
                     *configuration(nodes, first, args.lease))
        control = Control(directory, certs, nodes, args.profile)
        control.start()
        # Its memory with its slices made and no agent connected.
        settled(control, args.timeout)
        result["rss_alone_mb"] = figure(control.memory_mb()[0], 0)
        print("%d nodes: agents ..." % (nodes,), flush=True)
        started = time.time()
        agents = Agents(directory, certs, nodes, control.port, args.workers)
        ready = agents.wait({node_name(i): 1 for i in range(nodes)}, started,
                            args.timeout)
        result["startup_s"] = figure(None if ready is None
                                     else max(ready.values()))
        if ready is None:
            return result
        print("%d nodes: changes ..." % (nodes,), flush=True)
        for name, (before, after) in (("one_percent", (first, second)),
                                      ("all", (second, third))):
            start_all = time.time()
            times, answered, read = change(control, certs, agents, nodes,
                                           before, after, args.timeout,
                                           args.lease)
            record_change(result, name, times, answered)
            if times is None:
                return result
            if read is not None:
                result[name + "_read_s"] = figure(read)
                result["p99_%s_after_read_s" % (name,)] = figure(
                    percentiles([t - read for t in times.values()])[1])
        print("%d nodes: refreshes ..." % (nodes,), flush=True)
        # Every agent polls again 30 s after its answer: the windows fall
        # between those bursts.
        polled = (start_all + min(times.values()),
                  start_all + max(times.values()))
        idle = []
        kinds = []
        rates = []
        for _ in range(IDLE_REFRESHES):
            between_polls(polled, REFRESH_SECONDS)
            cpu, listed, rate = refresh_cpu(control, certs, args.timeout)
            idle.append(cpu)
            rates.append(rate)
            kinds.extend(kind for kind, _ in listed)
        result["idle_refresh_cpu_s"] = figure(statistics.median(idle))
        result["idle_rate"] = figure(statistics.median(rates))
        result["idle_listings"] = ",".join(kinds)
        everything = list(volume_ids(nodes))
        changed = random.Random(nodes).sample(everything,
                                              max(1, len(everything) // 100))
        between_polls(polled, REFRESH_SECONDS)
        cpu, listed, _ = refresh_cpu(control, certs, args.timeout, stamp=1,
                                     volume_ids=changed)
        result["one_percent_refresh_cpu_s"] = figure(cpu)
        result["one_percent_listing"] = ",".join(
            "%s:%d" % (kind, count) for kind, count in listed)
        rss, peak = control.memory_mb()
        result["rss_mb"] = figure(rss, 0)
        result["peak_rss_mb"] = figure(peak, 0)
        print("%d nodes: restart ..." % (nodes,), flush=True)
        restarted = restart(control, agents, nodes, args.timeout)
        result["reconnect_s"] = figure(restarted["reconnect"])
        result["listening_s"] = figure(restarted["listening"])
        result["listed_s"] = figure(restarted["listed"])
        result["reconnect_control_cpu_s"] = figure(restarted["control_cpu"],
                                                   1)
        result["reconnect_agents_cpu_s"] = figure(restarted["agents_cpu"], 1)
        result["refused"] = str(len(agents.refused))
        return result
    finally:
        if agents is not None:
            agents.stop()
        if control is not None:
            control.stop()
        if args.keep:
            print("%d nodes: kept %s" % (nodes, directory))
        else:
            shutil.rmtree(directory, ignore_errors=True)


CHANGES = [
    ("nodes", "nodes"),
    ("one_percent_put_s", "1% PUT"), ("one_percent_read_s", "1% read"),
    ("p50_one_percent_s", "1% p50"), ("p99_one_percent_s", "1% p99"),
    ("max_one_percent_s", "1% max"),
    ("p99_one_percent_after_read_s", "1% p99-rd"),
    ("all_put_s", "all PUT"), ("all_read_s", "all read"),
    ("p50_all_s", "all p50"), ("p99_all_s", "all p99"),
    ("max_all_s", "all max"), ("p99_all_after_read_s", "all p99-rd"),
]
SERVICE = [
    ("nodes", "nodes"), ("startup_s", "startup"),
    ("idle_rate", "idle rate"),
    ("idle_refresh_cpu_s", "idle cpu"),
    ("one_percent_refresh_cpu_s", "1% cpu"),
    ("rss_alone_mb", "alone MB"), ("rss_mb", "rss MB"),
    ("peak_rss_mb", "peak MB"),
    ("reconnect_s", "reconnect"), ("listening_s", "listening"),
    ("listed_s", "listed"), ("reconnect_control_cpu_s", "ctl cpu"),
    ("reconnect_agents_cpu_s", "agents cpu"),
]


def print_table(results):
    print()
    print("changes: seconds from sending the configuration to each agent "
          "it changes holding its new slice; PUT: until it was answered; "
          "read: until the service had read it; -rd: from then")
    for columns in (CHANGES, None, SERVICE):
        if columns is None:
            print("service: startup (the agents starting, the service "
                  "ready) and reconnect in seconds until every "
                  "agent holds a slice; idle rate: the service's CPU "
                  "seconds per second with every agent polling and nothing "
                  "changing; cpu: the service's CPU seconds for "
                  "one listing refresh finding nothing new / 1 % of the "
                  "volumes changed; MB: its memory with no agent connected, "
                  "with every agent polling and at its peak; after a "
                  "restart, the seconds until it "
                  "listened and until its first listing ended, and the CPU "
                  "seconds it and the agents spent until every agent held "
                  "a slice")
            continue
        print("  ".join("%10s" % (title,) for _, title in columns))
        for result in results:
            print("  ".join("%10s" % (result.get(key, "-"),)
                            for key, _ in columns))
    for result in results:
        print("nodes=%s listings: idle %s; 1%% changed %s; refused polls %s"
              % (result["nodes"], result.get("idle_listings", "-"),
                 result.get("one_percent_listing", "-"),
                 result.get("refused", "-")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, action="append",
                        help="run this size only (may be given again); "
                        "default: %s" % (", ".join(map(str, SIZES)),))
    parser.add_argument("--workers", type=int, default=3,
                        help="processes of simulated agents (default "
                        "%(default)s)")
    parser.add_argument("--profile", metavar="DIR",
                        help="write the service's cProfile statistics in DIR "
                        "(control-N-K.prof for its K-th start at N nodes)")
    parser.add_argument("--lease", type=float, default=90.0,
                        help="the cluster's lease in seconds (default "
                        "%(default)s: the agents' long polls last their own "
                        "30 s, as before leases, and the refreshes are "
                        "measured between their bursts; with a lease L an "
                        "agent polls again every L/3 s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each size's directory (the service's "
                        "log, its state, the certificates) and say where")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a phase may take before it is "
                        "given up (default %(default)s)")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    for nodes in args.nodes or SIZES:
        results.append(run_size(nodes, args))
        print_table(results)
    last = results[-1]
    print("nodes=%s p99_all_s=%s p99_one_percent_s=%s idle_refresh_cpu_s=%s "
          "rss_mb=%s reconnect_s=%s" % (
              last["nodes"], last.get("p99_all_s", "-"),
              last.get("p99_one_percent_s", "-"),
              last.get("idle_refresh_cpu_s", "-"), last.get("rss_mb", "-"),
              last.get("reconnect_s", "-")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
