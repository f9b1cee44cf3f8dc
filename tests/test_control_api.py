"""
blockmover-control as a real process on 127.0.0.1, driven over real HTTP,
with the real loopback backend in a temporary root.
"""

import http.client
import json
import os
import signal
import threading
import time

import pytest

from blockmover import identity
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.logs import TASK_HEADER
from blockmover.model import (
    Mount, NodeReport, NodeState, Progress, RunningApplication, to_data,
)
from blockmover.poll import Backoff, poll
from tests.control_process import ControlProcess
from blockmover.units import GiB

CLUSTER = """\
version: 1
cluster:
  name: demo
  control: https://127.0.0.1:4523
  backend:
    name: loopback
    root: {root}
nodes:
  node1: {{address: 10.77.0.11}}
  node2: {{address: 10.77.0.12}}
deployment:
  node1: [mongodb]
  node2: []
"""

APP = """\
version: 1
applications:
  mongodb:
    command: [secantusd-py, --port, "27017"]
    volume:
      mountpoint: /data/db
      maximum_size: 1G
"""

DATASET = identity.dataset_id("demo", "mongodb")


class Control(ControlProcess):
    """
    One blockmover-control process and what these tests ask of it.
    """

    def configure(self, cluster, app=APP, query=""):
        return self.request("PUT", "/v1/configuration" + query,
                            {"cluster_yml": cluster, "app_yml": app,
                             "cluster_path": "cluster.yml",
                             "app_path": "app.yml"})

    def refreshes(self):
        status, data = self.request("GET", "/v1/volumes")
        assert status == 200
        return data["refreshes"]


@pytest.fixture
def root(loopback_root):
    return loopback_root


@pytest.fixture
def control(tmp_path):
    service = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    service.start()
    yield service
    code = service.stop()
    assert code in (0, None), "blockmover-control did not stop cleanly"


def configured(control, root):
    cluster = CLUSTER.format(root=root)
    status, answer = control.configure(cluster)
    assert status == 200, answer
    return cluster, answer["generation"]


def report(node, running=(), mounted=(), changed_backend=False):
    mounts = {d: Mount(dataset_id=d, device="/dev/loop99",
                       mountpoint="/data/db") for d in mounted}
    state = NodeState(node=node, backend_id=node, mounts=mounts,
                      running={a: RunningApplication(name=a, pid=4242,
                                                     ready=True)
                               for a in running})
    return to_data(NodeReport(state=state,
                              progress=Progress(converged=True, generation=1),
                              changed_backend=changed_backend))


def test_configuration_round_trip_with_generations(control, root):
    status, answer = control.request("GET", "/v1/configuration")
    assert status == 404 and answer["errors"]
    status, answer = control.request("GET", "/v1/nodes/node1/desired")
    assert status == 404
    cluster, generation = configured(control, root)
    assert generation == 1
    status, answer = control.request("GET", "/v1/configuration")
    assert status == 200
    assert (answer["generation"], answer["cluster_yml"], answer["app_yml"]) \
        == (1, cluster, APP)
    status, desired = control.request("GET", "/v1/nodes/node1/desired")
    assert status == 200 and desired["generation"] == 1
    assert set(desired["applications"]) == {"mongodb"}
    assert set(desired["datasets"]) == {DATASET}

    moved = cluster.replace("node1: [mongodb]\n  node2: []",
                            "node1: []\n  node2: [mongodb]")
    status, answer = control.configure(moved)
    assert status == 200 and answer["generation"] == 2
    # No agent made mongodb's volume yet: node1 holds nothing of it.
    assert answer["plan"]["node1"] == []
    assert answer["plan"]["node2"] == [
        "mongodb: create a 1G volume, attach its volume, make ext4 on it, "
        "mount it at /data/db, start, wait until it serves"]
    status, desired = control.request("GET", "/v1/nodes/node2/desired")
    assert desired["generation"] == 2 and set(desired["applications"]) == \
        {"mongodb"}
    status, state = control.request("GET", "/v1/state")
    assert state["generation"] == 2
    assert state["applications"]["mongodb"]["wanted_on"] == "node2"


def test_bad_configuration_is_refused_and_changes_nothing(control, root):
    cluster, generation = configured(control, root)
    before = open(os.path.join(control.state_dir,
                               "configuration.json")).read()
    bad = cluster.replace("  node2: []", "  node3: []")
    status, answer = control.configure(bad)
    assert status == 400
    assert len(answer["errors"]) == 1
    assert answer["errors"][0].startswith("cluster.yml:")
    status, answer = control.configure(cluster, APP.replace("1G", "-1G"))
    assert status == 400 and answer["errors"][0].startswith("app.yml:")
    status, answer = control.request("PUT", "/v1/configuration", b"{nope")
    assert status == 400 and "JSON" in answer["errors"][0]
    status, answer = control.request("DELETE", "/v1/configuration")
    assert status == 405 and answer["errors"]
    status, answer = control.request("GET", "/v1/nothing")
    assert status == 404 and answer["errors"]
    status, answer = control.request("GET", "/v1/configuration")
    assert answer["generation"] == generation and answer["cluster_yml"] == \
        cluster
    assert open(os.path.join(control.state_dir,
                             "configuration.json")).read() == before


def test_dry_run_stores_nothing(control, root):
    cluster, generation = configured(control, root)
    status, desired = control.request("GET", "/v1/nodes/node2/desired")
    moved = cluster.replace("node1: [mongodb]\n  node2: []",
                            "node1: []\n  node2: [mongodb]")
    status, answer = control.configure(moved, query="?dry_run=1")
    assert status == 200 and answer["generation"] == generation
    assert answer["plan"]["node2"]
    status, answer = control.request("GET", "/v1/configuration")
    assert answer["generation"] == generation and answer["cluster_yml"] == \
        cluster
    status, after = control.request("GET", "/v1/nodes/node2/desired")
    assert after == desired


def test_long_poll_answers_at_once_on_change_or_after_timeout(control, root):
    cluster, generation = configured(control, root)
    status, desired = control.request(
        "GET", "/v1/nodes/node1/desired?after=%d" % (generation - 1,))
    assert status == 200 and desired["generation"] == generation

    started = time.monotonic()
    status, body = control.request(
        "GET", "/v1/nodes/node1/desired?after=%d&timeout=0.5" % (generation,))
    took = time.monotonic() - started
    assert (status, body) == (204, None)
    assert 0.4 < took < 5

    answers = []
    waiter = threading.Thread(target=lambda: answers.append(control.request(
        "GET", "/v1/nodes/node2/desired?after=%d&timeout=30"
        % (generation,))))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    assert not answers
    moved = cluster.replace("node1: [mongodb]\n  node2: []",
                            "node1: []\n  node2: [mongodb]")
    status, answer = control.configure(moved)
    waiter.join(10)
    assert time.monotonic() - started < 10
    status, desired = answers[0]
    assert status == 200 and desired["generation"] == answer["generation"]
    assert set(desired["applications"]) == {"mongodb"}

    status, answer = control.request("GET", "/v1/nodes/node9/desired")
    assert status == 404 and "node9" in answer["errors"][0]
    status, answer = control.request(
        "GET", "/v1/nodes/node1/desired?after=x")
    assert status == 400


def test_reports_show_up_in_state(control, root):
    before = time.time()
    configured(control, root)
    status, state = control.request("GET", "/v1/state")
    assert state["cluster"] == "demo"
    assert before - 1 <= state["now"] <= time.time() + 1
    node1 = state["nodes"]["node1"]
    assert node1 == {
        "reported_at": None, "state": None, "progress": None,
        "generation": node1["generation"],
        "address": "10.77.0.11", "transitioned_at": None,
        # A whole lease from the service's start, before a first renewal.
        "lease": {"renewed_at": None, "seconds": 20.0,
                  "expires_at": node1["lease"]["expires_at"]},
        "failure": {"state": "live", "down_since": None,
                    "returned_at": None, "fence": None,
                    "earlier_fences": [],
                    "confirmed_down": None, "removed": False},
        "release": []}
    assert state["now"] < node1["lease"]["expires_at"] <= state["now"] + 20
    configured_at = state["applications"]["mongodb"]["transitioned_at"]
    assert before - 1 <= configured_at <= state["now"]
    status, answer = control.request(
        "PUT", "/v1/nodes/node1/state",
        report("node1", running=["mongodb"], mounted=[DATASET]))
    assert (status, answer) == (200, {})
    status, state = control.request("GET", "/v1/state")
    node1 = state["nodes"]["node1"]
    assert node1["reported_at"] >= before - 1
    assert set(node1["state"]["running"]) == {"mongodb"}
    assert node1["progress"]["converged"] is True
    # Converged since this first report; the application started then.
    assert node1["transitioned_at"] == node1["reported_at"]
    assert state["nodes"]["node2"]["state"] is None
    assert state["applications"]["mongodb"] == {
        "dataset_id": DATASET, "wanted_on": "node1",
        "running_on": ["node1"], "ready_on": ["node1"],
        "mounted_on": ["node1"], "attached_to": [],
        "transitioned_at": node1["reported_at"],
        "placed_on": "node1", "failover": None, "failover_blocked": None}
    # The report renewed node1's lease.
    assert node1["lease"]["renewed_at"] == node1["reported_at"]
    assert node1["lease"]["expires_at"] == node1["reported_at"] + 20
    assert state["unwanted_attachments"] == []
    assert state["stuck_detaches"] == []
    # The same again changes neither time.
    control.request("PUT", "/v1/nodes/node1/state",
                    report("node1", running=["mongodb"], mounted=[DATASET]))
    status, again = control.request("GET", "/v1/state")
    assert again["nodes"]["node1"]["reported_at"] > node1["reported_at"]
    assert again["nodes"]["node1"]["transitioned_at"] == \
        node1["transitioned_at"]
    assert again["applications"]["mongodb"]["transitioned_at"] == \
        node1["reported_at"]
    status, answer = control.request("PUT", "/v1/nodes/node9/state",
                                     report("node9"))
    assert status == 404
    status, answer = control.request("PUT", "/v1/nodes/node2/state",
                                     report("node1"))
    assert status == 400 and "node1" in answer["errors"][0]
    status, answer = control.request("PUT", "/v1/nodes/node2/state",
                                     {"state": {}})
    assert status == 400


def test_changed_backend_report_lists_exactly_once(control, root):
    cluster, generation = configured(control, root)
    status, desired = control.request("GET", "/v1/nodes/node1/desired")
    assert DATASET not in desired["volumes"]
    settled = control.refreshes()
    # A volume appears in the backend, as when node1's agent creates it.
    backend = LoopbackBlockDeviceAPI(root, "demo")
    metadata = identity.volume_metadata("demo", "mongodb")
    volume = backend.create_volume(DATASET, GiB, metadata)
    status, _ = control.request("GET", "/v1/volumes")
    assert control.refreshes() == settled
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                report("node1", changed_backend=True))
    status, desired = control.request(
        "GET", "/v1/nodes/node1/desired?after=%d&timeout=10"
        % (desired["generation"],))
    assert status == 200
    assert desired["volumes"][DATASET]["volume_id"] == volume.volume_id
    status, listing = control.request("GET", "/v1/volumes")
    assert [v["volume_id"] for v in listing["volumes"]] == [volume.volume_id]
    time.sleep(0.3)
    assert control.refreshes() == settled + 1


def test_many_long_polls_cause_no_listings(control, root):
    cluster, generation = configured(control, root)
    settled = control.refreshes()
    answers = []

    def wait(node):
        answers.append(control.request(
            "GET", "/v1/nodes/%s/desired?after=%d&timeout=1"
            % (node, generation)))
    waiters = [threading.Thread(target=wait, args=("node%d" % (1 + i % 2),))
               for i in range(20)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(10)
    assert answers == [(204, None)] * 20
    assert control.refreshes() == settled


def test_configuration_and_generation_survive_a_crash(tmp_path, root):
    control = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    control.start()
    try:
        cluster, _ = configured(control, root)
        cluster, generation = configured(control, root)
        status, desired = control.request("GET", "/v1/nodes/node1/desired")
        seen = desired["generation"]
        assert control.stop(signal.SIGKILL) == -signal.SIGKILL
        control.start()
        status, answer = control.request("GET", "/v1/configuration")
        assert (answer["generation"], answer["cluster_yml"]) == \
            (generation, cluster)
        # An agent holding the old slice hears of the restarted service's.
        status, desired = control.request(
            "GET", "/v1/nodes/node1/desired?after=%d&timeout=10" % (seen,))
        assert status == 200 and desired["generation"] > seen
        status, answer = control.configure(cluster)
        assert answer["generation"] > desired["generation"]
        assert control.stop() == 0
    finally:
        control.stop(signal.SIGKILL)


def test_unknown_state_file_version_stops_the_service(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "configuration.json").write_text('{"version": 99}')
    control = Control(str(state), str(tmp_path / "control.log"))
    with pytest.raises(AssertionError) as info:
        control.start()
    assert "format version 99" in str(info.value)
    assert control.process.returncode == 1


def test_secrets_stay_out_of_configuration_and_logs(control, root):
    cluster = CLUSTER.format(root=root).replace(
        "    name: loopback\n", "    name: loopback\n    token: s3cr3t-t0k3n\n")
    status, answer = control.configure(cluster)
    assert status == 200, answer
    status, answer = control.request("GET", "/v1/configuration")
    assert "s3cr3t-t0k3n" not in json.dumps(answer)
    assert "token: '<redacted>'" in answer["cluster_yml"]
    status, answer = control.configure(cluster.replace("node2: []",
                                                       "node3: []"))
    assert status == 400 and "s3cr3t-t0k3n" not in json.dumps(answer)
    with open(control.log) as f:
        assert "s3cr3t-t0k3n" not in f.read()


def test_requests_continue_the_callers_task(control, root):
    task = "0b6c4a58-6a4f-4a3e-9d0c-1f2e3d4c5b6a@/1"
    status, _ = control.request("GET", "/v1/state",
                                headers={TASK_HEADER: task})
    assert status == 200

    def logged():
        with open(control.log) as f:
            for line in f:
                message = json.loads(line)
                if (message.get("task_uuid") == task.split("@")[0]
                        and message.get("action_status") == "succeeded"):
                    return message
        return None
    message = poll(logged, 10, "the request's action in the log",
                   Backoff(initial=0.02, maximum=0.2))
    assert message["action_type"] == "blockmover:control:request"
    assert message["code"] == 200


def test_sigterm_stops_cleanly_with_long_polls_waiting(tmp_path, root):
    control = Control(str(tmp_path / "state"), str(tmp_path / "control.log"))
    control.start()
    try:
        cluster, generation = configured(control, root)
        outcomes = []

        def wait():
            try:
                outcomes.append(control.request(
                    "GET", "/v1/nodes/node1/desired?after=%d&timeout=60"
                    % (generation,)))
            except (OSError, http.client.HTTPException) as e:
                outcomes.append(e)
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert control.stop() == 0
        waiter.join(10)
        assert time.monotonic() - started < 10
        assert len(outcomes) == 1 and not isinstance(outcomes[0], tuple)
    finally:
        control.stop(signal.SIGKILL)


def test_a_cluster_name_other_than_the_certificates_is_refused(control,
                                                               root):
    """
    The service serves its CA's cluster: a configuration naming another is
    refused with a message saying so, and nothing changes.
    """
    cluster, generation = configured(control, root)
    status, before = control.request("GET", "/v1/configuration")
    status, answer = control.configure(cluster.replace("name: demo",
                                                       "name: other"))
    assert status == 400
    assert "serves cluster 'demo'" in answer["errors"][0]
    status, after = control.request("GET", "/v1/configuration")
    assert after == before
    status, desired = control.request("GET", "/v1/nodes/node1/desired")
    assert desired["cluster_name"] == "demo"
    assert desired["generation"] == generation
    status, answer = control.request("GET", "/v1/nodes/node1")
    assert status == 404 and answer["errors"]
