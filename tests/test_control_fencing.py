"""
Fencing by the operator's command: the command alone as a real child
process (exit 0 fenced, anything else not), then a real control service
over TLS that fences a node whose lease lapsed, records the attempt and
its result in its state directory, and after a restart neither fences
nor decides again.
"""

import json
import os
import stat

import pytest

from blockmover.backends.interface import FenceFailed
from blockmover.control.fencing import run_fence_command
from blockmover.model import Node
from blockmover.poll import Backoff, poll
from tests.test_control_api import CLUSTER, Control

NODE = Node(name="node1", address="10.77.0.11", instance_id="server-1")


def fence_script(directory, body):
    """
    An executable fence command in ``directory``: it appends its
    arguments and the node's environment to ``calls`` there, then runs
    ``body`` (shell).
    """
    path = os.path.join(directory, "fence-node")
    calls = os.path.join(directory, "calls")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                'echo "$1 $2 $BLOCKMOVER_CLUSTER $BLOCKMOVER_NODE '
                '$BLOCKMOVER_NODE_ADDRESS $BLOCKMOVER_NODE_INSTANCE_ID" '
                '>> %s\n%s\n' % (calls, body))
    os.chmod(path, stat.S_IRWXU)
    return path, calls


def calls_of(calls):
    if not os.path.exists(calls):
        return []
    with open(calls) as f:
        return f.read().splitlines()


def test_exit_0_means_fenced(tmp_path):
    command, calls = fence_script(str(tmp_path), "exit 0")
    proof = run_fence_command([command], "demo", NODE, deadline=30)
    assert "exited 0" in proof
    assert calls_of(calls) == ["node1 10.77.0.11 demo node1 10.77.0.11 "
                               "server-1"]


def test_a_failing_command_is_no_fence(tmp_path):
    command, calls = fence_script(
        str(tmp_path), "echo 'BMC 10.0.0.5 does not answer' >&2; exit 3")
    with pytest.raises(FenceFailed) as info:
        run_fence_command([command, "--password", "hunter2"], "demo", NODE,
                          deadline=30)
    message = str(info.value)
    assert "exited 3: BMC 10.0.0.5 does not answer" in message
    # The command line may hold a password: never in the message.
    assert "hunter2" not in message
    assert len(calls_of(calls)) == 1


def test_a_command_past_its_deadline_is_killed_and_no_fence(tmp_path):
    command, _ = fence_script(str(tmp_path), "exec sleep 600")
    with pytest.raises(FenceFailed) as info:
        run_fence_command([command], "demo", NODE, deadline=1)
    assert "did not end within its deadline of 1 seconds" in str(info.value)


def test_a_missing_command_is_no_fence(tmp_path):
    with pytest.raises(FenceFailed) as info:
        run_fence_command([str(tmp_path / "nothing")], "demo", NODE,
                          deadline=5)
    assert "could not be started" in str(info.value)


# --- in the control service -------------------------------------------------

def fenced_cluster(root, command, lease=1):
    return CLUSTER.format(root=root).replace(
        "  backend:", "  lease: %s\n  fencing: {method: command, command: "
        "[%s], retries: 1}\n  backend:" % (lease, command))


def failure_of(control, node):
    status, state = control.request("GET", "/v1/state")
    assert status == 200
    return state["nodes"][node]["failure"]


def wait_for_failure(control, node, check, what):
    return poll(lambda: check(failure_of(control, node)) or None, 30, what,
                Backoff(initial=0.1, maximum=0.5))


def records(control):
    with open(os.path.join(control.state_dir, "failures.json")) as f:
        return json.load(f)


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path)


def start_control(directory):
    return Control(os.path.join(directory, "state"),
                   os.path.join(directory, "control.log")).start()


def test_an_unresponsive_node_is_fenced_once(directory, loopback_root):
    """
    node1 runs mongodb and stops renewing its lease: the service fences it
    with the command, records that, and after a restart it is still
    fenced, not fenced again. node2 holds nothing: it is not fenced.
    """
    command, calls = fence_script(directory, "exit 0")
    control = start_control(directory)
    try:
        status, answer = control.configure(fenced_cluster(loopback_root,
                                                          command))
        assert status == 200, answer
        failure = wait_for_failure(
            control, "node1", lambda f: f["state"] == "fenced" and f,
            "node1 to be fenced")
        assert failure["fence"]["result"] == "fenced"
        assert failure["fence"]["method"] == "command"
        assert failure["fence"]["requested_by"] == "control service"
        assert failure["down_since"] is not None
        assert calls_of(calls) == ["node1 10.77.0.11 demo node1 10.77.0.11 "]
        assert records(control)["nodes"]["node1"]["fence"]["result"] == \
            "fenced"
        assert failure_of(control, "node2")["state"] == "unresponsive"
    finally:
        control.stop()
    control = start_control(directory)
    try:
        assert failure_of(control, "node1")["state"] == "fenced"
        assert failure_of(control, "node1")["fence"]["finished_at"] == \
            failure["fence"]["finished_at"]
        # node2's lease lapses again after the restart: still not fenced,
        # it holds nothing.
        wait_for_failure(control, "node2",
                         lambda f: f["state"] == "unresponsive",
                         "node2 to be unresponsive")
    finally:
        control.stop()
    assert len(calls_of(calls)) == 1


def test_a_fence_that_fails_moves_nothing_and_says_why(directory,
                                                      loopback_root):
    command, calls = fence_script(
        directory, "echo 'no power control for node1' >&2; exit 1")
    control = start_control(directory)
    try:
        status, answer = control.configure(fenced_cluster(loopback_root,
                                                          command))
        assert status == 200, answer
        failure = wait_for_failure(
            control, "node1",
            lambda f: f["fence"] is not None and f["fence"]["failures"] >= 2
            and f, "the fence to fail twice")
        assert failure["state"] in ("unresponsive", "fencing")
        assert failure["down_since"] is None
        # Each attempt that ended is kept, with its error.
        assert [f["result"] for f in failure["earlier_fences"]][:1] == [
            "failed"]
        assert "no power control" in failure["earlier_fences"][0]["error"]
        assert "exited 1: no power control for node1" in \
            failure["fence"]["error"]
        status, state = control.request("GET", "/v1/state")
        assert state["applications"]["mongodb"]["placed_on"] == "node1"
    finally:
        control.stop()
    assert len(calls_of(calls)) >= 2


def test_a_fence_started_before_a_crash_is_run_again(directory,
                                                     loopback_root):
    """
    A fence recorded as started and never finished (the service died while
    it ran) is run again at the next start: its result was never known.
    """
    command, calls = fence_script(directory, "exit 0")
    state_dir = os.path.join(directory, "state")
    control = start_control(directory)
    try:
        status, answer = control.configure(fenced_cluster(
            loopback_root, command, lease=3600))
        assert status == 200, answer
    finally:
        control.stop()
    with open(os.path.join(state_dir, "failures.json"), "w") as f:
        json.dump({"version": 1, "failovers": {}, "removed": {}, "nodes": {
            "node1": {"fence": {
                "result": "started", "method": "command",
                "requested_by": "CN=operator", "started_at": 1.0,
                "finished_at": None, "failures": 0, "error": None},
                "confirmed_down": None, "down_since": None}}}, f)
    control = start_control(directory)
    try:
        failure = wait_for_failure(
            control, "node1", lambda f: f["state"] == "fenced" and f,
            "the fence to be run again")
        assert failure["fence"]["requested_by"] == "CN=operator"
    finally:
        control.stop()
    assert len(calls_of(calls)) == 1
