"""
Node failure, as the control service handles it: leases, fencing,
force-detach and failover, in that order and never out of it.

A node is in one of these states (``NodeFailures.condition``):

- ``live``: its lease holds.
- ``unresponsive``: its lease lapsed. Nothing moves off it: it may still
  write. When it holds volumes or applications and the cluster has a
  fencing method, the service fences it.
- ``fencing``: a fence of it runs.
- ``fenced``: a fence proved it off.
- ``confirmed-down``: an operator confirmed it down (``blockmover node
  confirm-down``).
- ``returning``: fenced or confirmed down, and its agent renewed its lease
  since: the proof is void, nothing more is detached from it, and its
  slice tells it what to release (``NodeDesired.release``); it is live
  again once its report shows it holds nothing (while it returns its
  slice wants nothing).

Only a node fenced or confirmed down (and not returning) has its volumes
detached by the service (through the backend, retried with backoff while
the cloud refuses), and only then do its applications with automatic
failover go to their first live candidate. Every fence attempt, its
result, an operator's request or confirmation and every failover decision
is saved (``failurestore``) before what it allows is done, so that a
restarted service resumes where it was and decides nothing twice: a fence
recorded as started is run again (fencing is idempotent), one recorded as
done is not.
"""

from eliot import log_message, write_failure
from twisted.internet.defer import DeferredLock, inlineCallbacks, maybeDeferred
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from blockmover import identity
from blockmover.backends.interface import BlockDeviceError, DetachRefused
from blockmover.control import failover as failover_rules
from blockmover.control import fencing
from blockmover.control.failurestore import (
    BY_SERVICE, FAILED, FENCED, STARTED, Confirmation, FailoverDecision,
    FenceAttempt, NodeRecord,
)
from blockmover.control.leases import STARTUP_GRACE, Leases
from blockmover.model import DEFAULT_LEASE, FENCE_NONE, NodeDesired, to_data
from blockmover.poll import Backoff

LIVE = "live"
UNRESPONSIVE = "unresponsive"
FENCING = "fencing"
FENCED_STATE = "fenced"
CONFIRMED_DOWN = "confirmed-down"
RETURNING = "returning"
FAILURE_STATES = (LIVE, UNRESPONSIVE, FENCING, FENCED_STATE, CONFIRMED_DOWN,
                  RETURNING)

# After a failed fence: quick retries while ``fencing.retries`` lasts,
# then one every LAST_FENCE_RETRY seconds, for as long as the node stays
# unresponsive (its fence device may come back).
FENCE_BACKOFF = Backoff(initial=1.0, factor=2.0, maximum=30.0)
LAST_FENCE_RETRY = 300.0
# How often, at most, a turn looks for leases that lapsed: a lapse is
# noticed within this part of a lease.
TURNS_PER_LEASE = 20
# A detach the cloud refused is tried again with this backoff: a compute
# service comes back on its own time.
DETACH_BACKOFF = Backoff(initial=2.0, factor=2.0, maximum=60.0)

# What an operator can do about a volume the cloud will not detach.
_DETACH_ADVICE = (
    "repair what the cloud names (on OpenStack: bring the server's compute "
    "service back, or reset the server out of ERROR with `openstack server "
    "set --state active`), or detach the volume by hand; the service tries "
    "again until it succeeds")


class NotDown(Exception):
    """
    An operator confirmed down a node whose lease holds (409).
    """


class NotFenceable(Exception):
    """
    An operator asked to fence a node the service cannot fence (409).
    """


class _Refused(object):
    """
    The last refusal of a volume's force-detach, and when to try again.
    """

    def __init__(self, volume, node, reason, attempts, retry_at):
        self.volume = volume
        self.node = node
        self.reason = reason
        self.attempts = attempts
        self.retry_at = retry_at


class NodeFailures(object):
    """
    Leases, fences, force-detaches and failovers of one control service's
    nodes. Lives on the reactor; its records change one at a time, each
    saved before it counts.

    :param service: the ``ControlService``, for its deployment, listing,
        backend, slices and its writer thread.
    :param store: the ``failurestore.FailureStore``.
    :param startup_grace: seconds from the start before a node not heard
        from counts as unresponsive, if longer than a lease
        (``leases.Leases``).
    """

    def __init__(self, service, reactor, store, startup_grace=STARTUP_GRACE):
        self._service = service
        self._reactor = reactor
        self._store = store
        self.records = None
        self._startup_grace = startup_grace
        self.leases = Leases(DEFAULT_LEASE, reactor.seconds(), startup_grace)
        self._changing = DeferredLock()
        # Fence commands wait up to their deadline each: their own threads.
        self._fence_threads = ThreadPool(minthreads=0, maxthreads=4,
                                         name="blockmover-control-fence")
        self._fencing = {}
        self._fence_retry_at = {}
        self._detaching = set()
        self._refused = {}
        # Application -> why it could not fail over (for status).
        self._stranded = {}
        self._timer = None
        self._running = False
        # (deployment, failovers, effective deployment), the last made.
        self._effective = None

    # --- life ------------------------------------------------------------

    def start(self):
        """
        Read the records; resume at the next turn.

        :raise StoreError: they cannot be read.
        """
        self.records = self._store.load()
        self.leases = Leases(self._lease(), self._reactor.seconds(),
                             self._startup_grace)
        self._fence_threads.start()
        self._running = True
        self.wake()

    def stop(self):
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._fence_threads.stop()

    def _lease(self):
        deployment = self._service.deployment
        return deployment.lease if deployment is not None else DEFAULT_LEASE

    # --- what the service asks -------------------------------------------

    def renew(self, node, now=None):
        """
        ``node``'s agent was heard from (at ``now``; None: now): renew its
        lease. A node proven down that is heard from is returning: its
        slice changes.
        """
        was = self.condition(node)
        now = self._reactor.seconds() if now is None else now
        self.leases.renew(node, now)
        condition = self.condition(node)
        if was != condition:
            log_message(message_type="blockmover:control:node-state",
                        node=node, state=condition, was=was)
            if condition == RETURNING:
                # Saved, so that a restarted service does not take the
                # old proof for a current one.
                self._change(self._mark_returned, node, now).addErrback(
                    write_failure)
            self._service.nodes_changed({node})
            self.wake()

    def reported(self, node, report):
        """
        ``node`` reported ``report``: a returning node that holds nothing
        (its slice wants nothing while it returns: ``releasing``) is live
        again, and a removed node that holds nothing is forgotten. Told
        by the report alone, never by a slice that may not be computed
        again yet.
        """
        if self.condition(node) == RETURNING and \
                _holds_nothing(report.state):
            self._change(self._back_in_service, node).addErrback(
                write_failure)
        elif node in self.records.removed and _holds_nothing(report.state):
            self._change(self._forget_removed, node).addErrback(
                write_failure)

    def configured(self, old, new):
        """
        The configuration ``new`` replaced ``old`` (None at the start):
        note the nodes it removed (they may still hold volumes), forget
        those it names again, and drop the failovers it overrides.

        :return: a Deferred firing once that is saved.
        """
        self.leases.duration = new.lease
        return self._change(self._reconfigure, old, new)

    def settled(self):
        """
        :return: a Deferred firing once every change of the records asked
            for so far is saved and taken.
        """
        return self._changing.run(lambda: None)

    def condition(self, node, now=None):
        """
        ``node``'s state: one of ``LIVE``, ``UNRESPONSIVE``, ``FENCING``,
        ``FENCED_STATE``, ``CONFIRMED_DOWN``, ``RETURNING``.
        """
        now = self._reactor.seconds() if now is None else now
        record = self.records.nodes.get(node) if self.records else None
        live = self.leases.live(node, now)
        if record is not None and record.down_since is not None:
            renewed = self.leases.renewed_at(node)
            if record.proven_down() and (renewed is None
                                         or renewed <= record.down_since):
                if record.fence is not None and \
                        record.fence.result == FENCED:
                    return FENCED_STATE
                return CONFIRMED_DOWN
            if live and node not in self._fencing:
                return RETURNING
            # Heard from after its proof, then silent again: the proof no
            # longer holds, and only a new one moves anything.
        if node in self._fencing:
            return FENCING
        return LIVE if live else UNRESPONSIVE

    def is_down(self, node):
        """
        Whether ``node`` is proven unable to write: fenced or confirmed
        down, and not heard from since.
        """
        return self.condition(node) in (FENCED_STATE, CONFIRMED_DOWN)

    def effective(self, deployment):
        """
        ``deployment`` with the failovers decided applied
        (``failover.effective``); the same object while neither changes.
        """
        failovers = self.records.failovers if self.records else {}
        made = self._effective
        if made is None or made[0] is not deployment or \
                made[1] is not failovers:
            made = (deployment, failovers,
                    failover_rules.effective(deployment, failovers))
            self._effective = made
        return made[2]

    def is_removed(self, node):
        return self.records is not None and node in self.records.removed

    def releasing(self, node):
        """
        Whether ``node`` is to hold nothing at all: proven down, or
        returning. Its slice releases everything until it is live again,
        and it is live again only once that is saved: so a node coming
        back never takes a volume while the records still say it is down
        (a restarted service would detach it from under the node).
        """
        return self.condition(node) in (FENCED_STATE, CONFIRMED_DOWN,
                                        RETURNING)

    def release_of(self, node, deployment):
        """
        The applications ``node``'s slice tells it to release: those that
        failed over away from it, and while it is ``releasing``, every one
        placed on it.
        """
        names = {app for app, decision in self.records.failovers.items()
                 if decision.from_node == node
                 and failover_rules.holds(deployment, app, decision)}
        if self.releasing(node):
            names.update(app for app, on in self.effective(
                deployment).placement.items() if on == node)
        return sorted(names)

    def removed_slices(self, cluster_name, listing, listed_at, generation,
                       also=None):
        """
        ``{node: NodeDesired}`` of the nodes removed from the configuration
        (of cluster ``cluster_name``) that may still hold volumes (and of
        ``also``, node -> backend id, being removed now): nothing wanted,
        every volume attached to them listed, and every application of
        those volumes to release.
        """
        removed = dict(self.records.removed)
        removed.update(also or {})
        slices = {}
        for node, backend_id in sorted(removed.items()):
            volumes = {v.dataset_id: v
                       for v in listing.volumes_attached_to(backend_id)}
            names = sorted(
                v.metadata.get(identity.APPLICATION_KEY, v.dataset_id)
                for v in volumes.values())
            slices[node] = NodeDesired(
                node=node, backend_id=backend_id,
                cluster_name=cluster_name, generation=generation,
                volumes=volumes, release=names,
                listed_at=float(listed_at or 0.0))
        return slices

    # --- operators --------------------------------------------------------

    def request_fence(self, node, who):
        """
        An operator asked to fence ``node``: start a fence unless one runs
        or it is fenced already (both leave it as it is).

        :return: a Deferred firing with the node's state once the fence is
            recorded as started (or at once, when nothing was started).
        """
        condition = self.condition(node)
        if condition in (FENCING, FENCED_STATE):
            return self._change(lambda: self.failure_state(node))
        if node not in self._service.deployment.nodes:
            raise NotFenceable(
                "node %s is no longer in the configuration, and is fenced by "
                "its address there only; once it is off, confirm it down "
                "with blockmover node confirm-down %s" % (node, node))
        return self._change(self._start_fence, node, who)

    def confirm_down(self, node, who):
        """
        An operator confirmed ``node`` (configured, or removed from the
        configuration while it may still hold volumes) down: record who
        and when, then detach its volumes and fail over its applications.

        :raise NotDown: its lease holds: it is not down.
        :return: a Deferred firing with the node's state once recorded.
        """
        now = self._reactor.seconds()
        if self.leases.live(node, now) and \
                self.leases.renewed_at(node) is not None:
            raise NotDown(
                "node %s renewed its lease %.0f seconds ago: it is not down."
                " If it runs but is cut off, power it off (or fence it with"
                " blockmover node fence %s), wait for its lease to lapse, "
                "then confirm it down" % (
                    node, now - self.leases.renewed_at(node), node))
        return self._change(self._confirm, node, who, now)

    # --- state for GET /v1/state ------------------------------------------

    def node_state(self, node):
        """
        ``node``'s lease and failure state as plain data: ``{"lease":
        {...}, "failure": {...}}`` (see ``blockmover.status``).
        """
        return {"lease": {"renewed_at": self.leases.renewed_at(node),
                          "expires_at": self.leases.expires_at(node),
                          "seconds": self.leases.duration},
                "failure": self.failure_state(node)}

    def failure_state(self, node):
        """
        ``node``'s failure state as plain data: its condition, since when
        it is proven down, its last fence, an operator's confirmation, and
        whether it was removed from the configuration.
        """
        record = self.records.nodes.get(node) or NodeRecord()
        fence = record.fence
        return {
            "state": self.condition(node),
            "down_since": record.down_since,
            "returned_at": record.returned_at,
            "fence": None if fence is None else {
                "result": fence.result, "method": fence.method,
                "requested_by": fence.requested_by,
                "started_at": fence.started_at,
                "finished_at": fence.finished_at,
                "failures": fence.failures, "error": fence.error,
                "retry_at": self._fence_retry_at.get(node)},
            "earlier_fences": [to_data(f) for f in record.history],
            "confirmed_down": None if record.confirmed_down is None else {
                "by": record.confirmed_down.by,
                "at": record.confirmed_down.at},
            "removed": node in self.records.removed,
        }

    def application_state(self, application, deployment):
        """
        Where ``application`` runs and why, as plain data: the node the
        effective placement puts it on, the failover decided (or None) and
        why it could not fail over (or None).
        """
        decision = self.records.failovers.get(application)
        if decision is not None and not failover_rules.holds(
                deployment, application, decision):
            decision = None
        placed_on = self.effective(deployment).placement.get(application)
        blocked = None
        if placed_on is not None and self.is_down(placed_on):
            blocked = self._stranded.get(application)
        return {
            "placed_on": placed_on,
            "failover": None if decision is None else {
                "from": decision.from_node, "to": decision.to_node,
                "decided_at": decision.decided_at},
            "failover_blocked": blocked,
        }

    def stuck_detaches(self):
        """
        The volumes the cloud refused to detach from a node proven down,
        as plain data: which volume on which server and node, why, what
        the operator can do, how many tries failed and the next one.
        """
        applications = self._applications_by_dataset()
        return [{"volume_id": r.volume.volume_id,
                 "dataset_id": r.volume.dataset_id,
                 "application": applications.get(r.volume.dataset_id),
                 "server": r.volume.attached_to, "node": r.node,
                 "reason": r.reason, "what_to_do": _DETACH_ADVICE,
                 "attempts": r.attempts, "retry_at": r.retry_at}
                for _, r in sorted(self._refused.items())]

    def _applications_by_dataset(self):
        """
        Dataset id -> the name of the configured application it is of.
        """
        deployment = self._service.deployment
        if deployment is None:
            return {}
        return {identity.dataset_id(deployment.cluster_name, app): app
                for app in deployment.applications}

    # --- the turn ----------------------------------------------------------

    def wake(self):
        """
        Look at every node at the next turn of the reactor.
        """
        if not self._running:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._reactor.callLater(0, self._turn)

    def _turn(self):
        """
        One look at every node: fence those unresponsive that hold
        something, detach the volumes of those proven down and fail over
        their applications; then sleep until the next lease lapses or the
        next retry is due.
        """
        self._timer = None
        deployment = self._service.deployment
        if not self._running or deployment is None:
            return
        now = self._reactor.seconds()
        for name in sorted(self.records.removed):
            # A node no longer configured is only ever confirmed down.
            if name not in deployment.nodes and \
                    self.condition(name, now) == CONFIRMED_DOWN:
                self._detach_from(name, now)
        for name in self._needing_a_look(deployment, now):
            record = self.records.nodes.get(name)
            condition = self.condition(name, now)
            resuming = (record is not None and record.fence is not None
                        and record.fence.result == STARTED
                        and not self.is_down(name))
            if name not in self._fencing and (resuming or (
                    condition == UNRESPONSIVE
                    and deployment.fencing.method != FENCE_NONE
                    and self._holds_something(name)
                    and now >= self._fence_retry_at.get(name, 0))):
                by = record.fence.requested_by if resuming else BY_SERVICE
                self._change(self._start_fence, name, by,
                             not resuming).addErrback(write_failure)
            elif condition in (FENCED_STATE, CONFIRMED_DOWN):
                self._detach_from(name, now)
                self._fail_over_from(name, now)
        self._sleep(now)

    def _needing_a_look(self, deployment, now):
        """
        The nodes of ``deployment`` a turn may have something to do for,
        sorted: those whose lease lapsed, those with a record (a fence, a
        confirmation) and those being fenced. A live node without a record
        needs nothing, and on a large cluster nearly every node is one.
        """
        live = self.leases.live
        names = {name for name in deployment.nodes if not live(name, now)}
        names.update(name for name in self.records.nodes
                     if name in deployment.nodes)
        names.update(name for name in self._fencing
                     if name in deployment.nodes)
        return sorted(names)

    def _sleep(self, now):
        deployment = self._service.deployment
        times = [t for t in self._fence_retry_at.values() if t > now]
        times += [r.retry_at for r in self._refused.values()
                  if r.retry_at > now]
        expiry = self.leases.next_expiry(deployment.nodes, now)
        if expiry is not None:
            # Some lease of thousands lapses every few milliseconds unless
            # renewed, as it nearly always is: a lapse is looked for at
            # most TURNS_PER_LEASE times a lease.
            times.append(max(expiry, now + self.leases.duration
                             / TURNS_PER_LEASE))
        if not times or not self._running:
            return
        soonest = min(times)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() > soonest:
                self._timer.reset(soonest - now)
            return
        self._timer = self._reactor.callLater(soonest - now, self._turn)

    def _backend_id(self, node):
        """
        How the backend knows ``node``: by the configuration, or, for a
        node it no longer names, as it did when it last named it.
        """
        deployment = self._service.deployment
        if node in deployment.nodes:
            return deployment.nodes[node].backend_id
        return self.records.removed[node]

    def _holds_something(self, node):
        """
        Whether ``node`` has applications placed on it or volumes the
        listing shows attached to it: only then is it worth fencing.
        """
        deployment = self._service.deployment
        if node in self.effective(deployment).placement.values():
            return True
        listing = self._service.listing.listing
        backend_id = deployment.nodes[node].backend_id
        return listing is not None and bool(
            listing.volumes_attached_to(backend_id))

    # --- fencing -----------------------------------------------------------

    @inlineCallbacks
    def _start_fence(self, node, who, automatic=False):
        """
        Record a fence of ``node`` as started, then run it (not waited
        for). With ``_changing`` held. Nothing is started for a node whose
        fence runs (or ended and is being recorded), nor for one proven
        down already; ``automatic`` (the service's own decision) only for
        a node still unresponsive now.

        :return: the node's state.
        """
        deployment = self._service.deployment
        if node in self._fencing or node not in deployment.nodes or \
                self.is_down(node) or (
                    automatic and self.condition(node) != UNRESPONSIVE):
            return self.failure_state(node)
        record = self.records.nodes.get(node) or NodeRecord()
        failures = 0
        if record.fence is not None and record.fence.result != FENCED:
            failures = record.fence.failures
        attempt = FenceAttempt(result=STARTED,
                               method=deployment.fencing.method,
                               requested_by=who,
                               started_at=self._reactor.seconds(),
                               failures=failures)
        yield self._save_node(node, record.with_fence(attempt))
        log_message(message_type="blockmover:control:fence-started",
                    node=node, method=attempt.method, by=who)
        d = maybeDeferred(fencing.fence, deployment, self._service.backend,
                          deployment.nodes[node], self._reactor,
                          self._fence_threads)
        self._fencing[node] = d
        d.addBoth(self._fence_ended, node, attempt)
        d.addErrback(write_failure)
        return self.failure_state(node)

    def _fence_ended(self, result, node, attempt):
        # The node stays in ``_fencing`` until the result is saved: no
        # other fence starts in between.
        now = self._reactor.seconds()
        if isinstance(result, str):
            self._fence_retry_at.pop(node, None)
            log_message(message_type="blockmover:control:fenced", node=node,
                        proof=result)
            ended = attempt.set(result=FENCED, finished_at=now, error=None,
                                failures=0)
        else:
            failures = attempt.failures + 1
            retries = self._service.deployment.fencing.retries
            delay = (FENCE_BACKOFF.delay(failures - 1) if failures <= retries
                     else LAST_FENCE_RETRY)
            self._fence_retry_at[node] = now + delay
            message = result.getErrorMessage()
            log_message(message_type="blockmover:control:fence-failed",
                        node=node, error=message, failures=failures)
            ended = attempt.set(result=FAILED, finished_at=now,
                                error=message, failures=failures)
        d = self._change(self._fence_recorded, node, ended, now)
        d.addErrback(write_failure)

    @inlineCallbacks
    def _fence_recorded(self, node, attempt, now):
        record = self.records.nodes.get(node) or NodeRecord()
        if attempt.result == FENCED and not record.proven_down():
            # A new proof: the node was not proven down, or came back.
            record = record.set(down_since=now)
        try:
            yield self._save_node(node, record.with_fence(attempt))
        finally:
            # Unsaved, a fence's result is as good as unknown: the record
            # still says started, and the next turn fences again.
            del self._fencing[node]
        self._service.nodes_changed({node})
        self.wake()

    @inlineCallbacks
    def _confirm(self, node, who, now):
        record = self.records.nodes.get(node) or NodeRecord()
        record = record.set(confirmed_down=Confirmation(by=who, at=now))
        if not record.proven_down():
            record = record.set(down_since=now)
        yield self._save_node(node, record)
        log_message(message_type="blockmover:control:confirmed-down",
                    node=node, by=who)
        self._service.nodes_changed({node})
        self.wake()
        return self.failure_state(node)

    # --- force-detach ------------------------------------------------------

    def _detach_from(self, node, now):
        """
        Detach, through the backend, every volume the listing shows
        attached to ``node`` (proven down), one call per volume at a time,
        a refused one again after its backoff.
        """
        listing = self._service.listing.listing
        backend = self._service.backend
        if listing is None or backend is None or \
                backend.allocation_unit is None:
            return
        backend_id = self._backend_id(node)
        for volume in listing.volumes_attached_to(backend_id):
            refused = self._refused.get(volume.volume_id)
            if volume.volume_id in self._detaching or (
                    refused is not None and refused.retry_at > now):
                continue
            self._detaching.add(volume.volume_id)
            log_message(message_type="blockmover:control:force-detach",
                        node=node, volume_id=volume.volume_id)
            d = backend.for_volume(volume).api.detach_volume(
                volume.volume_id, backend_id)
            d.addBoth(self._detached, node, volume)
            d.addErrback(write_failure)

    def _detached(self, result, node, volume):
        self._detaching.discard(volume.volume_id)
        if not isinstance(result, Failure):
            self._refused.pop(volume.volume_id, None)
            log_message(message_type="blockmover:control:force-detached",
                        node=node, volume_id=volume.volume_id)
            self._service.listing.request()
            return None
        result.trap(BlockDeviceError)
        if result.check(DetachRefused):
            reason = result.value.reason
        else:
            reason = result.getErrorMessage()
        before = self._refused.get(volume.volume_id)
        attempts = 1 if before is None else before.attempts + 1
        retry_at = self._reactor.seconds() + DETACH_BACKOFF.delay(
            attempts - 1)
        self._refused[volume.volume_id] = _Refused(volume, node, reason,
                                                   attempts, retry_at)
        log_message(message_type="blockmover:control:force-detach-refused",
                    node=node, volume_id=volume.volume_id, reason=reason,
                    attempts=attempts)
        self._sleep(self._reactor.seconds())
        return None

    # --- failover ----------------------------------------------------------

    def _fail_over_from(self, node, now):
        """
        Decide where each application the effective placement puts on
        ``node`` (proven down) goes, when its failover is automatic.
        """
        deployment = self._service.deployment
        placement = self.effective(deployment).placement
        for application in sorted(a for a, n in placement.items()
                                  if n == node):
            failover = deployment.applications[application].failover
            if failover is None or not failover.automatic:
                self._stranded[application] = (
                    "%s is down and %s has no automatic failover; deploy it"
                    " on another node (its volume is free once detached)"
                    % (node, application))
                continue
            target, reasons = failover_rules.choose(
                deployment, placement, application,
                lambda n: self._heard_live(n, now))
            if target is None:
                self._stranded[application] = (
                    "%s is down and no failover candidate can take %s: %s"
                    % (node, application, "; ".join(reasons)))
                continue
            self._stranded.pop(application, None)
            self._change(self._decide, application, node, target,
                         now).addErrback(write_failure)

    def _heard_live(self, node, now):
        """
        Whether ``node`` is live and was heard from since the service
        started: a lease that holds only because the service started
        lately says nothing of a node, and an application failed over to
        a dead node would wait for that node's own fence.
        """
        return (self.condition(node, now) == LIVE
                and self.leases.renewed_at(node) is not None)

    @inlineCallbacks
    def _decide(self, application, node, target, now):
        deployment = self._service.deployment
        placement = self.effective(deployment).placement
        if placement.get(application) != node or not self.is_down(node):
            # Decided already (a turn before this change was saved).
            return
        decision = FailoverDecision(
            from_node=deployment.placement[application], to_node=target,
            decided_at=now)
        records = self.records.set(failovers=self.records.failovers.set(
            application, decision))
        yield self._save(records)
        log_message(message_type="blockmover:control:failover",
                    application=application, from_node=node, to_node=target)
        self._service.nodes_changed({node, target})

    # --- coming back -------------------------------------------------------

    @inlineCallbacks
    def _mark_returned(self, node, now):
        record = self.records.nodes.get(node)
        if record is not None and record.proven_down():
            yield self._save_node(node, record.set(returned_at=now))

    @inlineCallbacks
    def _back_in_service(self, node):
        if self.condition(node) != RETURNING:
            return
        yield self._save(self.records.set(
            nodes=self.records.nodes.discard(node)))
        self._fence_retry_at.pop(node, None)
        for volume_id in [v for v, r in self._refused.items()
                          if r.node == node]:
            del self._refused[volume_id]
        log_message(message_type="blockmover:control:node-state",
                    node=node, state=LIVE, was=RETURNING)
        self._service.nodes_changed({node})

    @inlineCallbacks
    def _forget_removed(self, node):
        if node not in self.records.removed:
            return
        listing = self._service.listing.listing
        if listing is None or listing.volumes_attached_to(
                self.records.removed[node]):
            return
        yield self._save(self.records.set(
            removed=self.records.removed.discard(node),
            nodes=self.records.nodes.discard(node)))
        self._service.nodes_changed({node})

    @inlineCallbacks
    def _reconfigure(self, old, new):
        records = self.records
        removed = records.removed
        if old is not None:
            for node in set(old.nodes) - set(new.nodes):
                removed = removed.set(node, old.nodes[node].backend_id)
        for node in set(removed) & set(new.nodes):
            removed = removed.discard(node)
        failovers = records.failovers
        for application, decision in records.failovers.items():
            if not failover_rules.holds(new, application, decision):
                failovers = failovers.discard(application)
        nodes = records.nodes
        for node in set(nodes) - set(new.nodes) - set(removed):
            nodes = nodes.discard(node)
        changed = records.set(removed=removed, failovers=failovers,
                              nodes=nodes)
        if changed != records:
            yield self._save(changed)
        for node in set(self._stranded):
            if node not in new.applications:
                del self._stranded[node]
        self.wake()

    # --- records -----------------------------------------------------------

    def _change(self, change, *args):
        """
        Run ``change`` with the records' lock held: one change of them at
        a time, each seeing the one before.
        """
        return self._changing.run(change, *args)

    def _save_node(self, node, record):
        return self._save(self.records.set(
            nodes=self.records.nodes.set(node, record)))

    def _save(self, records):
        """
        Save ``records`` durably, then take them.
        """
        d = self._service.save_record(self._store, records)

        def saved(_):
            self.records = records
        d.addCallback(saved)
        return d


def _holds_nothing(state):
    return not (state.devices or state.mounts or state.running)
