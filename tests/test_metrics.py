"""
The Prometheus metrics' hooks, each where it counts: backend calls timed
by outcome, the page in both exposition formats, the agent loop's changes,
retries and running changes, the control service's listing by cause, its
nodes' calls, its moves from the nodes' reports, its nodes by state, and
the agent's TLS listener that only the metrics scraper and operators may
read. What is served is parsed back with ``prometheus_client.parser``, as
Prometheus would read it.
"""

import http.client
import json
import ssl
import threading

import pytest
from prometheus_client import Histogram
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from agents.metrics import serve as serve_agent_metrics
from blockmover.backends.interface import (
    AsyncBlockDevice, BlockDeviceError, IBlockDeviceAPI, IListsChanges,
)
from blockmover.certificates import METRICS, NODE, USER
from blockmover.config import MetricsConfig
from blockmover.control.access import Refused
from blockmover.control.errors import BackendError
from blockmover.control.listing import VolumeListing
from blockmover.control.metrics import (
    CONFIGURATION, CONVERGED, CONVERGING, FAILING, UNREPORTED,
    UNREPORTED_AFTER, ControlMetrics, node_state,
)
from blockmover.control.moves import WAITING
from blockmover.control.nodecalls import _measured
from blockmover.identity import dataset_id
from blockmover.metrics import MetricsPage, new_registry, render
from blockmover.model import (
    Application, BackendConfig, Deployment, Device, FinishedStep, Mount,
    Node, NodeReport, NodeState, Progress, RunningApplication, RunningStep,
    Step, StepError, to_data,
)
from tests.cluster_ca import OPERATOR, cluster_ca
from tests.metrics_text import scrape, value
from tests.reactors import run_reactor
from tests.test_agent_loop import (
    FakeClient, FakeStep, _converged, _until, run_loop, slice_,
)


def scraped(registry):
    return render(registry)[0].decode("utf-8")


# --- backend calls and the page ----------------------------------------------

@implementer(IBlockDeviceAPI, IListsChanges)
class FakeBackend(object):
    root = "/somewhere"

    def allocation_unit(self):
        return 1

    def get_volume(self, volume_id):
        return volume_id

    def attach_volume(self, volume_id, attach_to):
        raise BlockDeviceError("volume %s is attached elsewhere"
                               % (volume_id,))

    def list_changed_volumes(self, since):
        return []


def test_measured_backend_times_each_call_by_outcome():
    """
    Every call of the backend is timed under its method's name with
    success or fail (the error still raised); what the backend provides
    and its other attributes stay as they were.
    """
    from blockmover.metrics import MeasuredBlockDeviceAPI, \
        backend_call_histogram
    registry = new_registry()
    ticks = iter(range(100))
    backend = MeasuredBlockDeviceAPI(
        FakeBackend(), backend_call_histogram(registry), "fake",
        clock=lambda: float(next(ticks)))
    assert backend.get_volume("v1") == "v1"
    with pytest.raises(BlockDeviceError):
        backend.attach_volume("v1", "node1")
    assert backend.list_changed_volumes("2020") == []
    assert backend.root == "/somewhere"
    assert IListsChanges.providedBy(backend)
    assert "list_changed_volumes" in AsyncBlockDevice(
        backend, None, None)._names
    text = scraped(registry)
    name = "blockmover_backend_call_duration_seconds_count"
    assert value(text, name, backend="fake", operation_name="get_volume",
                 status="success") == 1
    assert value(text, name, backend="fake", operation_name="attach_volume",
                 status="fail") == 1
    assert value(text, name, operation_name="attach_volume",
                 status="success") is None
    assert value(text, "blockmover_backend_call_duration_seconds_sum",
                 operation_name="get_volume") == 1.0


def test_page_serves_text_or_openmetrics_to_whom_it_allows():
    """
    ``/metrics`` answers the Prometheus text format, or OpenMetrics when
    asked; a client ``authorize`` refuses is answered 403 with the reason,
    and nothing is served below the page.
    """
    registry = new_registry()
    Histogram("blockmover_example_seconds", "An example.",
              registry=registry).observe(0.3)
    page = MetricsPage(registry, authorize=lambda request: getattr(
        request, "refusal", None))

    request = DummyRequest([])
    body = page.render(request)
    assert request.responseHeaders.getRawHeaders(b"content-type")[-1] \
        .startswith(b"text/plain; version=0.0.4")
    assert value(body.decode(), "blockmover_example_seconds_count") == 1
    assert value(body.decode(), "process_resident_memory_bytes") > 0

    request = DummyRequest([])
    request.requestHeaders.setRawHeaders(
        b"accept", [b"application/openmetrics-text; version=1.0.0"])
    body = page.render(request)
    assert request.responseHeaders.getRawHeaders(b"content-type")[-1] \
        .startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")

    request = DummyRequest([])
    request.refusal = "node node1 may not read them"
    assert page.render(request) == b"node node1 may not read them\n"
    assert request.responseCode == 403

    request = DummyRequest([b"more"])
    page.render(request)
    assert request.responseCode == 404


# --- the agent loop ------------------------------------------------------------

def test_loop_counts_changes_retries_and_control_retries():
    """
    A change that fails twice counts two failures and two retries, then a
    success; the others their success; two failed long polls two control
    retries; once converged, the loop says so with its slice's generation.
    """
    client = FakeClient()
    client.unreachable = 2
    bad, good = FakeStep("bad", failures=2), FakeStep("good")
    client.push(slice_(1))
    seen = {}

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: _converged(client), "convergence")
        seen["text"] = scraped(loop.metrics.registry)
    run_loop(client, {1: {"bad": [bad], "good": [good]}}, scenario)
    text = seen["text"]
    name = "blockmover_storage_operation_duration_seconds_count"
    assert value(text, name, operation_name="step", status="fail") == 2
    assert value(text, name, operation_name="step", status="success") == 2
    assert value(text, "blockmover_agent_change_retries_total",
                 operation_name="step") == 2
    assert value(text, "blockmover_agent_control_retries_total",
                 request="desired") == 2
    assert value(text, "blockmover_agent_control_retries_total",
                 request="report") == 0
    assert value(text, "blockmover_agent_converged") == 1
    assert value(text, "blockmover_agent_desired_generation") == 1
    assert value(text, "blockmover_agent_datasets_backing_off") == 0
    assert value(text, "blockmover_storage_operations_in_progress") is None


def test_loop_shows_the_change_running_now():
    """
    While a change hangs, it is in progress, its age growing, and the node
    is not converged.
    """
    client = FakeClient()
    gate = threading.Event()
    slow = FakeStep("slow", gate=gate)
    client.push(slice_(1))
    seen = []

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: slow.attempts, "the slow change")
        seen.append(scraped(loop.metrics.registry))
        yield _until(reactor, lambda: value(
            scraped(loop.metrics.registry),
            "blockmover_storage_operation_running_seconds",
            operation_name="step") > 0.2, "the change to age")
        gate.set()
        yield _until(reactor, lambda: _converged(client), "convergence")
        seen.append(scraped(loop.metrics.registry))
    try:
        run_loop(client, {1: {"slow": [slow]}}, scenario)
    finally:
        gate.set()
    running, done = seen
    assert value(running, "blockmover_storage_operations_in_progress",
                 operation_name="step") == 1
    assert value(running, "blockmover_agent_converged") == 0
    assert value(done, "blockmover_storage_operations_in_progress") is None
    assert value(done, "blockmover_agent_converged") == 1


# --- the control service's hooks -----------------------------------------------

class Observer(object):
    def __init__(self):
        self.events = []

    def listing_started(self, cause):
        self.events.append(("started", cause))

    def listing_ended(self, seconds, ok):
        self.events.append(("ended", ok))


def test_listing_tells_each_listing_with_what_asked_first():
    """
    Each listing is told once with the cause that asked for it first: the
    start, a client's request, the timer; asks while one runs coalesce into
    one more listing, told with the first of them; a failed listing ends
    not ok.
    """
    clock = Clock()
    observer = Observer()
    listings = []

    def lister():
        listings.append(Deferred())
        return listings[-1]
    listing = VolumeListing(clock, 30.0, lambda changed: None,
                            observer=observer)
    listing.set_lister(lister)
    listing.start()
    listing.refresh(CONFIGURATION)
    listing.refresh("timer")
    listings[0].callback([])
    listings[1].errback(BackendError("the cloud is down"))
    clock.advance(30.0)
    listings[2].callback([])
    clock.advance(1.0)
    listing.request()
    listings[3].callback([])
    listing.stop()
    assert observer.events == [
        ("started", "start"), ("ended", True),
        ("started", CONFIGURATION), ("ended", False),
        ("started", "timer"), ("ended", True),
        ("started", "node_request"), ("ended", True)]
    assert len(listings) == 4


def test_control_metrics_count_listings_by_cause():
    metrics = ControlMetrics()
    metrics.listing_started("timer")
    metrics.listing_ended(0.5, False)
    with metrics.recomputing("listing"):
        pass
    text = scraped(metrics.registry)
    assert value(text, "blockmover_listing_refreshes_total",
                 cause="timer") == 1
    assert value(text, "blockmover_listing_refreshes_total",
                 cause="node_request") == 0
    assert value(text, "blockmover_listing_duration_seconds_count",
                 status="fail") == 1
    assert value(text, "blockmover_slice_recompute_duration_seconds_count",
                 cause="listing") == 1


class Calls(object):
    """
    Node calls as ``NodeCalls`` makes them: a Deferred each.
    """

    def __init__(self, metrics, reactor):
        self._metrics = metrics
        self._reactor = reactor

    @_measured("attach")
    def attach(self, node, answer):
        self._reactor.advance(2.0)
        return answer


def test_node_calls_are_timed_by_outcome():
    """
    A node's call is timed as success, refused (its slice does not allow
    it) or fail (the backend's or the service's failure), its answer or
    failure passed on.
    """
    metrics = ControlMetrics()
    calls = Calls(metrics, Clock())
    answers = []
    calls.attach("node1", succeed("volume")).addCallback(answers.append)
    for error in (Refused("node1 may not"), BackendError("cloud down")):
        calls.attach("node1", fail(error)).addErrback(
            lambda f: answers.append(f.type))
    assert answers == ["volume", Refused, BackendError]
    text = scraped(metrics.registry)
    name = "blockmover_control_node_call_duration_seconds"
    for status in ("success", "refused", "fail"):
        assert value(text, name + "_count", operation_name="attach",
                     status=status) == 1
    assert value(text, name + "_sum", operation_name="attach") == 6.0


def deployment(placement):
    return Deployment(
        cluster_name="c", control_url="https://127.0.0.1:4523",
        backend=BackendConfig(name="loopback"),
        nodes={n: Node(name=n, address="10.0.0.%d" % (i,))
               for i, n in enumerate(("node1", "node2"), 1)},
        applications={"db": Application(name="db", command=["db"])},
        placement=placement)


DB = dataset_id("c", "db")


def report(node, generation, finished=(), running=(), errors=(),
           ready=None, mounted=False, converged=False, trouble=None):
    state = NodeState(
        node=node, backend_id=node,
        running={} if ready is None else {"db": RunningApplication(
            name="db", pid=7, ready=ready)},
        mounts={DB: Mount(dataset_id=DB, device="/dev/loop7",
                          mountpoint="/db")} if mounted else {},
        devices={DB: Device(volume_id="v", dataset_id=DB, path="/dev/loop7",
                            size=1)} if mounted else {})
    return NodeReport(state=state, progress=Progress(
        converged=converged, generation=generation,
        running=[RunningStep(step=Step(kind=k, dataset_id=DB), since=0.0)
                 for k in running],
        errors=[StepError(step=Step(kind=k, dataset_id=DB), kind="E",
                          message="failed") for k in errors],
        finished=[FinishedStep(step=Step(kind=k, dataset_id=DB), seconds=s,
                               finished_at=0.0) for k, s in finished],
        trouble=trouble))


def watch(now=112.0):
    metrics = ControlMetrics()
    clock = Clock()
    clock.advance(now)
    metrics.watch_moves(clock)
    return metrics, metrics.moves


def test_move_phases_and_total_from_both_nodes_reports():
    """
    A move from node1 to node2: its phases are measured as each node
    reported them (once each, reports of the generation before the move
    ignored), its phase is the change either node runs or retries, and
    it ends, with its whole time, when node2 reports the application
    ready.
    """
    metrics, moves = watch()
    generations = {"node1": 5, "node2": 5}
    moves.placed(deployment({"db": "node1"}), deployment({"db": "node2"}),
                 generations.get, 100.0)
    [move] = moves.in_progress().values()
    assert (move.kind, move.phase) == ("move", WAITING)
    # Before the move: a stop finished then is not this move's.
    moves.reported("node1", report("node1", 4, finished=[("stop", 9.0)]),
                   101.0)
    moves.reported("node1", report("node1", 5, running=["stop"]), 102.0)
    assert (move.phase, move.phase_since) == ("stop", 102.0)
    moves.reported("node1", report("node1", 5, finished=[
        ("stop", 1.5), ("unmount", 0.25)], errors=["detach"]), 104.0)
    assert move.phase == "detach"
    moves.reported("node1", report("node1", 6, finished=[
        ("stop", 1.5), ("unmount", 0.25), ("detach", 2.0)]), 106.0)
    assert move.phase == WAITING
    moves.reported("node2", report("node2", 6, running=["attach"]), 107.0)
    assert move.phase == "attach"
    moves.reported("node2", report("node2", 6, finished=[
        ("attach", 3.0), ("mount", 0.5), ("start", 0.1)],
        running=["ready"], ready=False, mounted=True), 110.0)
    assert move.phase == "ready"
    text = scraped(metrics.registry)
    assert value(text, "blockmover_moves_in_progress", phase="ready") == 1
    assert value(text, "blockmover_move_phase_age_seconds",
                 phase="ready") == 2.0
    moves.reported("node2", report("node2", 6, finished=[
        ("attach", 3.0), ("mount", 0.5), ("start", 0.1), ("ready", 1.0)],
        ready=True, mounted=True), 112.0)
    assert moves.in_progress() == {}
    text = scraped(metrics.registry)
    phases = "blockmover_move_phase_duration_seconds"
    for phase, seconds in (("stop", 1.5), ("unmount", 0.25),
                           ("detach", 2.0), ("attach", 3.0), ("mount", 0.5),
                           ("start", 0.1), ("ready", 1.0)):
        assert value(text, phases + "_count", kind="move",
                     phase=phase) == 1, phase
        assert value(text, phases + "_sum", kind="move",
                     phase=phase) == seconds, phase
    assert value(text, "blockmover_move_duration_seconds_count",
                 kind="move") == 1
    assert value(text, "blockmover_move_duration_seconds_sum",
                 kind="move") == 12.0


def test_remove_ends_when_the_volume_is_let_go_and_replaced_moves_go():
    """
    An application placed on no node is removed once its node reports it
    stopped with its volume gone; an application placed again before its
    move ended starts a new move in its place.
    """
    metrics, moves = watch()
    moves.placed(deployment({"db": "node1"}), deployment({}),
                 {"node1": 3}.get, 0.0)
    moves.reported("node1", report("node1", 3, mounted=True), 1.0)
    assert len(moves.in_progress()) == 1
    moves.reported("node1", report("node1", 3), 4.0)
    assert moves.in_progress() == {}
    text = scraped(metrics.registry)
    assert value(text, "blockmover_move_duration_seconds_sum",
                 kind="remove") == 4.0

    moves.placed(None, deployment({"db": "node1"}), {"node1": 4}.get, 10.0)
    assert moves.in_progress()["db"].kind == "deploy"
    moves.placed(deployment({"db": "node1"}), deployment({"db": "node2"}),
                 {"node1": 5, "node2": 5}.get, 11.0)
    assert moves.in_progress()["db"].kind == "move"


def test_node_states():
    """
    A node is unreported without a recent report, failing with an error
    or trouble, converged on its current slice, else converging.
    """
    ok = report("node1", 7, converged=True)
    assert node_state(None, None, 7, 100.0) == UNREPORTED
    assert node_state(ok, 0.0, 7, UNREPORTED_AFTER + 1) == UNREPORTED
    assert node_state(ok, 90.0, 7, 100.0) == CONVERGED
    assert node_state(ok, 90.0, 8, 100.0) == CONVERGING
    assert node_state(report("node1", 7), 90.0, 7, 100.0) == CONVERGING
    assert node_state(report("node1", 7, errors=["attach"]), 90.0, 7,
                      100.0) == FAILING
    assert node_state(report("node1", 7, converged=True, trouble="lsblk"),
                      90.0, 7, 100.0) == FAILING


def test_control_service_serves_its_state_as_metrics(tmp_path,
                                                     loopback_root):
    """
    The control service in this process: after a configuration, its
    /metrics says the generation, both nodes unreported, then node1
    converged once it reports so, a long poll held, the listings by cause
    and the slices computed.
    """
    from tests.test_control_inprocess import (
        CLUSTER, put_configuration, serve,
    )

    def get(port, path, method="GET", body=None):
        connection = http.client.HTTPConnection("127.0.0.1", port,
                                                timeout=30)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            connection.close()

    def body(port, service, reactor):
        generation = put_configuration(port,
                                       CLUSTER.format(root=loopback_root))
        status, text = get(port, "/metrics")
        assert status == 200, text
        assert value(text, "blockmover_configuration_generation") == 1
        assert value(text, "blockmover_nodes", state="unreported") == 2
        # The configuration's first listing of its backend seeds the cache.
        assert value(text, "blockmover_listing_refreshes_total",
                     cause="configuration") == 1
        assert value(text, "blockmover_slice_recompute_duration_seconds"
                     "_count", cause="configuration") == 1
        assert value(text, "blockmover_backend_call_duration_seconds_count",
                     backend="loopback", operation_name="list_volumes",
                     status="success") >= 1
        assert value(text, "blockmover_listing_volumes") == 0
        status, desired = get(port, "/v1/nodes/node1/desired")
        mine = json.loads(desired)["generation"]
        done = report("node1", mine, converged=True)
        status, _ = get(port, "/v1/nodes/node1/state", "PUT",
                        json.dumps(to_data(done)))
        assert status == 200
        poller = threading.Thread(target=get, args=(
            port, "/v1/nodes/node2/desired?after=%d&timeout=3"
            % (generation + 100,)))
        poller.start()
        try:
            from blockmover.poll import Backoff, poll
            poll(lambda: service.slices.waiting() or None, 10,
                 "the long poll", Backoff(initial=0.01, maximum=0.1))
            status, text = get(port, "/metrics")
        finally:
            poller.join()
        assert value(text, "blockmover_nodes", state="converged") == 1
        assert value(text, "blockmover_nodes", state="unreported") == 1
        # Both within their leases (node2 by the service's start).
        assert value(text, "blockmover_node_failures", state="live") == 2
        assert value(text, "blockmover_node_failures",
                     state="unresponsive") == 0
        assert value(text, "blockmover_stuck_detaches") == 0
        assert value(text, "blockmover_long_polls") == 1
        # The deploy placed mongodb on node1: a move from no node.
        assert value(text, "blockmover_moves_in_progress",
                     phase="waiting") == 1

    serve(str(tmp_path / "state"), body)


# --- the agent's listener ------------------------------------------------------

def test_agent_serves_metrics_only_to_the_scraper_and_operators(tmp_path):
    """
    Over TLS with the node's certificate: the metrics certificate and an
    operator's read the metrics; another node's is refused 403 saying
    who; a client without a certificate fails the handshake; with a
    revocation list, a revoked metrics certificate is refused.
    """
    ca = cluster_ca("scrape")
    node = ca.credentials(NODE, "node1")
    registry = new_registry()
    Histogram("blockmover_example_seconds", "An example.",
              registry=registry).observe(1)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(open(ca.crl, "rb").read())
    results = {}

    def scrapes(port, revoked_port):
        results["metrics"] = scrape(port, ca.ssl_context(METRICS, None),
                                    "node1")
        results["user"] = scrape(port, ca.ssl_context(USER, OPERATOR),
                                 "node1")
        results["node"] = scrape(port, ca.ssl_context(NODE, "node2"),
                                 "node1")
        anonymous = ssl.create_default_context(
            cafile=ca.files(METRICS).ca)
        try:
            scrape(port, anonymous, "node1")
        except (ssl.SSLError, ConnectionError) as e:
            results["anonymous"] = e
        results["revoked"] = scrape(revoked_port,
                                    ca.ssl_context(METRICS, None), "node1")

    @inlineCallbacks
    def start(reactor, pool):
        port = yield serve_agent_metrics(
            reactor, MetricsConfig(listen="tcp:0:interface=127.0.0.1"),
            node, registry)
        # The scraper is revoked in the list this listener reads.
        ca.files(METRICS)
        ca.revoke(METRICS)
        crl.write_bytes(open(ca.crl, "rb").read())
        revoked_port = yield serve_agent_metrics(
            reactor, MetricsConfig(listen="tcp:0:interface=127.0.0.1",
                                   crl=str(crl)), node, registry)
        try:
            yield deferToThreadPool(reactor, pool, scrapes,
                                    port.getHost().port,
                                    revoked_port.getHost().port)
        finally:
            yield port.stopListening()
            yield revoked_port.stopListening()
    run_reactor(start, threadpool=True)
    status, text = results["metrics"]
    assert status == 200
    assert value(text, "blockmover_example_seconds_count") == 1
    assert results["user"][0] == 200
    assert results["node"] == (403, "node node2 may not read this node's "
                               "metrics: they are the metrics scraper's and "
                               "the operators'; issue one with 'blockmover "
                               "ca metrics'\n")
    assert "anonymous" in results
    status, text = results["revoked"]
    assert status == 403 and "revoked" in text, text
