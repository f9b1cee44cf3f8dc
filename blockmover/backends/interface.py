"""
The contract every block-storage backend keeps.

Backends are synchronous and may block (cloud calls, ``losetup``); code on
the reactor uses them through ``AsyncBlockDevice``, which runs every call in
a thread pool. ``tests/conformance.py`` checks the whole contract against
real devices for any implementation.
"""

from pyrsistent import PClass, field
from twisted.internet.threads import deferToThreadPool
from zope.interface import Interface, providedBy


class BlockDeviceError(Exception):
    """
    Base of every error a backend raises on purpose. The message is meant
    for a person and keeps what the cloud said.
    """


class UnknownVolume(BlockDeviceError):
    """
    No volume of this cluster has the given id.
    """
    def __init__(self, volume_id, detail=None):
        self.volume_id = volume_id
        BlockDeviceError.__init__(
            self, detail or "volume %s does not exist" % (volume_id,))


class AlreadyAttached(BlockDeviceError):
    """
    The volume is attached to another node; detach it there first.
    """
    def __init__(self, volume_id, attached_to, detail=None):
        self.volume_id = volume_id
        self.attached_to = attached_to
        BlockDeviceError.__init__(
            self, detail or "volume %s is already attached to %s"
            % (volume_id, attached_to))


class NoInstanceId(BlockDeviceError):
    """
    The backend cannot tell which node it runs on: it was not told, and
    (where the backend can look) found no answer.
    """


class VolumeInUse(BlockDeviceError):
    """
    The volume is attached, so it cannot be destroyed.
    """
    def __init__(self, volume_id, detail=None):
        self.volume_id = volume_id
        BlockDeviceError.__init__(
            self, detail or "volume %s is attached; detach it before "
            "destroying it" % (volume_id,))


class ShrinkRefused(BlockDeviceError):
    """
    A volume can only grow.
    """
    def __init__(self, volume_id, size, requested, detail=None):
        self.volume_id = volume_id
        self.size = size
        self.requested = requested
        BlockDeviceError.__init__(
            self, detail or "volume %s is %d bytes and cannot shrink to %d "
            "bytes; volumes only grow" % (volume_id, size, requested))


class OverLimit(BlockDeviceError):
    """
    The backend refused because a limit or quota would be exceeded.
    ``retry_after`` is the number of seconds the backend asked to wait, when
    it said so.
    """
    def __init__(self, message, retry_after=None):
        self.retry_after = retry_after
        BlockDeviceError.__init__(self, message)


class BackendUnavailable(BlockDeviceError):
    """
    The backend failed in a way that may pass (a 5xx, a timeout); the same
    call may succeed later.
    """


class DetachRefused(BlockDeviceError):
    """
    The cloud refused to detach the volume from the node and nothing
    changed: ``reason`` is the cloud's own words. Nova refuses (409) while
    the server's compute service is down, while the server is in ERROR,
    and while another task (a power-off, a start) is under way on it; the
    first two last until someone repairs the compute host or the server,
    so the volume stays where it is until then.
    """
    def __init__(self, volume_id, node, reason):
        self.volume_id = volume_id
        self.node = node
        self.reason = reason
        BlockDeviceError.__init__(
            self, "the cloud refused to detach volume %s from %s: %s; it "
            "stays attached there until what the cloud names is repaired "
            "(on OpenStack: the server's compute service is down, or the "
            "server is in ERROR), then detach again"
            % (volume_id, node, reason))


class FenceFailed(BlockDeviceError):
    """
    The node was not fenced: nothing shows it cannot write any more, so
    nothing may move off it on the strength of this fence. ``node`` is its
    backend id, ``status`` the cloud's last word on it (None if none).
    """
    def __init__(self, node, status, message):
        self.node = node
        self.status = status
        BlockDeviceError.__init__(self, message)


class PowerStateUnknown(FenceFailed):
    """
    The cloud cannot say the node is off, and will not power it off: it is
    in a state other than on or off (a Nova server in ERROR, paused,
    rebooting...), or the cloud knows no such node. Fence it another way,
    or have an operator confirm it is down.
    """


class FenceTimedOut(FenceFailed):
    """
    The cloud did not confirm the node off before the deadline: it may
    still be powering off, or its compute host may be down (then Nova never
    finishes the power-off).
    """


POWER_ON = "on"
POWER_OFF = "off"
POWER_UNKNOWN = "unknown"


class NodePower(PClass):
    """
    What the backend says about a node's power: ``power`` is ``POWER_ON``,
    ``POWER_OFF`` (it cannot write) or ``POWER_UNKNOWN`` (anything else,
    never to be taken for off); ``status`` is the backend's own word for
    people (e.g. ``SHUTOFF``, ``ACTIVE, powering-off``).
    """
    power = field(type=str, mandatory=True, invariant=lambda value: (
        value in (POWER_ON, POWER_OFF, POWER_UNKNOWN),
        "power must be on, off or unknown"))
    status = field(type=str, mandatory=True)


class IBlockDeviceAPI(Interface):
    """
    Volumes of one cluster in one block-storage backend.

    Every method may block and must be called off the reactor thread (see
    ``AsyncBlockDevice``). Sizes are in bytes. Volumes are ``model.Volume``
    records; ``attached_to`` and ``attach_to`` are backend ids of nodes
    (``Node.backend_id``).
    """

    def allocation_unit():
        """
        The granularity of volume sizes in bytes: a requested size is rounded
        up to a multiple of it.
        """

    def compute_instance_id():
        """
        The backend id of the node this code runs on.
        """

    def create_volume(dataset_id, size, metadata):
        """
        Create a volume of at least ``size`` bytes for ``dataset_id``,
        stamped with ``metadata`` (strings to strings), unattached.

        Idempotent per dataset: if this cluster already has a volume for
        ``dataset_id``, return it instead of making a second one. Raises
        ``OverLimit`` when a limit or quota forbids the volume.

        :return: the ``Volume``.
        """

    def get_volume(volume_id):
        """
        :return: the ``Volume`` as the backend knows it now.
        :raise UnknownVolume: no volume of this cluster has that id.
        """

    def list_volumes():
        """
        :return: every volume of this cluster (and only of this cluster), in
            a list, whatever paging the backend needs.
        """

    def set_metadata(volume_id, metadata):
        """
        Merge ``metadata`` into the volume's metadata.

        :raise UnknownVolume: no such volume.
        """

    def attach_volume(volume_id, attach_to):
        """
        Attach the volume to the node ``attach_to``.

        Returns once the backend reports the volume attached to
        ``attach_to`` (its attachment names that node, not merely a status),
        waiting where the backend is asynchronous with backoff under a
        deadline, woken early when the node's device appears if the backend
        runs on ``attach_to``. The node's block device may appear later,
        see ``get_device_path``.

        Idempotent: a volume already attached to ``attach_to`` returns at
        once; one on its way there (a retry after a crash) is waited for.

        :return: the attached ``Volume``.
        :raise UnknownVolume: no such volume.
        :raise AlreadyAttached: attached (or being attached) to another
            node; nothing changed.
        :raise BackendUnavailable: the deadline passed first.
        """

    def detach_volume(volume_id, detach_from):
        """
        Detach the volume from the node ``detach_from`` and return once the
        backend no longer reports it attached to that node, whatever
        happens to it next: another node may attach it at once, so the
        volume need never be seen free. Waits where the backend is
        asynchronous with backoff under a deadline, woken early when the
        node's device goes if the backend runs on ``detach_from``. The
        caller unmounts first.

        A volume that is free, or held (or being attached) by another node,
        is left exactly as it is and the call returns at once: a stale or
        repeated detach never pulls a volume from the node that holds it
        now. Idempotent, and safe to repeat after a crash half-way.

        :return: the ``Volume`` as the backend last reported it.
        :raise UnknownVolume: no such volume.
        :raise DetachRefused: the backend refused to detach it from
            ``detach_from`` (a Nova server whose compute service is down,
            or in ERROR); nothing changed.
        :raise BackendUnavailable: the deadline passed first.
        """

    def destroy_volume(volume_id):
        """
        Destroy an unattached volume and its data.

        :raise UnknownVolume: no such volume.
        :raise VolumeInUse: the volume is attached.
        """

    def grow_volume(volume_id, size):
        """
        Grow the volume to at least ``size`` bytes; the same size is a no-op.
        An attached volume's device shows the new size.

        :return: the grown ``Volume``.
        :raise UnknownVolume: no such volume.
        :raise ShrinkRefused: ``size`` is smaller than the volume.
        """

    def get_device_path(volume_id):
        """
        The path of the block device of the volume on this node, found by
        the device's identity (serial, backing volume), never by a path the
        backend reported. Looks at this node only, asks the backend nothing.

        :return: the device path, or None when no device of that volume is
            present on this node (not attached here, or not appeared yet).
        """


class IListsChanges(Interface):
    """
    An optional ability: the backend can list only the volumes changed
    since a time, so a cache of the whole listing is kept fresh cheaply.
    """

    def list_changed_volumes(since):
        """
        :param since: an ISO 8601 UTC time (``YYYY-MM-DDTHH:MM:SS.ffffff``).
        :return: every volume of this cluster created or changed at or after
            ``since``, all pages. A volume destroyed since then is absent:
            only a whole ``list_volumes`` shows that it is gone.
        """


class IReportsLimits(Interface):
    """
    An optional ability: the backend knows the limits its cloud sets on
    this cluster's volumes (a project's quotas).
    """

    def limits():
        """
        :return: a ``model.Limits`` (None in a field the cloud does not
            limit), read from the backend now.
        """


class IWokenByNodes(Interface):
    """
    A backend whose waits for a volume's attach to, or detach from, another
    node can be ended early by that node: the control service, making a
    node's calls for it (``blockmover.control.nodecalls``), cannot see the
    node's devices, but the node can, and says when its device came or
    went.
    """

    def wake_waits_with(wakes):
        """
        From now on, a wait for ``volume_id``'s attach to or detach from
        ``node`` (a backend id) other than this one pauses on ``wakes(
        volume_id, node)``, a context manager giving a wake source (an
        object with ``wait(timeout)``, see ``blockmover.poll.poll``) or
        None.
        """


class IFencesNodes(Interface):
    """
    An optional ability: the backend can power a node off and tell whether
    it is off (on OpenStack, the node's Nova server), so a node that stopped
    answering can be made unable to write before its volumes move.
    Methods take a node's backend id (``Node.backend_id``).
    """

    def power_state(node):
        """
        Ask the backend now whether ``node`` is on or off; changes nothing.

        :return: a ``NodePower``; a node the backend does not know is
            ``POWER_UNKNOWN``.
        """

    def fence(node):
        """
        Power ``node`` off and return once the backend confirms it is off:
        a node already off returns at once, one already powering off is
        waited for, so the call is idempotent and safe to repeat after a
        crash. Waits with the backend's backoff under its deadline. Only
        a confirmed off is a fence: a node in any other state is refused,
        never guessed.

        :return: the ``NodePower`` (``POWER_OFF``) that confirmed it.
        :raise PowerStateUnknown: the node is neither on nor off (a server
            in ERROR), or unknown to the backend; nothing was sent.
        :raise FenceTimedOut: the deadline passed before the backend
            confirmed the node off.
        :raise FenceFailed: the backend took the power-off and the node is
            on again (the power-off failed).
        :raise BackendUnavailable: the backend could not be reached before
            the deadline.
        """


class AsyncBlockDevice(object):
    """
    An ``IBlockDeviceAPI`` for code on the reactor: each method returns a
    Deferred and runs the backend's blocking call in ``threadpool``. The
    methods of the optional abilities ``api`` declares are there too; check
    them on ``api`` with ``providedBy``.
    """

    def __init__(self, api, reactor, threadpool):
        self.api = api
        self._reactor = reactor
        self._threadpool = threadpool
        self._names = set(IBlockDeviceAPI.names())
        for interface in providedBy(api).flattened():
            self._names.update(interface.names())

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._names:
            raise AttributeError(name)
        method = getattr(self.api, name)

        def call(*args, **kwargs):
            return deferToThreadPool(self._reactor, self._threadpool,
                                     method, *args, **kwargs)
        return call


__all__ = [
    "AlreadyAttached", "AsyncBlockDevice", "BackendUnavailable",
    "BlockDeviceError", "DetachRefused", "FenceFailed", "FenceTimedOut",
    "IBlockDeviceAPI", "IFencesNodes", "IListsChanges", "IReportsLimits",
    "NoInstanceId", "NodePower", "OverLimit", "POWER_OFF", "POWER_ON",
    "POWER_UNKNOWN", "PowerStateUnknown", "ShrinkRefused", "UnknownVolume",
    "VolumeInUse",
]
