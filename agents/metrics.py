"""
An agent's Prometheus metrics: what its node does, change by change.

- ``blockmover_storage_operation_duration_seconds{operation_name, status}``
  (histogram): each state change the agent ran, by its kind (``create``,
  ``attach``, ``mkfs``, ``mount``, ``start``, ``ready``, ``stop``,
  ``unmount``, ``detach``, ``grow``, ``growfs``) and ``success`` or
  ``fail``. The phases of a move on this node are these changes: a source
  node's ``stop``, ``unmount``, ``detach``, a destination's ``attach``,
  ``mount``, ``start``, ``ready``.
- ``blockmover_storage_operations_in_progress{operation_name}`` and
  ``blockmover_storage_operation_running_seconds{operation_name}``: the
  changes running now, and how long the longest-running one of each kind
  has run (the node's side of a move stuck in one phase).
- ``blockmover_backend_call_duration_seconds{backend, operation_name,
  status}`` (histogram): each backend call the changes make.
- ``blockmover_agent_change_retries_total{operation_name}``: changes that
  failed and are retried after their dataset's backoff;
  ``blockmover_agent_datasets_backing_off``: datasets waiting out such a
  backoff now.
- ``blockmover_agent_control_retries_total{request}``: long polls for the
  slice (``desired``) and reports (``report``) the control service did not
  take, retried with backoff.
- ``blockmover_agent_converged`` (1 or 0) and
  ``blockmover_agent_desired_generation``: whether the node is converged
  on the slice it holds, and that slice's generation.

The whole move (both nodes, and the waits between them) is the control
service's to measure: it alone sees both sides
(``blockmover.control.metrics``).

With ``metrics: {listen: ENDPOINT}`` in agent.yml the agent serves them at
``/metrics`` (``serve``) over TLS with its node's certificate, to clients
showing a certificate of its cluster's CA for the ``metrics`` identity
(``blockmover ca metrics``) or an operator's; with ``crl:`` as well, a
revoked one is refused from the moment the list is replaced.
"""

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from twisted.internet.endpoints import serverFromString
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.server import Site

from blockmover import tls
from blockmover.certificates import (
    METRICS, USER, CertificateError, RevocationFile,
)
from blockmover.control.access import Authority, Refused
from blockmover.metrics import (
    FAIL, OPERATION_BUCKETS, SUCCESS, MetricsPage, backend_call_histogram,
    metrics_root, new_registry,
)

# Who may read an agent's metrics: the scraper, and operators.
SCRAPERS = (METRICS, USER)

# The requests to the control service an agent retries.
DESIRED = "desired"
REPORT = "report"


class AgentMetrics(object):
    """
    The metrics of one agent, in ``registry`` (a new one of its own by
    default). The loop calls the ``change_*`` and ``control_retry`` hooks on
    the reactor; ``watch(loop)`` adds what is read from the loop when
    scraped.
    """

    def __init__(self, registry=None):
        self.registry = registry if registry is not None else new_registry()
        self.operations = Histogram(
            "blockmover_storage_operation_duration_seconds",
            "Seconds each state change of this node took, by kind "
            "(operation_name) and status (success or fail).",
            ("operation_name", "status"), registry=self.registry,
            buckets=OPERATION_BUCKETS)
        self.backend_calls = backend_call_histogram(self.registry)
        self.change_retries = Counter(
            "blockmover_agent_change_retries",
            "State changes that failed and are retried after their "
            "dataset's backoff, by kind.",
            ("operation_name",), registry=self.registry)
        self.control_retries = Counter(
            "blockmover_agent_control_retries",
            "Requests to the control service that failed and are retried "
            "with backoff: the long poll for the slice (desired) and "
            "reports (report).", ("request",), registry=self.registry)
        # Seen before any failure: a zero reads as "none yet", not absent.
        for request in (DESIRED, REPORT):
            self.control_retries.labels(request)

    def change_ended(self, kind, seconds, ok):
        """
        A change of ``kind`` ran for ``seconds``; a failed one is retried.
        """
        self.operations.labels(kind, SUCCESS if ok else FAIL).observe(seconds)
        if not ok:
            self.change_retries.labels(kind).inc()

    def control_retry(self, request):
        """
        A ``request`` (``DESIRED`` or ``REPORT``) failed and is retried.
        """
        self.control_retries.labels(request).inc()

    def watch(self, loop):
        """
        Read ``loop`` (a ``ConvergenceLoop``) on every scrape.
        """
        self.registry.register(_LoopCollector(loop))


class _LoopCollector(object):
    """
    What is read from the loop when scraped, on the reactor (see
    ``blockmover.metrics``).
    """

    def __init__(self, loop):
        self._loop = loop

    def describe(self):
        # Nothing is read before a scrape: the loop may not have started.
        return []

    def collect(self):
        facts = self._loop.metrics_facts()
        in_progress = GaugeMetricFamily(
            "blockmover_storage_operations_in_progress",
            "State changes this node runs now, by kind.",
            labels=("operation_name",))
        running = GaugeMetricFamily(
            "blockmover_storage_operation_running_seconds",
            "How long the longest-running state change of each kind running "
            "now has run, in seconds.", labels=("operation_name",))
        ages = {}
        for kind, seconds in facts.running:
            ages.setdefault(kind, []).append(seconds)
        for kind in sorted(ages):
            in_progress.add_metric((kind,), len(ages[kind]))
            running.add_metric((kind,), max(ages[kind]))
        yield in_progress
        yield running
        yield GaugeMetricFamily(
            "blockmover_agent_datasets_backing_off",
            "Datasets whose failed change waits out its backoff before it is "
            "retried.", value=facts.backing_off)
        yield GaugeMetricFamily(
            "blockmover_agent_converged",
            "1 when this node is converged on the slice it holds, else 0.",
            value=1 if facts.converged else 0)
        if facts.generation is not None:
            yield GaugeMetricFamily(
                "blockmover_agent_desired_generation",
                "The generation of the slice this node holds.",
                value=facts.generation)


class _NoRevocations(object):
    """
    The revocation list of an agent given none: nothing is revoked.
    """

    def revoked(self):
        return frozenset()


def scraper_check(authority):
    """
    ``authorize(request)`` for a ``MetricsPage``: None for a client whose
    certificate ``authority`` (``access.Authority``) believes and names one
    of ``SCRAPERS``, else why not.
    """
    def authorize(request):
        try:
            holder = authority.identify(request.transport)
        except Refused as e:
            return str(e)
        except CertificateError as e:
            # The agent's own revocation list is unreadable: it refuses
            # everyone until it is mended.
            return ("this node cannot read its revocation list, so it "
                    "refuses every scraper: %s" % (e,))
        if holder.kind not in SCRAPERS:
            return ("%s may not read this node's metrics: they are the "
                    "metrics scraper's and the operators'; issue one with "
                    "'blockmover ca metrics'" % (holder,))
        return None
    return authorize


def serve(reactor, config, credentials, registry):
    """
    Serve ``registry`` at ``/metrics`` on ``config.listen`` (an agent.yml
    ``MetricsConfig``) over TLS with ``credentials`` (the node's), asking
    every client for a certificate of the cluster's CA.

    :raise CertificateError: if ``config.crl`` cannot be read.
    :return: a Deferred firing with the listening port.
    """
    if config.crl is not None:
        revocations = RevocationFile(config.crl, credentials.ca_certificate)
        # Read once now: a list that cannot be read would refuse everyone.
        revocations.revoked()
    else:
        revocations = _NoRevocations()
    authority = Authority(credentials.ca_certificate, revocations)
    site = Site(metrics_root(MetricsPage(registry, scraper_check(authority))))
    site.noisy = False
    site.displayTracebacks = False
    factory = TLSMemoryBIOFactory(tls.ServerTLS(credentials), False, site,
                                  clock=reactor)
    return serverFromString(reactor, config.listen).listen(factory)
