"""
The emulator's persistent state: volumes (with their attachment), quotas
per project, issued tokens (only their hashes), servers' power and compute
services' state, one JSON file written atomically, and the sparse files
that are the volumes' contents.

All mutation happens on the reactor thread; ``save`` hands a snapshot to a
single writer thread, so writes land in order and the reactor never waits
on the disk.
"""

import copy
import json
import os
import shutil


from blockmover.backends.devices import link_names
from blockmover.files import FileWriter, write_atomically

STATE_FILE = "state.json"
VOLUMES_DIR = "volumes"
ATTACHMENTS_DIR = "attachments"
BY_ID_DIR = "by-id"
URL_FILE = "url"


def empty_state():
    return {"volumes": {}, "quotas": {}, "tokens": {}, "servers": {},
            "services": {}}


class Store(object):
    """
    The state under ``state_dir``: ``state`` is a plain JSON-able dict
    (``volumes``: {id: volume record}, ``quotas``: {project: {resource:
    limit}}, ``tokens``: {sha256: {user, project, expires}}, ``servers``:
    {server id: power record, see compute.py}, ``services``: {compute
    host: {"forced_down": bool}}).
    """

    def __init__(self, reactor, state_dir):
        self.reactor = reactor
        # Resolved: the kernel names a loop device's backing file by its
        # real path, and devices are found by comparing with it.
        self.state_dir = os.path.realpath(state_dir)
        self.volumes_dir = os.path.join(self.state_dir, VOLUMES_DIR)
        self.attachments_dir = os.path.join(self.state_dir, ATTACHMENTS_DIR)
        self.by_id_dir = os.path.join(self.state_dir, BY_ID_DIR)
        os.makedirs(self.volumes_dir, exist_ok=True)
        self.path = os.path.join(self.state_dir, STATE_FILE)
        self.state = self._load()
        self._writer = FileWriter(reactor, "emulator-state-writer")

    def _load(self):
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return empty_state()
        for key, value in empty_state().items():
            state.setdefault(key, value)
        return state

    def start(self):
        self._writer.start()

    def stop(self):
        self._writer.stop()

    @property
    def volumes(self):
        return self.state["volumes"]

    @property
    def servers(self):
        return self.state["servers"]

    @property
    def services(self):
        return self.state["services"]

    def volume_path(self, volume_id):
        """
        The sparse file holding the volume's bytes.
        """
        return os.path.join(self.volumes_dir, volume_id)

    def attachment_path(self, server_id, volume_id):
        """
        The hard link of the volume's file that backs its loop device while
        it is attached to ``server_id``: the device's backing file names the
        server and the volume, so a node finds only its own server's
        devices, and the shared inode keeps data and size in one place.
        """
        return os.path.join(self.attachments_dir, server_id, volume_id)

    def by_id_root(self, server_id):
        """
        The server's by-id directory: what ``/dev/disk/by-id`` is on a
        cloud's server, the ``device_root`` of the openstack backend on
        that node.
        """
        return os.path.join(self.by_id_dir, server_id)

    def device_link(self, server_id, volume_id):
        """
        The by-id link of the volume's device while it is attached to
        ``server_id``, named as KVM names it (``virtio-<id[:20]>``).
        """
        return os.path.join(self.by_id_root(server_id),
                            link_names(volume_id)[0])

    def prepare_by_id(self, server_ids):
        """
        Make every server's by-id directory (so a node can watch it before
        its first attach) and remove the links no attached volume explains
        (a crash between a detach and its link's removal). Blocking: call
        it before serving.
        """
        wanted = set()
        for volume in self.volumes.values():
            attachment = volume.get("attachment") or {}
            if attachment.get("server_id") and volume["status"] == "in-use":
                wanted.add(self.device_link(attachment["server_id"],
                                            volume["id"]))
        for server_id in server_ids:
            os.makedirs(self.by_id_root(server_id), exist_ok=True)
        for server_id in os.listdir(self.by_id_dir):
            root = self.by_id_root(server_id)
            for name in os.listdir(root):
                if os.path.join(root, name) not in wanted:
                    os.remove(os.path.join(root, name))

    def save(self):
        """
        Persist the current state. Returns a Deferred that fires once it is
        on disk.
        """
        text = json.dumps(copy.deepcopy(self.state), indent=1,
                          sort_keys=True)
        return self._writer.write_atomically(self.path, text)

    def save_now(self):
        """
        Persist synchronously; for startup and shutdown, off the request
        path.
        """
        write_atomically(self.path, json.dumps(self.state, indent=1,
                                               sort_keys=True))


def remove_state(state_dir):
    """
    Delete everything under ``state_dir`` (after its loop devices were
    detached).
    """
    shutil.rmtree(state_dir, ignore_errors=False)
