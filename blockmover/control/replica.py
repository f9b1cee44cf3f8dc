"""
The control service as one of several replicas on etcd
(``blockmover-control --etcd``).

Every replica campaigns for the lead (``election``). The one that leads
reads the records from etcd (``etcdstore``) and runs the whole service:
it lists the backends, computes the slices, decides fences, failovers and
pushes, and saves each decision in a transaction that holds only while
it leads. It writes every slice it hands out to etcd as well
(``SlicePublisher``), under the cluster's prefix::

    /blockmover/<cluster>/serve/slices/<node>   a slice, as agents get it
    /blockmover/<cluster>/serve/poll-limit      the longest a poll may wait
    /blockmover/<cluster>/replicas/<name>       each replica, on its lease

The others follow (``Follower``): they watch those keys and answer the
agents' long polls themselves, each slice at the generation the leader
gave it, and tell the leader every second which nodes polled them, which
renews those nodes' leases. Every other request they answer 421 with the
leader's address, for the client to send it there (503 while nobody
leads).

A leader that loses the lead (its lease not renewed in time, the key
gone) stops acting at once: the process starts afresh as a follower
(``restart``), so nothing it was doing goes on past that moment, and what
it saved is what the next leader reads. Generations stay unique: the
next leader numbers every slice above the counter saved before any slice
was handed out.
"""

import json

from eliot import log_message, write_failure
from pyrsistent import pmap
from twisted.internet.defer import (
    inlineCallbacks, maybeDeferred, succeed,
)
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from blockmover.config import election_of
from blockmover.control.election import Election, Leader
from blockmover.control.etcd import EtcdError, delete, put
from blockmover.control import etcdstore
from blockmover.control.etcdstore import (
    NotLeader, cluster_prefix, leader_key,
)
from blockmover.control.leases import poll_limit
from blockmover.control.slices import Slices
from blockmover.model import DEFAULT_LEASE

SLICES = b"serve/slices/"
POLL_LIMIT = b"serve/poll-limit"
REPLICAS = b"replicas/"
CONFIGURATION = etcdstore.CONFIGURATION.name.encode("ascii")
# How often a follower tells the leader which nodes polled it.
RENEW_INTERVAL = 1.0
# Writes of slices in one transaction (etcd takes 128 by default), and
# their bytes (etcd takes requests of 1.5 MiB by default).
SLICE_BATCH = 100
SLICE_BATCH_BYTES = 512 * 1024
# After etcd refused or missed a batch of slices, the next try.
SLICE_RETRY = 1.0
# The longest a replica that lost the lead waits for etcd to revoke its
# lease before it starts afresh.
REVOKE_TIMEOUT = 1.0


def describe_timing(timing):
    """
    The election's times for a person.
    """
    return "lease %gs, renew deadline %gs, retry %gs" % (
        timing.lease, timing.renew_deadline, timing.retry)


class SlicePublisher(object):
    """
    Writes each slice the leading replica hands out to etcd, for the
    followers to serve: the latest of each node, batched, each batch a
    transaction that holds only while this replica leads. A node whose
    slice goes away loses its key; so, at the first slices handed out, do
    those a former leader wrote that no longer have one.

    :param leadership: a callable returning this replica's ``Leadership``
        while it leads, else None.
    :param lost: called with a reason when etcd says this replica no
        longer leads.
    """

    def __init__(self, client, cluster, leadership, reactor, lost):
        self._client = client
        self._prefix = cluster_prefix(cluster)
        self._leadership = leadership
        self._reactor = reactor
        self._lost = lost
        self._service = None
        # node -> its slice's JSON, or None to delete its key.
        self._pending = {}
        self._busy = False
        self._stale = None
        self._poll_limit = None
        self.written = 0

    def start(self):
        """
        Read which nodes have a slice in etcd now.

        :return: Deferred firing once read.
        """
        d = self._client.range(self._prefix + SLICES, prefix=True,
                               keys_only=True)

        def found(listed):
            start = len(self._prefix + SLICES)
            self._stale = {kv.key[start:].decode("utf-8")
                           for kv in listed.kvs}
        d.addCallback(found)
        return d

    def serve(self, service):
        """
        Publish the slices ``service`` (a ``ControlService``) hands out.
        """
        self._service = service

    def __call__(self, change):
        """
        ``change`` (a ``SliceChange``) was handed out.
        """
        slices = self._service.slices
        for node, desired in change.updates.items():
            self._pending[node] = (None if desired is None
                                   else slices.serialized(desired))
        if self._stale is not None and change.updates:
            for node in self._stale - slices.nodes():
                self._pending.setdefault(node, None)
            self._stale = None
        self._flush()

    def _flush(self):
        if self._busy or self._service is None:
            return
        ops = []
        limit = self._service.poll_limit()
        if limit != self._poll_limit:
            ops.append(put(self._prefix + POLL_LIMIT,
                           json.dumps(limit).encode("ascii")))
        batch = {}
        size = 0
        for node in list(self._pending)[:SLICE_BATCH - len(ops)]:
            body = self._pending[node]
            if batch and size + len(body or b"") > SLICE_BATCH_BYTES:
                break
            batch[node] = self._pending.pop(node)
            size += len(body or b"")
        for node, body in sorted(batch.items()):
            key = self._prefix + SLICES + node.encode("utf-8")
            ops.append(delete(key) if body is None else put(key, body))
        if not ops:
            return
        leadership = self._leadership()
        if leadership is None:
            return
        self._busy = True
        d = self._client.txn(leadership.compares(), ops)
        d.addCallbacks(self._written, self._failed,
                       callbackArgs=(batch, limit),
                       errbackArgs=(batch,))

    def _written(self, result, batch, limit):
        self._busy = False
        if not result.succeeded:
            self._lost("etcd refused the slices: this replica no longer "
                       "holds the leader key")
            return
        self._poll_limit = limit
        self.written += len(batch)
        self._flush()

    def _failed(self, failure, batch):
        self._busy = False
        failure.trap(EtcdError)
        log_message(message_type="blockmover:control:slices-unpublished",
                    nodes=len(batch), reason=failure.getErrorMessage())
        # Newer slices of the same nodes, handed out meanwhile, win.
        for node, body in batch.items():
            self._pending.setdefault(node, body)
        self._reactor.callLater(SLICE_RETRY, self._flush)


class Served(object):
    """
    A slice a follower serves: the ``node``'s, at ``generation``, as the
    JSON the leader wrote (``body``).
    """
    __slots__ = ("node", "generation", "body")

    def __init__(self, node, generation, body):
        self.node = node
        self.generation = generation
        self.body = body


class FollowedSlices(Slices):
    """
    The slices as the leader wrote them to etcd, waited for as the
    leader's own (``Slices``), each answered with the bytes it wrote.
    """

    def follow(self, node, served):
        """
        ``node``'s slice is ``served`` (a ``Served``) now, or gone (None).
        """
        old = self._slices.get(node)
        if served is None:
            if old is None:
                return
            del self._slices[node]
        else:
            if old is not None and old.generation >= served.generation:
                return
            self._slices[node] = served
            self.counter = max(self.counter, served.generation)
        self._wake(node)

    def serialized(self, served):
        return served.body

    def _current(self, node):
        return self._slices.get(node)


class Follower(object):
    """
    What a replica that does not lead serves: the agents' long polls,
    from the slices the leader writes to etcd (watched), and the
    renewals of their leases, sent on to the leader.

    :param leader_url: a callable returning the leader's address, None
        while none is known.
    :param renew: a callable sending the leader the names of the nodes
        that polled (to ``leader_url()``), returning a Deferred.
    """

    def __init__(self, client, cluster, reactor, metrics, leader_url, renew,
                 on_configuration=lambda value: None):
        self._on_configuration = on_configuration
        self._client = client
        self._prefix = cluster_prefix(cluster)
        self._reactor = reactor
        self.metrics = metrics
        self._leader_url = leader_url
        self._renew = renew
        self.slices = FollowedSlices()
        self.replicas = pmap()
        self._poll_limit = poll_limit(DEFAULT_LEASE)
        self._polled = set()
        # (leader URL, Deferred) of the send to the leader under way.
        self._sending = None
        self._watch = None
        self._renewing = LoopingCall(self._send_renewals)
        self._renewing.clock = reactor
        self.ready = False
        self._stopped = False

    @inlineCallbacks
    def start(self):
        """
        Read what the leader wrote, then watch it change.
        """
        listed = yield self._client.range(self._prefix, prefix=True)
        for kv in listed.kvs:
            self._changed(kv.key, kv.value)
        self._watch = self._client.watch(self._prefix, self._events,
                                         prefix=True,
                                         start_revision=listed.revision + 1)
        self._watch.done.addErrback(self._watch_ended)
        self._renewing.start(RENEW_INTERVAL, now=False)
        self.ready = True

    def stop(self):
        """
        Stop following; the long polls waiting are answered that nothing
        changed, so that their agents ask again at once (of the leader
        this replica may now be). Those that come after are answered 503
        naming no leader (``wait_desired``).
        """
        self._stopped = True
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._renewing.running:
            self._renewing.stop()
        self.slices.end_all()

    def _watch_ended(self, failure):
        # Compacted past where it stood: read everything again.
        log_message(message_type="blockmover:control:follow-ended",
                    reason=failure.getErrorMessage())
        if self._watch is not None:
            self._watch = None
            if self._renewing.running:
                self._renewing.stop()
            self.start().addErrback(write_failure)

    def _events(self, events):
        for event in events:
            self._changed(event.kv.key,
                          None if event.type == "DELETE" else event.kv.value)

    def _changed(self, key, value):
        name = key[len(self._prefix):]
        if name.startswith(SLICES):
            node = name[len(SLICES):].decode("utf-8")
            served = None
            if value is not None:
                generation = _generation(value)
                if generation is None:
                    log_message(message_type="blockmover:control:bad-slice",
                                node=node)
                    return
                served = Served(node, generation, value)
            self.slices.follow(node, served)
        elif name == POLL_LIMIT and value is not None:
            try:
                self._poll_limit = float(json.loads(value))
            except (ValueError, TypeError):
                log_message(message_type="blockmover:control:bad-poll-limit")
        elif name == CONFIGURATION and value is not None:
            self._on_configuration(value)
        elif name.startswith(REPLICAS):
            replica = name[len(REPLICAS):].decode("utf-8")
            if value is None:
                self.replicas = self.replicas.discard(replica)
            else:
                self.replicas = self.replicas.set(replica, value)

    # --- what the API asks -----------------------------------------------

    def poll_limit(self):
        return self._poll_limit

    def wait_desired(self, node, after):
        """
        ``ControlService.wait_desired``, from the slices in etcd: a node
        with no slice there waits until its poll times out.

        :raise ReplicaUnavailable: naming no leader, once stopped: this
            replica was elected and its service does not serve yet (at
            10,000 nodes, seconds), and no slice here will change; its
            agent asks another replica, or this one again in a second.
        """
        if self._stopped:
            raise ReplicaUnavailable(
                "this replica was just elected and is starting; ask another "
                "replica, or this one again in a second", None)
        self._polled.add(node)
        return self.slices.wait(node, after)

    def _send_renewals(self):
        """
        Send the leader the nodes that polled since the last send: one
        send at a time to one leader. A send still waiting on a replica
        that no longer leads (its host gone, its link cut) is given up,
        and its nodes sent to the new leader at once, not after its
        timeout: the new leader's leases are the ones that count now.
        """
        leader = self._leader_url()
        if self._sending is not None:
            to, sending = self._sending
            if to == leader:
                return
            sending.cancel()
        if not self._polled or leader is None:
            return
        nodes, self._polled = self._polled, set()
        d = maybeDeferred(self._renew, nodes)
        self._sending = (leader, d)

        def failed(failure):
            # Sent again with the next second's: a lease lasts many.
            self._polled |= nodes
            log_message(message_type="blockmover:control:renewals-unsent",
                        nodes=len(nodes), reason=failure.getErrorMessage())

        def sent(_):
            if self._sending is not None and self._sending[1] is d:
                self._sending = None
        d.addErrback(failed)
        d.addBoth(sent)


def _generation(body):
    try:
        generation = json.loads(body)["generation"]
    except (ValueError, TypeError, KeyError):
        return None
    return generation if isinstance(generation, int) else None


class Registration(object):
    """
    This replica's key under ``replicas/``, on a lease of its own renewed
    every ``timing.retry`` seconds: which replicas run, for ``blockmover
    status``. A replica that dies drops out when its lease ends.
    """

    def __init__(self, client, cluster, name, address, started, reactor,
                 timing):
        self._client = client
        self._key = cluster_prefix(cluster) + REPLICAS + name.encode()
        self._value = json.dumps({"name": name, "address": address,
                                  "started": started}).encode()
        self._timing = timing
        self._lease = None
        self._loop = LoopingCall(self._renew)
        self._loop.clock = reactor

    def start(self):
        self._loop.start(self._timing.retry)

    def stop(self):
        if self._loop.running:
            self._loop.stop()
        if self._lease is None:
            return succeed(None)
        lease, self._lease = self._lease, None
        return self._client.revoke(lease, timeout=self._timing.retry)

    @inlineCallbacks
    def _renew(self):
        try:
            if self._lease is not None:
                ttl = yield self._client.keepalive(
                    self._lease, timeout=self._timing.retry)
                if ttl > 0:
                    return
            lease = yield self._client.grant(self._timing.lease,
                                             timeout=self._timing.retry)
            self._lease = lease.id
            yield self._client.put(self._key, self._value, lease.id,
                                   timeout=self._timing.retry)
        except EtcdError as e:
            log_message(message_type="blockmover:control:register-failed",
                        reason=str(e))


class Replica(object):
    """
    One replica, ``name`` at ``address``, of ``cluster``'s control service
    on etcd through ``client``.

    :param lead: called with the replica once elected, returns a Deferred
        firing with its started ``ControlService`` (reading the records
        from etcd first).
    :param restart: called with a reason when it stops leading: it must
        end everything this replica does (``blockmover-control`` starts
        its process afresh).
    :param renew: ``Follower``'s: sends the leader the nodes that polled.
    :param metrics: the ``ControlMetrics`` of the process.

    :ivar service: the ``ControlService`` while it leads, else None.
    """

    def __init__(self, client, cluster, name, address, reactor, timing,
                 lead, restart, renew, metrics):
        self.client = client
        self.cluster = cluster
        self.name = name
        self.address = address
        self.metrics = metrics
        self._reactor = reactor
        self._lead = lead
        self._restart = restart
        self.service = None
        self.started = reactor.seconds()
        self.election = Election(client, leader_key(cluster), name, address,
                                 self._elected, self.lost, reactor, timing)
        self.follower = Follower(client, cluster, reactor, metrics,
                                 self.leader_url, renew,
                                 self._configuration_changed)
        self._registration = Registration(client, cluster, name, address,
                                          self.started, reactor, timing)
        self.elected_at = None
        self._stopping = False
        self._ending = False
        self._leadership = None

    def start(self):
        """
        Follow, register, and campaign.

        :return: Deferred firing once the follower read what the leader
            wrote.
        """
        self._registration.start()
        d = self.follower.start()
        d.addCallback(lambda _: self.election.start())
        return d

    def stop(self):
        """
        Stop: a leader resigns, so another leads at once.
        """
        self._stopping = True
        self.follower.stop()
        if self.service is not None:
            self.service.stop()
        d = self.election.stop()
        d.addBoth(lambda _: self._registration.stop())
        d.addErrback(write_failure)
        return d

    def leader_url(self):
        """
        The leading replica's address, None while nobody leads (or this
        one does).
        """
        leader = self.election.leader
        if leader is None or self.election.leadership is not None or \
                leader.name == self.name:
            # The key may still name this replica after it started
            # afresh, until its lease ends.
            return None
        return leader.address

    @property
    def leading(self):
        return self.election.leadership is not None

    def _elected(self, leadership):
        self._leadership = leadership
        self.elected_at = self._reactor.seconds()
        self.metrics.leadership_changed(True)
        self.follower.stop()
        d = self._lead(self)

        def serving(service):
            if self.election.leadership is not leadership:
                # Lost while reading the records: restarting already.
                service.stop()
                return
            self.service = service
            log_message(message_type="blockmover:control:leading",
                        name=self.name, seconds=self._reactor.seconds()
                        - self.elected_at)
            if service.deployment is not None:
                self.configured(service.deployment)

        def failed(failure):
            if failure.check(NotLeader):
                self.lost(str(failure.value))
                return
            write_failure(failure)
            self.lost("the service could not start as the leader: %s"
                       % (failure.getErrorMessage(),))
        d.addCallbacks(serving, failed)

    def lost(self, reason):
        """
        This replica no longer leads (the election says so, or etcd refused
        a write that holds only while it leads): its service stops at
        once, its lease is revoked if etcd still has it (so that another
        leads without waiting for it to end), and it starts afresh.
        """
        if self._ending:
            return
        self._ending = True
        self.metrics.leadership_changed(False)
        log_message(message_type="blockmover:control:lost-lead",
                    name=self.name, reason=reason)
        if self.service is not None:
            self.service.stop()
        if self._stopping:
            return
        d = succeed(None)
        if self._leadership is not None:
            d = self.client.revoke(self._leadership.lease,
                                   timeout=REVOKE_TIMEOUT)
            d.addErrback(lambda failure: log_message(
                message_type="blockmover:control:revoke-failed",
                reason=failure.getErrorMessage()))
        d.addCallback(lambda _: self._restart(reason))

    def _configuration_changed(self, value):
        """
        A follower saw a configuration stored (its record's JSON): the
        election's times it names count from this replica's next
        campaign.
        """
        def read():
            stored = etcdstore.CONFIGURATION.from_data(json.loads(value))
            return election_of(stored.cluster_yml, stored.cluster_path)

        def take(timing):
            if timing != self.election.timing and not self.leading:
                log_message(message_type="blockmover:control:election-times",
                            timing=describe_timing(timing))
                self.election.timing = timing

        def unreadable(failure):
            log_message(message_type="blockmover:control:election-unread",
                        reason=failure.getErrorMessage())
        d = deferToThread(read)
        d.addCallbacks(take, unreadable)

    def configured(self, deployment):
        """
        A configuration was stored: when it changes the election's times,
        this leader hands over (resigns, a second later, once the
        configuration's answer is out), so that the next leader is elected
        on the new lease, and every replica starting afresh takes the new
        times.
        """
        if deployment.election == self.election.timing or self._ending:
            return
        log_message(message_type="blockmover:control:election-changed",
                    was=self.election.timing.serialize(),
                    now=deployment.election.serialize())
        self._reactor.callLater(
            1.0, self.lost, "the configuration changed the election's times"
            " (%s); the next leader is elected with them"
            % (describe_timing(deployment.election),))

    # --- ``GET /v1/replicas`` -----------------------------------------------

    @inlineCallbacks
    def describe(self):
        """
        Every replica registered, which leads and since when, and each
        etcd member's health, as ``GET /v1/replicas`` shows them.
        """
        prefix = cluster_prefix(self.cluster)
        listed = yield self.client.range(prefix + REPLICAS, prefix=True)
        kv = yield self.client.get(leader_key(self.cluster))
        leader = None if kv is None else Leader.from_bytes(kv.value)
        replicas = []
        for found in listed.kvs:
            try:
                record = json.loads(found.value)
            except ValueError:
                continue
            leading = leader is not None and record.get("name") == \
                leader.name
            replicas.append({
                "name": record.get("name"), "address": record.get("address"),
                "started": record.get("started"), "leading": leading,
                "since": leader.since if leading else None})
        members = []
        for endpoint in self.client.endpoints:
            try:
                status = yield self.client.member_status(endpoint,
                                                         timeout=2.0)
            except EtcdError as e:
                members.append({"endpoint": endpoint, "healthy": False,
                                "leader": False, "error": str(e)})
            else:
                members.append({"endpoint": endpoint, "healthy": True,
                                "leader": status.leader, "error": None,
                                "version": status.version})
        timing = self.election.timing
        return {"replicas": replicas, "this": self.name,
                "election": {"lease": timing.lease,
                             "renew_deadline": timing.renew_deadline,
                             "retry": timing.retry},
                "leader": None if leader is None else {
                    "name": leader.name, "address": leader.address,
                    "since": leader.since},
                "etcd": members}


class ReplicaUnavailable(Exception):
    """
    This replica does not serve the request: another leads (421, with
    its ``leader`` address), or nobody does yet (503).
    """

    def __init__(self, message, leader):
        Exception.__init__(self, message)
        self.leader = leader
