"""
The backends a deployment names, one a site, as the control service uses
them: each made once, off the reactor, and retried on the next listing if
making it failed.
"""

import datetime

from eliot import log_message
from twisted.internet.defer import DeferredList, gatherResults, succeed
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


def _site_key(backend, cluster_name):
    return (backend.name, tuple(sorted(backend.options.items())),
            cluster_name)


def backend_key(deployment):
    """
    What makes two deployments use the same backends: each site's name,
    backend name and options, and the cluster whose volumes they list.
    Limits are checked, not used by them.
    """
    return tuple(sorted(
        (site, _site_key(backend, deployment.cluster_name))
        for site, backend in deployment.site_backends().items()))


class SiteBackends(object):
    """
    The ``ControlBackend`` of each site of a deployment, seen as one: one
    listing of each site makes one listing of the cluster, each volume
    tagged with its site; the calls for a node or a volume go to its
    site's backend.

    :ivar key: see ``backend_key``.
    :ivar sites: ``{site name: ControlBackend}``.
    """

    def __init__(self, deployment, reactor, threadpool, make=make_backend,
                 calls=None):
        self.key = backend_key(deployment)
        self.sites = {
            site: ControlBackend(backend, deployment.cluster_name, reactor,
                                 threadpool, make, calls, site)
            for site, backend in deployment.site_backends().items()}
        self._single = (next(iter(self.sites.values()))
                        if len(self.sites) == 1 else None)
        # Each site's last good listing, its volumes tagged.
        self._last = {}

    @property
    def allocation_unit(self):
        """
        The largest of the sites' allocation units (a size rounded up to it
        is one every site can make), once all are ready; else None.
        """
        units = [b.allocation_unit for b in self.sites.values()]
        if any(unit is None for unit in units):
            return None
        return max(units)

    @property
    def api(self):
        """
        The one site's ``AsyncBlockDevice`` of a cluster of one site (None
        until ready, and for several sites: ask ``for_node``).
        """
        return None if self._single is None else self._single.api

    @property
    def raw(self):
        return None if self._single is None else self._single.raw

    def ready(self):
        """
        Make every site's backend. :return: a Deferred firing with this
        object, or failing with the first ``BackendError``.
        """
        d = gatherResults([b.ready() for b in self.sites.values()],
                          consumeErrors=True)
        d.addCallback(lambda _: self)
        d.addErrback(lambda failure: failure.value.subFailure)
        return d

    def site(self, name):
        """
        The ``ControlBackend`` of the site named ``name`` (a node's
        ``site``).
        """
        return self.sites[name]

    def for_volume(self, volume):
        """
        The ``ControlBackend`` of the site holding ``volume``.
        """
        return self.sites[volume.site]

    def list_volumes(self):
        """
        The lister of the service's ``VolumeListing``. With one site, that
        site's listing (incremental where it can be). With several, one
        whole listing of each site, side by side, their volumes tagged with
        their site and put together; a site that cannot be listed now is
        taken as it last was (and fails the listing only before it ever
        was listed).
        """
        if self._single is not None:
            return self._single.list_volumes()
        names = sorted(self.sites)
        d = DeferredList([self.sites[n].list_volumes(whole=True)
                          for n in names], consumeErrors=True)

        def together(results):
            volumes = []
            for name, (ok, listed) in zip(names, results):
                if ok:
                    listed = [v.set(site=name) for v in listed]
                    self._last[name] = listed
                elif name in self._last:
                    # One site out of reach holds up no other: its last
                    # listing stands for it until it answers again.
                    log_message(message_type="blockmover:control:site-unlisted",
                                site=name, error=listed.getErrorMessage())
                    listed = self._last[name]
                else:
                    return listed
                volumes.extend(listed)
            return volumes
        d.addCallback(together)
        return d

    def limits(self):
        """
        :return: a Deferred firing with the ``model.Limits`` the one site's
            backend reports (or None), or, for several sites, with
            ``{site: Limits or None}``.
        """
        if self._single is not None:
            return self._single.limits()
        names = sorted(self.sites)
        d = gatherResults([self.sites[n].limits() for n in names],
                          consumeErrors=True)
        d.addCallback(lambda limits: dict(zip(names, limits)))
        d.addErrback(lambda failure: failure.value.subFailure)
        return d


class ControlBackend(object):
    """
    One site's ``IBlockDeviceAPI`` seen from the control service (which is
    no node: ``instance_id`` is None).

    :ivar key: see ``backend_key``.
    :ivar api: an ``AsyncBlockDevice`` once ``ready()`` succeeded, else None.
    :ivar raw: the blocking ``IBlockDeviceAPI`` behind it, for other
        thread pools (``blockmover.control.nodecalls``).
    :ivar allocation_unit: the backend's, once ``ready()`` succeeded.

    With ``calls`` (``blockmover.metrics.backend_call_histogram``) every call
    of the backend, by the service or for its nodes, is timed into it.
    """

    def __init__(self, backend, cluster_name, reactor, threadpool,
                 make=make_backend, calls=None, site=None):
        """
        :param backend: the site's ``BackendConfig``.
        :param site: the site's name, for messages (None: the one site).
        """
        self.key = _site_key(backend, cluster_name)
        self.site_name = site
        self.name = backend.name
        self._options = dict(backend.options)
        self._cluster_name = cluster_name
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
            api = self._make(self.name, self._options, self._cluster_name)
            if self._calls is not None:
                api = MeasuredBlockDeviceAPI(api, self._calls, self.name)
            return api, api.allocation_unit()

        def made(result):
            api, unit = result
            self.raw = api
            self.api = AsyncBlockDevice(api, self._reactor, self._threadpool)
            self.allocation_unit = unit
            return self

        def failed(failure):
            where = ("cluster.backend" if self.site_name is None else
                     "cluster.sites.%s.backend" % (self.site_name,))
            raise BackendError(
                "cannot use the %s backend of cluster %s%s: %s; check "
                "%s in cluster.yml and that the backend is reachable"
                % (self.name, self._cluster_name, self._of_site(),
                   failure.getErrorMessage(), where))

        d = deferToThreadPool(self._reactor, self._threadpool, make)
        d.addCallbacks(made, failed)
        return d

    def list_volumes(self, whole=False):
        """
        The lister of the service's ``VolumeListing``, which keeps the one
        cache of the listing.

        :return: a Deferred firing with every volume of the cluster in this
            site (a list), or, where the backend lists changes, a listing
            of this object succeeded before and not ``whole``, with the
            ``ChangedVolumes`` since then, to merge into that listing. The
            first listing is always whole.
        """
        d = self.ready()
        d.addCallback(lambda _: self._list(whole))
        return d

    def _incremental(self):
        return (self._last_started is not None
                and self._listings % FULL_EVERY != 0
                and IListsChanges.providedBy(self.raw))

    def _list(self, whole):
        started = datetime.datetime.now(datetime.timezone.utc)
        incremental = not whole and self._incremental()
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

    def _of_site(self):
        return "" if self.site_name is None else (
            " in site %s" % (self.site_name,))

    def _failed(self, what, failure):
        raise BackendError(
            "cannot %s the %s backend of cluster %s%s: %s; check that the "
            "backend is reachable and try again"
            % (what, self.name, self._cluster_name, self._of_site(),
               failure.getErrorMessage()))
