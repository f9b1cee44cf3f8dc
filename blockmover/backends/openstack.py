"""
The openstack backend: Cinder holds the volumes, Nova attaches them to the
nodes' servers and powers those servers off to fence them, through
openstacksdk.

Every call retries what may pass (5xx, a dropped connection, a 413 that asks
to come back later) with backoff under a deadline, and maps the cloud's
refusals onto the backend interface's errors with the cloud's own message.

Waits for a volume's status back off (``STATUS_BACKOFF``); a wait for an
attach to, or a detach from, the node this backend runs on also watches the
node's by-id directory and looks again the moment the volume's device comes
or goes, so it ends soon after the cloud is done, however long it took.

What it sends is checked first against what Cinder refuses
(``cinder_rules``: names, metadata, keys, filters), so a request a real
Cinder would answer with 400 fails here, naming the field, before it is
sent.

Fencing reads a server as ClusterLabs' ``fence_openstack`` does: ``ACTIVE``
is on, ``SHUTOFF`` is off, any other status is unknown and refused at once,
never powered off on a guess. It is stricter in one way: a ``SHUTOFF``
server that Nova is starting (task state ``powering-on``) is not off.
"""

import contextlib
import time

import openstack
from keystoneauth1 import exceptions as ks_exceptions
from eliot import log_message
from openstack import exceptions as os_exceptions
from openstack.compute.v2.server import Server
from zope.interface import implementer

from blockmover.backends import cinder_rules, instance
from blockmover.backends.deviceevents import DeviceEvents
from blockmover.backends.devices import BY_ID, find_cloud_device, link_names
from blockmover.backends.interface import (
    POWER_OFF, POWER_ON, POWER_UNKNOWN, AlreadyAttached, BackendUnavailable,
    BlockDeviceError, DetachRefused, FenceFailed, FenceTimedOut,
    IBlockDeviceAPI, IFencesNodes, IListsChanges, IReportsLimits,
    IWokenByNodes, NodePower, OverLimit, PowerStateUnknown, ShrinkRefused,
    UnknownVolume, VolumeInUse,
)
from blockmover.identity import CLUSTER_KEY, DATASET_KEY, NAME_KEY
from blockmover.model import Limits, Volume
from blockmover.poll import Backoff, Timeout, poll
from blockmover.units import GiB, round_up

# Cinder's 413 bodies that mean a quota or size limit, not "come back later".
_QUOTA_REFUSALS = ("VolumeLimitExceeded", "VolumeSizeExceedsAvailableQuota",
                   "VolumeSizeExceedsLimit", "exceeded for quota",
                   "exceeds allowed")
_TRANSIENT_STATUS = (500, 502, 503, 504)
_GONE = ("deleting", "error_deleting")
# A status poll is one small GET. Growing by 60 % from a tenth of a second
# with a high cap, a 10-minute attach costs about 20 of them; the device's
# event, where there is one, makes the wait look again at once.
STATUS_BACKOFF = Backoff(initial=0.1, factor=1.6, maximum=120.0)
# Retrying what may pass (a 5xx, a dropped connection) needs no long cap.
RETRY_BACKOFF = Backoff(initial=0.2, factor=1.5, maximum=5.0)
# Statuses a volume passes through on its way to being attached or
# detached; a new attach or detach waits for them to end.
_MOVING = ("reserved", "attaching", "detaching")
_ATTACHING = ("reserved", "attaching")
# The only two server statuses whose power Nova vouches for.
_ON = "ACTIVE"
_OFF = "SHUTOFF"
# openstacksdk's names of Cinder's list filters, where they differ.
_SDK_FILTERS = {"properties": "metadata"}


class InvalidRequest(BlockDeviceError):
    """
    A request the backend was about to send is one Cinder refuses (see
    ``cinder_rules``); ``field`` names what is wrong in it. Nothing was
    sent.
    """
    def __init__(self, what, refused):
        self.field = refused.field
        BlockDeviceError.__init__(
            self, "cannot %s: Cinder refuses its %s, so it was not sent: %s"
            % (what, refused.field, refused.message))


def _check(what, check, *args):
    """
    ``check(*args)`` (a ``cinder_rules`` check) of the request to ``what``.

    :raise InvalidRequest: Cinder would refuse it.
    """
    try:
        check(*args)
    except cinder_rules.Refused as e:
        raise InvalidRequest(what, e) from None


class Retry(Exception):
    """
    The cloud asked to try again after ``seconds``.
    """
    def __init__(self, seconds, reason):
        self.seconds = seconds
        Exception.__init__(self, reason)


def _details(error):
    return str(getattr(error, "details", None) or error)


def _retry_after(error):
    response = getattr(error, "response", None)
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def translate(error, volume_id=None):
    """
    The backend-interface error (or ``Retry``) for an openstacksdk error.
    """
    if isinstance(error, (ks_exceptions.ConnectFailure,
                          ks_exceptions.ConnectTimeout,
                          ks_exceptions.RetriableConnectionFailure)):
        return Retry(None, "cannot reach the cloud: %s" % (error,))
    if isinstance(error, ks_exceptions.HttpError):
        # Raised by keystoneauth itself, mostly while getting a token.
        if error.http_status in _TRANSIENT_STATUS:
            return Retry(None, "the cloud's identity service answered %s"
                         % (error.http_status,))
        if error.http_status == 401:
            return BlockDeviceError(
                "the cloud refused the credentials (HTTP 401): check the "
                "user, password, project and domains of the cloud in "
                "clouds.yaml")
        return BlockDeviceError("the cloud's identity service refused: %s"
                                % (error.message,))
    if not isinstance(error, os_exceptions.HttpException):
        return error
    detail = _details(error)
    status = error.status_code
    if status in _TRANSIENT_STATUS:
        return Retry(_retry_after(error), "the cloud answered %s: %s"
                     % (status, detail))
    if status == 413:
        if any(word in detail for word in _QUOTA_REFUSALS):
            return OverLimit(detail)
        return Retry(_retry_after(error), "the cloud asked to slow down: %s"
                     % (detail,))
    if status == 404 and volume_id is not None:
        return UnknownVolume(volume_id, detail)
    if status == 403 and "maximum allowed number of disk devices" in detail:
        return OverLimit(detail)
    return BlockDeviceError("the cloud refused: %s" % (detail,))


def _holder(raw):
    """
    The server the volume's attachment names, or None.
    """
    attached_to = None
    for attachment in raw.attachments or ():
        attached_to = attachment.get("server_id") or attachment.get(
            "serverId")
    return attached_to


def _server(server_id):
    """
    The server ``server_id`` as openstacksdk's own type: given a bare id,
    its detach first asks Nova for the server to tell which argument is
    which.
    """
    return Server(id=server_id)


def _node_power(server):
    """
    The ``NodePower`` of a Nova server (None: Nova knows no such server).
    """
    if server is None:
        return NodePower(power=POWER_UNKNOWN, status="no such server")
    status = str(server.status)
    task = server.task_state
    described = "%s, %s" % (status, task) if task else status
    if status == _ON:
        # Running until it is off, whatever is under way.
        return NodePower(power=POWER_ON, status=described)
    if status == _OFF and not task:
        return NodePower(power=POWER_OFF, status=described)
    return NodePower(power=POWER_UNKNOWN, status=described)


def _to_volume(raw):
    attached_to = _holder(raw)
    metadata = {str(k): str(v) for k, v in (raw.metadata or {}).items()}
    return Volume(volume_id=raw.id,
                  dataset_id=metadata.get(DATASET_KEY, ""),
                  size=int(raw.size) * GiB,
                  attached_to=attached_to,
                  metadata=metadata)


@implementer(IBlockDeviceAPI, IListsChanges, IReportsLimits,
             IWokenByNodes, IFencesNodes)
class OpenStackBlockDeviceAPI(object):
    """
    Volumes of one cluster in Cinder, attached through Nova; nodes fenced
    by stopping their Nova servers.

    :param connection: an ``openstack.connection.Connection``.
    :param deadline: seconds a call, or a wait for a status (a volume's, a
        server's power-off), may take at most.
    :param backoff: pauses between two looks at a volume's or a server's
        status.
    :param sleep: how a wait pauses when no device event can end it early.
    :param metadata_url, config_drive: where ``compute_instance_id`` looks
        for this server's id when ``instance_id`` is not given.
    :param page_size: volumes per page when listing (Cinder's ``limit``);
        None lets the cloud choose. Every page is read either way.
    :param device_root: the node's by-id directory, where its volumes'
        devices appear (``/dev/disk/by-id``; another directory laid out the
        same way for an emulated cloud).
    :param watch_devices: whether waits on this node's attach and detach
        watch ``device_root`` for the volume's device (False: poll only).
    """

    def __init__(self, connection, cluster_name, instance_id=None,
                 availability_zone=None, volume_type=None, deadline=300.0,
                 backoff=STATUS_BACKOFF, retry_backoff=RETRY_BACKOFF,
                 sleep=time.sleep, metadata_url=instance.METADATA_URL,
                 config_drive=instance.CONFIG_DRIVE, page_size=None,
                 device_root=BY_ID, watch_devices=True):
        self._cloud = connection
        self._cluster = cluster_name
        self._instance_id = instance_id
        self._availability_zone = availability_zone
        self._volume_type = volume_type
        self._deadline = deadline
        self._backoff = backoff
        self._retry_backoff = retry_backoff
        self._sleep = sleep
        self._metadata_url = metadata_url
        self._config_drive = config_drive
        self._page_size = page_size
        self._device_root = device_root
        self._watch_devices = watch_devices
        self._wakes = None

    @classmethod
    def from_options(cls, options, cluster_name, instance_id=None):
        """
        Connect to the cloud named by ``options["cloud"]`` (a clouds.yaml
        entry; without it, ``OS_CLOUD`` and the usual ``OS_*`` variables).
        Other options: ``region``, ``availability_zone``, ``volume_type``,
        ``deadline`` (seconds), ``page_size``, ``device_root`` (the node's
        by-id directory, default ``/dev/disk/by-id``).
        """
        connect = {}
        if options.get("cloud"):
            connect["cloud"] = options["cloud"]
        if options.get("region"):
            connect["region_name"] = options["region"]
        try:
            connection = openstack.connect(**connect)
        except os_exceptions.ConfigException as e:
            raise BlockDeviceError(
                "cannot configure the openstack backend: %s; name a "
                "clouds.yaml cloud with backend option 'cloud' or set "
                "OS_CLOUD" % (e,))
        page_size = options.get("page_size")
        return cls(connection, cluster_name, instance_id=instance_id,
                   availability_zone=options.get("availability_zone"),
                   volume_type=options.get("volume_type"),
                   deadline=float(options.get("deadline", 300)),
                   page_size=int(page_size) if page_size else None,
                   device_root=options.get("device_root") or BY_ID)

    # --- calling the cloud ------------------------------------------------

    def _call(self, what, function, *args, volume_id=None, **kwargs):
        """
        ``function(*args, **kwargs)``, retried while the cloud's failure may
        pass, until the deadline.
        """
        end = time.monotonic() + self._deadline
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except Exception as e:
                error = translate(e, volume_id)
                if not isinstance(error, Retry):
                    if error is e:
                        raise
                    raise error from None
                delay = error.seconds
                if delay is None:
                    delay = self._retry_backoff.delay(attempt)
                if time.monotonic() + delay > end:
                    raise BackendUnavailable(
                        "gave up to %s after %.0f seconds: %s"
                        % (what, self._deadline, error)) from None
                self._sleep(delay)
                attempt += 1

    def _wait(self, volume_id, what, ready, wake=None):
        """
        Poll the volume until ``ready(raw_volume)`` is true and return it;
        ``ready`` may raise to give up early. ``wake``: see ``poll``.
        """
        def check():
            raw = self._get_raw(volume_id)
            return raw if ready(raw) else None
        try:
            return poll(check, self._deadline, what, backoff=self._backoff,
                        sleep=self._sleep, wake=wake)
        except Timeout as e:
            raise BackendUnavailable(str(e)) from None

    @contextlib.contextmanager
    def _device_events(self, volume_id, node):
        """
        A wake source for waits on ``node``'s attachment of the volume: the
        volume's links in this node's by-id directory when ``node`` is this
        node; for another node, what ``wake_waits_with`` gave, if anything;
        else None (the wait only polls).
        """
        if node != self._instance_id and self._wakes is not None:
            # Another node's attach or detach, made for it: that node says
            # when its device came or went.
            with self._wakes(volume_id, node) as wake:
                yield wake
            return
        if not self._watch_devices or node != self._instance_id:
            yield None
            return
        try:
            events = DeviceEvents(self._device_root, link_names(volume_id))
            events.__enter__()
        except OSError as e:
            log_message(message_type="blockmover:openstack:no-device-events",
                        directory=self._device_root, error=str(e))
            yield None
            return
        try:
            yield events
        finally:
            events.__exit__(None, None, None)

    def _get_raw(self, volume_id):
        raw = self._call("get volume %s" % (volume_id,),
                         self._cloud.block_storage.get_volume, volume_id,
                         volume_id=volume_id)
        if (raw.metadata or {}).get(CLUSTER_KEY) != self._cluster:
            raise UnknownVolume(volume_id)
        return raw

    def _list(self, what, query):
        """
        Every volume the cloud's filter ``query`` selects, all pages; the
        whole listing is retried if a page fails, so it is never partial.
        """
        if self._page_size is not None:
            query = dict(query, limit=self._page_size)
        _check(what, cinder_rules.check_list_query,
               [_SDK_FILTERS.get(name, name) for name in query])
        return self._call(what, lambda: list(
            self._cloud.block_storage.volumes(details=True, **query)))

    def _settled(self, volume_id, wake=None):
        """
        The volume once it is not between attached and detached.
        """
        return self._wait(volume_id, "volume %s to finish attaching or "
                          "detaching" % (volume_id,),
                          lambda current: current.status not in _MOVING,
                          wake)

    # --- IWokenByNodes -----------------------------------------------------

    def wake_waits_with(self, wakes):
        self._wakes = wakes

    # --- IBlockDeviceAPI ---------------------------------------------------

    def allocation_unit(self):
        return GiB

    def compute_instance_id(self):
        if self._instance_id is None:
            self._instance_id = instance.discover(self._metadata_url,
                                                  self._config_drive)
        return self._instance_id

    def list_volumes(self):
        """
        This cluster's volumes, filtered by the cloud on the cluster's
        metadata stamp, all pages.
        """
        return self._list_cluster({})

    def list_changed_volumes(self, since):
        """
        This cluster's volumes updated at or after ``since``: Cinder's
        ``updated_at=gte:`` filter.
        """
        return self._list_cluster({"updated_at": "gte:" + since})

    def _list_cluster(self, query):
        query = dict(query, properties=repr({CLUSTER_KEY: self._cluster}))
        raws = self._list("list volumes", query)
        return [_to_volume(raw) for raw in raws
                if (raw.metadata or {}).get(CLUSTER_KEY) == self._cluster
                and raw.status not in _GONE]

    def _find_dataset(self, dataset_id):
        query = {"properties": repr({CLUSTER_KEY: self._cluster,
                                     DATASET_KEY: dataset_id})}
        raws = self._list("find dataset %s" % (dataset_id,), query)
        for raw in raws:
            metadata = raw.metadata or {}
            if (metadata.get(DATASET_KEY) == dataset_id
                    and metadata.get(CLUSTER_KEY) == self._cluster
                    and raw.status not in _GONE):
                return raw
        return None

    def create_volume(self, dataset_id, size, metadata):
        attributes = dict(
            name=metadata.get(NAME_KEY, "blockmover-" + dataset_id),
            size=round_up(size, GiB) // GiB,
            metadata=dict(metadata, **{CLUSTER_KEY: self._cluster,
                                       DATASET_KEY: dataset_id}))
        if self._availability_zone:
            attributes["availability_zone"] = self._availability_zone
        if self._volume_type:
            attributes["volume_type"] = self._volume_type
        _check("create the volume of dataset %s" % (dataset_id,),
               cinder_rules.check_create, {"volume": attributes})
        raw = self._find_dataset(dataset_id)
        if raw is None:
            try:
                raw = self._cloud.block_storage.create_volume(**attributes)
            except Exception as e:
                error = translate(e)
                if not isinstance(error, Retry):
                    raise error from None
                # The cloud may have made it before failing: look again
                # rather than make a second volume for the dataset.
                raw = self._find_dataset(dataset_id)
                if raw is None:
                    raw = self._call(
                        "create volume for %s" % (dataset_id,),
                        self._cloud.block_storage.create_volume, **attributes)

        def ready(current):
            if current.status == "error":
                raise BlockDeviceError("the cloud failed to create volume %s"
                                       % (current.id,))
            return current.status != "creating"
        return _to_volume(self._wait(raw.id, "volume %s to be created"
                                     % (raw.id,), ready))

    def get_volume(self, volume_id):
        return _to_volume(self._get_raw(volume_id))

    def set_metadata(self, volume_id, metadata):
        _check("set the metadata of volume %s" % (volume_id,),
               cinder_rules.check_metadata_body, {"metadata": metadata})
        self._get_raw(volume_id)
        self._call("set metadata of %s" % (volume_id,),
                   self._cloud.block_storage.set_volume_metadata, volume_id,
                   volume_id=volume_id, **metadata)

    def attach_volume(self, volume_id, attach_to):
        with self._device_events(volume_id, attach_to) as wake:
            raw = self._get_raw(volume_id)
            if _holder(raw) == attach_to and raw.status == "detaching":
                # A detach from this very node is under way: let it end,
                # then attach afresh.
                raw = self._wait(volume_id, "volume %s to be detached from %s"
                                 % (volume_id, attach_to),
                                 lambda current: _holder(current) != attach_to,
                                 wake)
            if _holder(raw) is None and raw.status in _MOVING:
                # Moving, for a node the cloud does not name yet.
                raw = self._settled(volume_id)
            holder = _holder(raw)
            if holder is not None and holder != attach_to:
                raise AlreadyAttached(volume_id, holder)
            if holder is None:
                self._request_attach(volume_id, attach_to)

            def ready(current):
                owner = _holder(current)
                if owner is not None and owner != attach_to:
                    raise AlreadyAttached(volume_id, owner)
                if current.status == "available" and owner is None:
                    raise BlockDeviceError(
                        "the cloud could not attach volume %s to %s; it is "
                        "available again" % (volume_id, attach_to))
                if current.status.startswith("error"):
                    raise BlockDeviceError(
                        "attaching volume %s failed: status %s"
                        % (volume_id, current.status))
                return current.status == "in-use" and owner == attach_to
            return _to_volume(self._wait(
                volume_id, "volume %s to be attached to %s"
                % (volume_id, attach_to), ready, wake))

    def _request_attach(self, volume_id, attach_to):
        try:
            # Nova's 404 here is about the server, not the volume: no volume
            # id, so it stays the cloud's refusal.
            self._call("attach volume %s" % (volume_id,),
                       self._cloud.compute.create_volume_attachment,
                       attach_to, volume_id)
        except BlockDeviceError as e:
            # A retried attach that had gone through answers "already
            # attached": only a holder other than us is a refusal.
            holder = _holder(self._get_raw(volume_id))
            if holder is not None and holder != attach_to:
                raise AlreadyAttached(volume_id, holder, str(e))
            if holder is None:
                raise

    def detach_volume(self, volume_id, detach_from):
        with self._device_events(volume_id, detach_from) as wake:
            raw = self._get_raw(volume_id)
            if _holder(raw) is None and raw.status in _MOVING:
                # Moving, for a node the cloud does not name yet: it may be
                # ``detach_from``, so see where it ends.
                raw = self._settled(volume_id)
            if _holder(raw) != detach_from:
                # Free, or another node's: a stale detach changes nothing.
                return _to_volume(raw)
            if raw.status in _ATTACHING:
                # Nova refuses to detach mid-attach: let it end first.
                raw = self._wait(
                    volume_id, "volume %s to finish attaching" % (volume_id,),
                    lambda current: current.status not in _ATTACHING
                    or _holder(current) != detach_from, wake)
                if _holder(raw) != detach_from:
                    return _to_volume(raw)
            if raw.status == "in-use":
                self._request_detach(volume_id, detach_from)

            seen = set()

            def detached(current):
                if _holder(current) != detach_from:
                    return True
                # Nova starts a detach after answering 202: in-use before
                # detaching is the detach not begun yet; in-use after it,
                # the cloud rolled the detach back.
                seen.add(current.status)
                if current.status.startswith("error") or (
                        current.status == "in-use" and "detaching" in seen):
                    raise BlockDeviceError(
                        "the cloud could not detach volume %s from %s: "
                        "status %s; detach again" % (volume_id, detach_from,
                                                    current.status))
                return False
            return _to_volume(self._wait(
                volume_id, "volume %s to be detached from %s"
                % (volume_id, detach_from), detached, wake))

    def _request_detach(self, volume_id, detach_from):
        def detach():
            try:
                self._cloud.compute.delete_volume_attachment(
                    _server(detach_from), volume_id)
            except os_exceptions.ConflictException as e:
                # Nova's 409: the compute service is down, the server is in
                # ERROR or busy; retrying now would get the same answer.
                raise DetachRefused(volume_id, detach_from,
                                    _details(e)) from None
        try:
            self._call("detach volume %s" % (volume_id,), detach)
        except BlockDeviceError:
            # A retried detach that had gone through answers "not
            # attached": success is the volume detaching or not ours.
            current = self._get_raw(volume_id)
            if (_holder(current) == detach_from
                    and current.status != "detaching"):
                raise

    def destroy_volume(self, volume_id):
        raw = self._get_raw(volume_id)
        if raw.attachments or raw.status in ("in-use", "attaching",
                                             "detaching", "reserved"):
            raise VolumeInUse(volume_id)
        self._call("delete volume %s" % (volume_id,),
                   self._cloud.block_storage.delete_volume, volume_id,
                   ignore_missing=True, volume_id=volume_id)

        def gone():
            try:
                self._get_raw(volume_id)
            except UnknownVolume:
                return True
            return None
        try:
            poll(gone, self._deadline, "volume %s to be deleted"
                 % (volume_id,), backoff=self._backoff, sleep=self._sleep)
        except Timeout as e:
            raise BackendUnavailable(str(e)) from None

    def grow_volume(self, volume_id, size):
        raw = self._get_raw(volume_id)
        current = int(raw.size) * GiB
        wanted = round_up(size, GiB)
        if wanted < current:
            raise ShrinkRefused(volume_id, current, size)
        if wanted > current:
            self._call("grow volume %s" % (volume_id,),
                       self._cloud.block_storage.extend_volume, volume_id,
                       wanted // GiB, volume_id=volume_id)

        def ready(now):
            if now.status.startswith("error"):
                raise BlockDeviceError("growing volume %s failed: status %s"
                                       % (volume_id, now.status))
            return (now.status in ("available", "in-use")
                    and int(now.size) * GiB >= wanted)
        return _to_volume(self._wait(volume_id, "volume %s to grow"
                                     % (volume_id,), ready))

    def get_device_path(self, volume_id):
        return find_cloud_device(volume_id, by_id=self._device_root)

    # --- IFencesNodes --------------------------------------------------------

    def _get_server(self, node):
        """
        The Nova server ``node``, or None when Nova knows no such server.
        """
        def get():
            try:
                return self._cloud.compute.get_server(node)
            except os_exceptions.NotFoundException:
                return None
        return self._call("look at server %s" % (node,), get)

    def _request_stop(self, node):
        """
        Ask Nova to stop the server. False when Nova refused it for the
        server's state (409) or no longer knows the server (404): the next
        look says why.
        """
        def stop():
            try:
                self._cloud.compute.stop_server(node)
            except (os_exceptions.ConflictException,
                    os_exceptions.NotFoundException) as e:
                log_message(message_type="blockmover:openstack:stop-refused",
                            server=node, reason=_details(e))
                return False
            return True
        taken = self._call("stop server %s" % (node,), stop)
        if taken:
            log_message(message_type="blockmover:openstack:stop-requested",
                        server=node)
        return taken

    def power_state(self, node):
        return _node_power(self._get_server(node))

    def fence(self, node):
        """
        Stop the server ``node`` and wait until Nova says ``SHUTOFF`` (see
        ``IFencesNodes.fence``). The stop is sent only to an ``ACTIVE``
        server with no task under way, once; a stop or start already under
        way is waited for.
        """
        seen = []
        stopped = []

        def check():
            server = self._get_server(node)
            power = _node_power(server)
            seen.append(power)
            if power.power == POWER_OFF:
                return power
            if server is None:
                raise PowerStateUnknown(
                    node, None, "cannot fence %s: Nova knows no such server "
                    "(check the node's instance_id and the cloud's region); "
                    "nothing was powered off" % (node,))
            if server.task_state and server.status in (_ON, _OFF):
                # A power-off (ours or another's) or a start under way.
                return None
            if server.status == _ON:
                if stopped:
                    raise FenceFailed(
                        node, power.status, "cannot fence %s: Nova took the "
                        "stop and the server is ACTIVE again, so the "
                        "power-off failed; fence it another way, or confirm "
                        "it down once you know it is off" % (node,))
                if self._request_stop(node):
                    stopped.append(True)
                return None
            raise PowerStateUnknown(
                node, power.status, "cannot fence %s: its server is %s, "
                "neither ACTIVE nor SHUTOFF, so Nova cannot say whether it "
                "still runs; fence it another way, or confirm it down once "
                "you know it is off" % (node, power.status))
        try:
            return poll(check, self._deadline, "server %s to power off"
                        % (node,), backoff=self._backoff, sleep=self._sleep)
        except Timeout:
            last = seen[-1].status if seen else None
            raise FenceTimedOut(
                node, last, "cannot fence %s: Nova did not confirm its "
                "server off within %.0f seconds (last seen %s); its compute "
                "service may be down, when Nova never finishes a power-off. "
                "Fence it another way, or confirm it down once you know it "
                "is off" % (node, self._deadline, last)) from None

    # --- IReportsLimits ------------------------------------------------------

    def limits(self):
        """
        What Cinder's ``/limits`` allows this project, as ``model.Limits``
        (None where the cloud sets no limit).
        """
        raw = self._call("read limits", self._cloud.block_storage.get_limits)
        absolute = raw.absolute
        volumes = getattr(absolute, "max_total_volumes", None)
        gigabytes = getattr(absolute, "max_total_volume_gigabytes", None)
        return Limits(
            region_volumes=volumes if volumes and volumes > 0 else None,
            region_size=gigabytes * GiB if gigabytes and gigabytes > 0
            else None)
