"""
The loopback backend: volumes are sparse files under one root directory,
attaching makes a loop device, so a whole cluster runs on one machine with
real block devices.

Every node's agent and the control service share the root. Loop devices are
global on the machine, so the volume's record (``attached_to``), changed
only under the root's lock, is what keeps a volume on one node at a time.
"""

import contextlib
import os
import uuid

from eliot import start_action
from zope.interface import implementer

from blockmover.backends import loopdevice
from blockmover.backends.interface import (
    AlreadyAttached, IBlockDeviceAPI, NoInstanceId, ShrinkRefused,
    UnknownVolume, VolumeInUse,
)
from blockmover.backends.loopback_records import RecordStore, VolumeRecord
from blockmover.units import MiB, round_up

DEFAULT_ROOT = "/var/lib/blockmover/loopback"


@implementer(IBlockDeviceAPI)
class LoopbackBlockDeviceAPI(object):
    """
    ``IBlockDeviceAPI`` over sparse files in ``root`` for the volumes of
    ``cluster_name``, seen from the node ``instance_id`` (None for the
    control service, which attaches nothing to itself).

    Safe to use from several threads and processes at once.
    """

    def __init__(self, root, cluster_name, instance_id=None):
        self.root = os.path.realpath(root)
        self.cluster_name = cluster_name
        self.instance_id = instance_id
        # Directories are made on the first change, so that merely making
        # a backend (the control service reading its options) writes nothing.
        self._records = RecordStore(self.root)

    @classmethod
    def from_options(cls, options, cluster_name, instance_id):
        """
        The backend configured by ``options`` (``root``: the shared
        directory, default ``/var/lib/blockmover/loopback``).
        """
        return cls(options.get("root", DEFAULT_ROOT), cluster_name,
                   instance_id)

    def allocation_unit(self):
        return MiB

    def compute_instance_id(self):
        if self.instance_id is None:
            raise NoInstanceId(
                "this loopback backend does not know which node it runs "
                "on; give the node's backend id (instance_id) when making it")
        return self.instance_id

    # --- volumes ---------------------------------------------------------

    def create_volume(self, dataset_id, size, metadata):
        size = round_up(size, self.allocation_unit())
        with self._changing("create_volume", dataset_id), \
                self._records.locked():
            self._remove_leftovers()
            for record in self._records.read_all():
                if (record.cluster == self.cluster_name
                        and record.dataset_id == dataset_id):
                    return record.to_volume()
            record = VolumeRecord(
                volume_id=str(uuid.uuid4()), cluster=self.cluster_name,
                dataset_id=dataset_id, size=size, metadata=dict(metadata))
            # Image before record: a crash in between leaves an unlisted
            # file, never a listed volume without data.
            with open(self._records.image_path(record.volume_id), "wb") as f:
                f.truncate(size)
                os.fsync(f.fileno())
            self._records.write(record)
            return record.to_volume()

    def get_volume(self, volume_id):
        return self._record(volume_id).to_volume()

    def list_volumes(self):
        return [record.to_volume() for record in self._records.read_all()
                if record.cluster == self.cluster_name]

    def set_metadata(self, volume_id, metadata):
        with self._changing("set_metadata", volume_id), \
                self._records.locked():
            record = self._record(volume_id)
            self._records.write(record.set(
                metadata=record.metadata.update(dict(metadata))))

    def destroy_volume(self, volume_id):
        with self._changing("destroy_volume", volume_id), \
                self._records.locked():
            record = self._record(volume_id)
            if record.attached_to is not None:
                raise VolumeInUse(
                    volume_id, "volume %s is attached to %s; detach it "
                    "before destroying it" % (volume_id, record.attached_to))
            image = self._records.image_path(volume_id)
            # A device left behind by an interrupted detach must not outlive
            # its file.
            loopdevice.detach_all(image)
            # Missing when an earlier destroy stopped before the record went.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image)
            self._records.remove(volume_id)

    def grow_volume(self, volume_id, size):
        with self._changing("grow_volume", volume_id), \
                self._records.locked():
            record = self._record(volume_id)
            if size < record.size:
                raise ShrinkRefused(volume_id, record.size, size)
            size = round_up(size, self.allocation_unit())
            image = self._records.image_path(volume_id)
            # The file first: a crash before the record is written leaves a
            # larger file, which the next grow (or a retry) records.
            if os.path.getsize(image) < size:
                os.truncate(image, size)
            loopdevice.refresh_capacity(image)
            if size != record.size:
                record = record.set(size=size)
                self._records.write(record)
            return record.to_volume()

    # --- attachment ------------------------------------------------------

    def attach_volume(self, volume_id, attach_to):
        with self._changing("attach_volume", volume_id), \
                self._records.locked():
            record = self._record(volume_id)
            if record.attached_to not in (None, attach_to):
                raise AlreadyAttached(volume_id, record.attached_to)
            if record.attached_to is None:
                # The record first: it is what claims the volume; a crash
                # before losetup heals on the next attach or device lookup.
                record = record.set(attached_to=attach_to)
                self._records.write(record)
            loopdevice.attach(self._records.image_path(volume_id))
            return record.to_volume()

    def detach_volume(self, volume_id, detach_from):
        # Synchronous under the lock: once it returns, the record no longer
        # names ``detach_from``, and no other node could attach meanwhile.
        with self._changing("detach_volume", volume_id), \
                self._records.locked():
            record = self._record(volume_id)
            if record.attached_to != detach_from:
                return record.to_volume()
            # Devices first: a crash before the record is written leaves it
            # naming this node, and the retry ends the job.
            loopdevice.detach_all(self._records.image_path(volume_id))
            record = record.set(attached_to=None)
            self._records.write(record)
            return record.to_volume()

    def get_device_path(self, volume_id):
        here = self.compute_instance_id()
        record = self._records.read(volume_id)
        if not self._attached_here(record, here):
            return None
        image = self._records.image_path(volume_id)
        devices = loopdevice.devices_backing(image)
        if devices:
            return devices[0]
        # Recorded as attached here but no device: the machine rebooted or
        # someone removed it. Make it again, if the record still says so.
        with self._records.locked():
            if not self._attached_here(self._records.read(volume_id), here):
                return None
            return loopdevice.attach(image)

    # --- helpers ---------------------------------------------------------

    def _changing(self, change, subject):
        # Each change is an eliot action naming it, the volume (or dataset)
        # it changes, and this backend's cluster and node.
        return start_action(action_type="blockmover:loopback:" + change,
                            subject=subject, cluster=self.cluster_name,
                            node=self.instance_id)

    def _remove_leftovers(self):
        for path in self._records.leftovers():
            # An image some loop device still reads is never thrown away.
            if not loopdevice.devices_backing(path):
                os.unlink(path)

    def _attached_here(self, record, here):
        return (record is not None and record.cluster == self.cluster_name
                and record.attached_to == here)

    def _record(self, volume_id):
        record = self._records.read(volume_id)
        if record is None or record.cluster != self.cluster_name:
            raise UnknownVolume(volume_id)
        return record
