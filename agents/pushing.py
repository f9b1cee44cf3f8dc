"""
The agent's side of pushes between sites: the changes that make and mark
the volume pushed into on the target, the rounds the source pushes, and
what the agent remembers of each push to report it (``PushProgress``) and
to know when its rounds settled.

The blocks themselves travel by ``agents.push`` (the engine); this module
says when and how often.
"""

import os
import threading
import time

from pyrsistent import field

from agents.changes import Change, _action
from agents import push as engine
from blockmover import identity
from blockmover.blockdevice import device_size
from blockmover.model import (
    PUSH_FAILED, PUSH_FINAL, PUSH_LIVE, PUSH_RECEIVING, PUSH_VERIFIED,
    PUSH_WAITING, PushProgress,
)
from blockmover.units import MiB

# A round is said to have settled the push when it sent at least this
# share of the round before it (what changes stopped shrinking) ...
NOT_SHRINKING = 0.9
# ... or sent no more than this ...
SMALL_ROUND = 8 * MiB
# ... or after this many rounds, whatever they sent.
MOST_ROUNDS = 8
# A push whose rounds fail this many times in a row, for at least this
# long (seconds: a target's agent restarting is back well within it), is
# given up: the control service then puts the application back on the
# source.
MOST_FAILURES = 5
GIVE_UP_AFTER = 60.0
# Progress is reported at most this often while a round runs (seconds).
PROGRESS_EVERY = 1.0


class _Push(object):
    # What this node remembers of one push (under the registry's lock).
    def __init__(self, push_id, dataset_id, phase):
        self.push_id = push_id
        self.dataset_id = dataset_id
        self.phase = phase
        self.rounds = []        # (bytes sent, seconds) of each ended round
        self.sent = 0           # in the round running
        self.scanned = 0
        self.size = 0
        self.failures = 0
        self.failing_since = None
        self.source_digest = None
        self.target_digest = None
        self.error = None
        self.settled = False
        self.running = False    # a round runs now

    def progress(self):
        last = self.rounds[-1] if self.rounds else None
        rate = None
        downtime = None
        if last is not None and last[1] > 0:
            rate = round(last[0] / last[1], 1)
            # The last round reads the whole device again and the check
            # reads it once more on each side: about two rounds' time.
            downtime = round(2 * last[1], 2)
        return PushProgress(
            push_id=self.push_id, dataset_id=self.dataset_id,
            phase=self.phase,
            round=len(self.rounds) + (1 if self.running else 0),
            bytes_sent=self.sent, bytes_left=max(0, self.size - self.scanned),
            last_round_bytes=last[0] if last is not None else None,
            rate=rate, estimated_downtime=downtime, settled=self.settled,
            source_digest=self.source_digest,
            target_digest=self.target_digest, error=self.error)


class PushRegistry(object):
    """
    What this node knows of the pushes it takes part in, by dataset: kept
    in memory (an agent restarted begins its rounds again, and the target
    tells it what it holds, so little is sent twice). Thread-safe: the
    rounds run in the agent's threads, the receiver in its own.

    ``on_progress`` (no arguments, called from any thread) is called when
    there is news to report, at most every ``PROGRESS_EVERY`` seconds
    while a round runs.
    """

    def __init__(self, clock=time.monotonic, on_progress=None):
        self._lock = threading.Lock()
        self._pushes = {}
        self._clock = clock
        self._told = 0.0
        self.on_progress = on_progress

    def snapshot(self):
        """
        ``{dataset id: PushProgress}`` of every push known.
        """
        with self._lock:
            return {d: p.progress() for d, p in self._pushes.items()}

    def get(self, dataset):
        """
        The ``PushProgress`` of ``dataset``'s push, or None.
        """
        with self._lock:
            push = self._pushes.get(dataset)
            return push.progress() if push is not None else None

    def forget_others(self, push_ids):
        """
        Forget every push whose id is not in ``push_ids`` (those the slice
        no longer names).
        """
        with self._lock:
            for dataset in [d for d, p in self._pushes.items()
                            if p.push_id not in push_ids]:
                del self._pushes[dataset]

    def _push(self, push_id, dataset, phase):
        push = self._pushes.get(dataset)
        if push is None or push.push_id != push_id:
            push = self._pushes[dataset] = _Push(push_id, dataset, phase)
        return push

    def _tell(self, now=False):
        callback = self.on_progress
        if callback is None:
            return
        moment = self._clock()
        if now or moment - self._told >= PROGRESS_EVERY:
            self._told = moment
            callback()

    # --- the source ---------------------------------------------------------

    def round_started(self, outgoing, size):
        with self._lock:
            push = self._push(outgoing.push_id, outgoing.dataset_id,
                              PUSH_LIVE)
            push.phase = PUSH_FINAL if outgoing.final else PUSH_LIVE
            push.sent, push.scanned, push.size = 0, 0, size
            push.running = True
        self._tell(now=True)

    def round_progress(self, outgoing, sent, scanned):
        with self._lock:
            push = self._push(outgoing.push_id, outgoing.dataset_id,
                              PUSH_LIVE)
            push.sent, push.scanned = sent, scanned
        self._tell()

    def round_ended(self, outgoing, result):
        """
        A round ended: whether the push's rounds have settled (see
        ``NOT_SHRINKING``).
        """
        with self._lock:
            push = self._push(outgoing.push_id, outgoing.dataset_id,
                              PUSH_LIVE)
            push.rounds.append((result.bytes_sent, result.seconds))
            push.running = False
            push.sent, push.scanned = result.bytes_sent, result.bytes_scanned
            push.failures = 0
            push.failing_since = None
            push.error = None
            push.settled = push.settled or _settled(push.rounds)
        self._tell(now=True)

    def verified(self, outgoing, verification):
        with self._lock:
            push = self._push(outgoing.push_id, outgoing.dataset_id,
                              PUSH_FINAL)
            push.source_digest = verification.source_digest
            push.target_digest = verification.target_digest
            if verification.same:
                push.phase = PUSH_VERIFIED
        self._tell(now=True)

    def failed(self, outgoing, error):
        """
        A round or the check failed with ``error``: the push is given up
        after ``MOST_FAILURES`` in a row over ``GIVE_UP_AFTER`` seconds.
        """
        with self._lock:
            push = self._push(outgoing.push_id, outgoing.dataset_id,
                              PUSH_LIVE)
            now = self._clock()
            if push.failing_since is None:
                push.failing_since = now
            push.failures += 1
            push.running = False
            push.error = str(error)
            if push.failures >= MOST_FAILURES and \
                    now - push.failing_since >= GIVE_UP_AFTER:
                push.phase = PUSH_FAILED
        self._tell(now=True)

    # --- the target ---------------------------------------------------------

    def received(self, offer, bytes_received):
        with self._lock:
            push = self._push(offer.push_id, offer.dataset_id,
                              PUSH_RECEIVING)
            push.phase = PUSH_RECEIVING
            push.sent = bytes_received
            push.size = offer.size
        self._tell()

    def target_verified(self, offer, digest):
        with self._lock:
            push = self._push(offer.push_id, offer.dataset_id,
                              PUSH_RECEIVING)
            push.phase = PUSH_RECEIVING
            push.target_digest = digest
        self._tell(now=True)

    def waiting(self, incoming):
        with self._lock:
            self._push(incoming.push_id, incoming.dataset_id, PUSH_WAITING)


def _settled(rounds):
    sent = [r[0] for r in rounds]
    if len(sent) >= MOST_ROUNDS:
        return True
    if len(sent) < 2:
        return False
    return sent[-1] <= SMALL_ROUND or sent[-1] >= NOT_SHRINKING * sent[-2]


# --- the changes ---------------------------------------------------------------

class CreateIncoming(Change):
    """
    Make the volume a push goes into, in this node's site: blank, stamped
    with the dataset's identity and marked incoming for the push. Where
    the site already keeps a volume of the dataset (a copy an earlier push
    left, never its data: the data is in another site), the backend gives
    that one, and it is marked incoming instead. A node without cloud
    credentials asks the control service, which does the same from the
    node's slice.
    """
    kind = "create"
    touches_backend = True
    waits_for = "the backend to create the volume pushed into"
    application = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    push_id = field(type=str, mandatory=True)
    generation = field(type=int, mandatory=True)

    @property
    def application_name(self):
        return self.application

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     push_id=self.push_id, size=self.size) as action:
            metadata = dict(identity.volume_metadata(context.cluster_name,
                                                     self.application))
            metadata.update(_incoming(self.push_id, self.generation))
            metadata[identity.BLANK_FOR_KEY] = self.push_id
            volume = context.backend.create_volume(self.dataset_id,
                                                   self.size, metadata)
            if volume.metadata.get(identity.PUSH_ID_KEY) != self.push_id:
                # A volume the site kept: it holds what it held.
                context.backend.set_metadata(
                    volume.volume_id, _incoming(self.push_id,
                                                self.generation))
            action.add_success_fields(volume_id=volume.volume_id)


def _incoming(push_id, generation):
    return {identity.PUSH_KEY: identity.INCOMING,
            identity.PUSH_ID_KEY: push_id,
            identity.GENERATION_KEY: str(generation),
            identity.FORMAT_KEY: identity.NEW,
            # Made blank for another push, if at all.
            identity.BLANK_FOR_KEY: "no"}


class _PushChange(Change):
    outgoing = field(mandatory=True)
    device = field(type=str, mandatory=True)

    kind = "push"

    @property
    def application_name(self):
        return self.outgoing.application

    def _offer(self, context, size):
        outgoing = self.outgoing
        return engine.Offer(
            push_id=outgoing.push_id, dataset_id=outgoing.dataset_id,
            source_node=context.node, target_node=outgoing.target_node,
            source_volume=outgoing.source_volume,
            target_volume=outgoing.target_volume, size=size)

    def _round(self, context, last=False):
        outgoing = self.outgoing
        pushes = context.pushes
        size = device_size(self.device)
        pushes.round_started(outgoing, size)
        try:
            result = engine.send_round(
                self._offer(context, size), self.device,
                outgoing.target_address,
                outgoing.port, context.push_files, cap=outgoing.bandwidth,
                progress=lambda sent, scanned, total:
                pushes.round_progress(outgoing, sent, scanned), last=last)
        except Exception as e:
            pushes.failed(outgoing, e)
            raise
        pushes.round_ended(outgoing, result)
        return size, result


class PushRound(_PushChange):
    """
    One round of a push while the application runs: every block the
    target lacks (the first round: every block holding anything), sent to
    the target's agent.
    """
    waits_for = "the blocks to reach the target"

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     push_id=self.outgoing.push_id,
                     target=self.outgoing.target_node) as action:
            # What the application wrote is in the page cache until the
            # kernel writes it back (30 s later, by default): written now,
            # this round reads it from the device, and the last round,
            # with the application stopped, has that much less to send.
            os.sync()
            _, result = self._round(context)
            action.add_success_fields(bytes_sent=result.bytes_sent,
                                      seconds=round(result.seconds, 3))


class PushFinal(_PushChange):
    """
    The last round, the application stopped and the filesystem unmounted,
    then a digest of the whole device taken on each side and compared.
    """
    waits_for = "the last blocks to reach the target and both sides' check"

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     push_id=self.outgoing.push_id,
                     target=self.outgoing.target_node) as action:
            size, result = self._round(context, last=True)
            try:
                # The last round read the whole source, unmounted since:
                # its hashes give the source's digest; the target read
                # its own device beside that round.
                verification = engine.verify(
                    self._offer(context, size), self.device,
                    self.outgoing.target_address, self.outgoing.port,
                    context.push_files, source_hashes=result.hashes)
            except Exception as e:
                context.pushes.failed(self.outgoing, e)
                raise
            context.pushes.verified(self.outgoing, verification)
            action.add_success_fields(bytes_sent=result.bytes_sent,
                                      same=verification.same)
            if not verification.same:
                error = engine.PushFailed(
                    "the target's copy differs from the source after the "
                    "last round (digest %s here, %s there); pushing again"
                    % (verification.source_digest,
                       verification.target_digest))
                context.pushes.failed(self.outgoing, error)
                raise error


# --- receiving -------------------------------------------------------------------

class Receiving(object):
    """
    The target's side: a receiver (``agents.push.Receiver``) listening
    once a slice names a push into this node, on the port the slice says,
    and letting in only what the slice names: the push's id, its source
    node, the volume marked incoming for it and attached here.

    ``current()`` gives the agent's ``(desired, state)`` now (any thread).
    """

    def __init__(self, files, cluster_name, current, registry,
                 address="0.0.0.0", revoked=lambda: frozenset(),
                 make=None):
        self._files = files
        self._cluster_name = cluster_name
        self._current = current
        self._registry = registry
        self._address = address
        self._revoked = revoked
        self._make = make if make is not None else engine.Receiver
        self._receiver = None
        self._port = None

    def slice_changed(self, desired):
        """
        The agent holds ``desired`` now: listen where it says, if it names
        a push into this node (and keep listening after, for the next).
        """
        self._registry.forget_others(
            {p.push_id for p in desired.incoming.values()}
            | {p.push_id for p in desired.outgoing.values()})
        for push in desired.incoming.values():
            self._registry.waiting(push)
        ports = sorted({p.port for p in desired.incoming.values()})
        if not ports or ports[0] == self._port:
            return
        self.stop()
        receiver = self._make(self._files, self._cluster_name,
                              self.authorize, address=self._address,
                              port=ports[0], revoked=self._revoked,
                              on_received=self._registry.received,
                              on_verified=self._registry.target_verified)
        receiver.start()
        self._receiver, self._port = receiver, ports[0]

    def stop(self):
        """
        Stop listening. The receiver's sessions are waited for in a thread
        of their own (up to the engine's bound): this runs on the reactor.
        """
        if self._receiver is not None:
            threading.Thread(target=self._receiver.stop, daemon=True,
                             name="push-receiver-stop").start()
            self._receiver, self._port = None, None

    def authorize(self, peer, offer):
        """
        The device to write ``offer`` from node ``peer`` into, or
        ``PushRefused`` saying why not.
        """
        desired, state = self._current()
        push = desired.incoming.get(offer.dataset_id) if desired else None
        if push is None or push.push_id != offer.push_id:
            raise engine.PushRefused(
                "node %s expects no push %s of dataset %s"
                % (offer.target_node, offer.push_id, offer.dataset_id))
        if peer != push.source_node:
            raise engine.PushRefused(
                "push %s comes from node %s, not from node %s"
                % (push.push_id, push.source_node, peer))
        volume = push.volume
        if volume is None or volume.volume_id != offer.target_volume or \
                not identity.is_incoming(volume) or \
                volume.metadata.get(identity.PUSH_ID_KEY) != push.push_id:
            raise engine.PushRefused(
                "volume %s is not the one marked incoming for push %s"
                % (offer.target_volume, push.push_id))
        device = state.incoming.get(offer.dataset_id) if state else None
        if device is None or device.volume_id != offer.target_volume:
            raise engine.PushRefused(
                "volume %s is not attached here yet" % (offer.target_volume,))
        if device.size < offer.size:
            raise engine.PushRefused(
                "volume %s is %d bytes here, less than the %d pushed"
                % (offer.target_volume, device.size, offer.size))
        return engine.Authorized(
            device=device.path,
            blank=volume.metadata.get(identity.BLANK_FOR_KEY) == push.push_id)
