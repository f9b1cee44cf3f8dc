"""
``blockmover status`` for any cluster: the pure summary of a control
service's state (moves, their phases, what is stuck and why), and the
command as a user runs it against a real ``blockmover-control`` over
mutual TLS, with nodes' reports sent as each node (with its certificate)
to show an application in the middle of a move: the tables, ``--json``,
``--watch`` ended by Ctrl-C, an unreachable control service, refused
certificates.
"""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from agents import plan
from blockmover import status
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.certificates import NODE, USER
from blockmover.identity import dataset_id, volume_metadata
from blockmover.model import (
    Mount, NodeReport, NodeState, Progress, RunningApplication, RunningStep,
    Step, StepError, Waiting, to_data,
)
from blockmover.poll import Backoff, poll
from blockmover.units import MiB
from tests.cluster_ca import OPERATOR, cluster_ca
from tests.test_client import VENV_BIN, free_port, write_configuration

BLOCKMOVER = os.path.join(VENV_BIN, "blockmover")
NOW = 1700000000.0
DATASET = dataset_id("demo", "demo")


# --- the summary, from hand-made states -----------------------------------

def node_info(converged=True, running=(), waiting=(), errors=(),
              trouble=None, reported=NOW - 1, apps=(), generation=2,
              seen=2, since=NOW - 100, address="10.0.0.1", backend_id=None):
    return {
        "address": address, "reported_at": reported, "generation": generation,
        "transitioned_at": since,
        "state": {"backend_id": backend_id, "running": {
            a: {"name": a, "pid": 1, "ready": True} for a in apps}},
        "progress": {"converged": converged, "generation": seen,
                     "running": list(running), "waiting": list(waiting),
                     "errors": list(errors), "finished": [],
                     "trouble": trouble}}


def app_info(wanted_on, running_on=(), ready_on=(), attached_to=(),
             since=NOW - 100):
    return {"dataset_id": DATASET, "wanted_on": wanted_on,
            "running_on": list(running_on), "ready_on": list(ready_on),
            "mounted_on": list(running_on), "attached_to": list(attached_to),
            "transitioned_at": since}


def state_of(nodes, app, unwanted=()):
    return {"generation": 2, "now": NOW, "listed_at": NOW - 3,
            "cluster": "demo", "nodes": nodes,
            "applications": {"demo": app} if app else {},
            "unwanted_attachments": list(unwanted)}


def step(kind, since, waiting_for=None):
    return {"step": {"kind": kind, "dataset_id": DATASET,
                     "application": "demo"},
            "since": since, "waiting_for": waiting_for}


def held_by(node):
    return {"dataset_id": DATASET, "application": "demo",
            "reason": plan.HELD_ELSEWHERE, "holder": node,
            "detail": "volume attached to %s, waiting for it to be released"
            % (node,)}


def summary_of(state, **kwargs):
    return status.summarize(state, "https://c:4523", NOW + 999, **kwargs)


def test_the_waits_that_pass_are_the_agents():
    # status tells a move's normal waits from stuck ones by these reasons.
    assert status.PASSING_WAITS == {plan.HELD_ELSEWHERE, plan.NOT_LISTED}


def test_converged_cluster():
    summary = summary_of(state_of(
        {"node1": node_info(apps=["demo"]), "node2": node_info()},
        app_info("node1", ["node1"], ["node1"], ["node1"])))
    assert summary["converged"] is True
    assert summary["now"] == NOW
    assert summary["moves"] == [] and summary["stuck"] == []
    assert summary["applications"]["demo"]["ready"] is True
    assert summary["nodes"]["node1"]["condition"] == status.CONVERGED
    assert summary["nodes"]["node1"]["since"] == NOW - 100
    shown = status.lines(summary)
    assert shown[0] == ("cluster demo at https://c:4523: generation 2, "
                        "converged (volume listing 3s old)")
    assert "no moves in progress" in shown and "nothing stuck" in shown
    assert rows(shown, "APPLICATION")["demo"] == [
        "node1", "node1", "yes", "1m40s", "node1"]


def test_move_in_its_phase_is_not_stuck_until_it_lasts():
    """
    node1 detaches the volume while node2 waits for it: a move in phase
    detach on node1, for as long as the detach runs; stuck (slow) once
    that is longer than stuck_after.
    """
    nodes = {
        "node1": node_info(False, running=[step(
            "detach", NOW - 5, "the backend to detach the volume")]),
        "node2": node_info(False, waiting=[held_by("node1")])}
    app = app_info("node2", attached_to=["node1"], since=NOW - 20)
    summary = summary_of(state_of(nodes, app))
    assert summary["converged"] is False
    assert summary["moves"] == [{
        "application": "demo", "dataset_id": DATASET, "from": ["node1"],
        "to": "node2", "phase": "detach", "node": "node1",
        "detail": "the backend to detach the volume", "since": NOW - 5,
        "seconds": 5.0}]
    assert summary["stuck"] == []
    shown = status.lines(summary)
    assert "converging (volume listing 3s old)" in shown[0]
    assert rows(shown, "MOVING")["demo"][:5] == [
        "node1", "node2", "detach", "node1", "5s"]
    assert rows(shown, "NODE")["node1"][:4] == [
        "10.0.0.1", "converging", "1m40s", "detach"]

    slow = summary_of(state_of(nodes, app), stuck_after=4)
    [stuck] = slow["stuck"]
    assert (stuck["reason"], stuck["node"], stuck["application"]) == (
        status.SLOW, "node1", "demo")
    assert stuck["detail"] == ("detach running for 5s, waiting for the "
                               "backend to detach the volume")
    assert ", 1 stuck" in status.lines(slow)[0]


def test_volume_held_by_a_node_that_does_nothing():
    """
    The volume stays attached to node1, which should not hold it and
    runs nothing for it: a wait first, held once it lasts, with what
    node1 says.
    """
    nodes = {"node1": node_info(True, backend_id="i-1"),
             "node2": node_info(False, waiting=[held_by("i-1")])}
    app = app_info("node2", attached_to=["node1"], since=NOW - 30)
    summary = summary_of(state_of(nodes, app), stuck_after=60)
    [move] = summary["moves"]
    assert (move["phase"], move["node"], move["seconds"]) == (
        status.WAITING, "node2", 30.0)
    # The wait names the holder by node, not by its backend id.
    assert summary["nodes"]["node2"]["waiting"][0]["holder"] == "node1"
    assert summary["stuck"] == []
    summary = summary_of(state_of(nodes, app), stuck_after=10)
    [stuck] = summary["stuck"]
    assert (stuck["reason"], stuck["node"]) == (status.HELD, "node1")
    assert stuck["detail"] == ("volume attached to node1, which should not "
                               "hold it; node1 reports nothing to do for it")


def test_failing_blocked_trouble_and_silent():
    error = {"step": {"kind": "detach", "dataset_id": DATASET,
                      "application": "demo"},
             "kind": "VolumeInUse", "message": "the volume is busy",
             "attempts": 3, "retry_at": NOW + 5}
    foreign = {"dataset_id": DATASET, "application": "demo",
               "reason": plan.FOREIGN_FILESYSTEM, "holder": None,
               "detail": "device /dev/loop7 holds a filesystem of "
               "something else"}
    nodes = {"node1": node_info(False, errors=[error],
                                trouble="cannot look at the node: lsblk"),
             "node2": node_info(False, waiting=[foreign]),
             "node3": node_info(reported=NOW - 600)}
    app = app_info("node3", attached_to=["node1"])
    summary = summary_of(state_of(nodes, app))
    conditions = {name: node["condition"]
                  for name, node in summary["nodes"].items()}
    assert conditions == {"node1": status.TROUBLE, "node2": status.CONVERGING,
                          "node3": status.SILENT}
    found = {(s["reason"], s["node"]): s for s in summary["stuck"]}
    assert found[(status.FAILING, "node1")]["detail"] == (
        "detach failed 3 times: the volume is busy; next try in 5s")
    assert found[(status.TROUBLE, "node1")]["detail"] == (
        "cannot look at the node: lsblk")
    assert found[(status.BLOCKED, "node2")]["detail"].startswith(
        "device /dev/loop7 holds a filesystem of something else")
    assert found[(status.SILENT, "node3")]["detail"] == (
        "node3 has not reported for 10m; check that its blockmover-agent "
        "runs")
    assert found[(status.SILENT, "node3")]["since"] == NOW - 600


def test_volume_no_application_uses():
    unwanted = {"volume_id": "v-1", "dataset_id": "d-1",
                "name": "blockmover-demo-old", "attached_to": "node1"}
    summary = summary_of(state_of({"node1": node_info()}, None, [unwanted]))
    [stuck] = summary["stuck"]
    assert stuck["reason"] == status.HELD
    assert stuck["detail"] == (
        "volume blockmover-demo-old (v-1) attached to node1, but no "
        "application of the configuration uses it; node1 reports nothing "
        "to do for it")
    assert summary["converged"] is False


def test_a_node_behind_its_slice_converges_still():
    summary = summary_of(state_of({"node1": node_info(seen=1)}, None))
    node = summary["nodes"]["node1"]
    assert node["condition"] == status.CONVERGING
    assert rows(status.lines(summary), "NODE")["node1"][3:] == [
        "slice", "2", "not", "seen", "yet"]


def test_no_configuration_yet():
    summary = summary_of({"generation": 0, "listed_at": None, "nodes": {},
                          "applications": {}})
    assert summary["converged"] is True
    # An older service says not its time: this machine's is used.
    assert summary["now"] == NOW + 999
    # Nothing to show but that.
    assert status.lines(summary) == [
        "cluster ? at https://c:4523: no configuration deployed yet; deploy "
        "one with blockmover-deploy cluster.yml app.yml"]


def test_durations():
    assert [status.duration(s) for s in (
        -3, 0, 59.9, 60, 150, 3600, 3660 + 59, 86400 * 2 + 3600 * 3)] == [
        "0s", "0s", "59s", "1m", "2m30s", "1h", "1h1m", "2d3h"]


def rows(shown, header):
    """
    The rows of the table whose header starts with ``header``: first
    column -> the others, split on blanks.
    """
    start = [i for i, line in enumerate(shown)
             if line.split()[:1] == [header]][0]
    found = {}
    for line in shown[start + 1:]:
        if not line:
            break
        first, *rest = line.split()
        found[first] = rest
    return found


# --- the command, against a real control service ---------------------------

def operator_dir(cluster="demo", name=OPERATOR):
    return os.path.dirname(cluster_ca(cluster).files(USER, name).certificate)


def blockmover_status(*args, tls_dir=None, timeout=60):
    tls_dir = operator_dir() if tls_dir is None else tls_dir
    return subprocess.run(
        [BLOCKMOVER, "status", "--tls-dir", tls_dir] + list(args),
        capture_output=True, text=True, timeout=timeout)


def report(control, node, generation, converged, running_app=False,
           steps=(), waiting=(), errors=(), changed_backend=False):
    """
    Send ``node``'s report as that node, with its certificate, as its
    agent would in the middle of a move.
    """
    mounts = {}
    running = {}
    if running_app:
        mounts = {DATASET: Mount(dataset_id=DATASET, device="/dev/loop9",
                                 mountpoint="/data")}
        running = {"demo": RunningApplication(name="demo", pid=4242,
                                              ready=True)}
    sent = NodeReport(
        state=NodeState(node=node, backend_id=node, mounts=mounts,
                        running=running),
        progress=Progress(converged=converged, generation=generation,
                          running=list(steps), waiting=list(waiting),
                          errors=list(errors)),
        changed_backend=changed_backend)
    code, answer = control.request("PUT", "/v1/nodes/%s/state" % (node,),
                                   to_data(sent))
    assert code == 200, answer


def configure(control, workdir, root, node):
    cluster, apps = write_configuration(workdir, control.url, "demo",
                                        root=root, node=node)
    with open(cluster) as f, open(apps) as g:
        code, answer = control.request("PUT", "/v1/configuration", {
            "cluster_yml": f.read(), "app_yml": g.read(),
            "cluster_path": "cluster.yml", "app_path": "app.yml"})
    assert code == 200, answer
    return cluster, answer["generation"]


def slice_generation(control, node):
    def ready():
        code, state = control.request("GET", "/v1/state")
        return state["nodes"][node]["generation"]
    return poll(ready, 20, "a slice for " + node,
                Backoff(initial=0.05, maximum=0.5))


def running_step(kind, seconds_ago, waiting_for=None):
    return RunningStep(step=Step(kind=kind, dataset_id=DATASET,
                                 application="demo"),
                       since=time.time() - seconds_ago,
                       waiting_for=waiting_for)


def test_help_documents_exit_codes():
    result = subprocess.run([BLOCKMOVER, "status", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for line in ("0  the cluster converged", "1  the cluster is still "
                 "converging", "2  bad input", "3  the control service "
                 "could not be reached", "--json", "--watch"):
        assert line in result.stdout


def test_status_of_a_move(control, workdir, loopback_root):
    """
    demo runs on node1, then is moved to node2: node1 detaches its volume
    while node2 waits for it, then node1's detach fails. Each time
    ``blockmover status`` (tables and --json) shows the nodes with their
    addresses, the application, the move in its phase and what is stuck.
    """
    cluster, _ = configure(control, workdir, loopback_root, "node1")
    backend = LoopbackBlockDeviceAPI(loopback_root, "demo", "node1")
    volume = backend.create_volume(DATASET, 16 * MiB,
                                   volume_metadata("demo", "demo"))
    backend.attach_volume(volume.volume_id, "node1")
    try:
        generation = slice_generation(control, "node1")
        report(control, "node1", generation, True, running_app=True,
               changed_backend=True)
        report(control, "node2", slice_generation(control, "node2"), True)
        # The listing the report asked for shows the volume on node1.
        poll(lambda: control.request("GET", "/v1/state")[1]["applications"]
             ["demo"]["attached_to"] == ["node1"] or None, 20,
             "the listing to show the attachment",
             Backoff(initial=0.05, maximum=0.5))
        # That listing gave node1 a new slice: it reports on that one.
        report(control, "node1", slice_generation(control, "node1"), True,
               running_app=True)

        result = blockmover_status("--cluster", cluster)
        assert result.returncode == 0, result.stdout + result.stderr
        shown = result.stdout.splitlines()
        assert shown[0].startswith("cluster demo at %s: generation 1, "
                                   "converged" % (control.url,)), shown
        nodes = rows(shown, "NODE")
        assert nodes["node1"][:2] == ["127.0.0.1", "converged"]
        assert rows(shown, "APPLICATION")["demo"][:3] == [
            "node1", "node1", "yes"]
        assert "no moves in progress" in shown and "nothing stuck" in shown

        # Moved: node1 detaches, node2 waits for the volume.
        _, generation = configure(control, workdir, loopback_root, "node2")
        moved_at = time.time()
        report(control, "node1", slice_generation(control, "node1"), False,
               steps=[running_step("detach", 4, "the backend to detach the "
                                   "volume")])
        report(control, "node2", slice_generation(control, "node2"), False,
               waiting=[Waiting(**held_by("node1"))])
        result = blockmover_status("--control", control.url)
        assert result.returncode == 1, result.stdout + result.stderr
        shown = result.stdout.splitlines()
        assert "converging" in shown[0] and "stuck" not in shown[0]
        assert rows(shown, "NODE")["node1"][:4] == [
            "127.0.0.1", "converging", "0s", "detach"]
        assert rows(shown, "APPLICATION")["demo"][:3] == ["node2", "-", "no"]
        move = rows(shown, "MOVING")["demo"]
        assert move[:4] == ["node1", "node2", "detach", "node1"]
        assert move[4] in ("4s", "5s", "6s")
        assert "nothing stuck" in shown

        result = blockmover_status("--control", control.url, "--json")
        assert result.returncode == 1, result.stderr
        data = json.loads(result.stdout)
        assert set(data) == {"version", "cluster", "control", "generation",
                             "now", "listed_at", "converged", "nodes",
                             "applications", "moves", "stuck", "error",
                             "stuck_detaches", "sites", "pushes",
                             "replicas"}
        # One site, named for the one backend; no push; one replica, on
        # files, which has no replicas to show.
        assert (list(data["sites"]), data["pushes"]) == (["main"], [])
        assert data["replicas"] is None
        assert (data["version"], data["cluster"], data["generation"],
                data["converged"], data["error"]) == (
            1, "demo", generation, False, None)
        node1 = data["nodes"]["node1"]
        assert node1["address"] == "127.0.0.1"
        assert node1["condition"] == "converging"
        assert node1["running"][0]["kind"] == "detach"
        application = data["applications"]["demo"]
        assert (application["wanted_on"], application["running_on"],
                application["attached_to"], application["ready"],
                application["placed"]) == ("node2", [], ["node1"], False,
                                           False)
        assert application["since"] >= moved_at - 1
        [move] = data["moves"]
        assert (move["from"], move["to"], move["phase"], move["node"]) == (
            ["node1"], "node2", "detach", "node1")
        assert 4 <= move["seconds"] < 30
        assert data["stuck"] == []

        # The detach fails: stuck, with what node1 says; and once the move
        # lasts longer than --stuck-after, the detach is slow too.
        report(control, "node1", slice_generation(control, "node1"), False,
               steps=[running_step("detach", 4)],
               errors=[StepError(step=Step(kind="detach", dataset_id=DATASET,
                                           application="demo"),
                                 kind="VolumeInUse",
                                 message="the volume is busy", attempts=2,
                                 retry_at=time.time() + 30)])
        result = blockmover_status("--control", control.url,
                                   "--stuck-after", "2")
        assert result.returncode == 1
        shown = result.stdout.splitlines()
        assert ", 2 stuck" in shown[0]
        header = [line.startswith("STUCK") for line in shown].index(True)
        stuck = [line.split(None, 3) for line in shown[header + 1:]]
        assert [s[:3] for s in stuck] == [["demo", "node1", "failing"],
                                          ["demo", "node1", "slow"]]
        assert "detach failed 2 times: the volume is busy; next try in" \
            in stuck[0][3]
    finally:
        backend.detach_volume(volume.volume_id, "node1")


def test_watch_follows_and_ends_on_ctrl_c(control, workdir):
    """
    --watch shows each change as it comes and ends cleanly on Ctrl-C
    (SIGINT) with the status of its last look; --watch --json writes a
    JSON object per line and ends on SIGTERM; a control service that goes
    away is shown and asked again.
    """
    configure(control, workdir, None, "node1")
    generation = slice_generation(control, "node1")
    report(control, "node1", generation, False,
           steps=[running_step("attach", 1)])
    watch = Watch(["--control", control.url, "--watch"])
    try:
        watch.wait_for(lambda out: any(
            line.startswith("demo") and "attach" in line.split()
            for line in out), "the attach to show")
        report(control, "node1", generation, True, running_app=True)
        report(control, "node2", slice_generation(control, "node2"), True)
        watch.wait_for(lambda out: any(
            line.startswith("cluster demo") and "converged" in line
            for line in out), "the cluster to show converged")
        assert watch.interrupt(signal.SIGINT) == 0
    finally:
        watch.stop()
    assert watch.errors == ""

    report(control, "node2", slice_generation(control, "node2"), False,
           steps=[running_step("attach", 1)])
    watch = Watch(["--control", control.url, "--watch", "--json"])
    try:
        watch.wait_for(lambda out: len(out) >= 1, "a first look")
        report(control, "node2", slice_generation(control, "node2"), True)
        watch.wait_for(lambda out: len(out) >= 2, "a second look")
        assert watch.interrupt(signal.SIGTERM) == 0
    finally:
        watch.stop()
    looks = [json.loads(line) for line in watch.lines]
    assert [look["converged"] for look in looks][:2] == [False, True]
    assert looks[0]["nodes"]["node2"]["running"][0]["kind"] == "attach"
    assert watch.errors == ""

    # The control service goes away: the watch says so and asks again;
    # ended then, its status says it could not read the service.
    watch = Watch(["--control", control.url, "--watch"])
    try:
        watch.wait_for(lambda out: any(
            line.startswith("cluster demo") for line in out), "a first look")
        control.stop()
        watch.wait_for(lambda out: any(
            line.startswith("cannot reach the control service at %s"
                            % (control.url,))
            and line.endswith("; asking again") for line in out),
            "the watch to say the service is gone")
        assert watch.interrupt(signal.SIGINT) == 3
    finally:
        watch.stop()
    assert "Traceback" not in watch.errors


class Watch(object):
    """
    ``blockmover status ARGS`` running, its output lines collected as
    they come.
    """

    def __init__(self, args):
        self.lines = []
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [BLOCKMOVER, "status", "--tls-dir", operator_dir()] + args,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, seen, what):
        poll(lambda: True if seen(list(self.lines)) else None, 30, what,
             Backoff(initial=0.05, maximum=0.2))

    def interrupt(self, sig):
        """
        Send ``sig`` to the watch (by its pid); its exit status.
        """
        self.process.send_signal(sig)
        code = self.process.wait(15)
        self._reader.join(5)
        return code

    def stop(self):
        """
        Kill the watch (by its pid) if it still runs; keep what it wrote
        on stderr in ``errors``.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.seek(0)
        self.errors = self._stderr.read()
        self._stderr.close()


def test_unreachable_control_service():
    url = "https://127.0.0.1:%d" % (free_port(),)
    for extra in ((), ("--json",), ("--watch",)):
        result = blockmover_status("--control", url, *extra)
        assert result.returncode == 3, (extra, result.stdout, result.stderr)
        assert ("blockmover status: cannot reach the control service at "
                "%s: connection refused" % (url,)) in result.stderr
        assert "Traceback" not in result.stderr
    data = json.loads(blockmover_status("--control", url, "--json").stdout)
    assert data["error"].startswith("cannot reach the control service")


def test_refused_certificates(control, workdir):
    """
    A revoked user, a node's certificate and another cluster's are
    refused, each with a message that says so; a cluster.yml of another
    cluster than the certificate's is bad input, and nothing is asked.
    """
    ca = cluster_ca("demo")
    revoked = "revoked-%d" % (os.getpid(),)
    revoked_dir = operator_dir(name=revoked)
    ca.revoke(USER, revoked)
    result = blockmover_status("--control", control.url, tls_dir=revoked_dir)
    assert result.returncode == 3
    assert "refused" in result.stderr and "revoked" in result.stderr, \
        result.stderr

    node = ca.files(NODE, "node1")
    result = subprocess.run(
        [BLOCKMOVER, "status", "--control", control.url, "--ca", node.ca,
         "--certificate", node.certificate, "--key", node.key],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "node node1" in result.stderr and "may not GET /v1/state" in \
        result.stderr, result.stderr

    result = blockmover_status("--control", control.url,
                               tls_dir=operator_dir("other"))
    assert result.returncode == 3
    assert "TLS refused" in result.stderr and \
        "is not cluster other's control service" in result.stderr, \
        result.stderr

    cluster, _ = write_configuration(workdir, control.url, "demo")
    result = blockmover_status("--cluster", cluster,
                               tls_dir=operator_dir("other"))
    assert result.returncode == 2
    assert "names cluster demo, but the certificate" in result.stderr
    assert "is cluster other's" in result.stderr


def test_bad_cluster_file(workdir):
    cluster = os.path.join(workdir, "cluster.yml")
    with open(cluster, "w") as f:
        f.write("version: 1\ncluster: {name: demo, control: http://x}\n"
                "nodes: {}\n")
    result = blockmover_status("--cluster", cluster)
    assert result.returncode == 2
    [message] = result.stderr.splitlines()
    assert message.startswith("blockmover status: %s:2: " % (cluster,)), \
        message
    result = blockmover_status("--cluster", os.path.join(workdir, "no.yml"))
    assert result.returncode == 2 and "cannot read it" in result.stderr


def test_status_of_replicas_one_down(control, workdir):
    """
    --control, or cluster.control, lists a replica that is down before the
    one that runs: the status comes from the second, and says so.
    """
    down = "https://127.0.0.1:%d" % (free_port(),)
    result = blockmover_status("--control", "%s,%s" % (down, control.url),
                               "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["control"] == control.url
    cluster, _ = write_configuration(
        workdir, "[%s, %s]" % (down, control.url), "demo")
    result = blockmover_status("--cluster", cluster)
    assert result.returncode == 0, result.stderr
    assert control.url in result.stdout


def test_status_of_replicas_all_down():
    urls = ["https://127.0.0.1:%d" % (free_port(),) for _ in range(2)]
    result = blockmover_status("--control", ",".join(urls))
    assert result.returncode == 3
    assert result.stderr == (
        "blockmover status: cannot reach the control service at %s: "
        "connection refused; at %s: connection refused\n" % tuple(urls))


@pytest.mark.parametrize("args", [
    ["--control", "https://127.0.0.1:1", "--name", "x"],
])
def test_local_options_with_a_cluster_elsewhere(args):
    result = blockmover_status(*args)
    assert result.returncode == 2
    assert "--name and --state-dir name a local cluster" in result.stderr


# --- sites and pushes --------------------------------------------------------

def push_entry(phase, source_progress=None, error=None, ended_at=None,
               application="demo"):
    return {"push_id": "p1", "dataset_id": dataset_id("demo", application),
            "application": application, "source_node": "node1",
            "source_site": "east", "source_volume": "vol-east",
            "target_node": "node2", "target_site": "west", "generation": 1,
            "phase": phase, "started_at": NOW - 60, "final_at": None,
            "ended_at": ended_at, "error": error,
            "source_progress": source_progress, "target_progress": None}


def push_progress(round, sent, left, rate, downtime, phase="live"):
    return {"push_id": "p1", "dataset_id": DATASET, "phase": phase,
            "round": round, "bytes_sent": sent, "bytes_left": left,
            "last_round_bytes": None, "rate": rate,
            "estimated_downtime": downtime, "settled": False,
            "source_digest": None, "target_digest": None, "error": None}


SITES = {"east": {"backend": "loopback", "nodes": ["node1"], "volumes": 2},
         "west": {"backend": "openstack", "nodes": ["node2"], "volumes": 1}}


def pushing_state(pushes):
    state = state_of({"node1": node_info(apps=["demo"]),
                      "node2": node_info(address="10.0.0.2")},
                     app_info("node1", ["node1"], ["node1"], ["node1"]))
    state.update(sites=SITES, pushes=pushes)
    return state


def test_sizes_and_short_durations_for_a_person():
    assert [status.size_text(n) for n in (
        0, 512, 2048, 88 * MiB, 412 * MiB + 1, 1288 * MiB, 20 * 1024 * MiB,
        3 * 1024 ** 4)] == [
        "0 B", "512 B", "2.0 KiB", "88 MiB", "412 MiB", "1.3 GiB",
        "20 GiB", "3.0 TiB"]
    assert [status.seconds_text(s) for s in (0.04, 1.25, 75)] == [
        "0.0s", "1.2s", "1m15s"]


def test_pushes_under_way_and_ended_lately_show_with_sites():
    live = push_entry("live", push_progress(2, 412 * MiB, 88 * MiB,
                                            310.0 * MiB, 1.21))
    failed = push_entry("failed", error="the digests differ",
                        ended_at=NOW - 30, application="web")
    old = push_entry("committed", ended_at=NOW - status.PUSH_SHOWN_FOR - 1,
                     application="old")
    summary = summary_of(pushing_state({"demo": live, "web": failed,
                                        "old": old}))
    assert summary["sites"] == SITES
    assert [p["application"] for p in summary["pushes"]] == ["demo", "web"]
    shown = summary["pushes"][0]
    assert (shown["from"], shown["to"], shown["phase"], shown["round"],
            shown["bytes_sent"], shown["bytes_left"], shown["rate"],
            shown["estimated_downtime"], shown["error"]) == (
        {"node": "node1", "site": "east"}, {"node": "node2", "site": "west"},
        "live", 2, 412 * MiB, 88 * MiB, 310.0 * MiB, 1.21, None)
    assert summary["pushes"][1]["error"] == "the digests differ"
    json.dumps(summary)
    lines = status.lines(summary)
    assert lines[2:5] == [
        "SITE  BACKEND    NODES  VOLUMES",
        "east  loopback   node1  2",
        "west  openstack  node2  1"]
    start = lines.index([line for line in lines
                         if line.startswith("PUSHING")][0])
    assert lines[start:start + 3] == [
        "PUSHING  FROM          TO            PHASE   ROUND  SENT     LEFT"
        "    RATE       DOWNTIME  ERROR",
        "demo     node1 (east)  node2 (west)  live    2      412 MiB  88 MiB"
        "  310 MiB/s  ~1.2s     -",
        "web      node1 (east)  node2 (west)  failed  -      -        -     "
        "  -          -         the digests differ"]
    assert lines[start + 3] == ""


def test_no_pushes_of_several_sites_and_one_site_as_before():
    summary = summary_of(pushing_state({}))
    assert "no pushes" in status.lines(summary)
    one = pushing_state({})
    del one["sites"], one["pushes"]
    before = status.lines(summary_of(one))
    one["sites"] = {"main": {"backend": "loopback",
                             "nodes": ["node1", "node2"], "volumes": 1}}
    one["pushes"] = {}
    assert status.lines(summary_of(one)) == before
    assert not any(line.startswith(("SITE", "PUSHING")) or
                   line == "no pushes" for line in before)


def test_push_text_says_how_far_a_push_is():
    def text(phase, progress=None, error=None):
        return status.push_text(status.push_summary(
            "demo", push_entry(phase, progress, error)))
    assert text("live", push_progress(2, 412 * MiB, 88 * MiB, 310.0 * MiB,
                                      1.21)) == (
        "push round 2: 412 MiB sent, 88 MiB left, 310 MiB/s, downtime ~1.2s")
    assert text("final", push_progress(5, 3 * MiB, 0, 290.0 * MiB, 0.01)) \
        == "push final round 5: 3.0 MiB sent, 0 B left, 290 MiB/s"
    assert text("live") == ("push starting: node2 makes the volume to push "
                            "into")
    assert text("failed", error="site west could not make the volume") == (
        "push failed: site west could not make the volume")
    assert text("committed") == "pushed to node2 (west)"


def test_replicas_and_etcd_are_shown():
    state = {"generation": 1, "now": 1000.0, "cluster": "demo",
             "nodes": {}, "applications": {}}
    answer = {
        "leader": {"name": "r2", "address": "https://10.0.0.2:4523",
                   "since": 940.0},
        "replicas": [
            {"name": "r1", "address": "https://10.0.0.1:4523",
             "leading": False, "since": None},
            {"name": "r2", "address": "https://10.0.0.2:4523",
             "leading": True, "since": 940.0}],
        "etcd": [
            {"endpoint": "https://10.0.0.1:2379", "healthy": True,
             "leader": True, "error": None},
            {"endpoint": "https://10.0.0.2:2379", "healthy": False,
             "leader": False, "error": "connection refused"}]}
    summary = status.summarize(state, "https://10.0.0.1:4523", 1000.0,
                               replicas=answer)
    assert summary["replicas"]["leader"]["name"] == "r2"
    shown = "\n".join(status.lines(summary))
    rows = {line.split()[0]: line.split() for line in shown.splitlines()
            if line.startswith("r")}
    assert rows["r2"] == ["r2", "https://10.0.0.2:4523", "leader", "1m"]
    assert rows["r1"] == ["r1", "https://10.0.0.1:4523", "follower", "-"]
    assert "unhealthy: connection refused" in shown
    # Nobody leading is said plainly; an unreadable answer too.
    summary = status.summarize(state, "x", 1000.0, replicas=dict(
        answer, leader=None, replicas=[dict(answer["replicas"][0])]))
    assert "no replica leads now" in "\n".join(status.lines(summary))
    summary = status.summarize(state, "x", 1000.0,
                               replicas={"error": "refused"})
    assert "replicas: cannot be read (refused)" in status.lines(summary)
