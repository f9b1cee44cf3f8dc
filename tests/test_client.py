"""
``blockmover.client.ControlClient`` over real HTTP: against a small
recording server (what goes on the wire, how answers and errors come back)
and against the real ``blockmover-control`` service.

Each test runs a fresh, uninstalled reactor, so none touches the global one.
"""

import json
import os
import socket
import sys

from eliot import start_action
from twisted.internet.defer import inlineCallbacks
from twisted.web.resource import Resource
from twisted.web.server import Site

from blockmover.certificates import NODE
from blockmover.client import (
    ControlClient, ControlError, ControlUnreachable, printable_url,
)
from blockmover.logs import TASK_HEADER
from blockmover.model import (
    NodeDesired, NodeReport, NodeState, Progress, to_data,
)
from tests.reactors import run_reactor

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a recording server ----------------------------------------------------

class Recorder(Resource):
    """
    Answers every request with the next canned ``(code, body)`` and records
    method, path, query, headers and body.
    """
    isLeaf = True

    def __init__(self, answers):
        Resource.__init__(self)
        self.answers = list(answers)
        self.requests = []

    def render(self, request):
        body = request.content.read()
        self.requests.append({
            "method": request.method.decode(),
            "path": request.path.decode(),
            "args": {k.decode(): v[0].decode()
                     for k, v in request.args.items()},
            "task": request.getHeader(TASK_HEADER),
            "body": json.loads(body) if body else None,
        })
        code, answer = self.answers.pop(0)
        request.setResponseCode(code)
        if answer is None:
            return b""
        request.setHeader("content-type", "application/json")
        return json.dumps(answer).encode()


def with_recorder(answers, use):
    """
    Serve ``answers`` on a random port and run ``use(client)``; return its
    result and the recorded requests.
    """
    recorder = Recorder(answers)

    @inlineCallbacks
    def start(reactor):
        port = reactor.listenTCP(0, Site(recorder), interface="127.0.0.1")
        # A test of the HTTP layer alone, against a recorder.
        client = ControlClient("http://127.0.0.1:%d/" % (
            port.getHost().port,), reactor, insecure_plain_http=True)
        try:
            return (yield use(client))
        finally:
            yield client.close()
            yield port.stopListening()
    return run_reactor(start), recorder.requests


def test_put_configuration_sends_files_and_task_id():
    """
    The configuration travels as JSON with the files' names, dry_run as a
    query argument, and the current eliot task id in TASK_HEADER.
    """
    answer = {"generation": 3, "plan": {"node1": ["start mongodb"]}}

    def use(client):
        with start_action(action_type="test:deploy") as action:
            task = action.task_uuid
            d = client.put_configuration("c: 1", "a: 2", "cluster.yml",
                                         "app.yml", dry_run=True)
        d.addCallback(lambda result: (result, task))
        return d
    (result, task), requests = with_recorder([(200, answer)], use)
    assert result == answer
    [request] = requests
    assert request["method"] == "PUT"
    assert request["path"] == "/v1/configuration"
    assert request["args"] == {"dry_run": "1"}
    assert request["body"] == {"cluster_yml": "c: 1", "app_yml": "a: 2",
                               "cluster_path": "cluster.yml",
                               "app_path": "app.yml"}
    # The header continues this task, as a child of this action.
    assert request["task"].split("@")[0] == task


def test_refusal_becomes_control_error():
    """
    A 400 with ``errors`` fails with ControlError carrying every message.
    """
    def use(client):
        d = client.put_configuration("", "", "c.yml", "a.yml")
        d.addErrback(lambda f: f.trap(ControlError) and f.value)
        return d
    error, _ = with_recorder(
        [(400, {"errors": ["c.yml:3: nodes: bad", "a.yml:1: x: worse"]})],
        use)
    assert isinstance(error, ControlError)
    assert error.code == 400
    assert error.messages == ["c.yml:3: nodes: bad", "a.yml:1: x: worse"]


def test_desired_long_poll_and_timeout():
    """
    ``get_desired`` passes after/timeout, decodes a NodeDesired, and gives
    None on 204.
    """
    desired = NodeDesired(node="n1", backend_id="n1", cluster_name="c",
                          generation=7)

    @inlineCallbacks
    def use(client):
        first = yield client.get_desired("n1", after=6, timeout=2.5)
        second = yield client.get_desired("n1", after=7, timeout=1)
        return first, second
    (first, second), requests = with_recorder(
        [(200, to_data(desired)), (204, None)], use)
    assert first == desired
    assert second is None
    assert [r["path"] for r in requests] == ["/v1/nodes/n1/desired"] * 2
    assert requests[0]["args"] == {"after": "6", "timeout": "2.5"}
    assert requests[0]["task"] is None


def test_put_state_sends_report():
    report = NodeReport(state=NodeState(node="n1", backend_id="n1"),
                        progress=Progress(converged=True, generation=2),
                        changed_backend=True)

    def use(client):
        return client.put_state("n1", report)
    result, requests = with_recorder([(200, {})], use)
    assert result is None
    assert requests[0]["method"] == "PUT"
    assert requests[0]["path"] == "/v1/nodes/n1/state"
    assert NodeReport.create(requests[0]["body"]) == report


def test_connection_refused_is_unreachable():
    """
    Nothing listening: ControlUnreachable naming the URL.
    """
    url = "http://127.0.0.1:%d" % (free_port(),)

    def start(reactor):
        client = ControlClient(url, reactor, insecure_plain_http=True)
        d = client.get_state()
        d.addErrback(lambda f: f.trap(ControlUnreachable) and f.value)
        d.addCallback(lambda v: client.close().addCallback(lambda _: v))
        return d
    error = run_reactor(start)
    assert isinstance(error, ControlUnreachable)
    assert str(error).startswith(
        "cannot reach the control service at %s: " % (url,))


def test_printable_url_hides_credentials():
    assert printable_url("http://admin:s3cret@10.0.0.1:4523/x") == \
        "http://***@10.0.0.1:4523/x"
    assert printable_url("https://10.0.0.1:4523") == "https://10.0.0.1:4523"


# --- the real control service ----------------------------------------------

CLUSTER_YML = """\
version: 1
cluster:
  name: {name}
  control: {url}
  backend:
    name: loopback
    root: {root}
nodes:
  node1: {{address: 127.0.0.1}}
  node2: {{address: 127.0.0.1}}
deployment:
  node1: [{on1}]
  node2: [{on2}]
"""

APP_YML = """\
version: 1
applications:
  {app}:
    command: [{command}]
    volume:
      mountpoint: {mountpoint}
      maximum_size: 16M
"""


def write_configuration(directory, control_url, name, placed="demo",
                        command="sleep, '3600'", app="demo", root=None,
                        node="node1"):
    """
    Write cluster.yml and app.yml for one application into ``directory``
    (``placed`` on ``node``, or on no node when ``placed`` is empty);
    return their paths. The loopback root defaults to a directory in
    ``directory``.
    """
    if root is None:
        root = os.path.join(directory, "loopback")
        os.makedirs(root, exist_ok=True)
    cluster = os.path.join(directory, "cluster.yml")
    apps = os.path.join(directory, "app.yml")
    with open(cluster, "w") as f:
        f.write(CLUSTER_YML.format(
            name=name, url=control_url, root=root,
            on1=placed if node == "node1" else "",
            on2=placed if node == "node2" else ""))
    with open(apps, "w") as f:
        f.write(APP_YML.format(app=app, command=command,
                               mountpoint=os.path.join(directory, "mnt",
                                                       app)))
    return cluster, apps


def test_real_service_round_trip(control, workdir):
    """
    Against the real service: a dry run stores nothing; a real PUT gives a
    generation and a plan; the node's slice, the state and the listing
    decode; a bad configuration is a ControlError with file and line; an
    unknown node's slice is a 404 ControlError.
    """
    cluster, apps = write_configuration(workdir, control.url, "demo")
    cluster_yml, app_yml = open(cluster).read(), open(apps).read()

    @inlineCallbacks
    def use(reactor):
        operator = ControlClient(control.url, reactor,
                                 credentials=control.credentials())
        node1 = ControlClient(control.url, reactor,
                              credentials=control.credentials(NODE, "node1"))
        node9 = ControlClient(control.url, reactor,
                              credentials=control.credentials(NODE, "node9"))
        client = operator
        try:
            dry = yield client.put_configuration(
                cluster_yml, app_yml, "cluster.yml", "app.yml", dry_run=True)
            try:
                yield client.get_configuration()
                stored_after_dry_run = True
            except ControlError as e:
                assert e.code == 404
                stored_after_dry_run = False
            real = yield client.put_configuration(
                cluster_yml, app_yml, "cluster.yml", "app.yml")
            stored = yield client.get_configuration()
            desired = yield node1.get_desired("node1", after=None,
                                              timeout=5)
            unchanged = yield node1.get_desired(
                "node1", after=desired.generation, timeout=0.5)
            state = yield client.get_state()
            volumes = yield client.get_volumes()
            try:
                yield client.put_configuration(
                    cluster_yml.replace("node2: []", "node2: [nope]"),
                    app_yml, "cluster.yml", "app.yml")
                refused = None
            except ControlError as e:
                refused = e
            try:
                yield node9.get_desired("node9", timeout=1)
                unknown = None
            except ControlError as e:
                unknown = e
            return (dry, stored_after_dry_run, real, stored, desired,
                    unchanged, state, volumes, refused, unknown)
        finally:
            for each in (operator, node1, node9):
                yield each.close()

    (dry, stored_after_dry_run, real, stored, desired, unchanged, state,
     volumes, refused, unknown) = run_reactor(use)
    assert set(dry["plan"]) == {"node1", "node2"}
    assert dry["plan"]["node1"], "the plan should say node1 starts demo"
    assert not stored_after_dry_run
    assert real["generation"] >= 1
    assert stored["cluster_yml"] == cluster_yml
    assert isinstance(desired, NodeDesired)
    assert sorted(desired.applications) == ["demo"]
    assert unchanged is None
    assert state["applications"]["demo"]["wanted_on"] == "node1"
    assert isinstance(volumes["volumes"], list)
    assert refused is not None and refused.code == 400
    assert any("cluster.yml:" in m and "nope" in m for m in refused.messages)
    assert unknown is not None and unknown.code == 404
