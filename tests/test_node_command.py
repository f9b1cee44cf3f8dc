"""
``blockmover node fence|confirm-down NODE`` against a real control service
over mutual TLS: only users may, each is recorded durably with who and
when, a node that still renews its lease cannot be confirmed down, and
``blockmover status`` shows the result.
"""

import json
import os
import subprocess

import pytest

from blockmover import cli, status_command
from blockmover.certificates import NODE, USER
from tests.cluster_ca import OPERATOR
from tests.test_client import free_port
from tests.test_control_api import CLUSTER, Control, report
from tests.test_control_fencing import fence_script, wait_for_failure
from tests.test_status import BLOCKMOVER, operator_dir


def blockmover_node(action, node, control, tls_dir=None, urls=None):
    """
    ``blockmover node ACTION NODE`` to ``control``, or to ``urls`` (the
    value of --control) when given.
    """
    return subprocess.run(
        [BLOCKMOVER, "node", action, node, "--control", urls or control.url,
         "--tls-dir", tls_dir or operator_dir()],
        capture_output=True, text=True, timeout=60)


@pytest.fixture
def control(tmp_path):
    service = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    service.start()
    yield service
    assert service.stop() in (0, None), "blockmover-control did not stop"


def records(control):
    with open(os.path.join(control.state_dir, "failures.json")) as f:
        return json.load(f)


def test_confirm_down_is_recorded_with_who_and_when(control, loopback_root):
    cluster = CLUSTER.format(root=loopback_root)
    status, answer = control.configure(cluster)
    assert status == 200, answer
    # node1 renews its lease: it is not down.
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                report("node1"))
    assert status == 200
    refused = blockmover_node("confirm-down", "node1", control)
    assert refused.returncode == 1, refused.stderr
    assert "renewed its lease" in refused.stderr
    # Nothing was recorded.
    assert not os.path.exists(os.path.join(control.state_dir,
                                           "failures.json"))
    # node2 never renewed its lease since the service started, and an
    # operator knows it is off.
    done = blockmover_node("confirm-down", "node2", control)
    assert done.returncode == 0, done.stderr
    assert "node2 is confirmed down by" in done.stdout
    confirmed = records(control)["nodes"]["node2"]["confirmed_down"]
    assert "operator" in confirmed["by"]
    status, state = control.request("GET", "/v1/state")
    failure = state["nodes"]["node2"]["failure"]
    assert failure["state"] == "confirmed-down"
    assert failure["confirmed_down"] == confirmed
    assert failure["down_since"] == confirmed["at"]
    # Again: nothing changes but the answer.
    again = blockmover_node("confirm-down", "node2", control)
    assert again.returncode == 0, again.stderr
    shown = subprocess.run(
        [BLOCKMOVER, "status", "--control", control.url, "--tls-dir",
         operator_dir()], capture_output=True, text=True, timeout=60)
    assert "confirmed-down" in shown.stdout
    assert "confirmed down by" in shown.stdout


def test_only_users_fence_or_confirm(control, loopback_root):
    status, answer = control.configure(CLUSTER.format(root=loopback_root))
    assert status == 200, answer
    for action in ("fence", "confirm-down"):
        # A node, even the node itself, may not.
        status, answer = control.request(
            "POST", "/v1/nodes/node2/%s" % (action,), {}, kind=NODE,
            name="node2")
        assert status == 403, answer
        assert "only an operator" in answer["errors"][0]
    status, answer = control.request("POST", "/v1/nodes/node9/fence", {},
                                     kind=USER, name=OPERATOR)
    assert status == 404, answer
    unknown = blockmover_node("fence", "node9", control)
    assert unknown.returncode == 1 and "node9" in unknown.stderr
    assert not os.path.exists(os.path.join(control.state_dir,
                                           "failures.json"))


def test_an_operator_fences_a_node(tmp_path, loopback_root):
    command, calls = fence_script(str(tmp_path), "exit 0")
    control = Control(str(tmp_path / "state"),
                      str(tmp_path / "control.log")).start()
    try:
        # A long lease: the service would not fence node2 by itself, and
        # node2 holds nothing.
        cluster = CLUSTER.format(root=loopback_root).replace(
            "  backend:", "  lease: 3600\n  fencing: {method: command, "
            "command: [%s]}\n  backend:" % (command,))
        status, answer = control.configure(cluster)
        assert status == 200, answer
        done = blockmover_node("fence", "node2", control)
        assert done.returncode == 0, done.stderr
        assert "node2" in done.stdout
        failure = wait_for_failure(control, "node2",
                                   lambda f: f["state"] == "fenced" and f,
                                   "node2 to be fenced")
        assert "operator" in failure["fence"]["requested_by"]
        # Fenced already: not fenced again.
        again = blockmover_node("fence", "node2", control)
        assert again.returncode == 0, again.stderr
        assert "node2 is fenced" in again.stdout
    finally:
        control.stop()
    assert len(open(calls).read().splitlines()) == 1


def test_a_replica_down_is_passed_over(control, loopback_root):
    """
    --control lists a replica that is down before the one that runs: the
    request goes to the second.
    """
    status, answer = control.configure(CLUSTER.format(root=loopback_root))
    assert status == 200, answer
    down = "https://127.0.0.1:%d" % (free_port(),)
    done = blockmover_node("confirm-down", "node2", control,
                           urls="%s,%s" % (down, control.url))
    assert done.returncode == 0, done.stderr
    assert "node2 is confirmed down by" in done.stdout


@pytest.mark.parametrize("command", [
    ["node", "fence", "node3"], ["node", "confirm-down", "node3"],
    ["volume", "list"], ["volume", "remove", "vol-1"], ["status"]])
def test_control_option_takes_several_replicas(command):
    """
    Every command that asks a control service takes --control with the
    URLs of several replicas, separated by commas, and says so in --help;
    one not https is bad input naming it.
    """
    parser = cli.parser(local_cluster=False)
    args = parser.parse_args(command + [
        "--control", "https://10.0.0.1:4523, https://10.0.0.2:4523/",
        "--tls-dir", operator_dir()])
    assert args.control == ("https://10.0.0.1:4523", "https://10.0.0.2:4523")
    target = status_command.cluster_target(args)
    assert target.urls == args.control
    args.control = ("https://10.0.0.1:4523", "http://10.0.0.2:4523")
    with pytest.raises(status_command.BadInput) as error:
        status_command.cluster_target(args)
    assert "http://10.0.0.2:4523 is not https://" in str(error.value)
    shown = subprocess.run([BLOCKMOVER] + command + ["--help"],
                           capture_output=True, text=True, timeout=60)
    assert "--control URL[,URL...]" in shown.stdout
    assert "several of its replicas" in shown.stdout
