"""
The control service as three replicas on a three-member etcd: how long a
new leader takes to act after the leader is killed, how long until every
agent holds its slice again from a live replica, what etcd costs a
configuration change beside the file store, and the scale benchmark of
``benchmarks/scale.py`` with its agents spread over the three replicas.

Everything is real but the cloud: three ``/usr/bin/etcd`` members on
127.0.0.1 speaking mutual TLS with certificates of the cluster's CA
(``tests/etcd_process.py``), three ``blockmover-control --etcd ...
--replica-name rK --advertise https://127.0.0.1:PORT`` (its command line,
through ``benchmarks/scale_control.py`` for the in-memory cloud), and
simulated agents (``benchmarks/scale_agents.py``: long polls over HTTPS
with each node's certificate). Agent ``i`` asks replica ``i % 3`` first
and, as ``ControlClient`` does, the next one at once when its replica
cannot be reached; a follower serves its long polls itself.

The replicas read the election's times from the configuration stored in
etcd when they start, so the benchmark writes a first configuration into
etcd (as if deployed once, as ``scale.py`` writes the file store) before
it starts them: ``cluster.election: {lease: L, renew_deadline: 2L/3,
retry: 2}`` with ``--lease L`` (15 s by default, Kubernetes' figures).
Every configuration it sends later says the same (one that changed them
would make the leader hand over to be elected again). The nodes' own lease
(``cluster.lease``) is 90 s, so their long polls last 30 s as in
``scale.py``.

What it prints:

1. Failover, ``--rounds`` times (5), each with ``--kill-nodes`` agents
   (300) started afresh, spread over the three replicas: the leader (as
   ``GET /v1/replicas`` names it, once it answers a configuration) is
   SIGKILLed, then

   - ``new_leader_s``: the seconds from the kill until a survivor answers
     a configuration change (``PUT /v1/configuration``, a small change)
     200; both survivors are asked every 50 ms (first with an empty
     configuration, which followers answer 421 or 503 and the leader 400,
     then with the change). Where that time went, from the new leader's
     log: when it was elected, when its service served, when its first
     listing of the cloud ended, when the change was applied (its plan
     for people is made after that, before the answer); and ``slices``:
     when the survivor that still follows first answered a long poll with
     a slice of a higher generation (the new leader's, through etcd).
   - ``agents_back_s``: until every agent holds a slice of a generation
     above the one it held at the kill (the new leader numbers them all
     anew) from a live replica; ``moved`` agents were the dead leader's;
     ``elections``: how many times a leader was elected meanwhile (1
     unless a new leader lost its lead again).

   The killed replica is started again (it follows) before the next
   round. Figures are medians over the rounds.

2. ``etcd_vs_file``: the seconds ``PUT /v1/configuration`` takes for a
   small change (one application moved) at the leader on etcd and at one
   ``blockmover-control`` on its file store (the same cloud, the same
   configuration, started beside it), ``--changes`` times (20) each, sent
   in turn on one kept connection each; their medians and the ratio.

3. Scale at ``--nodes`` agents (10,000; 0 leaves it out), on a fresh
   etcd and fresh replicas: the seconds until every agent holds a slice
   (``startup``, all agents started at once); as ``scale.py``, the
   seconds from sending a configuration moving 1 % of the applications,
   then one moving them all, to each agent it changes holding its new
   slice (PUT, p50, p99, max); a kill of the leader as in 1.; and
   ``reconnect``: the three replicas stopped (SIGTERM) and started
   again, until every agent holds a slice of the new leader. Beside
   them, how many times a leader was elected in each phase.

The last line is ``lease_s=X new_leader_s=X agents_back_s=X
etcd_vs_file=X`` (the medians of 1. and 2.). The target is a new leader
acting within the lease plus 2 s. A phase that does not finish within
``--timeout`` seconds prints ``timeout``.

    flock /tmp/blockmover-heavy.lock .venv/bin/python benchmarks/ha.py \\
        [--nodes N] [--rounds 5] [--lease 15] [--quick] [--keep]

``--quick`` runs 3 rounds and 10 changes (``--nodes 1000 --quick`` for a
run of about four minutes); ``--keep`` keeps the replicas' and etcd's
logs and says where. Leaves nothing behind: every process it started
is stopped by its pid and its directories removed, on failure and on
Ctrl-C too.
"""

import argparse
import base64
import collections
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.scale import (  # noqa: E402
    CLUSTER, Agents, Certificates, Control, change, configuration, figure,
    percentiles, placements, record_change, stored, write_stored,
)
from benchmarks.scale_control import node_name  # noqa: E402
from blockmover.certificates import CONTROL  # noqa: E402
from blockmover.control.etcdstore import (  # noqa: E402
    CONFIGURATION, cluster_prefix,
)
from tests.cluster_ca import TestCA  # noqa: E402
from tests.etcd_process import EtcdCluster, free_port  # noqa: E402

REPLICAS = 3
ETCD_MEMBERS = 3
# cluster.lease: the agents' long polls last their own 30 s (a third of
# it), as in scale.py.
NODE_LEASE = 90.0
# How often each survivor is sent the change while none acts.
ASK_INTERVAL = 0.05
REQUEST_TIMEOUT = 30.0


def election_times(lease):
    """
    ``(lease, renew_deadline, retry)`` for ``--lease``: the renew deadline
    two thirds of the lease, as Kubernetes' 15/10/2, and a retry of 2 s
    (less for a lease too short for it).
    """
    deadline = lease * 2.0 / 3.0
    return lease, deadline, min(2.0, deadline / 2.0)


def median(values):
    """
    The median of the values that are not None; None if there are none.
    """
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


class SmallChanges(object):
    """
    Configurations of ``nodes`` nodes that each move one application from
    where the one before put it: application 0 goes to node 1, then node
    2, then 1 again...
    """

    def __init__(self, nodes, election):
        self.nodes = nodes
        self.election = election
        self._sent = 0

    def next(self):
        placement = placements(self.nodes)[0]
        placement[0] = 1 + self._sent % 2
        self._sent += 1
        cluster_yml, app_yml = configuration(self.nodes, placement,
                                             NODE_LEASE, self.election)
        return json.dumps({"cluster_yml": cluster_yml,
                           "app_yml": app_yml}).encode()


# --- the processes -----------------------------------------------------------

class Replica(Control):
    """
    One replica: ``blockmover-control --etcd`` over the in-memory cloud, in
    ``directory``, named ``name``, at a port chosen before it starts (its
    advertised URL), started again on the same one.
    """

    def __init__(self, directory, certs, nodes, name, etcd):
        os.makedirs(directory)
        Control.__init__(self, directory, certs, nodes)
        self.name = name
        self.etcd = etcd
        self.port = free_port()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % (self.port,)

    def options(self):
        return Control.options(self) + [
            "--etcd", ",".join(self.etcd), "--replica-name", self.name,
            "--advertise", self.url]

    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_size(self):
        try:
            return os.path.getsize(self.log)
        except FileNotFoundError:
            return 0


def ask(port, method, path, body, context, timeout=REQUEST_TIMEOUT,
        connection=None):
    """
    ``(status, decoded JSON or None)`` of one request to the service at
    ``port`` (``body``: bytes or None), on ``connection`` if given.
    """
    own = connection is None
    if own:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=context)
    try:
        connection.request(method, path, body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, None
    finally:
        if own:
            connection.close()


class Cluster(object):
    """
    ``ETCD_MEMBERS`` etcd members and ``REPLICAS`` replicas on them, in
    ``directory``, for ``nodes`` nodes, with the configuration of
    ``placement`` written into etcd before the replicas start. Everything
    it starts goes on ``stack`` (a ``contextlib.ExitStack``) to be stopped;
    with ``keep``, etcd's logs are copied into ``directory`` first.
    """

    def __init__(self, directory, certs, nodes, placement, election, stack,
                 keep=False):
        self.certs = certs
        self.nodes = nodes
        self.election = election
        self.operator = certs.operator()
        ca = TestCA(os.path.join(directory, "etcd-pki"), CLUSTER,
                    authority=certs.authority)
        self.etcd = EtcdCluster(ETCD_MEMBERS, ca=ca)
        stack.callback(self.etcd.cleanup)
        if keep:
            for member in self.etcd.members:
                stack.callback(shutil.copy, member.log, directory)
        self.etcd.start()
        self._seed(*configuration(nodes, placement, NODE_LEASE, election))
        self.replicas = [
            Replica(os.path.join(directory, "r%d" % (k + 1,)), certs, nodes,
                    "r%d" % (k + 1,), self.etcd.endpoints)
            for k in range(REPLICAS)]
        for replica in self.replicas:
            stack.callback(replica.stop)
        for replica in self.replicas:
            replica.start()

    def _seed(self, cluster_yml, app_yml):
        """
        The configuration in etcd as the leader keeps it, as if deployed
        once: the replicas read their election's times from it.
        """
        key = cluster_prefix(CLUSTER) + CONFIGURATION.name.encode()
        value = json.dumps(stored(cluster_yml, app_yml)).encode()
        body = json.dumps({"key": base64.b64encode(key).decode(),
                           "value": base64.b64encode(value).decode()})
        member = self.etcd.members[0]
        status, answer = ask(member.client_port, "POST", "/v3/kv/put",
                             body.encode(),
                             self.etcd.ca.ssl_context(CONTROL, None))
        if status != 200:
            raise RuntimeError("etcd refused the configuration: %s"
                               % (answer,))

    @property
    def ports(self):
        return [replica.port for replica in self.replicas]

    def named(self, name):
        for replica in self.replicas:
            if replica.name == name:
                return replica
        return None

    def leader(self, timeout):
        """
        The replica that leads and acts (answers ``GET
        /v1/configuration``), once one does within ``timeout`` seconds.
        """
        deadline = time.time() + timeout
        while time.time() < deadline:
            for replica in self.replicas:
                if not replica.running():
                    continue
                try:
                    status, answer = ask(replica.port, "GET",
                                         "/v1/replicas", None,
                                         self.operator, 10)
                except (OSError, ssl.SSLError, http.client.HTTPException):
                    continue
                if status != 200 or not answer.get("leader"):
                    continue
                leading = self.named(answer["leader"]["name"])
                if leading is None or not leading.running():
                    continue
                try:
                    status, _ = ask(leading.port, "GET",
                                    "/v1/configuration", None,
                                    self.operator, 30)
                except (OSError, ssl.SSLError, http.client.HTTPException):
                    continue
                if status == 200:
                    return leading
            time.sleep(0.2)
        raise RuntimeError("no replica led within %d s" % (timeout,))

    def log_sizes(self):
        """
        ``{name: size}`` of the replicas' logs now.
        """
        return {r.name: r.log_size() for r in self.replicas}

    def elections(self, sizes):
        """
        How many times a replica was elected since the logs were ``sizes``
        (``log_sizes``).
        """
        return sum(len(logged(r, sizes[r.name], "blockmover:election:elected"))
                   for r in self.replicas)

    def following(self, replica, timeout):
        """
        Wait until ``replica`` (started again) answers and knows a leader.
        """
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                status, answer = ask(replica.port, "GET", "/v1/replicas",
                                     None, self.operator, 10)
                if status == 200 and answer.get("leader"):
                    return
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise RuntimeError("replica %s did not follow within %d s"
                           % (replica.name, timeout))


# --- the measurements --------------------------------------------------------

def until_acting(survivors, changes, operator, since, timeout):
    """
    Ask each of ``survivors`` in turn, every ``ASK_INTERVAL``, whether it
    acts, until one answers a small change (``changes``) 200. Each is
    asked with an empty configuration first, which a follower answers 421
    or 503 and the leader's service 400 at once, whatever the size of the
    cluster; the change follows the 400. :return: ``(replica, seconds
    from since)``, ``(None, None)`` after ``timeout`` seconds.
    """
    body = changes.next()
    connections = {}

    def put(replica, body):
        connection = connections.get(replica.name)
        if connection is None:
            # A leader just started may take long to answer the change:
            # it is waited for until the phase's end, never sent twice.
            connection = connections[replica.name] = \
                http.client.HTTPSConnection(
                    "127.0.0.1", replica.port, timeout=timeout,
                    context=operator)
        try:
            return ask(replica.port, "PUT", "/v1/configuration", body,
                       operator, connection=connection)[0]
        except (OSError, ssl.SSLError, http.client.HTTPException):
            connection.close()
            del connections[replica.name]
            return None

    try:
        while time.time() < since + timeout:
            for replica in survivors:
                status = put(replica, b"{}")
                if status == 400:
                    status = put(replica, body)
                    if status == 200:
                        return replica, time.time() - since
                if status not in (None, 421, 503):
                    raise RuntimeError("replica %s answered a change %d"
                                       % (replica.name, status))
            time.sleep(ASK_INTERVAL)
        return None, None
    finally:
        for connection in connections.values():
            connection.close()


def logged(replica, offset, message_type):
    """
    The ``message_type`` messages ``replica`` logged from byte ``offset``.
    """
    return [m for m in replica.messages(offset)
            if m.get("message_type") == message_type]


def first_slice(agents, held, port, since):
    """
    When any agent was first answered a slice above the generation it
    held (``held``: node -> generation) by the replica at ``port`` after
    ``since``; None if none was.
    """
    found = [at for node, generation in held.items()
             for received, at, by in agents.answers(node)
             if by == port and at >= since and received > generation]
    return min(found) - since if found else None


def kill_leader(cluster, agents, changes, timeout):
    """
    SIGKILL the leader once every agent holds a slice; measure as the
    module says. :return: ``(dict of figures, the killed replica)``.
    """
    leader = cluster.leader(timeout)
    nodes = [node_name(i) for i in range(cluster.nodes)]
    held = {node: agents.latest(node) for node in nodes}
    moved = sum(1 for node in nodes
                if agents.answers(node)[-1][2] == leader.port)
    survivors = [r for r in cluster.replicas if r is not leader]
    offsets = cluster.log_sizes()
    killed = time.time()
    leader.kill()
    acting, new_leader = until_acting(survivors, changes, cluster.operator,
                                      killed, timeout)
    back = agents.wait({node: generation + 1
                        for node, generation in held.items()},
                       killed, timeout)
    result = {"new_leader": new_leader, "moved": moved,
              "elections": cluster.elections(offsets),
              "agents_back": None if back is None else max(back.values()),
              "agents_p50": None if back is None
              else percentiles(list(back.values()))[0]}
    if acting is not None:
        elected = logged(acting, offsets[acting.name],
                         "blockmover:election:elected")
        serving = logged(acting, offsets[acting.name],
                         "blockmover:control:leading")
        result["elected"] = (elected[0]["timestamp"] - killed
                             if elected else None)
        result["serving"] = (serving[0]["timestamp"] - killed
                             if serving else None)
        listed = logged(acting, offsets[acting.name],
                        "blockmover:control:listed")
        result["listed"] = listed[0]["timestamp"] - killed if listed else None
        configured = logged(acting, offsets[acting.name],
                            "blockmover:control:configured")
        result["configured"] = (configured[0]["timestamp"] - killed
                                if configured else None)
        follower = [r for r in survivors if r is not acting][0]
        result["slices"] = first_slice(agents, held, follower.port, killed)
    return result, leader


def steps(result):
    """
    Where the time of a failover went, for people.
    """
    return ", ".join("%s %s" % (name, figure(result.get(key)))
                     for key, name in (("elected", "elected"),
                                       ("serving", "serving"),
                                       ("listed", "listed"),
                                       ("configured", "change applied"),
                                       ("slices", "slices at a follower")))


def failover_rounds(cluster, directory, args, changes):
    """
    ``args.rounds`` kills of the leader, each with its agents started
    afresh. :return: the figures of each round.
    """
    rounds = []
    for k in range(args.rounds):
        agents = None
        try:
            started = time.time()
            agents = Agents(directory, cluster.certs, cluster.nodes,
                            cluster.ports, args.workers)
            if agents.wait({node_name(i): 1 for i in range(cluster.nodes)},
                           started, args.timeout) is None:
                raise RuntimeError("the agents did not all get a slice "
                                   "within %d s" % (args.timeout,))
            result, killed = kill_leader(cluster, agents, changes,
                                         args.timeout)
        finally:
            if agents is not None:
                agents.stop()
        rounds.append(result)
        print("  round %d: killed %s (%d agents on it): new leader acting "
              "%s s (%s), agents back %s s" % (
                  k + 1, killed.name, result["moved"],
                  figure(result["new_leader"]), steps(result),
                  figure(result["agents_back"])), flush=True)
        killed.start()
        cluster.following(killed, args.timeout)
    return rounds


def put_latency(port, changes, context, connection):
    """
    Seconds ``PUT /v1/configuration`` of the next of ``changes`` takes.
    """
    body = changes.next()
    start = time.time()
    status, answer = ask(port, "PUT", "/v1/configuration", body, context,
                         connection=connection)
    seconds = time.time() - start
    if status != 200:
        raise RuntimeError("the change was refused: %s %s" % (status, answer))
    return seconds


def etcd_against_file(cluster, directory, args, changes):
    """
    ``(etcd seconds, file seconds)``: the medians of ``args.changes``
    configuration changes at the leader on etcd and at one
    ``blockmover-control`` on its file store, sent in turn.
    """
    leader = cluster.leader(args.timeout)
    placement = placements(cluster.nodes)[0]
    write_stored(os.path.join(directory, "control-state"),
                 *configuration(cluster.nodes, placement, NODE_LEASE,
                                cluster.election))
    single = Control(directory, cluster.certs, cluster.nodes)
    own = SmallChanges(cluster.nodes, cluster.election)
    context = cluster.operator
    on_etcd, on_file = [], []
    try:
        single.start()
        connections = [
            http.client.HTTPSConnection("127.0.0.1", port,
                                        timeout=REQUEST_TIMEOUT,
                                        context=context)
            for port in (leader.port, single.port)]
        try:
            for _ in range(args.changes):
                on_etcd.append(put_latency(leader.port, changes, context,
                                           connections[0]))
                on_file.append(put_latency(single.port, own, context,
                                           connections[1]))
        finally:
            for connection in connections:
                connection.close()
    finally:
        single.stop()
    return median(on_etcd), median(on_file)


def change_at_leader(cluster, agents, before, after, timeout, tries=3):
    """
    ``scale.change`` at the replica that leads: ``(times, answered)``,
    ``(None, None)`` if it did not take the change. A change refused
    because the lead moved meanwhile is sent again to the new leader.
    """
    for _ in range(tries):
        leader = cluster.leader(timeout)
        try:
            times, answered, _ = change(
                leader, cluster.certs, agents, cluster.nodes, before, after,
                timeout, NODE_LEASE, cluster.election)
            return times, answered
        except RuntimeError as e:
            print("  %s: %s; sending it again" % (leader.name, e),
                  flush=True)
    return None, None


def scale(cluster, directory, args):
    """
    The scale benchmark's changes, a kill of the leader and a restart of
    every replica at ``cluster.nodes`` agents. :return: a dict of printed
    figures.
    """
    nodes = cluster.nodes
    result = {"nodes": str(nodes)}
    # Agents come once a leader acts.
    cluster.leader(args.timeout)
    print("%d nodes: agents ..." % (nodes,), flush=True)
    sizes = cluster.log_sizes()
    started = time.time()
    agents = Agents(directory, cluster.certs, nodes, cluster.ports,
                    args.workers)
    try:
        ready = agents.wait({node_name(i): 1 for i in range(nodes)}, started,
                            args.timeout)
        result["startup_s"] = figure(None if ready is None
                                     else max(ready.values()))
        result["startup_elections"] = str(cluster.elections(sizes))
        if ready is None:
            return result
        print("%d nodes: changes ..." % (nodes,), flush=True)
        first, second, third = placements(nodes)
        for name, (before, after) in (("one_percent", (first, second)),
                                      ("all", (second, third))):
            times, answered = change_at_leader(cluster, agents, before,
                                               after, args.timeout)
            record_change(result, name, times, answered)
            if times is None:
                return result
        print("%d nodes: killing the leader ..." % (nodes,), flush=True)
        changes = SmallChanges(nodes, cluster.election)
        killed_result, killed = kill_leader(cluster, agents, changes,
                                            args.timeout)
        for key in ("new_leader", "agents_back"):
            result["kill_" + key + "_s"] = figure(killed_result.get(key))
        result["kill_steps"] = steps(killed_result)
        result["kill_elections"] = str(killed_result["elections"])
        killed.start()
        cluster.following(killed, args.timeout)
        print("%d nodes: restarting every replica ..." % (nodes,),
              flush=True)
        held = {node_name(i): agents.latest(node_name(i))
                for i in range(nodes)}
        for replica in cluster.replicas:
            replica.process.send_signal(signal.SIGTERM)
        for replica in cluster.replicas:
            replica.stop()
        sizes = cluster.log_sizes()
        start = time.time()
        for replica in cluster.replicas:
            replica.start()
        times = agents.wait({node: generation + 1
                             for node, generation in held.items()},
                            start, args.timeout)
        result["reconnect_s"] = figure(None if times is None
                                       else max(times.values()))
        result["reconnect_elections"] = str(cluster.elections(sizes))
        result["refused"] = refusals(agents)
        return result
    finally:
        agents.stop()


def refusals(agents):
    """
    How many polls were refused, by status (``503:12,429:3``), or 0.
    """
    counted = collections.Counter(status for _, status in agents.refused)
    return ",".join("%s:%d" % each for each in sorted(counted.items())) or "0"


# --- printing --------------------------------------------------------------

ROUNDS = [
    ("new_leader", "new leader"), ("elected", "elected"),
    ("serving", "serving"), ("listed", "listed"),
    ("configured", "applied"), ("slices", "slices"),
    ("agents_p50", "agents p50"), ("agents_back", "agents back"),
    ("moved", "moved"), ("elections", "elections"),
]
# Figures that are counts, not seconds.
COUNTED = {"moved": 0, "elections": 0}
SCALE = [
    ("nodes", "nodes"), ("startup_s", "startup"),
    ("one_percent_put_s", "1% PUT"), ("p50_one_percent_s", "1% p50"),
    ("p99_one_percent_s", "1% p99"), ("max_one_percent_s", "1% max"),
    ("all_put_s", "all PUT"), ("p50_all_s", "all p50"),
    ("p99_all_s", "all p99"), ("max_all_s", "all max"),
    ("kill_new_leader_s", "kill: lead"), ("kill_agents_back_s", "kill: back"),
    ("reconnect_s", "reconnect"),
]


def print_rounds(rounds, lease):
    print()
    print("failover (lease %g s): seconds from SIGKILL of the leader to a "
          "survivor answering a change 200 (new leader); from its log, to "
          "it being elected, its service serving, its first listing's end "
          "and the change applied (its plan for people is made after "
          "that); to a follower answering a poll with its slices; to half "
          "the agents and to "
          "every agent holding a renumbered slice (agents p50, back); "
          "moved: agents that were on the killed leader; elections: of "
          "a leader, from the kill until every agent was back"
          % (lease,))
    print("  ".join("%11s" % (title,) for title in
                    ["round"] + [t for _, t in ROUNDS]))
    for k, result in enumerate(rounds):
        print("  ".join(["%11d" % (k + 1,)] + [
            "%11s" % (figure(result.get(key), COUNTED.get(key, 3)),)
            for key, _ in ROUNDS]))
    print("  ".join(["%11s" % ("median",)] + [
        "%11s" % (figure(median(r.get(key) for r in rounds),
                         COUNTED.get(key, 3)),)
        for key, _ in ROUNDS]))


def print_scale(result):
    print()
    print("scale over %d replicas: startup, then seconds from sending a "
          "change moving 1 %% / all of the applications to each agent it "
          "changes holding its slice; kill: the new leader acting and every"
          " agent back after SIGKILL of the leader; reconnect: every replica"
          " stopped and started again, until every agent holds a new slice"
          % (REPLICAS,))
    print("  ".join("%10s" % (title,) for _, title in SCALE))
    print("  ".join("%10s" % (result.get(key, "-"),) for key, _ in SCALE))
    print("kill: %s" % (result.get("kill_steps", "-"),))
    print("elections of a leader: %s while the agents came, %s after the "
          "kill, %s after the restart; polls refused: %s" % (
              result.get("startup_elections", "-"),
              result.get("kill_elections", "-"),
              result.get("reconnect_elections", "-"),
              result.get("refused", "-")))


# --- the run ---------------------------------------------------------------

_MAIN = os.getpid()


def _interrupted(signum, frame):
    # Only here: the certificates' pool of processes, forked from this
    # one, is ended with SIGTERM too.
    if os.getpid() == _MAIN:
        raise KeyboardInterrupt()
    os._exit(1)


def run(args):
    election = election_times(args.lease)
    summary = {}
    with contextlib.ExitStack() as stack:
        directory = tempfile.mkdtemp(prefix="blockmover-ha-")
        if args.keep:
            stack.callback(print, "kept %s" % (directory,))
        else:
            stack.callback(shutil.rmtree, directory, True)
        print("failover: certificates for %d nodes ..." % (args.kill_nodes,),
              flush=True)
        small = os.path.join(directory, "failover")
        os.makedirs(small)
        certs = Certificates(small, args.kill_nodes)
        placement = placements(args.kill_nodes)[0]
        with contextlib.ExitStack() as phase:
            print("failover: etcd and %d replicas (lease %g s, renew "
                  "deadline %g s, retry %g s) ..." % ((REPLICAS,) + election),
                  flush=True)
            cluster = Cluster(small, certs, args.kill_nodes, placement,
                              election, phase, args.keep)
            changes = SmallChanges(args.kill_nodes, election)
            print("failover: configuration changes on etcd and on a file "
                  "...", flush=True)
            on_etcd, on_file = etcd_against_file(
                cluster, os.path.join(small, "single"), args, changes)
            print("  PUT /v1/configuration: etcd %s s, file %s s"
                  % (figure(on_etcd), figure(on_file)), flush=True)
            print("failover: %d kills of the leader, %d agents ..."
                  % (args.rounds, args.kill_nodes), flush=True)
            rounds = failover_rounds(cluster, small, args, changes)
        print_rounds(rounds, args.lease)
        summary = {
            "new_leader": median(r["new_leader"] for r in rounds),
            "agents_back": median(r["agents_back"] for r in rounds),
            "etcd": on_etcd, "file": on_file}
        print()
        print("configuration change (PUT, median of %d): etcd %s s, file "
              "store %s s, ratio %s" % (
                  args.changes, figure(on_etcd), figure(on_file),
                  figure(ratio(on_etcd, on_file), 2)), flush=True)
        if args.nodes:
            big = os.path.join(directory, "scale")
            os.makedirs(big)
            print("%d nodes: certificates ..." % (args.nodes,), flush=True)
            certs = Certificates(big, args.nodes)
            with contextlib.ExitStack() as phase:
                print("%d nodes: etcd and %d replicas ..."
                      % (args.nodes, REPLICAS), flush=True)
                cluster = Cluster(big, certs, args.nodes,
                                  placements(args.nodes)[0], election, phase,
                                  args.keep)
                result = scale(cluster, big, args)
            print_scale(result)
    print("lease_s=%g new_leader_s=%s agents_back_s=%s etcd_vs_file=%s" % (
        args.lease, figure(summary["new_leader"]),
        figure(summary["agents_back"]),
        figure(ratio(summary["etcd"], summary["file"]), 2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10000,
                        help="agents of the scale phase, spread over the "
                        "replicas; 0 to leave it out (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="kills of the leader (default 5, 3 with "
                        "--quick)")
    parser.add_argument("--kill-nodes", type=int, default=300,
                        help="agents during the kills (default %(default)s)")
    parser.add_argument("--changes", type=int, default=None,
                        help="configuration changes sent to each store "
                        "(default 20, 10 with --quick)")
    parser.add_argument("--lease", type=float, default=15.0,
                        help="the election's lease in seconds; its renew "
                        "deadline is two thirds of it and its retry 2 s "
                        "(default %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the directory (the replicas' logs, the "
                        "certificates) and say where; etcd's data goes")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and changes")
    parser.add_argument("--workers", type=int, default=3,
                        help="processes of simulated agents (default "
                        "%(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a phase may take before it is given "
                        "up (default %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.changes is None:
        args.changes = 10 if args.quick else 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted; everything it started is stopped",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
