"""
What the control service and the agents share of their Prometheus metrics
(``prometheus_client``): the registry each process keeps, the outcome and
bucket conventions, the timing of backend calls, and the page that serves
``/metrics``.

Names and labels follow Prometheus' conventions (a ``blockmover_`` prefix,
base units in the name, ``_total`` for counters) and Kubernetes' volume
metrics: a state change of a volume is a *storage operation*, timed in
``blockmover_storage_operation_duration_seconds{operation_name, status}``
as kubelet times its own in ``storage_operation_duration_seconds``, and
``status`` is ``success`` or ``fail`` as there.

Every process has its own ``CollectorRegistry`` (``new_registry``), never
``prometheus_client``'s global one: a test that runs two services, or an
agent loop and a service, in one interpreter sees each one's figures alone,
and nothing registers twice.

The page is rendered on the reactor, not in a thread as
``prometheus_client.twisted.MetricsResource`` renders it (a WSGI resource
in the global reactor's thread pool): the collectors read the service's and
the loop's state, which belong to the reactor thread, and a scrape is a few
dozen series, a millisecond's work.
"""

import time

from prometheus_client import (
    CollectorRegistry, GCCollector, Histogram, PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from zope.interface import directlyProvides, providedBy

from blockmover.backends.interface import IBlockDeviceAPI

# The ``status`` of an operation, as Kubernetes' volume metrics say it.
SUCCESS = "success"
FAIL = "fail"
# A node's call the control service refused (its slice does not allow it).
REFUSED = "refused"

# Seconds a storage operation or backend call takes: from a local mount
# (milliseconds) to a slow cloud's attach (minutes). Kubernetes'
# storage_operation_duration_seconds buckets.
OPERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0,
                     120.0, 300.0, 600.0)
# A whole move: its phases one after another, and the waits between them.
MOVE_BUCKETS = OPERATION_BUCKETS + (900.0, 1800.0, 3600.0)
# Work the control service does itself (a listing, a recompute of the
# slices): milliseconds, growing with the cluster to seconds.
WORK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Metrics pages are text of the exposition formats, never JSON.
_NOT_ALLOWED = b"only GET is served here\n"


def new_registry():
    """
    A process's own registry, with the process, platform and garbage
    collector metrics the global one would have (``process_cpu_seconds_total``,
    ``process_resident_memory_bytes``, ``python_gc_*``...).
    """
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def backend_call_histogram(registry):
    """
    ``blockmover_backend_call_duration_seconds{backend, operation_name,
    status}``: each call of an ``IBlockDeviceAPI`` method (and of its
    optional abilities), as Kubernetes times a CSI driver's calls in
    ``csi_operations_seconds``.
    """
    return Histogram(
        "blockmover_backend_call_duration_seconds",
        "Seconds each call of the block-storage backend took, by backend, "
        "operation (the IBlockDeviceAPI method) and status.",
        ("backend", "operation_name", "status"), registry=registry,
        buckets=OPERATION_BUCKETS)


class MeasuredBlockDeviceAPI(object):
    """
    ``api`` (an ``IBlockDeviceAPI``) with every call timed into
    ``histogram`` (``backend_call_histogram``) under the backend's name.
    It provides what ``api`` provides, so optional abilities are still
    found with ``providedBy``; attributes that are no interface's method
    are ``api``'s own. Calls block as ``api``'s do: call them in a thread.
    """

    def __init__(self, api, histogram, backend, clock=time.monotonic):
        self._api = api
        self._histogram = histogram
        self._backend = backend
        self._clock = clock
        self._methods = set(IBlockDeviceAPI.names())
        for interface in providedBy(api).flattened():
            self._methods.update(interface.names())
        directlyProvides(self, providedBy(api))

    @property
    def measured(self):
        """
        The backend being measured.
        """
        return self._api

    def __getattr__(self, name):
        value = getattr(self._api, name)
        if name.startswith("_") or name not in self._methods or \
                not callable(value):
            return value

        def call(*args, **kwargs):
            started = self._clock()
            status = FAIL
            try:
                result = value(*args, **kwargs)
                status = SUCCESS
                return result
            finally:
                self._histogram.labels(self._backend, name, status).observe(
                    self._clock() - started)
        return call


def render(registry, accept=None):
    """
    The registry's metrics in the exposition format ``accept`` (an HTTP
    Accept header, bytes or text) asks for: the Prometheus text format
    unless it asks for OpenMetrics. :return: ``(body, content type)``,
    bytes and str.
    """
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class MetricsPage(Resource):
    """
    ``GET /metrics``: the registry's metrics, rendered on the reactor.
    ``authorize(request)`` (if given) returns None when the client may
    read them, else the reason it may not, answered 403.
    """
    isLeaf = True

    def __init__(self, registry, authorize=None):
        Resource.__init__(self)
        self._registry = registry
        self._authorize = authorize

    def render(self, request):
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if request.postpath:
            request.setResponseCode(404)
            return b"no such page; the metrics are at /metrics\n"
        if self._authorize is not None:
            refusal = self._authorize(request)
            if refusal is not None:
                request.setResponseCode(403)
                return refusal.encode("utf-8") + b"\n"
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET")
            return _NOT_ALLOWED
        accept = request.getHeader(b"Accept")
        body, content_type = render(self._registry, accept)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return body


def metrics_root(page):
    """
    A root resource with ``page`` at ``/metrics`` and a 404 everywhere
    else.
    """
    root = _Missing()
    root.putChild(b"metrics", page)
    return root


class _Missing(Resource):
    def getChild(self, name, request):
        return self

    def render(self, request):
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"no such page; the metrics are at /metrics\n"
