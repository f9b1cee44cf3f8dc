"""
The loopback backend's records on disk: one JSON file per volume beside its
image, and the lock that makes read-modify-write safe between processes.

Layout under the root::

    lock                    flock(2) target; every change holds it
    volumes/<id>.img        the volume's data, a sparse file
    volumes/<id>.json       its record, replaced atomically

Records are read without the lock (a rename is atomic, so a reader sees the
old record or the new one) and written only with it.
"""

import contextlib
import fcntl
import json
import os

from pyrsistent import PClass, field, pmap_field

from blockmover.model import Volume, optional
from blockmover.files import write_atomically


class VolumeRecord(PClass):
    """
    What the loopback backend knows of one volume.
    """
    volume_id = field(type=str, mandatory=True)
    cluster = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    metadata = pmap_field(str, str)
    attached_to = optional(str)

    def to_volume(self):
        return Volume(volume_id=self.volume_id, dataset_id=self.dataset_id,
                      size=self.size, attached_to=self.attached_to,
                      metadata=self.metadata)


class RecordStore(object):
    """
    The records and images under ``root`` (an absolute, resolved path),
    shared by every process that uses the same root.
    """

    def __init__(self, root):
        self.root = root
        self.volumes = os.path.join(root, "volumes")
        self._lock_path = os.path.join(root, "lock")

    def ensure(self):
        os.makedirs(self.volumes, exist_ok=True)

    @contextlib.contextmanager
    def locked(self):
        """
        Hold the root's exclusive lock: against other processes, and other
        threads of this one (each takes its own open file description).
        """
        self.ensure()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            # Closing the descriptor releases the lock.
            os.close(fd)

    def image_path(self, volume_id):
        return os.path.join(self.volumes, volume_id + ".img")

    def _record_path(self, volume_id):
        return os.path.join(self.volumes, volume_id + ".json")

    def read(self, volume_id):
        """
        The record of ``volume_id``, or None if there is none.
        """
        if not _plain_id(volume_id):
            return None
        try:
            with open(self._record_path(volume_id)) as f:
                return VolumeRecord.create(json.load(f))
        except FileNotFoundError:
            return None

    def read_all(self):
        """
        Every record under the root, of any cluster.
        """
        try:
            names = os.listdir(self.volumes)
        except FileNotFoundError:
            return []
        records = []
        for name in sorted(names):
            if name.endswith(".json") and not name.startswith("."):
                record = self.read(name[:-len(".json")])
                # None: destroyed between the listing and the read.
                if record is not None:
                    records.append(record)
        return records

    def leftovers(self):
        """
        Paths of what interrupted changes left behind: temporary record
        files, and images whose record was never written (a create that
        stopped half way). Only meaningful under the lock.
        """
        try:
            names = set(os.listdir(self.volumes))
        except FileNotFoundError:
            return []
        found = []
        for name in sorted(names):
            if name.startswith(".") and name.endswith(".tmp"):
                found.append(os.path.join(self.volumes, name))
            elif (name.endswith(".img")
                  and name[:-len(".img")] + ".json" not in names):
                found.append(os.path.join(self.volumes, name))
        return found

    def write(self, record):
        """
        Replace ``record``'s file atomically and durably. Hold the lock.
        """
        data = json.dumps({
            "volume_id": record.volume_id,
            "cluster": record.cluster,
            "dataset_id": record.dataset_id,
            "size": record.size,
            "metadata": dict(record.metadata),
            "attached_to": record.attached_to,
        }, sort_keys=True, indent=1)
        write_atomically(self._record_path(record.volume_id), data)

    def remove(self, volume_id):
        """
        Delete the record of ``volume_id``; a missing one is fine. Hold the
        lock.
        """
        try:
            os.unlink(self._record_path(volume_id))
        except FileNotFoundError:
            return
        self._sync_directory()

    def _sync_directory(self):
        fd = os.open(self.volumes, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _plain_id(volume_id):
    # An id from a caller must not walk out of the volumes directory.
    return (isinstance(volume_id, str) and volume_id != ""
            and "/" not in volume_id and not volume_id.startswith("."))
