"""
The emulator's persistent state: issued tokens (only their hashes), and
per region its volumes (with their attachment), quotas per project,
servers' power and compute services' state; one JSON file written
atomically, and the sparse files that are the volumes' contents (volume
and server ids are unique across regions, so the files of every region
share the directories).

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


# What each region keeps.
REGION_KEYS = ("volumes", "quotas", "servers", "services")


def empty_region():
    return {key: {} for key in REGION_KEYS}


class Store(object):
    """
    The state under ``state_dir``: ``state`` is a plain JSON-able dict,
    ``{"tokens": {sha256: {user, project, expires}}, "regions": {name:
    region state}}``; ``region(name)`` is one region's part (see
    ``RegionStore``). State written before regions existed is the first
    region's.
    """

    def __init__(self, reactor, state_dir, regions=("RegionOne",)):
        self.reactor = reactor
        # Resolved: the kernel names a loop device's backing file by its
        # real path, and devices are found by comparing with it.
        self.state_dir = os.path.realpath(state_dir)
        self.volumes_dir = os.path.join(self.state_dir, VOLUMES_DIR)
        self.attachments_dir = os.path.join(self.state_dir, ATTACHMENTS_DIR)
        self.by_id_dir = os.path.join(self.state_dir, BY_ID_DIR)
        os.makedirs(self.volumes_dir, exist_ok=True)
        self.path = os.path.join(self.state_dir, STATE_FILE)
        self.state = self._load(list(regions))
        self._writer = FileWriter(reactor, "emulator-state-writer")

    def _load(self, regions):
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            state = {}
        state.setdefault("tokens", {})
        state.setdefault("regions", {})
        if any(key in state for key in REGION_KEYS):
            # Written before regions: all of it is the first region's.
            state["regions"].setdefault(regions[0], {
                key: state.pop(key, {}) for key in REGION_KEYS})
        for name in regions:
            known = state["regions"].setdefault(name, empty_region())
            for key, value in empty_region().items():
                known.setdefault(key, value)
        return state

    def region(self, name):
        """
        The state of region ``name`` (one of those the store was made
        with).
        """
        return RegionStore(self, name)

    def start(self):
        self._writer.start()

    def stop(self):
        self._writer.stop()

    def all_volumes(self):
        """
        The volumes of every region.
        """
        return [volume for region in self.state["regions"].values()
                for volume in region["volumes"].values()]

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
        for volume in self.all_volumes():
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


class RegionStore(object):
    """
    One region's part of a ``Store``: ``volumes`` ({id: volume record}),
    ``quotas`` ({project: {resource: limit}}), ``servers`` ({server id:
    power record, see compute.py}), ``services`` ({compute host:
    {"forced_down": bool}}); files and saving are the store's.
    """

    def __init__(self, store, name):
        self.store = store
        self.name = name
        self._state = store.state["regions"][name]

    @property
    def volumes(self):
        return self._state["volumes"]

    @property
    def quotas(self):
        return self._state["quotas"]

    @property
    def servers(self):
        return self._state["servers"]

    @property
    def services(self):
        return self._state["services"]

    @property
    def state_dir(self):
        return self.store.state_dir

    def volume_path(self, volume_id):
        return self.store.volume_path(volume_id)

    def attachment_path(self, server_id, volume_id):
        return self.store.attachment_path(server_id, volume_id)

    def by_id_root(self, server_id):
        return self.store.by_id_root(server_id)

    def device_link(self, server_id, volume_id):
        return self.store.device_link(server_id, volume_id)

    def save(self):
        return self.store.save()


def remove_state(state_dir):
    """
    Delete everything under ``state_dir`` (after its loop devices were
    detached).
    """
    shutil.rmtree(state_dir, ignore_errors=False)
