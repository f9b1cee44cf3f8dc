"""
The control service's state and behaviour, apart from HTTP: the stored
configuration, the backend, the cached listing, each node's slice and the
nodes' last reports.
"""

import time
from contextlib import nullcontext

from eliot import current_action, log_message, write_failure
from twisted.internet.defer import (
    DeferredLock, fail, inlineCallbacks, succeed,
)
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from blockmover import identity
from blockmover.config import ConfigError, is_fence_command, load_deployment
from blockmover.control.backend import SiteBackends, backend_key
from blockmover.control.errors import BackendError, StoreError
from blockmover.control import kept
from blockmover.control.failures import NodeFailures
from blockmover.control.failurestore import FailureStore
from blockmover.control.leases import STARTUP_GRACE, poll_limit
from blockmover.control.listing import VolumeListing
from blockmover.control.metrics import (
    CONFIGURATION, LISTING, ControlMetrics,
)
from blockmover.control.nodecalls import NodeCalls
from blockmover.control import push_rules
from blockmover.control.pushes import Pushes, PushStore
from blockmover.control.scrub import scrub_app_yml, scrub_yaml
from blockmover.control.slices import Slices
from blockmover.control.statefields import Transitions, attachments
from blockmover.control.store import StoredConfiguration
from blockmover.files import FileWriter
from blockmover.model import to_data

DEFAULT_REFRESH_INTERVAL = 30.0
# Configurations being read or applied at once; more are refused (503), so
# a flood of large ones cannot queue without bound in memory.
MAX_PENDING_CONFIGURATIONS = 4


class ConfigurationRejected(Exception):
    """
    A new configuration was refused; ``errors`` says every reason.
    """
    def __init__(self, errors):
        self.errors = list(errors)
        Exception.__init__(self, "; ".join(self.errors))


class _Parsed(object):
    """
    A configuration read off the reactor: its ``Deployment``.
    """

    def __init__(self, deployment):
        self.deployment = deployment


def _parse(cluster_yml, app_yml, cluster_path, app_path):
    """
    Read a configuration: YAML and every check of ``load_deployment``.
    Blocks: run it in a thread.

    :raise ConfigError: the configuration is refused.
    """
    return _Parsed(load_deployment(cluster_yml, app_yml, cluster_path,
                                   app_path))


def _as_shown(stored):
    """
    The texts of ``stored`` (a ``StoredConfiguration``) as ``GET
    /v1/configuration`` shows them: every application's ``secrets`` and
    every secret-looking value redacted. Blocks: run it in a thread.
    """
    return {"cluster_yml": scrub_yaml(stored.cluster_yml, stored.cluster_path,
                                      is_fence_command),
            "app_yml": scrub_app_yml(stored.app_yml, stored.app_path)}


class Busy(Exception):
    """
    The service takes no more configurations now; the client may try
    again later.
    """


class NoConfiguration(Exception):
    """
    No configuration was deployed yet.
    """
    def __init__(self):
        Exception.__init__(self, "no configuration was deployed yet; run "
                                 "blockmover-deploy cluster.yml app.yml")


class UnknownNode(Exception):
    """
    The configuration names no such node.
    """
    def __init__(self, node):
        self.node = node
        Exception.__init__(self, "the configuration names no node %r; add it "
                                 "under nodes: in cluster.yml" % (node,))


class GiveWay(object):
    """
    Lets a long computation in a thread give way to the reactor: the
    reactor notes that it had a turn every ``BEAT`` seconds, and ``pause``
    (called in the thread between steps of the computation) waits while it
    has not had one for ``LAG`` seconds. The interpreter runs one thread at
    a time: without this, ten thousand answers of a change and the plan of
    that change share it evenly, and the answers wait for the plan.
    """
    BEAT = 0.005
    LAG = 0.02
    # The longest one pause waits: a reactor that stopped holds nothing up.
    LONGEST = 1.0
    STEP = 0.002

    def __init__(self, reactor):
        self._seen = time.monotonic()
        self._beating = LoopingCall(self._beat)
        self._beating.clock = reactor
        self._beating.start(self.BEAT)

    def _beat(self):
        self._seen = time.monotonic()

    def pause(self):
        """
        In the thread: return once the reactor had a turn lately.
        """
        waited = 0.0
        while time.monotonic() - self._seen > self.LAG and \
                waited < self.LONGEST:
            time.sleep(self.STEP)
            waited += self.STEP

    def stop(self):
        """
        On the reactor: the computation is over.
        """
        if self._beating.running:
            self._beating.stop()


class BadReport(ValueError):
    """
    A node's report contradicts itself or the URL it came to.
    """


def _placement():
    # Imported late: placement is pure and large, and the service only
    # needs it once a configuration arrives.
    from blockmover import placement
    return placement


def _union(nodes, more):
    """
    Two sets of node names, None standing for every node.
    """
    if nodes is None or more is None:
        return None
    return nodes | more


def _plan_with_pushes(plan, before, after):
    """
    ``plan`` (node -> lines) with a line on each node of every push that
    ``after`` starts or ends and ``before`` did not have so.
    """
    plan = {node: list(lines) for node, lines in plan.items()}
    for dataset, push in sorted(after.items()):
        old = before.get(dataset)
        if old is not None and (old.push_id, old.phase) == (push.push_id,
                                                             push.phase):
            continue
        if push.phase == push_rules.LIVE:
            lines = {
                push.source_node: "%s: push its volume to %s (site %s) "
                "while it runs, then stop it for a last round"
                % (push.application, push.target_node, push.target_site),
                push.target_node: "%s: receive its volume from %s (site "
                "%s), then start it" % (push.application, push.source_node,
                                        push.source_site)}
        elif push.phase == push_rules.CANCELLED:
            lines = {push.source_node: "%s: push to %s cancelled (%s)"
                     % (push.application, push.target_node, push.error)}
        else:
            continue
        for node, line in lines.items():
            plan.setdefault(node, []).append(line)
    return plan


class ControlService(object):
    """
    Everything the REST API serves.

    :ivar listing: the ``VolumeListing``.
    :ivar slices: the ``Slices``.
    :ivar deployment: the current ``Deployment``, or None.
    """

    def __init__(self, store, reactor,
                 refresh_interval=DEFAULT_REFRESH_INTERVAL, make_backend=None,
                 cluster=None, metrics=None, failure_store=None,
                 startup_grace=STARTUP_GRACE, push_store=None,
                 published=None, configured=None):
        """
        :param cluster: the name of the cluster this service serves (its
            CA's): a configuration naming another is refused. None takes
            any (a service without TLS, for tests of the HTTP layer).
        :param metrics: the ``ControlMetrics`` to count in (new ones of its
            own by default).
        :param failure_store: where the records of failed nodes are kept
            (``failurestore.FailureStore``; by default in ``store``'s
            state directory).
        :param startup_grace: seconds from the start before a node not
            heard from counts as unresponsive, if longer than a lease.
        :param push_store: where the push records are kept
            (``pushes.PushStore``; by default in ``store``'s state
            directory).
        :param published: called with every ``SliceChange`` once it is
            handed out, and with the service once it started (a replica's
            ``replica.SlicePublisher``, which writes the slices to etcd
            for the other replicas to serve); None for none.
        :param configured: called with every ``Deployment`` once it is
            stored and taken (a replica's, to see its election's times);
            None for none.
        """
        self.metrics = metrics if metrics is not None else ControlMetrics()
        self.cluster = cluster
        self.store = store
        self._reactor = reactor
        self._make_backend = make_backend
        self._threadpool = ThreadPool(minthreads=0, maxthreads=4,
                                      name="blockmover-control-backend")
        # Configurations are read here, so a large or hostile one never
        # holds up the reactor, nor the backend's calls.
        self._parsing = ThreadPool(minthreads=0, maxthreads=2,
                                   name="blockmover-control-parse")
        self._writer = FileWriter(reactor, "blockmover-control-store")
        self.listing = VolumeListing(
            reactor, refresh_interval, self._listed, observer=self.metrics,
            merge=lambda function, *args: deferToThreadPool(
                reactor, self._threadpool, function, *args))
        # The cloud calls nodes without credentials ask for.
        self.node_calls = NodeCalls(self, reactor, self.metrics)
        self.slices = Slices()
        self.stored = None
        self.deployment = None
        self._backend = None
        self._reports = {}
        # (the StoredConfiguration, its texts as shown), once asked for.
        self._shown = None
        self._configuring = DeferredLock()
        self._pending = 0
        # Held while slices are computed, their counter saved and they are
        # handed out: one change of the slices at a time.
        self._slicing = DeferredLock()
        self.metrics.watch(self, reactor)
        # Since when nodes and applications are as they are (GET /v1/state).
        self.transitions = Transitions()
        # The ``placement.Placement`` the slices handed out were computed
        # with, or None before any.
        self._placement = None
        # The nodes whose slices the listings since may have changed (or
        # whose change could not be saved), computed again at the next
        # chance; None for every node.
        self._dirty = None
        # The ``Placement`` of slices computed and being saved, not yet
        # handed out: a listing meanwhile counts for it too.
        self._proposing = None
        # ((deployment, slices' membership), the nodes with a slice it
        # does not name): see _unconfigured.
        self._unconfigured_cache = None
        # Leases, fences, force-detaches and failovers.
        self.failures = NodeFailures(
            self, reactor, failure_store if failure_store is not None
            else FailureStore(store.state_dir), startup_grace)
        # Pushes between sites.
        self.pushes = Pushes(self, reactor, push_store if push_store
                             is not None else PushStore(store.state_dir))
        self._published = published
        self._configured = configured

    # --- life ------------------------------------------------------------

    def start(self):
        """
        Load the stored configuration and start listing its backend. Reads
        the configuration on the calling thread: before the reactor runs
        (see ``start_reading``).

        :raise StoreError: the stored configuration cannot be used.
        """
        stored = self._start_threads()
        self._start_with(stored, None if stored is None
                         else self._read_stored(stored))

    @inlineCallbacks
    def start_reading(self):
        """
        ``start``, reading the stored configuration in a thread: for a
        service started on a running reactor (a replica just elected,
        which must go on renewing its lease and answering meanwhile; at
        10,000 nodes the reading takes seconds).

        :return: Deferred firing once started, failing with
            ``StoreError`` when the stored configuration cannot be used.
        """
        stored = self._start_threads()
        parsed = None
        if stored is not None:
            parsed = yield deferToThreadPool(
                self._reactor, self._parsing, self._read_stored, stored)
        self._start_with(stored, parsed)

    def _start_threads(self):
        """
        Start the threads; :return: the stored configuration.
        """
        self._threadpool.start()
        self._parsing.start()
        self._writer.start()
        self.node_calls.start()
        self.pushes.start()
        return self.store.load()

    def _read_stored(self, stored):
        """
        The stored configuration, read. Blocks: run it in a thread, or
        before the reactor runs.

        :raise StoreError: it cannot be used.
        """
        try:
            parsed = _parse(stored.cluster_yml, stored.app_yml,
                            stored.cluster_path, stored.app_path)
        except ConfigError as e:
            raise StoreError(
                "the configuration stored in %s no longer loads (%s); "
                "remove it and deploy a corrected configuration"
                % (self.store.path, e))
        name = parsed.deployment.cluster_name
        if self.cluster is not None and name != self.cluster:
            raise StoreError(
                "the configuration stored in %s is cluster %r's, but "
                "this service's certificates are cluster %r's; start it "
                "with cluster %r's certificates, or with another "
                "--state-dir" % (self.store.path, name, self.cluster,
                                 name))
        return parsed

    def _start_with(self, stored, parsed):
        """
        Take ``stored`` (read as ``parsed``), or nothing, and start
        listing.
        """
        if stored is not None:
            self.stored = stored
            self.deployment = parsed.deployment
            self.transitions.configured(None, parsed.deployment,
                                        self._reactor.seconds())
            self.slices = Slices(stored.counter)
            self._backend = self._new_backend(parsed.deployment)
            self.listing.set_lister(self._backend.list_volumes)
        self.failures.start()
        self.listing.start()

    def stop(self):
        """
        Stop listing, end every long poll, stop the backend's threads.
        """
        self.listing.stop()
        self.failures.stop()
        self.slices.cancel_all()
        self._threadpool.stop()
        self.node_calls.stop()
        self._parsing.stop()
        self._writer.stop()

    def _save(self, stored):
        """
        Write ``stored`` to the store, durably.

        :return: a Deferred firing once it is kept, or failing (with
            ``StoreError`` when the store says why).
        """
        return self.save_record(self.store, stored)

    def save_record(self, record, value):
        """
        Save ``value`` in ``record`` (the configuration's store or another
        record's): a file store's blocking ``save`` in the store's writer
        thread, after every write queued before; an etcd record's
        (``asynchronous``) at once, since it waits for nothing itself.

        :return: a Deferred firing once saved.
        """
        started = time.perf_counter()
        if getattr(record, "asynchronous", False):
            d = record.save(value)
        else:
            d = self._writer.run(record.save, value)

        def timed(result, ok):
            self.metrics.stored(record.name, time.perf_counter() - started,
                                ok)
            return result
        d.addCallbacks(timed, timed, callbackArgs=(True,),
                       errbackArgs=(False,))
        return d

    @property
    def backend(self):
        """
        The current configuration's ``ControlBackend``, or None.
        """
        return self._backend

    def _new_backend(self, deployment):
        kwargs = {}
        if self._make_backend is not None:
            kwargs["make"] = self._make_backend
        return SiteBackends(deployment, self._reactor, self._threadpool,
                            calls=self.metrics.backend_calls, **kwargs)

    # --- configuration ---------------------------------------------------

    def configure(self, cluster_yml, app_yml, cluster_path="cluster.yml",
                  app_path="app.yml", dry_run=False):
        """
        Validate and, unless ``dry_run``, store and apply a configuration.
        The texts are read in a thread, several at once; the rest happens
        one configuration at a time.

        :return: a Deferred firing with ``{"generation": N, "plan": {NODE:
            [LINE, ...]}}``, or failing with ``ConfigurationRejected`` (and
            nothing changed), or with ``StoreError`` when it could not be
            saved (and nothing changed).
        :raise Busy: ``MAX_PENDING_CONFIGURATIONS`` are pending already.
        """
        if self._pending >= MAX_PENDING_CONFIGURATIONS:
            raise Busy("%d configurations are being read or applied now, the"
                       " most the service takes at once; send yours again "
                       "once they are done" % (self._pending,))
        # The caller's action, read now while it is current: its task
        # travels to the agents with the slices this configuration changes.
        action = current_action()

        def refused(failure):
            failure.trap(ConfigError)
            raise ConfigurationRejected([str(failure.value)])

        started = self._reactor.seconds()

        def read(parsed):
            # How long reading the texts took, apart from applying them.
            with action.context() if action is not None else nullcontext():
                log_message(message_type="blockmover:control:read",
                            seconds=self._reactor.seconds() - started,
                            nodes=len(parsed.deployment.nodes),
                            applications=len(
                                parsed.deployment.applications))
            return parsed

        d = deferToThreadPool(self._reactor, self._parsing, _parse,
                              cluster_yml, app_yml, cluster_path, app_path)
        d.addCallbacks(read, refused)
        d.addCallback(lambda parsed: self._configuring.run(
            self._configure, parsed, cluster_yml, app_yml, cluster_path,
            app_path, dry_run, action))
        self._pending += 1

        def done(result):
            self._pending -= 1
            return result
        d.addBoth(done)
        return d

    @inlineCallbacks
    def _configure(self, parsed, cluster_yml, app_yml, cluster_path,
                   app_path, dry_run, action):
        deployment = parsed.deployment
        yield self._check_cluster_name(deployment)
        try:
            backend, volumes, listed_at = yield self._listing_for(deployment)
        except BackendError as e:
            raise ConfigurationRejected([str(e)])
        try:
            backend_limits = yield backend.limits()
        except BackendError as e:
            raise ConfigurationRejected([str(e)])
        placement = _placement()
        # The pushes it starts, goes on with or ends: saved with it.
        pushes = self.pushes.proposed(
            deployment, volumes,
            {node: report for node, (report, _) in self._reports.items()})
        # The configuration indexed once, for its checks, its slices and
        # its plan.
        # The slices come from the placement with the failovers decided
        # and the pushes under way applied; the configuration stays as the
        # operator wrote it.
        indexed = placement.Placement(
            self.pushes.effective(self.failures.effective(deployment),
                                  pushes),
            backend.allocation_unit, self._placement)
        errors = placement.check_deployment(deployment, volumes,
                                            backend.allocation_unit,
                                            backend_limits, indexed)
        if errors:
            raise ConfigurationRejected(errors)
        # What the plan is foreseen from, taken now: the plan is made once
        # the slices are handed out.
        foreseen = (self.deployment, deployment, volumes,
                    backend.allocation_unit,
                    # A node proven down holds nothing any more, whatever
                    # it last reported.
                    {node: report.state
                     for node, (report, _) in self._reports.items()
                     if not self.failures.is_down(node) and (
                         node in deployment.nodes or (
                             self.deployment is not None
                             and node in self.deployment.nodes))},
                    indexed)
        before = self.pushes.records
        if dry_run:
            plan = yield self._plan(*foreseen)
            current = self.stored.generation if self.stored else 0
            return {"generation": current,
                    "plan": _plan_with_pushes(plan, before, pushes)}
        tasks = {}
        if action is not None:
            task = action.serialize_task_id().decode("ascii")
            tasks = dict.fromkeys(deployment.nodes, task)
        generation = yield self._slicing.run(
            self._store, parsed, backend, volumes, listed_at, tasks,
            StoredConfiguration(cluster_yml=cluster_yml, app_yml=app_yml,
                                cluster_path=cluster_path, app_path=app_path,
                                generation=0, counter=0), indexed, pushes)
        log_message(message_type="blockmover:control:configured",
                    generation=generation, cluster=deployment.cluster_name)
        plan = yield self._plan(*foreseen)
        return {"generation": generation,
                "plan": _plan_with_pushes(plan, before, pushes)}

    def _plan(self, old, new, volumes, allocation_unit, reported, indexed):
        """
        What deploying ``new`` over ``old`` changes on each node
        (``placement.describe_changes``), foreseen in a thread: it is pure,
        and on a large cluster it takes a while that no agent and no other
        request should wait for. It gives way to the reactor whenever the
        reactor has work (``GiveWay``).

        :return: a Deferred firing with ``{node: [line, ...]}``.
        """
        way = GiveWay(self._reactor)

        def describe():
            plan = _placement().describe_changes(
                old, new, volumes, allocation_unit, reported, indexed,
                pause=way.pause)
            return {node: list(lines) for node, lines in plan.items()}
        d = deferToThreadPool(self._reactor, self._parsing, describe)

        def stop(result):
            way.stop()
            return result
        return d.addBoth(stop)

    @inlineCallbacks
    def _store(self, parsed, backend, volumes, listed_at, tasks, stored,
               indexed, pushes):
        """
        Save a checked configuration, then take it and hand out the slices
        it changes; with ``_slicing`` held. A failed save changes nothing.
        Only the slices of the nodes the configuration touches (and those
        a listing since changed) are computed again, when the backend
        stays; all of them when it changes.

        :return: a Deferred firing with its generation.
        """
        deployment = parsed.deployment
        generation = self.slices.counter + 1
        stored = stored.set(generation=generation, counter=generation)
        same_backend = backend is self._backend
        taken, self._dirty = self._dirty, set()
        nodes = None
        if same_backend:
            # The cache may have been refreshed since the checks: the
            # slices come from its latest listing.
            volumes, listed_at = self.listing.listing, self.listing.listed_at
            nodes = _union(indexed.touched(self._placement), taken)
        self._proposing = indexed
        try:
            if pushes is not self.pushes.records and nodes is not None:
                nodes = _union(nodes, self.pushes.nodes() | {
                    node for push in pushes.values() for node in push.nodes})
            with self.metrics.recomputing(CONFIGURATION):
                computed, removed = self._with_failures(
                    deployment, indexed.slices(volumes, listed_at, nodes,
                                               generation, tasks),
                    volumes, listed_at, generation, indexed, pushes)
                change = self.slices.propose_some(
                    computed, removed, listed_at, generation, tasks)
            # The pushes first: a slice may show one only once it is kept.
            yield self.pushes.save(pushes)
            # Durable before anything changes: a crash now restarts with
            # it.
            yield self._save(stored)
        except BaseException:
            self._dirty = _union(self._dirty, taken)
            raise
        finally:
            self._proposing = None
        self.stored = stored
        self.transitions.configured(self.deployment, deployment,
                                    self._reactor.seconds())
        previous, self.deployment = self.deployment, deployment
        if not same_backend:
            # The new backend was just listed: that listing seeds the cache.
            self._backend = backend
            self.listing.set_lister(backend.list_volumes, volumes, listed_at,
                                    CONFIGURATION)
        self._placement = indexed
        self._commit(change)
        # The nodes it removed, the failovers it ends: saved after, and
        # not worth refusing the configuration for (a failover it ends
        # no longer holds whatever the records say).
        self.failures.configured(previous, deployment).addErrback(
            write_failure)
        self.metrics.moves.placed(previous, deployment, self.slices.generation,
                                  self._reactor.seconds())
        if same_backend:
            self.listing.refresh(CONFIGURATION)
        if self._configured is not None:
            self._configured(deployment)
        return generation

    @inlineCallbacks
    def _check_cluster_name(self, deployment):
        """
        Refuse a cluster name other than the one this service serves, and a
        new cluster name while the backend holds volumes of the current
        one: dataset ids come from the cluster's name, so under a
        new name every application would start on a new, blank volume.
        """
        if self.cluster is not None and \
                deployment.cluster_name != self.cluster:
            raise ConfigurationRejected([
                "cluster.yml names cluster %r, but this control service "
                "serves cluster %r (its CA's certificates say so, and its "
                "agents refuse slices of another cluster); set cluster.name:"
                " %s" % (deployment.cluster_name, self.cluster,
                         self.cluster)])
        current = self.deployment
        if current is None or current.cluster_name == deployment.cluster_name:
            return
        if self.listing.volumes is None:
            yield self.listing.refresh(CONFIGURATION)
        if self.listing.volumes is None:
            raise ConfigurationRejected([
                "cluster.yml renames the cluster from %r to %r, and whether "
                "volumes of cluster %r are left in %s cannot be "
                "told (%s); keep cluster.name: %s, or deploy again once the "
                "backend can be listed"
                % (current.cluster_name, deployment.cluster_name,
                   current.cluster_name, current.backends_described(),
                   self.listing.last_error, current.cluster_name)])
        owned = [v.metadata.get(identity.NAME_KEY, v.volume_id)
                 for v in self.listing.volumes
                 if v.metadata.get(identity.CLUSTER_KEY,
                                   current.cluster_name)
                 == current.cluster_name]
        if owned:
            raise ConfigurationRejected([
                "cluster.yml renames the cluster from %r to %r, but the "
                "backend holds %d volume(s) of cluster %r (%s): volumes "
                "belong to their cluster by name, so under the new name "
                "every application would stop and start again on a new, "
                "blank volume. Keep cluster.name: %s; or first deploy with "
                "no applications on any node, remove those volumes, then "
                "deploy the new name"
                % (current.cluster_name, deployment.cluster_name,
                   len(owned), current.cluster_name,
                   ", ".join(sorted(owned)[:5])
                   + (", ..." if len(owned) > 5 else ""),
                   current.cluster_name)])

    @inlineCallbacks
    def _listing_for(self, deployment):
        """
        The backend ``deployment`` uses and a listing of its volumes to check
        the deployment against: the cached one when the backend stays, a
        first one of the new backend when it changes.
        """
        backend = self._backend
        if backend is not None and backend.key == backend_key(deployment):
            # A change a node reported (a volume it grew, say) is in the
            # listing checked against, even if the listing it asked for
            # waits out its second.
            yield self.listing.settled()
            if self.listing.volumes is None:
                yield self.listing.refresh(CONFIGURATION)
            if self.listing.volumes is None:
                raise BackendError(
                    "%s cannot be listed (%s); check that it is "
                    "reachable and deploy again"
                    % (deployment.backends_described(),
                       self.listing.last_error))
            yield backend.ready()
            return backend, self.listing.listing, self.listing.listed_at
        backend = self._new_backend(deployment)
        listed_at = self._reactor.seconds()
        try:
            volumes = yield backend.list_volumes()
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(
                "%s cannot be listed (%s); check that it is "
                "reachable and deploy again"
                % (deployment.backends_described(), e))
        return backend, _placement().Listing.of(volumes), listed_at

    def configuration(self):
        """
        The stored configuration, with every application's ``secrets`` and
        every secret-looking value redacted: the secrets themselves go only
        to the slices of the nodes that run their applications.

        :return: a Deferred firing with the configuration as ``GET
            /v1/configuration`` shows it; failing with ``NoConfiguration``
            when none was deployed yet.
        """
        stored = self.stored
        if stored is None:
            return fail(NoConfiguration())
        if self._shown is not None and self._shown[0] is stored:
            d = succeed(self._shown[1])
        else:
            # Redacted once per configuration, in a thread, when first
            # asked for: not while the configuration is applied nor while
            # the service starts (a large one takes seconds), and never a
            # whole YAML file's scrubbing on the reactor.
            d = deferToThreadPool(self._reactor, self._parsing, _as_shown,
                                  stored)

            def keep(shown):
                if self.stored is stored:
                    self._shown = (stored, shown)
                return shown
            d.addCallback(keep)
        d.addCallback(lambda shown: {
            "generation": stored.generation,
            "cluster_yml": shown["cluster_yml"],
            "app_yml": shown["app_yml"],
            "cluster_path": stored.cluster_path,
            "app_path": stored.app_path})
        return d

    # --- slices ------------------------------------------------------------

    def _listed(self, changed):
        if changed:
            self._mark_dirty(self.listing.changes)
            # A volume now listed on a node proven down is detached.
            self.failures.wake()
            self.pushes.update().addErrback(write_failure)
        if self._dirty is None or self._dirty:
            self._slicing.run(self._recompute).addErrback(self._not_handed_out)
        else:
            self._slicing.run(self.slices.touch, self.listing.listed_at)

    def _mark_dirty(self, changes):
        """
        Note the nodes whose slices ``changes`` (the listing's, None for
        all) may change, to compute them again.
        """
        if changes is None or self._placement is None:
            self._dirty = None
            return
        if self._dirty is not None and self.failures.records is not None:
            # A removed node's slice lists the volumes attached to it.
            self._dirty |= set(self.failures.records.removed)
        for placement in (self._placement, self._proposing):
            if placement is not None and self._dirty is not None:
                self._dirty |= placement.affected(changes)
        if self._dirty is not None:
            # A push's volumes matter to both its nodes.
            self._dirty |= self.pushes.affected(changes)

    def _not_handed_out(self, failure):
        # The slices were not handed out (their counter could not be saved,
        # most likely): the next listing computes them again.
        write_failure(failure)

    @inlineCallbacks
    def _recompute(self):
        """
        Compute the slices of the nodes the listings changed (of every
        node, the first time or after the backend's allocation unit
        changed) from the deployment and the listing; give changed slices
        a new generation, save the counter, then hand them out. With
        ``_slicing`` held.
        """
        backend = self._backend
        if (self.deployment is None or self.listing.listing is None
                or backend is None or backend.allocation_unit is None):
            return
        placement = self._placement
        dirty, self._dirty = self._dirty, set()
        effective = self.pushes.effective(
            self.failures.effective(self.deployment))
        if placement is None or placement.allocation_unit != \
                backend.allocation_unit:
            placement = _placement().Placement(effective,
                                               backend.allocation_unit)
            dirty = None
        elif placement.deployment is not effective:
            # A failover decided or ended: the nodes it touches.
            previous = placement
            placement = _placement().Placement(
                effective, backend.allocation_unit, previous)
            dirty = _union(dirty, placement.touched(previous))
        if dirty is not None and not dirty:
            self.slices.touch(self.listing.listed_at)
            return
        self._proposing = placement
        try:
            with self.metrics.recomputing(LISTING):
                computed, removed = self._with_failures(
                    self.deployment,
                    placement.slices(self.listing.listing,
                                     self.listing.listed_at, dirty,
                                     self.slices.counter + 1),
                    self.listing.listing, self.listing.listed_at,
                    self.slices.counter + 1, placement)
                change = self.slices.propose_some(
                    computed, removed, self.listing.listed_at)
            if change.counter != self.slices.counter:
                # Saved before any slice of the new generation is handed
                # out, so a restart never hands out the same generation
                # twice.
                stored = self.stored.set(counter=change.counter)
                yield self._save(stored)
                self.stored = stored
        except BaseException:
            # Computed again at the next chance.
            self._dirty = _union(self._dirty, dirty)
            raise
        finally:
            self._proposing = None
        self._placement = placement
        self._commit(change)

    def _with_failures(self, deployment, computed, listing, listed_at,
                       generation, placement, pushes=None):
        """
        ``computed`` (node -> ``NodeDesired``) with what node failures
        and pushes add: each node told which applications that failed over
        away from it to release, and a slice for each node removed from the
        configuration that may still hold volumes, releasing them all; the
        pushes of ``pushes`` (the saved ones by default) each node takes
        part in.

        :return: ``(computed, removed)``: the slices, and the nodes whose
            slices go away.
        """
        parts = self.pushes.parts(
            deployment, listing,
            lambda d: (placement.datasets[d].size
                       if d in placement.datasets else None), pushes)
        for node, desired in list(computed.items()):
            if node in parts:
                incoming, outgoing = parts[node]
                desired = desired.set(incoming=incoming, outgoing=outgoing)
            release = self.failures.release_of(node, deployment)
            if self.failures.releasing(node):
                # Proven down or coming back: nothing wanted, only the
                # volumes attached to it, to give up.
                desired = desired.set(
                    datasets={}, applications={},
                    volumes={d: v for d, v in desired.volumes.items()
                             if v.attached_to == desired.backend_id})
            if release:
                desired = desired.set(release=release)
            computed[node] = desired
        # The nodes this configuration removes (not yet recorded as
        # removed while it is being saved) and those removed before.
        previous = self.deployment
        dropped = {} if previous is None or previous is deployment else {
            name: node.backend_id for name, node in previous.nodes.items()
            if name not in deployment.nodes}
        leaving = self.failures.removed_slices(
            deployment.cluster_name, listing, listed_at, generation, dropped)
        for node, desired in leaving.items():
            if node not in deployment.nodes:
                computed[node] = desired
        removed = self._unconfigured(deployment) - set(leaving)
        return computed, removed

    def _unconfigured(self, deployment):
        """
        The nodes with a slice that ``deployment`` does not name; worked
        out again only when either changed, not for every node's change
        of lease (ten thousand nodes each costing ten thousand looks).
        """
        key = (deployment, self.slices.membership)
        cached = self._unconfigured_cache
        if cached is None or cached[0][0] is not deployment or \
                cached[0][1] != key[1]:
            cached = (key, frozenset(self.slices.nodes()
                                     - set(deployment.nodes)))
            self._unconfigured_cache = cached
        return cached[1]

    def nodes_changed(self, nodes):
        """
        The slices of ``nodes`` may change for a reason of their own
        (their lease, fence or a failover): compute them again.
        """
        self._dirty = _union(self._dirty, set(nodes))
        self._slicing.run(self._recompute).addErrback(self._not_handed_out)

    def _commit(self, change):
        self.slices.commit(change)
        if self._published is not None:
            self._published(change)
        if change.changed:
            log_message(message_type="blockmover:control:slices",
                        generation=self.slices.counter,
                        nodes=sorted(change.changed))

    def check_node(self, node):
        """
        :raise NoConfiguration: none was deployed yet.
        :raise UnknownNode: the configuration names no ``node``.
        """
        if self.deployment is None:
            raise NoConfiguration()
        if node not in self.deployment.nodes and \
                not self.failures.is_removed(node):
            raise UnknownNode(node)

    def wait_desired(self, node, after):
        """
        :return: a cancellable Deferred firing with ``node``'s
            ``NodeDesired`` once its generation exceeds ``after`` (None:
            at once), or with None if the node leaves the configuration.
        :raise UnknownNode, NoConfiguration: see ``check_node``.
        """
        self.check_node(node)
        self.failures.renew(node)
        return self.slices.wait(node, after)

    def renewed_elsewhere(self, nodes):
        """
        ``nodes`` polled another replica: renew their leases, as their
        polls here would. Names the configuration does not know are left
        alone.

        :return: how many leases were renewed.
        """
        deployment = self.deployment
        renewed = 0
        for node in nodes:
            if deployment is not None and (
                    node in deployment.nodes or self.failures.is_removed(node)):
                self.failures.renew(node)
                renewed += 1
        return renewed

    def poll_limit(self):
        """
        The longest a long poll may wait: a third of the lease, so a live
        agent renews its lease often enough.
        """
        return poll_limit(self.failures.leases.duration)

    # --- reports -----------------------------------------------------------

    def report(self, node, report):
        """
        Keep ``node``'s ``NodeReport``; refresh the listing if it asks to.
        """
        self.check_node(node)
        if report.state.node != node:
            raise BadReport("a report of node %r was sent for node %r; send "
                            "it to /v1/nodes/%s/state"
                            % (report.state.node, node, report.state.node))
        old, _ = self._reports.get(node, (None, None))
        now = self._reactor.seconds()
        self.failures.renew(node, now)
        self._reports[node] = (report, now)
        self.failures.reported(node, report)
        self.metrics.moves.reported(node, report, now)
        self.transitions.reported(node, old, report, now,
                                  self.deployment.applications)
        if report.changed_backend:
            # At most one listing a second, however many nodes report.
            self.listing.request()
        if report.state.pushes or node in self.pushes.nodes():
            self.pushes.update().addErrback(write_failure)

    def last_reports(self):
        """
        Every node's last ``NodeReport`` and when it came (reactor seconds),
        by node: ``{node: (report, reported_at)}``. Read it, never change it.
        """
        return self._reports

    def state(self):
        """
        The cluster as the API's ``GET /v1/state`` shows it.
        """
        deployment = self.deployment
        names = set(self._reports) | set(self.failures.records.removed)
        if deployment is not None:
            names |= set(deployment.nodes)
        nodes = {}
        for name in sorted(names):
            report, reported_at = self._reports.get(name, (None, None))
            nodes[name] = {
                "reported_at": reported_at,
                "state": to_data(report.state) if report is not None else None,
                "progress": to_data(report.progress) if report is not None else None,
                "generation": self.slices.generation(name),
            }
            nodes[name].update(self.failures.node_state(name))
            desired = self.slices.get(name)
            nodes[name]["release"] = (list(desired.release)
                                      if desired is not None else [])
        applications = {}
        # What a node proven down (fenced, confirmed down) last reported
        # runs no more: it is off.
        reports = [(n, r) for n, (r, _) in self._reports.items()
                   if not self.failures.is_down(n)]
        if deployment is not None:
            for app in sorted(deployment.applications):
                dataset = identity.dataset_id(deployment.cluster_name, app)
                applications[app] = {
                    "dataset_id": dataset,
                    "wanted_on": deployment.placement.get(app),
                    "running_on": sorted(
                        n for n, r in reports if app in r.state.running),
                    "ready_on": sorted(
                        n for n, r in reports
                        if app in r.state.running
                        and r.state.running[app].ready),
                    "mounted_on": sorted(
                        n for n, r in reports if dataset in r.state.mounts),
                }
                applications[app].update(
                    self.failures.application_state(app, deployment))
        unwanted = self._status_fields(nodes, applications)
        return {"generation": self.stored.generation if self.stored else 0,
                "listed_at": self.listing.listed_at,
                "nodes": nodes, "applications": applications,
                "now": self._reactor.seconds(),
                "cluster": deployment.cluster_name if deployment is not None
                else self.cluster,
                "unwanted_attachments": unwanted,
                "stuck_detaches": self.failures.stuck_detaches(),
                "sites": self._sites(),
                "pushes": self._pushes_shown()}

    def _sites(self):
        """
        Each site, for ``state()``: its backend, its nodes and how many of
        the cluster's volumes it holds.
        """
        deployment = self.deployment
        if deployment is None:
            return {}
        listing = self.listing.listing
        held = {}
        for volume in (listing.volumes() if listing is not None else ()):
            held[volume.site] = held.get(volume.site, 0) + 1
        return {site: {"backend": backend.name,
                       "nodes": sorted(n for n, node in deployment.nodes.items()
                                       if node.site == site),
                       "volumes": held.get(site, 0)}
                for site, backend in deployment.site_backends().items()}

    def _pushes_shown(self):
        """
        Every push kept, for ``state()``: its record and the progress its
        source and target last reported.
        """
        shown = {}
        for dataset, push in sorted(self.pushes.records.items()):
            entry = to_data(push)
            for side, node in (("source", push.source_node),
                               ("target", push.target_node)):
                report, _ = self._reports.get(node, (None, None))
                progress = (report.state.pushes.get(dataset)
                            if report is not None else None)
                entry[side + "_progress"] = (
                    to_data(progress) if progress is not None
                    and progress.push_id == push.push_id else None)
            shown[push.application] = entry
        return shown

    def _status_fields(self, nodes, applications):
        """
        Add to ``state()``'s ``nodes`` and ``applications`` what
        ``blockmover status`` shows beside the reports: each node's
        address and since when it is converged or not, each application's
        volume's holders in the listing and since when it is placed as it
        is.

        :return: the listing's attached volumes no application uses.
        """
        deployment = self.deployment
        configured = deployment.nodes if deployment is not None else {}
        for name, node in nodes.items():
            node["address"] = (configured[name].address
                               if name in configured else None)
            node["transitioned_at"] = self.transitions.node(name)
        attached, unwanted = attachments(deployment, self.listing.volumes)
        for name, application in applications.items():
            application["attached_to"] = attached.get(
                application["dataset_id"], [])
            application["transitioned_at"] = \
                self.transitions.application(name)
        return unwanted

    def volumes(self):
        """
        The cached listing as ``GET /v1/volumes`` shows it.
        """
        return {"listed_at": self.listing.listed_at,
                "volumes": [to_data(v) for v in self.listing.volumes or ()],
                "refreshes": self.listing.refreshes,
                "error": self.listing.last_error}

    # --- kept volumes (``blockmover.control.kept``) ------------------------

    def kept_volumes(self):
        """
        The volumes an operator may remove, as ``GET /v1/volumes/kept``
        shows them.
        """
        return kept.shown(self.listing.listing, self.pushes.records,
                          self.listing.listed_at)

    def remove_volume(self, volume_id, who):
        """
        Remove the kept volume ``volume_id`` for the user ``who``
        (``kept.remove``). :return: a Deferred.
        """
        return kept.remove(self, volume_id, who)
