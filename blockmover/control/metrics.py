"""
The control service's Prometheus metrics: what the cluster does, as the
service sees it.

Moves (``blockmover.control.moves``, from the nodes' reports):

- ``blockmover_move_phase_duration_seconds{kind, phase}`` (histogram):
  each phase of a move (``stop``, ``unmount``, ``detach``, ``attach``,
  ``mount``, ``start``, ``ready``; ``create``, ``mkfs`` for a new volume),
  by the move's kind (``move``, ``deploy``, ``remove``);
- ``blockmover_move_duration_seconds{kind}`` (histogram): a whole move,
  from the configuration that placed the application anew to it ready on
  its node (or, for ``remove``, stopped with its volume let go);
- ``blockmover_moves_in_progress{phase}`` and
  ``blockmover_move_phase_age_seconds{phase}``: moves not yet done by the
  phase they are in (``waiting`` between phases), and how long the one
  longest in each phase has been in it.

Calls:

- ``blockmover_control_node_call_duration_seconds{operation_name,
  status}`` (histogram): the cloud calls nodes without credentials ask the
  service for (``create``, ``attach``, ``detach``, ``grow``,
  ``formatted``, ``volume``), checks included; ``status`` is ``success``,
  ``refused`` (the node's slice does not allow it) or ``fail``;
- ``blockmover_backend_call_duration_seconds{backend, operation_name,
  status}`` (histogram): every call of the backend the service makes, for
  its listings and for the nodes.

The listing (``blockmover.control.listing``):

- ``blockmover_listing_duration_seconds{status}`` (histogram), each
  listing of the backend;
- ``blockmover_listing_refreshes_total{cause}``: listings started, by what
  asked first: ``start``, ``timer``, ``configuration``, ``node_request``;
- ``blockmover_listing_age_seconds``, ``blockmover_listing_volumes``,
  ``blockmover_listing_failing``: how old the cached listing is, how many
  volumes it holds, and 1 while the last listing failed.

Slices and nodes:

- ``blockmover_slice_recompute_duration_seconds{cause}`` (histogram):
  computing the nodes' slices after a ``configuration`` or a ``listing``;
- ``blockmover_long_polls``: agents' long polls held now;
- ``blockmover_nodes{state}``: the configuration's nodes by state,
  ``converged`` (on their current slice), ``converging``, ``failing`` (a
  change failing, or trouble), ``unreported`` (no report for
  ``UNREPORTED_AFTER`` seconds, or none since the service started);
- ``blockmover_node_failures{state}``: the configuration's nodes by
  failure state (``blockmover.control.failures``): ``live``,
  ``unresponsive``, ``fencing``, ``fenced``, ``confirmed-down``,
  ``returning``; ``blockmover_stuck_detaches``: volumes the cloud refuses
  to detach from a node proven down;
- ``blockmover_configuration_generation`` and
  ``blockmover_slice_generation``: the configuration's generation and the
  highest slice generation handed out.

Replicas and the store (``blockmover.control.replica``):

- ``blockmover_control_leader``: 1 while this replica leads (a service
  of one replica on files always leads);
- ``blockmover_control_leadership_changes_total{change}``: this replica
  ``elected`` or having ``lost`` the lead;
- ``blockmover_control_store_duration_seconds{record, status}``
  (histogram): each save of a record (``configuration``, ``failures``,
  ``pushes``) to the state directory or to etcd.
"""

import contextlib
import time

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from blockmover.control.failures import FAILURE_STATES
from blockmover.control.listing import NODE_REQUEST, START, TIMER
from blockmover.control.moves import MoveWatch
from blockmover.metrics import (
    FAIL, SUCCESS, MOVE_BUCKETS, OPERATION_BUCKETS, WORK_BUCKETS, backend_call_histogram,
    new_registry,
)

# Why a listing started (``VolumeListing.refresh``'s ``cause``): those of
# the listing itself, and a configuration being checked or taken.
CONFIGURATION = "configuration"
LISTING_CAUSES = (START, TIMER, CONFIGURATION, NODE_REQUEST)
# Why the slices were computed again.
LISTING = "listing"

# Agents report at least every 30 s (``agents.loop.HEARTBEAT``): a node
# silent for three of those is unreported.
UNREPORTED_AFTER = 90.0

CONVERGED = "converged"
CONVERGING = "converging"
FAILING = "failing"
UNREPORTED = "unreported"
NODE_STATES = (CONVERGED, CONVERGING, FAILING, UNREPORTED)


class ControlMetrics(object):
    """
    The metrics of one control service, in ``registry`` (a new one of its
    own by default). The service calls the hooks on the reactor;
    ``watch(service)`` adds what is read from the service when scraped.
    """

    def __init__(self, registry=None):
        self.registry = registry if registry is not None else new_registry()
        self.backend_calls = backend_call_histogram(self.registry)
        self.node_calls = Histogram(
            "blockmover_control_node_call_duration_seconds",
            "Seconds each cloud call a node asked the control service for "
            "took, checks included, by call and status (success, refused, "
            "fail).", ("operation_name", "status"), registry=self.registry,
            buckets=OPERATION_BUCKETS)
        self.listing_duration = Histogram(
            "blockmover_listing_duration_seconds",
            "Seconds each listing of the backend's volumes took, by status.",
            ("status",), registry=self.registry, buckets=WORK_BUCKETS)
        self.listing_refreshes = Counter(
            "blockmover_listing_refreshes",
            "Listings of the backend started, by what asked for them first "
            "(start, timer, configuration, node_request).", ("cause",),
            registry=self.registry)
        for cause in LISTING_CAUSES:
            self.listing_refreshes.labels(cause)
        self.recomputes = Histogram(
            "blockmover_slice_recompute_duration_seconds",
            "Seconds computing the nodes' slices took, after a configuration "
            "or a listing.", ("cause",), registry=self.registry,
            buckets=WORK_BUCKETS)
        self.moves = MoveWatch(
            Histogram(
                "blockmover_move_phase_duration_seconds",
                "Seconds each phase of a move took (stop, unmount, detach, "
                "attach, mount, start, ready; create, mkfs), as the node "
                "that ran it measured, by the move's kind (move, deploy, "
                "remove).", ("kind", "phase"), registry=self.registry,
                buckets=OPERATION_BUCKETS),
            Histogram(
                "blockmover_move_duration_seconds",
                "Seconds from the configuration that placed an application "
                "anew until it was ready on its node (for a remove: stopped "
                "with its volume let go), by kind.", ("kind",),
                registry=self.registry, buckets=MOVE_BUCKETS))

        self.leader = Gauge(
            "blockmover_control_leader",
            "1 while this replica of the control service leads.",
            registry=self.registry)
        self.leader.set(1)
        self.leadership_changes = Counter(
            "blockmover_control_leadership_changes",
            "Times this replica was elected to lead, or lost the lead.",
            ("change",), registry=self.registry)
        for change in ("elected", "lost"):
            self.leadership_changes.labels(change)
        self.store_duration = Histogram(
            "blockmover_control_store_duration_seconds",
            "Seconds each save of a record of the control service took, "
            "by record and status.", ("record", "status"),
            registry=self.registry, buckets=WORK_BUCKETS)

    # --- hooks -------------------------------------------------------------

    def leadership_changed(self, leading):
        """
        This replica started leading (``leading``), or stopped.
        """
        self.leader.set(1 if leading else 0)
        self.leadership_changes.labels(
            "elected" if leading else "lost").inc()

    def stored(self, record, seconds, ok):
        """
        A save of ``record`` took ``seconds``, and succeeded (``ok``) or
        not.
        """
        self.store_duration.labels(record, SUCCESS if ok else FAIL).observe(
            seconds)

    def listing_started(self, cause):
        """
        A listing of the backend started, first asked for by ``cause``.
        """
        self.listing_refreshes.labels(cause).inc()

    def listing_ended(self, seconds, ok):
        """
        A listing ended after ``seconds``, well (``ok``) or badly.
        """
        self.listing_duration.labels(SUCCESS if ok else FAIL).observe(seconds)

    @contextlib.contextmanager
    def recomputing(self, cause, clock=time.perf_counter):
        """
        Time the computation of the slices inside the ``with``.
        """
        started = clock()
        try:
            yield
        finally:
            self.recomputes.labels(cause).observe(clock() - started)

    def watch(self, service, clock):
        """
        Read ``service`` (a ``ControlService``) and its moves on every
        scrape, at ``clock.seconds()``.
        """
        self.registry.register(_ServiceCollector(service, clock))
        self.watch_moves(clock)

    def watch_moves(self, clock):
        """
        Read the moves in progress on every scrape, at ``clock.seconds()``
        (the clock the hooks are given the time by).
        """
        self.registry.register(_MovesCollector(self.moves, clock))


def node_state(report, reported_at, generation, now):
    """
    The state of a node (one of ``NODE_STATES``) whose last report is
    ``report`` (None: none), received at ``reported_at``, whose slice is
    of ``generation``.
    """
    if report is None or now - reported_at > UNREPORTED_AFTER:
        return UNREPORTED
    progress = report.progress
    if progress.errors or progress.trouble:
        return FAILING
    if progress.converged and progress.generation == generation:
        return CONVERGED
    return CONVERGING


class _ServiceCollector(object):
    """
    What is read from the service when scraped, on the reactor (see
    ``blockmover.metrics``).
    """

    def __init__(self, service, clock):
        self._service = service
        self._clock = clock

    def describe(self):
        return []

    def collect(self):
        service = self._service
        now = self._clock.seconds()
        listing = service.listing
        if listing.volumes is not None:
            yield GaugeMetricFamily(
                "blockmover_listing_age_seconds",
                "Seconds since the cached listing of the backend started.",
                value=max(0.0, now - listing.listed_at))
            yield GaugeMetricFamily(
                "blockmover_listing_volumes",
                "Volumes in the cached listing.",
                value=len(listing.volumes))
        yield GaugeMetricFamily(
            "blockmover_listing_failing",
            "1 while the last listing of the backend failed, else 0.",
            value=1 if listing.last_error is not None else 0)
        yield GaugeMetricFamily(
            "blockmover_long_polls",
            "Long polls of agents for their slice held now.",
            value=service.slices.waiting())
        yield self._nodes(now)
        yield self._failures(now)
        yield GaugeMetricFamily(
            "blockmover_stuck_detaches",
            "Volumes the cloud refuses to detach from a node proven down.",
            value=len(service.failures.stuck_detaches()))
        yield GaugeMetricFamily(
            "blockmover_configuration_generation",
            "The generation of the configuration the service holds (0: "
            "none yet).",
            value=service.stored.generation if service.stored else 0)
        yield GaugeMetricFamily(
            "blockmover_slice_generation",
            "The highest generation of a slice handed out.",
            value=service.slices.counter)

    def _nodes(self, now):
        counts = dict.fromkeys(NODE_STATES, 0)
        deployment = self._service.deployment
        if deployment is not None:
            reports = self._service.last_reports()
            slices = self._service.slices
            for node in deployment.nodes:
                report, reported_at = reports.get(node, (None, None))
                counts[node_state(report, reported_at,
                                  slices.generation(node), now)] += 1
        nodes = GaugeMetricFamily(
            "blockmover_nodes",
            "The configuration's nodes by state: converged, converging, "
            "failing, unreported.", labels=("state",))
        for state in NODE_STATES:
            nodes.add_metric((state,), counts[state])
        return nodes

    def _failures(self, now):
        failures = self._service.failures
        counts = dict.fromkeys(FAILURE_STATES, 0)
        deployment = self._service.deployment
        if deployment is not None and failures.records is not None:
            for node in deployment.nodes:
                counts[failures.condition(node, now)] += 1
        nodes = GaugeMetricFamily(
            "blockmover_node_failures",
            "The configuration's nodes by failure state: live, "
            "unresponsive, fencing, fenced, confirmed-down, returning.",
            labels=("state",))
        for state in FAILURE_STATES:
            nodes.add_metric((state,), counts[state])
        return nodes



class _MovesCollector(object):
    """
    The moves in progress when scraped.
    """

    def __init__(self, moves, clock):
        self._moves = moves
        self._clock = clock

    def describe(self):
        return []

    def collect(self):
        now = self._clock.seconds()
        ages = {}
        for move in self._moves.in_progress().values():
            ages.setdefault(move.phase, []).append(now - move.phase_since)
        counts = GaugeMetricFamily(
            "blockmover_moves_in_progress",
            "Moves of applications not yet done, by the phase they are in.",
            labels=("phase",))
        oldest = GaugeMetricFamily(
            "blockmover_move_phase_age_seconds",
            "How long the move longest in each phase has been in it, in "
            "seconds.", labels=("phase",))
        for phase in sorted(ages):
            counts.add_metric((phase,), len(ages[phase]))
            oldest.add_metric((phase,), max(0.0, max(ages[phase])))
        yield counts
        yield oldest
