"""
``blockmover-deploy`` as a user runs it: bad input, a dry run against the
real control service, an unreachable service, a wait that times out, the
task id travelling to the service; and the pure pieces behind its progress
display.
"""

import argparse
import io
import json
import os
import subprocess

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from blockmover import deploy as deploy_command
from blockmover.certificates import USER
from blockmover.config import load_deployment
from blockmover.convergence import (
    ErrorWatch, application_line, application_placed, pending,
)
from blockmover.display import LiveLines
from blockmover.identity import dataset_id
from tests.cluster_ca import OPERATOR, cluster_ca
from tests.test_client import (
    VENV_BIN, free_port, write_configuration,
)


def deploy(*args, timeout=60, cluster="demo"):
    """
    ``blockmover-deploy`` as the operator of ``cluster``.
    """
    operator = cluster_ca(cluster).files(USER, OPERATOR)
    return subprocess.run(
        [os.path.join(VENV_BIN, "blockmover-deploy"), "--tls-dir",
         os.path.dirname(operator.certificate)] + list(args),
        capture_output=True, text=True, timeout=timeout)


def test_help_documents_exit_codes():
    result = deploy("--help")
    assert result.returncode == 0
    for line in ("0  the configuration was accepted",
                 "1  convergence failed", "2  bad input",
                 "3  the control service could not be reached"):
        assert line in result.stdout


def test_bad_file_is_one_line_and_nothing_sent(workdir):
    """
    A placement naming an unknown node: exit 2 and one line naming the
    file and line; the (unreachable) control service is never tried.
    """
    url = "https://127.0.0.1:%d" % (free_port(),)
    cluster, apps = write_configuration(workdir, url, "bad")
    with open(cluster) as f:
        text = f.read().replace("node2: []", "node3: [demo]")
    with open(cluster, "w") as f:
        f.write(text)
    line = text.splitlines().index("  node3: [demo]") + 1
    result = deploy(cluster, apps)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("%s:%d: " % (cluster, line)), message
    assert "node3" in message


def test_missing_file_is_bad_input(workdir):
    url = "https://127.0.0.1:%d" % (free_port(),)
    cluster, _ = write_configuration(workdir, url, "missing")
    missing = os.path.join(workdir, "nope.yml")
    result = deploy(cluster, missing)
    assert result.returncode == 2
    [message] = result.stderr.splitlines()
    assert message.startswith(missing + ": ")


def test_unreachable_control(workdir):
    """
    Nothing listens at cluster.control: exit 3 and a message naming it.
    """
    url = "https://127.0.0.1:%d" % (free_port(),)
    cluster, apps = write_configuration(workdir, url, "gone")
    result = deploy(cluster, apps)
    assert result.returncode == 3
    assert ("cannot reach the control service at %s: connection refused"
            % (url,)) in result.stderr
    assert "Traceback" not in result.stderr


def test_several_replicas_unreachable(workdir):
    """
    None of cluster.control's replicas listens: exit 3 and a message
    naming each.
    """
    urls = ["https://127.0.0.1:%d" % (free_port(),) for _ in range(2)]
    cluster, apps = write_configuration(workdir, "[%s]" % (", ".join(urls),),
                                        "gone")
    result = deploy(cluster, apps)
    assert result.returncode == 3
    assert ("cannot reach the control service at %s: connection refused; "
            "at %s: connection refused" % tuple(urls)) in result.stderr


def test_replica_down_is_passed_over_within_the_deploy_task(control,
                                                            workdir):
    """
    cluster.control lists a replica that is down before the one that runs:
    the deploy goes to the second, and its log says so within the deploy's
    task.
    """
    down = "https://127.0.0.1:%d" % (free_port(),)
    cluster, apps = write_configuration(
        workdir, "[%s, %s]" % (down, control.url), "demo")
    log = os.path.join(workdir, "deploy.log")
    result = deploy("--log", log, cluster, apps)
    assert result.returncode == 0, result.stderr
    assert "configuration accepted" in result.stdout
    with open(log) as f:
        messages = [json.loads(line) for line in f]
    [task] = {m["task_uuid"] for m in messages
              if m.get("action_type") == "blockmover:deploy"}
    [moved] = [m for m in messages if m.get("message_type") ==
               "blockmover:control-client:replica"]
    assert moved["task_uuid"] == task
    assert (moved["replica"], moved["to"], moved["reason"]) == (
        down, control.url, "connection refused")


def test_control_option_takes_several_replicas():
    """
    --control takes the URLs of several replicas, separated by commas; an
    empty one is refused as argparse refuses, and one not https as bad
    input naming it.
    """
    args = deploy_command.parse_args(
        ["--control", "https://10.0.0.1:4523,https://10.0.0.2:4523",
         "cluster.yml", "app.yml"])
    assert args.control == ("https://10.0.0.1:4523", "https://10.0.0.2:4523")
    assert "URL[,URL...]" in deploy("--help").stdout
    result = deploy("--control", "https://10.0.0.1:4523,", "c.yml", "a.yml")
    assert result.returncode == 2
    assert "argument --control: a control service URL must be" in \
        result.stderr


def test_control_option_refuses_plain_http(workdir):
    cluster, apps = write_configuration(workdir, "https://127.0.0.1:1",
                                        "plain")
    result = deploy("--control", "https://127.0.0.1:1,http://127.0.0.1:2",
                    cluster, apps)
    assert result.returncode == 2
    assert result.stderr == (
        "blockmover-deploy: the control service's URL http://127.0.0.1:2 "
        "is not https://; blockmover speaks only mutual TLS with it\n")


def test_dry_run_changes_nothing(control, workdir):
    """
    --dry-run prints the plan per node, and the service stores nothing:
    no configuration, no applications wanted anywhere.
    """
    cluster, apps = write_configuration(workdir, control.url, "demo")
    result = deploy("--dry-run", cluster, apps)
    assert result.returncode == 0, result.stderr
    assert "node1:\n  demo: create a " in result.stdout
    assert "node2: nothing to change" in result.stdout
    assert "dry run: nothing was changed" in result.stdout
    code, _ = control.request("GET", "/v1/configuration")
    assert code == 404
    code, state = control.request("GET", "/v1/state")
    assert code == 200 and not state.get("applications")


def test_refused_configuration(control, workdir):
    """
    A configuration valid on its own but over the backend's limits: the
    service refuses it, the deploy exits 3 with its reasons, and nothing
    is stored.
    """
    cluster, apps = write_configuration(workdir, control.url, "demo")
    with open(cluster) as f:
        text = f.read()
    with open(cluster, "w") as f:
        f.write(text.replace("    name: loopback\n",
                             "    name: loopback\n"
                             "    limits: {max_size: 8M}\n"))
    result = deploy(cluster, apps)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == ("blockmover-deploy: the control service refused "
                        "the configuration:")
    assert any("demo" in line and "max_size" in line for line in lines[1:])
    assert control.request("GET", "/v1/configuration")[0] == 404


def test_wait_times_out_without_agents_and_task_travels(control, workdir):
    """
    With no agent running, --wait gives up after --timeout with exit 1 and
    the reason; the configuration was stored; the deploy's eliot task id
    reached the control service's log.
    """
    cluster, apps = write_configuration(workdir, control.url, "demo")
    log = os.path.join(workdir, "deploy.log")
    result = deploy("--wait", "--timeout", "1.5", "--log", log, cluster,
                    apps)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timed out after 1.5 seconds" in result.stderr
    assert "demo does not run and serve where it should yet" in result.stderr
    assert "demo -> node1 [not running]" in result.stdout
    code, stored = control.request("GET", "/v1/configuration")
    assert code == 200 and stored["generation"] >= 1
    with open(log) as f:
        tasks = {m["task_uuid"] for m in map(json.loads, f)
                 if m.get("action_type") == "blockmover:deploy"}
    [task] = tasks
    with open(control.log) as f:
        assert task in f.read()


# --- the pure pieces ---------------------------------------------------------

CLUSTER = """\
version: 1
cluster: {name: c, control: "https://127.0.0.1:1"}
nodes: {n1: {address: 10.0.0.1}, n2: {address: 10.0.0.2}}
deployment: {n1: [], n2: [db]}
"""
APPS = """\
version: 1
applications:
  db: {command: [sleep, "1"], volume: {mountpoint: /data}}
"""


def _state(running_on, progress=None, node="n2", ready_on=None):
    nodes = {"n1": {"progress": {"converged": True, "generation": 3}},
             node: {"progress": progress}}
    return {"generation": 3, "nodes": nodes,
            "applications": {"db": {
                "wanted_on": "n2", "running_on": running_on,
                "ready_on": running_on if ready_on is None else ready_on}}}


def test_pending_until_placed_ready_and_converged():
    deployment = load_deployment(CLUSTER, APPS)
    moving = _state(["n1"], {"converged": False, "generation": 3})
    assert pending(deployment, moving, {"n1": 2, "n2": 3}) == [
        "db does not run and serve where it should yet",
        "n2 is still converging"]
    stale = _state(["n2"], {"converged": True, "generation": 2})
    assert pending(deployment, stale, {"n1": 2, "n2": 3}) == [
        "n2 has not seen the new configuration"]
    starting = _state(["n2"], {"converged": True, "generation": 4},
                      ready_on=[])
    assert pending(deployment, starting, {"n1": 2, "n2": 3}) == [
        "db does not run and serve where it should yet"]
    done = _state(["n2"], {"converged": True, "generation": 4})
    assert pending(deployment, done, {"n1": 2, "n2": 3}) == []
    assert not application_placed("db", None, done)


def _step(kind, dataset, application=None):
    return {"kind": kind, "dataset_id": dataset, "application": application}


def test_application_line_shows_steps_and_current():
    dataset = dataset_id("c", "db")
    progress = {
        "converged": False, "generation": 3,
        "running": [{"step": _step("mount", dataset), "since": 100.0,
                     "waiting_for": None}],
        "finished": [{"step": _step("attach", dataset), "seconds": 1.25,
                      "finished_at": 99.0},
                     {"step": _step("start", dataset_id("c", "other"),
                                    "other"),
                      "seconds": 9, "finished_at": 90.0}],
        "waiting": [], "errors": []}
    line = application_line("db", "n2", _state([], progress), "c", 102.5)
    assert line == "db -> n2 [not running]  n2: attach 1.2s, mount... (2.5s)"
    starting = _state(["n2"], {
        "converged": False, "generation": 3,
        "running": [{"step": _step("ready", dataset, "db"), "since": 101.0,
                     "waiting_for": "the application to serve"}],
        "finished": [{"step": _step("start", dataset, "db"),
                      "seconds": 0.01, "finished_at": 101.0}]}, ready_on=[])
    assert application_line("db", "n2", starting, "c", 102.5) == (
        "db -> n2 [starting on n2, not ready yet]  n2: start 0.0s, "
        "ready... (1.5s)")


def test_application_line_shows_why_it_waits():
    dataset = dataset_id("c", "db")
    progress = {"converged": False, "generation": 3, "waiting": [{
        "dataset_id": dataset, "application": "db", "reason": "held elsewhere",
        "detail": "volume attached to n1, waiting for it to be released",
        "holder": "n1"}]}
    assert application_line("db", "n2", _state(["n1"], progress), "c",
                            0.0) == (
        "db -> n2 [running on n1]  n2: waiting: volume attached to n1, "
        "waiting for it to be released")


def test_error_watch_waits_for_patience():
    watch = ErrorWatch(patience=10)
    error = {"step": _step("detach", "x"), "kind": "FilesystemBusy",
             "message": "detach x: busy", "attempts": 3, "retry_at": None}
    state = _state([], {"converged": False, "generation": 3,
                        "errors": [error]})
    assert watch.persistent(state, 100.0) is None
    assert watch.persistent(state, 105.0) is None
    assert watch.persistent(state, 110.0) == "n2: detach x: busy"
    cleared = _state([], {"converged": False, "generation": 3})
    assert watch.persistent(cleared, 111.0) is None
    assert watch.persistent(state, 112.0) is None


def test_live_lines_redraw_on_tty_and_append_otherwise():
    plain = io.StringIO()
    lines = LiveLines(plain, tty=False)
    lines.show(["a 1", "b 1"])
    lines.show(["a 1", "b 2"])
    assert plain.getvalue() == "a 1\nb 1\nb 2\n"
    tty = io.StringIO()
    lines = LiveLines(tty, tty=True)
    lines.show(["a 1", "b 1"])
    lines.show(["a 2"])
    out = tty.getvalue()
    assert out.count("\x1b[2A") == 1
    assert out.endswith("\r\x1b[2Ka 2\n\r\x1b[2K\n")


def test_aliases_refused_locally_and_nothing_sent(workdir):
    """
    The billion laughs in app.yml: exit 2 at once, one line naming the file
    and the line of the first anchor; the (unreachable) control service is
    never tried.
    """
    from tests.test_config import BILLION_LAUGHS
    url = "https://127.0.0.1:%d" % (free_port(),)
    cluster, apps = write_configuration(workdir, url, "laughs")
    with open(apps, "w") as f:
        f.write(BILLION_LAUGHS)
    result = deploy(cluster, apps)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("%s:3: anchor &a is not supported" % (apps,))


# --- pushes while waiting ----------------------------------------------------

SITES_CLUSTER = """\
version: 1
cluster:
  name: c
  control: "https://127.0.0.1:1"
  sites:
    east: {backend: {name: loopback, root: /srv/east}}
    west: {backend: {name: loopback, root: /srv/west}}
nodes:
  n1: {address: 10.0.0.1, site: east}
  n2: {address: 10.0.0.2, site: west}
deployment: {n1: [], n2: [db]}
"""
MiB = 1024 ** 2


def _push(phase, progress=None, error=None, target="n2"):
    return {"push_id": "p1", "dataset_id": dataset_id("c", "db"),
            "application": "db", "source_node": "n1", "source_site": "east",
            "source_volume": "v1", "target_node": target,
            "target_site": "west", "generation": 1, "phase": phase,
            "started_at": 10.0, "final_at": None, "ended_at": None,
            "error": error, "source_progress": progress,
            "target_progress": None}


def _round(number, sent, left, rate, downtime):
    return {"push_id": "p1", "dataset_id": dataset_id("c", "db"),
            "phase": "live", "round": number, "bytes_sent": sent,
            "bytes_left": left, "last_round_bytes": None, "rate": rate,
            "estimated_downtime": downtime, "settled": False,
            "source_digest": None, "target_digest": None, "error": None}


class _States(object):
    """
    A control client answering ``get_state`` with each state in turn, the
    last again and again.
    """

    def __init__(self, states):
        self._states = list(states)

    def get_state(self):
        state = self._states[0]
        if len(self._states) > 1:
            self._states.pop(0)
        return succeed(state)


def _follow(states):
    """
    ``deploy._follow`` of ``states`` on a clock: what it showed, and the
    ``Abort`` it ended with (None if it did not end after a minute).
    """
    clock = Clock()
    out = io.StringIO()
    args = argparse.Namespace(timeout=600.0, error_patience=60.0)
    d = deploy_command._follow(clock, _States(states), args,
                               load_deployment(SITES_CLUSTER, APPS), out)
    ended = []
    d.addErrback(lambda failure: ended.append(
        failure.trap(deploy_command.Abort) and failure.value))
    for _ in range(60):
        clock.advance(1)
    return out.getvalue().splitlines(), (ended or [None])[0]


def test_wait_shows_how_far_a_push_is():
    live = _state(["n1"], {"converged": False, "generation": 3})
    live["pushes"] = {"db": _push("live", _round(
        2, 412 * MiB, 88 * MiB, 310.0 * MiB, 1.21))}
    shown, ended = _follow([live, live])
    assert ended is None
    assert shown == [
        "db -> n2 [running on n1]  push round 2: 412 MiB sent, 88 MiB "
        "left, 310 MiB/s, downtime ~1.2s"]


def test_a_failed_push_ends_the_wait_with_its_error():
    live = _state(["n1"], {"converged": False, "generation": 3})
    live["pushes"] = {"db": _push("live")}
    failed = dict(live, pushes={"db": _push(
        "failed", error="the digests of n1 and n2 differ")})
    shown, ended = _follow([live, live, failed])
    assert shown[0] == ("db -> n2 [running on n1]  push starting: n2 makes "
                        "the volume to push into")
    assert shown[-1] == ("db -> n2 [running on n1]  push failed: the "
                         "digests of n1 and n2 differ")
    assert ended.code == deploy_command.EXIT_NOT_CONVERGED
    assert str(ended) == (
        "convergence failed: the push of db from n1 (east) to n2 (west) "
        "failed: the digests of n1 and n2 differ")


def test_a_push_elsewhere_is_not_this_deploys():
    # A push to another node than this configuration's failed before: the
    # deploy does not end for it.
    moving = _state(["n1"], {"converged": False, "generation": 3})
    moving["pushes"] = {"db": _push("failed", error="old", target="n3")}
    shown, ended = _follow([moving])
    assert ended is None
    assert shown == ["db -> n2 [running on n1]"]
