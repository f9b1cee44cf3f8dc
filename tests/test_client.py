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

import pytest
from eliot import add_destinations, remove_destination, start_action
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from blockmover import tls
from blockmover.certificates import CONTROL, NODE
from blockmover.client import (
    ControlClient, ControlError, ControlUnreachable, InsecureURL,
    control_urls, printable_url, spread,
)
from blockmover.logs import TASK_HEADER
from blockmover.model import (
    NodeDesired, NodeReport, NodeState, Progress, to_data,
)
from tests.cluster_ca import cluster_ca
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
        if not self.answers:
            # No answer at all: the client's timeout or cancellation ends it.
            return NOT_DONE_YET
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


# --- several replicas -------------------------------------------------------

CLUSTER = "replicas"


def listen(reactor, recorder, secure):
    """
    Serve ``recorder`` on a random port of 127.0.0.1, over TLS with the
    control service's certificate of cluster CLUSTER if ``secure``.
    """
    site = Site(recorder)
    if secure:
        site = TLSMemoryBIOFactory(
            tls.ServerTLS(cluster_ca(CLUSTER).credentials(CONTROL, None)),
            False, site, clock=reactor)
    return reactor.listenTCP(0, site, interface="127.0.0.1")


def with_replicas(count, answers, use, down=(), given=None, secure=False,
                  timeout=30.0):
    """
    Serve ``count`` recorders, each answering its list of ``(code, body)``
    from ``answers(urls)`` (given every replica's URL), but nothing for
    those whose index is in ``down`` (connections to them are refused);
    run ``use(client)`` with a client of the URLs of the replicas whose
    indexes are ``given`` (all by default), a node's of cluster CLUSTER
    over TLS if ``secure``.

    :return: ``use``'s result, or the exception it failed with; each
        replica's recorded requests; the URLs.
    """
    recorders = [Recorder([]) for _ in range(count)]

    @inlineCallbacks
    def start(reactor):
        ports = {i: listen(reactor, recorders[i], secure)
                 for i in range(count) if i not in down}
        scheme = "https" if secure else "http"
        urls = ["%s://127.0.0.1:%d" % (
            scheme, ports[i].getHost().port if i in ports else free_port())
            for i in range(count)]
        for recorder, canned in zip(recorders, answers(urls)):
            recorder.answers = list(canned)
        asked = [urls[i] for i in (range(count) if given is None
                                   else given)]
        if secure:
            client = ControlClient(
                asked, reactor, timeout=timeout, credentials=cluster_ca(
                    CLUSTER).credentials(NODE, "node1"))
        else:
            client = ControlClient(asked, reactor, timeout=timeout,
                                   insecure_plain_http=True)
        try:
            outcome = yield use(client)
        except Exception as e:
            outcome = e
        finally:
            yield client.close()
            for port in ports.values():
                yield port.stopListening()
        return outcome, urls
    outcome, urls = run_reactor(start)
    return outcome, [r.requests for r in recorders], urls


def moves_logged():
    """
    A list that gathers, while the test runs, the messages saying the
    client moved to another replica.
    """
    seen = []

    def gather(message):
        if message.get("message_type") == \
                "blockmover:control-client:replica":
            seen.append(message)
    add_destinations(gather)
    return seen, lambda: remove_destination(gather)


def test_unreachable_replica_is_passed_over():
    """
    The first replica refuses connections: the request goes to the
    second, which the next call asks first; the move is logged with both
    replicas and why.
    """
    @inlineCallbacks
    def use(client):
        first = yield client.get_state()
        answered = client.url
        second = yield client.get_state()
        return first, second, answered

    seen, stop = moves_logged()
    try:
        outcome, requests, urls = with_replicas(
            2, lambda urls: [[], [(200, {"generation": 1}),
                               (200, {"generation": 2})]],
            use, down={0})
    finally:
        stop()
    first, second, answered = outcome
    assert (first, second) == ({"generation": 1}, {"generation": 2})
    assert answered == urls[1]
    assert [r["path"] for r in requests[1]] == ["/v1/state"] * 2
    [moved] = seen
    assert (moved["replica"], moved["to"], moved["reason"]) == (
        urls[0], urls[1], "connection refused")


def test_follower_sends_the_same_request_to_its_leader():
    """
    A follower answers 421 naming its leader (one the client was not
    given): the same request, body, query and task header go there, and
    the next call goes to the leader first.
    """
    @inlineCallbacks
    def use(client):
        with start_action(action_type="test:deploy") as action:
            answer = yield client.put_configuration(
                "c: 1", "a: 2", "cluster.yml", "app.yml", dry_run=True)
        return answer, action.task_uuid, client.url, (
            yield client.get_state())

    # Given the follower alone: it learns the leader from its answer.
    (answer, task, answered, state), requests, urls = with_replicas(
        2, lambda urls: [
            [(421, {"errors": ["not the leader"], "leader": urls[1]})],
            [(200, {"generation": 4}), (200, {"generation": 5})]],
        use, given=[0])
    assert answer == {"generation": 4}
    assert answered == urls[1]
    [to_follower] = requests[0]
    to_leader, next_call = requests[1]
    assert to_leader == to_follower
    assert to_leader["task"].split("@")[0] == task
    assert to_leader["args"] == {"dry_run": "1"}
    assert to_leader["body"]["cluster_yml"] == "c: 1"
    assert next_call["path"] == "/v1/state"
    assert state == {"generation": 5}


def test_long_polls_stay_with_their_replica_and_reports_go_to_the_leader():
    """
    A follower serves an agent's long polls; its reports it sends to the
    leader the follower named once, and its polls stay with the follower:
    the leader is not asked for every poll of every agent.
    """
    report = NodeReport(state=NodeState(node="n1", backend_id="n1"),
                        progress=Progress(converged=True, generation=2))
    desired = to_data(NodeDesired(node="n1", backend_id="n1",
                                  cluster_name="demo", generation=7))

    @inlineCallbacks
    def use(client):
        yield client.get_desired("n1", timeout=1)
        yield client.put_state("n1", report)
        yield client.get_desired("n1", after=7, timeout=1)
        yield client.put_state("n1", report)

    outcome, requests, urls = with_replicas(
        2, lambda urls: [
            [(200, desired), (421, {"errors": ["not the leader"],
                                    "leader": urls[1]}), (204, None)],
            [(200, {}), (200, {})]],
        use)
    assert outcome is None
    assert [(r["method"], r["path"]) for r in requests[0]] == [
        ("GET", "/v1/nodes/n1/desired"), ("PUT", "/v1/nodes/n1/state"),
        ("GET", "/v1/nodes/n1/desired")]
    assert [(r["method"], r["path"]) for r in requests[1]] == [
        ("PUT", "/v1/nodes/n1/state")] * 2


def test_no_leader_asks_the_next_replica():
    """
    A replica that knows no leader (503, leader null): the next one is
    asked. When none knows one, the call fails with the last answer.
    """
    no_leader = (503, {"errors": ["no leader is known yet"],
                       "leader": None})
    outcome, requests, urls = with_replicas(
        2, lambda urls: [[no_leader], [(200, {"generation": 1})]],
        lambda client: client.get_state())
    assert outcome == {"generation": 1}
    assert [len(r) for r in requests] == [1, 1]

    outcome, requests, urls = with_replicas(
        2, lambda urls: [[no_leader], [no_leader]],
        lambda client: client.get_state())
    assert isinstance(outcome, ControlError)
    assert (outcome.code, outcome.messages) == (503,
                                               ["no leader is known yet"])
    assert [len(r) for r in requests] == [1, 1]


def test_long_polls_keep_their_place_across_replicas():
    """
    A node's long polls: the one a replica without a leader could not
    serve goes to the next with the same generation to wait after, and
    the next poll starts at the replica that answered.
    """
    desired = NodeDesired(node="n1", backend_id="n1", cluster_name="c",
                          generation=7)

    @inlineCallbacks
    def use(client):
        first = yield client.get_desired("n1", after=6, timeout=1)
        second = yield client.get_desired("n1", after=7, timeout=1)
        return first, second
    outcome, requests, urls = with_replicas(
        2, lambda urls: [[(503, {"errors": ["electing"], "leader": None})],
                         [(200, to_data(desired)), (204, None)]], use)
    assert outcome == (desired, None)
    assert [r["args"] for r in requests[0]] == [
        {"after": "6", "timeout": "1"}]
    assert [r["args"] for r in requests[1]] == [
        {"after": "6", "timeout": "1"}, {"after": "7", "timeout": "1"}]


def test_every_replica_down_names_them_all():
    """
    No replica can be reached: ControlUnreachable naming each, and why.
    """
    outcome, _, urls = with_replicas(
        3, lambda urls: [[], [], []], lambda client: client.get_state(),
        down={0, 1, 2})
    assert isinstance(outcome, ControlUnreachable)
    assert outcome.urls == tuple(urls)
    assert str(outcome) == "cannot reach the control service " + "; ".join(
        "at %s: connection refused" % (url,) for url in urls)


def test_replica_without_an_answer_in_time_is_passed_over():
    """
    A replica that takes the connection but never answers is given up
    after the timeout, and the next one asked.
    """
    outcome, requests, urls = with_replicas(
        2, lambda urls: [[], [(200, {"generation": 1})]],
        lambda client: client.get_state(), timeout=0.5)
    assert outcome == {"generation": 1}
    assert [len(r) for r in requests] == [1, 1]


def test_cancelled_call_asks_no_other_replica():
    """
    A call cancelled while its replica has not answered (an agent
    stopping during its long poll) fails with CancelledError at once, and
    no other replica is asked.
    """
    @inlineCallbacks
    def use(client):
        d = client.get_desired("node1", timeout=30)
        client._reactor.callLater(0.2, d.cancel)
        try:
            yield d
        except CancelledError as e:
            # Time for a request to another replica, were one made.
            yield deferLater(client._reactor, 0.5)
            return e
    outcome, requests, urls = with_replicas(
        2, lambda urls: [[], [(200, {"generation": 1})]], use)
    assert isinstance(outcome, CancelledError)
    assert [len(r) for r in requests] == [1, 0]


def test_replicas_that_disagree_on_their_leader_end_the_call():
    """
    Two replicas each naming the other leader: each is asked at most
    twice, and the call fails with the last refusal.
    """
    def answers(urls):
        return [[(421, {"errors": ["follower"], "leader": urls[1]})] * 5,
                [(421, {"errors": ["follower"], "leader": urls[0]})] * 5]
    outcome, requests, urls = with_replicas(
        2, answers, lambda client: client.get_state())
    assert isinstance(outcome, ControlError) and outcome.code == 421
    assert [len(r) for r in requests] == [2, 2]


def test_follower_leads_to_leader_over_tls():
    """
    Over mutual TLS: a follower's leader is asked with the same client
    certificate and believed only as the cluster's control service.
    """
    def answers(urls):
        # The leader by another name its certificate holds.
        leader = urls[1].replace("127.0.0.1", "localhost")
        return [[(421, {"errors": ["follower"], "leader": leader})],
                [(200, {"generation": 3})]]
    outcome, requests, urls = with_replicas(
        2, answers, lambda client: client.get_state(), secure=True)
    assert outcome == {"generation": 3}
    assert [len(r) for r in requests] == [1, 1]


def test_leader_named_at_plain_http_is_refused():
    """
    A follower naming its leader at an http:// URL: the client sends it
    nothing (the request would go without TLS) and says why.
    """
    plain = Recorder([(200, {"generation": 1})])

    @inlineCallbacks
    def start(reactor):
        port = listen(reactor, plain, secure=False)
        leader = "http://127.0.0.1:%d" % (port.getHost().port,)
        follower = Recorder([(421, {"errors": ["follower"],
                                    "leader": leader})])
        tls_port = listen(reactor, follower, secure=True)
        url = "https://127.0.0.1:%d" % (tls_port.getHost().port,)
        client = ControlClient(url, reactor, credentials=cluster_ca(
            CLUSTER).credentials(NODE, "node1"))
        try:
            yield client.get_state()
        except ControlUnreachable as e:
            return e, url
        finally:
            yield client.close()
            yield port.stopListening()
            yield tls_port.stopListening()
    error, url = run_reactor(start)
    assert isinstance(error, ControlUnreachable)
    assert error.urls == (url,)
    assert "not https://" in str(error)
    assert plain.requests == []


def test_several_urls_given():
    """
    One URL, several separated by commas or a list: the client asks them
    in that order; each must be https, and none may be missing.
    """
    assert control_urls("https://a:1/, https://b:2") == (
        "https://a:1", "https://b:2")
    assert control_urls(["https://a:1", "https://a:1/"]) == ("https://a:1",)
    for nothing in ("", [], "https://a:1,,https://b:2", [None]):
        with pytest.raises(ValueError):
            control_urls(nothing)
    credentials = cluster_ca(CLUSTER).credentials(NODE, "node1")
    client = ControlClient("https://a:1,https://b:2", object(),
                           credentials=credentials)
    assert (client.urls, client.url) == (("https://a:1", "https://b:2"),
                                        "https://a:1")
    with pytest.raises(InsecureURL) as error:
        ControlClient(["https://a:1", "http://b:2"], object(),
                      credentials=credentials)
    assert "http://b:2 is not https://" in str(error.value)
    with pytest.raises(InsecureURL):
        ControlClient(["https://a:1"], object())


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


def test_nodes_spread_over_the_replicas():
    """
    Each node starts at a replica of its own, always the same, and the
    nodes of a cluster share the replicas about evenly.
    """
    urls = ["https://10.0.0.%d:4523" % (n,) for n in (1, 2, 3)]
    first = [spread(urls, "node%d" % (n,))[0] for n in range(300)]
    assert spread(urls, "node7") == spread(urls, "node7")
    assert sorted(spread(urls, "node7")) == urls
    assert all(60 < first.count(url) < 140 for url in urls), first
    assert spread(urls[:1], "node7") == urls[:1]
