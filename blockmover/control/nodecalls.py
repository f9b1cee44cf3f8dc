"""
The cloud calls a node asks the control service to make for it, so that no
node holds the cluster's cloud credentials (seed 003: "avoid having to send
cloud credentials to each node").

A node may ask only for its own volumes, and only what its current slice
wants. Each call is checked against that node's slice and against what the
backend itself says of the volume right now (not the cached listing, which
may be a second old), then made with the cluster's credentials, in a thread
pool of its own so that a slow attach never holds up the listing:

- ``create``: a volume for a dataset the slice wants on this node, of the
  slice's size and with the cluster's identity stamp; the node names
  neither.
- ``attach``: a volume of a dataset the slice wants on this node, to this
  node's backend instance (the slice's, never one the node names).
- ``detach``: a volume the backend says is attached to this node; one held
  by another node or by none is left alone, as a stale detach must be.
- ``grow``: a volume of a dataset the slice wants here, to at most the
  slice's size.
- ``formatted``: mark a volume attached to this node, of a dataset the
  slice wants here, as holding its filesystem.
- ``volume``: read a volume of a dataset the slice wants here or one
  attached here.
- ``seen``: the node saw the device of a volume it asked to attach or
  detach come or go; the service's wait for the cloud looks again at once
  rather than at its next pause (the service cannot see a node's devices,
  and a wait backing off on a cloud's status alone would notice late).

Anything else is refused (``access.Refused``, 403) with a message that
names the node and what it asked.
"""

import contextlib
import functools
import threading

from eliot import start_action
from twisted.internet.defer import inlineCallbacks
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from blockmover import identity
from blockmover.backends.interface import (
    AsyncBlockDevice, BlockDeviceError, IWokenByNodes,
)
from blockmover.control.access import Refused
from blockmover.control.errors import BackendError
from blockmover.metrics import FAIL, REFUSED, SUCCESS

# Attaches and detaches wait minutes on a slow cloud, one thread each.
MAX_THREADS = 64


class _Wake(object):
    """
    A wake source (``blockmover.poll.poll``) ended by ``fire``.
    """

    def __init__(self):
        self._event = threading.Event()

    def fire(self):
        self._event.set()

    def wait(self, timeout):
        fired = self._event.wait(timeout)
        self._event.clear()
        return fired


class NodeWakes(object):
    """
    The waits of the backend (``IWokenByNodes``) for a volume's attach to,
    or detach from, a node, each woken when that node says it saw the
    volume's device come or go. Only the node a wait is for can wake it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._waits = {}

    @contextlib.contextmanager
    def watch(self, volume_id, node):
        """
        The wake source of a wait on ``volume_id`` at ``node`` (a backend
        id), registered while the context lasts.
        """
        wake = _Wake()
        key = (node, volume_id)
        with self._lock:
            self._waits.setdefault(key, set()).add(wake)
        try:
            yield wake
        finally:
            with self._lock:
                waits = self._waits.get(key, set())
                waits.discard(wake)
                if not waits:
                    self._waits.pop(key, None)

    def seen(self, volume_id, node):
        """
        Wake the waits on ``volume_id`` at ``node``. :return: how many.
        """
        with self._lock:
            waits = list(self._waits.get((node, volume_id), ()))
        for wake in waits:
            wake.fire()
        return len(waits)


def _measured(call):
    """
    A node's call (a method returning a Deferred), timed into the
    ``node_calls`` histogram of the ``ControlMetrics`` its ``NodeCalls``
    has, as ``call`` with its outcome: success, refused, or fail.
    """
    def decorate(method):
        @functools.wraps(method)
        def measured(self, *args):
            if self._metrics is None:
                return method(self, *args)
            started = self._reactor.seconds()
            d = method(self, *args)

            def ended(result):
                if not isinstance(result, Failure):
                    status = SUCCESS
                elif result.check(Refused):
                    status = REFUSED
                else:
                    status = FAIL
                self._metrics.node_calls.labels(call, status).observe(
                    self._reactor.seconds() - started)
                return result
            d.addBoth(ended)
            return d
        return measured
    return decorate


class NodeCalls(object):
    """
    The cloud calls of nodes, for ``service`` (a ``ControlService``), timed
    into ``metrics`` (``ControlMetrics``) if given.
    """

    def __init__(self, service, reactor, metrics=None):
        self._service = service
        self._reactor = reactor
        self._metrics = metrics
        self._threadpool = ThreadPool(minthreads=0, maxthreads=MAX_THREADS,
                                      name="blockmover-control-node-calls")
        self._wakes = NodeWakes()
        # Each site's ``ControlBackend`` -> its AsyncBlockDevice here.
        self._apis = {}

    def start(self):
        self._threadpool.start()

    def stop(self):
        self._threadpool.stop()

    # --- what a node may ask ---------------------------------------------

    @_measured("create")
    @inlineCallbacks
    def create(self, node, dataset_id):
        desired, api = yield self._ready(node)
        push = desired.incoming.get(dataset_id)
        if push is not None:
            volume = yield self._create_incoming(node, desired, api, push)
            return volume
        dataset = self._wanted(node, desired, dataset_id,
                               "create a volume for")
        with start_action(action_type="blockmover:control:node-create",
                          node=node, dataset_id=dataset_id) as action:
            volume = yield _backend_says(api.create_volume(
                dataset_id, dataset.size,
                identity.volume_metadata(desired.cluster_name,
                                         dataset.application)))
            action.add_success_fields(volume_id=volume.volume_id)
        if identity.is_incoming(volume):
            raise Refused(
                "volume %s of dataset %s is being pushed into from another "
                "site and holds no data to use yet"
                % (volume.volume_id, dataset_id))
        self._changed()
        return volume

    @inlineCallbacks
    def _create_incoming(self, node, desired, api, push):
        """
        The volume ``push`` (an ``IncomingPush`` of ``node``'s slice) goes
        into, in the node's site: made blank and marked incoming, or the
        one the site keeps of the dataset, marked incoming. Never the
        dataset's data: a push goes only into a site the data is not in.
        """
        marks = {identity.PUSH_KEY: identity.INCOMING,
                 identity.PUSH_ID_KEY: push.push_id,
                 identity.GENERATION_KEY: str(push.generation),
                 identity.FORMAT_KEY: identity.NEW}
        metadata = dict(identity.volume_metadata(desired.cluster_name,
                                                 push.application))
        metadata.update(marks)
        metadata[identity.BLANK_FOR_KEY] = push.push_id
        # A volume the site kept holds what it held.
        marks[identity.BLANK_FOR_KEY] = "no"
        with start_action(action_type="blockmover:control:node-create",
                          node=node, dataset_id=push.dataset_id,
                          push_id=push.push_id) as action:
            volume = yield _backend_says(api.create_volume(
                push.dataset_id, push.size, metadata))
            if volume.metadata.get(identity.PUSH_ID_KEY) != push.push_id:
                yield _backend_says(api.set_metadata(volume.volume_id,
                                                     marks))
                volume = yield self._volume(api, volume.volume_id)
            action.add_success_fields(volume_id=volume.volume_id)
        self._changed()
        return volume

    @_measured("attach")
    @inlineCallbacks
    def attach(self, node, volume_id):
        desired, api = yield self._ready(node)
        volume = yield self._volume(api, volume_id)
        if self._pushed_into(desired, volume) is None:
            self._wanted(node, desired, volume.dataset_id,
                         "attach volume %s of" % (volume_id,))
        with start_action(action_type="blockmover:control:node-attach",
                          node=node, volume_id=volume_id,
                          attach_to=desired.backend_id):
            volume = yield _backend_says(
                api.attach_volume(volume_id, desired.backend_id))
        self._changed()
        return volume

    @_measured("detach")
    @inlineCallbacks
    def detach(self, node, volume_id):
        desired, api = yield self._ready(node)
        volume = yield self._volume(api, volume_id)
        if volume.attached_to != desired.backend_id:
            # Free, or another node's: a stale detach changes nothing.
            return volume
        with start_action(action_type="blockmover:control:node-detach",
                          node=node, volume_id=volume_id,
                          detach_from=desired.backend_id):
            volume = yield _backend_says(
                api.detach_volume(volume_id, desired.backend_id))
        self._changed()
        return volume

    @_measured("grow")
    @inlineCallbacks
    def grow(self, node, volume_id, size):
        desired, api = yield self._ready(node)
        volume = yield self._volume(api, volume_id)
        dataset = self._pushed_into(desired, volume) or self._wanted(
            node, desired, volume.dataset_id,
            "grow volume %s of" % (volume_id,))
        if size > dataset.size:
            raise Refused(
                "node %s may not grow volume %s to %d bytes: its slice "
                "wants dataset %s at most %d bytes"
                % (node, volume_id, size, volume.dataset_id, dataset.size))
        with start_action(action_type="blockmover:control:node-grow",
                          node=node, volume_id=volume_id, size=size):
            volume = yield _backend_says(api.grow_volume(volume_id, size))
        self._changed()
        return volume

    @_measured("formatted")
    @inlineCallbacks
    def formatted(self, node, volume_id):
        desired, api = yield self._ready(node)
        volume = yield self._volume(api, volume_id)
        self._wanted(node, desired, volume.dataset_id,
                     "mark volume %s formatted, of" % (volume_id,))
        if volume.attached_to != desired.backend_id:
            raise Refused(
                "node %s may not mark volume %s formatted: it is attached "
                "to %s, not to this node" % (
                    node, volume_id, volume.attached_to or "no node"))
        yield _backend_says(api.set_metadata(
            volume_id, {identity.FORMAT_KEY: identity.FORMATTED}))
        volume = yield self._volume(api, volume_id)
        return volume

    @_measured("volume")
    @inlineCallbacks
    def volume(self, node, volume_id):
        desired, api = yield self._ready(node)
        volume = yield self._volume(api, volume_id)
        if (volume.attached_to != desired.backend_id
                and volume.dataset_id not in desired.datasets
                and self._pushed_into(desired, volume) is None):
            raise Refused(
                "node %s may not read volume %s: its slice does not want "
                "dataset %s there and the volume is not attached to it"
                % (node, volume_id, volume.dataset_id))
        return volume

    def seen(self, node, volume_id):
        """
        Node ``node`` saw the device of ``volume_id`` come or go: wake the
        waits of its own calls on that volume. Nothing is asked of the
        cloud here. :return: how many waits were woken.
        """
        self._service.check_node(node)
        desired = self._service.slices.get(node)
        if desired is None:
            return 0
        return self._wakes.seen(volume_id, desired.backend_id)

    # --- plumbing ----------------------------------------------------------

    def _ready(self, node):
        """
        A Deferred of ``(node's current slice, the backend's
        AsyncBlockDevice in this pool)``.

        :raise UnknownNode, NoConfiguration: see ``check_node``.
        """
        service = self._service
        service.check_node(node)
        desired = service.slices.get(node)
        backends = service.backend
        site = self._site_of(node, desired)
        if desired is None or backends is None or site is None:
            raise BackendError("the control service has not made node %s's "
                               "slice yet; ask again in a moment" % (node,))
        backend = backends.site(site)
        d = backend.ready()

        def made(backend):
            api = self._apis.get(backend)
            if api is None:
                if IWokenByNodes.providedBy(backend.raw):
                    backend.raw.wake_waits_with(self._wakes.watch)
                api = AsyncBlockDevice(backend.raw, self._reactor,
                                       self._threadpool)
                # Only the backends in use now are kept.
                self._apis = {b: a for b, a in self._apis.items()
                              if b in backends.sites.values()}
                self._apis[backend] = api
            return desired, api
        d.addCallback(made)
        return d

    def _site_of(self, node, desired):
        """
        The site of ``node``: the configuration's; for a node it no longer
        names (which still releases what it holds), the site of the
        volumes its slice lists, or the one site. None when unknown.
        """
        service = self._service
        if node in service.deployment.nodes:
            return service.deployment.nodes[node].site
        sites = service.backend.sites if service.backend is not None else {}
        if len(sites) == 1:
            return next(iter(sites))
        held = {v.site for v in desired.volumes.values()} if desired else ()
        return next(iter(held)) if len(held) == 1 else None

    def _volume(self, api, volume_id):
        """
        The volume as the backend says now; ``BackendError`` for one that
        is not this cluster's or cannot be read.
        """
        return _backend_says(api.get_volume(volume_id))

    @staticmethod
    def _pushed_into(desired, volume):
        """
        The ``IncomingPush`` of ``desired`` that ``volume`` (as the backend
        says now) is marked incoming for, or None.
        """
        push = desired.incoming.get(volume.dataset_id)
        if push is None or not identity.is_incoming(volume) or \
                volume.metadata.get(identity.PUSH_ID_KEY) != push.push_id:
            return None
        return push

    @staticmethod
    def _wanted(node, desired, dataset_id, what):
        dataset = desired.datasets.get(dataset_id)
        if dataset is None:
            raise Refused("node %s may not %s dataset %s: its slice does not "
                          "want that dataset on it" % (node, what,
                                                       dataset_id))
        return dataset

    def _changed(self):
        # The backend changed: the listing (and the slices) follow soon.
        self._service.listing.request()


def _backend_says(d):
    """
    ``d``, a backend call's Deferred, whose ``BlockDeviceError`` (the
    backend's refusal or failure, say a volume held by another node) is
    the node's answer, a ``BackendError``, rather than the service's own.
    """
    def failed(failure):
        failure.trap(BlockDeviceError)
        raise BackendError(failure.getErrorMessage())
    d.addErrback(failed)
    return d
