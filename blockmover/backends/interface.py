"""
The contract every block-storage backend keeps.

Backends are synchronous and may block (cloud calls, ``losetup``); code on
the reactor uses them through ``AsyncBlockDevice``, which runs every call in
a thread pool. ``tests/conformance.py`` checks the whole contract against
real devices for any implementation.
"""

from twisted.internet.threads import deferToThreadPool
from zope.interface import Interface


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


class UnattachedVolume(BlockDeviceError):
    """
    The volume is not attached to this node.
    """
    def __init__(self, volume_id, detail=None):
        self.volume_id = volume_id
        BlockDeviceError.__init__(
            self, detail or "volume %s is not attached to this node"
            % (volume_id,))


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
        Attach the volume to the node ``attach_to``. Idempotent: attaching
        a volume to the node that already holds it returns at once.

        Returns once the backend reports the volume attached (waiting with
        backoff under a deadline where the backend is asynchronous); the
        node's block device may appear later, see ``get_device_path``.

        :return: the attached ``Volume``.
        :raise UnknownVolume: no such volume.
        :raise AlreadyAttached: attached to another node.
        """

    def detach_volume(volume_id):
        """
        Detach the volume from whichever node holds it and wait until the
        backend reports it free. Idempotent: a volume that is not attached
        is left as it is. The caller unmounts first.

        :raise UnknownVolume: no such volume.
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


class AsyncBlockDevice(object):
    """
    An ``IBlockDeviceAPI`` for code on the reactor: each method returns a
    Deferred and runs the backend's blocking call in ``threadpool``.
    """

    def __init__(self, api, reactor, threadpool):
        self.api = api
        self._reactor = reactor
        self._threadpool = threadpool

    def __getattr__(self, name):
        if name not in IBlockDeviceAPI.names():
            raise AttributeError(name)
        method = getattr(self.api, name)

        def call(*args, **kwargs):
            return deferToThreadPool(self._reactor, self._threadpool,
                                     method, *args, **kwargs)
        return call


__all__ = [
    "AlreadyAttached", "AsyncBlockDevice", "BackendUnavailable",
    "BlockDeviceError", "IBlockDeviceAPI", "OverLimit", "ShrinkRefused",
    "UnattachedVolume", "UnknownVolume", "VolumeInUse",
]
