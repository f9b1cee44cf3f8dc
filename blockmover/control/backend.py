"""
The backend a deployment names, as the control service uses it: made once,
off the reactor, and retried on the next listing if making it failed.
"""

import datetime

from twisted.internet.defer import succeed
from twisted.internet.threads import deferToThreadPool

from blockmover.backends import make_backend
from blockmover.backends.interface import (
    AsyncBlockDevice, IListsChanges, IReportsLimits,
)
from blockmover.control.errors import BackendError
from blockmover.control.listing import ChangedVolumes
from blockmover.metrics import MeasuredBlockDeviceAPI


# A backend that can list only the volumes changed since a time
# (``IListsChanges``) is listed incrementally, with a full listing every
# FULL_EVERY listings to see volumes that were deleted.
FULL_EVERY = 10
# How far back an incremental listing reaches before the previous one
# started, for clocks that differ between this machine and the cloud.
SKEW = datetime.timedelta(seconds=60)


def backend_key(deployment):
    """
    What makes two deployments use the same backend: its name, options and
    the cluster whose volumes it lists. Limits are checked, not used by it.
    """
    return (deployment.backend.name,
            tuple(sorted(deployment.backend.options.items())),
            deployment.cluster_name)


class ControlBackend(object):
    """
    The deployment's ``IBlockDeviceAPI`` seen from the control service
    (which is no node: ``instance_id`` is None).

    :ivar key: see ``backend_key``.
    :ivar api: an ``AsyncBlockDevice`` once ``ready()`` succeeded, else None.
    :ivar raw: the blocking ``IBlockDeviceAPI`` behind it, for other
        thread pools (``blockmover.control.nodecalls``).
    :ivar allocation_unit: the backend's, once ``ready()`` succeeded.

    With ``calls`` (``blockmover.metrics.backend_call_histogram``) every call
    of the backend, by the service or for its nodes, is timed into it.
    """

    def __init__(self, deployment, reactor, threadpool, make=make_backend,
                 calls=None):
        self.key = backend_key(deployment)
        self._name = deployment.backend.name
        self._options = dict(deployment.backend.options)
        self._cluster_name = deployment.cluster_name
        self._reactor = reactor
        self._threadpool = threadpool
        self._make = make
        self._calls = calls
        self.api = None
        self.raw = None
        self.allocation_unit = None
        self._listings = 0
        self._last_started = None

    def ready(self):
        """
        Make the backend if not yet made. :return: a Deferred firing with
        this object, or failing with ``BackendError``.
        """
        if self.api is not None:
            return succeed(self)

        def make():
            api = self._make(self._name, self._options, self._cluster_name)
            if self._calls is not None:
                api = MeasuredBlockDeviceAPI(api, self._calls, self._name)
            return api, api.allocation_unit()

        def made(result):
            api, unit = result
            self.raw = api
            self.api = AsyncBlockDevice(api, self._reactor, self._threadpool)
            self.allocation_unit = unit
            return self

        def failed(failure):
            raise BackendError(
                "cannot use the %s backend of cluster %s: %s; check "
                "cluster.backend in cluster.yml and that the backend is "
                "reachable" % (self._name, self._cluster_name,
                               failure.getErrorMessage()))

        d = deferToThreadPool(self._reactor, self._threadpool, make)
        d.addCallbacks(made, failed)
        return d

    def list_volumes(self):
        """
        The lister of the service's ``VolumeListing``, which keeps the one
        cache of the listing.

        :return: a Deferred firing with every volume of the cluster (a
            list), or, where the backend lists changes and a listing of
            this object succeeded before, with the ``ChangedVolumes`` since
            then, to merge into that listing. The first listing is always
            whole.
        """
        d = self.ready()
        d.addCallback(lambda _: self._list())
        return d

    def _incremental(self):
        return (self._last_started is not None
                and self._listings % FULL_EVERY != 0
                and IListsChanges.providedBy(self.raw))

    def _list(self):
        started = datetime.datetime.now(datetime.timezone.utc)
        incremental = self._incremental()
        self._listings += 1
        if incremental:
            since = (self._last_started - SKEW).strftime(
                "%Y-%m-%dT%H:%M:%S.%f")
            d = self.api.list_changed_volumes(since)
            d.addCallback(ChangedVolumes)
        else:
            d = self.api.list_volumes()

        def listed(result):
            self._last_started = started
            return result
        d.addCallback(listed)
        return d

    def limits(self):
        """
        :return: a Deferred firing with the ``model.Limits`` the backend
            itself reports (a cloud's quotas), or None for a backend that
            reports none; failing with ``BackendError``.
        """
        def read(_):
            if not IReportsLimits.providedBy(self.raw):
                return None
            d = self.api.limits()
            d.addErrback(lambda failure: self._failed("read the limits of",
                                                      failure))
            return d
        d = self.ready()
        d.addCallback(read)
        return d

    def _failed(self, what, failure):
        raise BackendError(
            "cannot %s the %s backend of cluster %s: %s; check that the "
            "backend is reachable and try again"
            % (what, self._name, self._cluster_name,
               failure.getErrorMessage()))
