"""
Model worlds for the planner's tests.

``World`` is a small cluster: one block-storage backend that enforces single
attachment, a few nodes with their mounts and running applications, and a
control service handing each node its slice from a listing refreshed only
when told. Changes act on it as the real ones act on machines (including
how they fail); whatever the planner must never do fails with an
``AssertionError`` at once, and ``check`` asserts the safety invariants.
"""

import itertools

from blockmover.identity import (
    FORMAT_KEY, FORMATTED, NEW, dataset_id, volume_metadata,
)
from blockmover.model import (
    BackendConfig, Deployment, Device, Mount, Node, NodeState,
    RunningApplication, Volume,
)
from blockmover.placement import desired_slices
from blockmover.units import MiB


def _device_path(d):
    return "/dev/model-" + d[:8]


# --- a cluster -----------------------------------------------------------------

CLUSTER = "sim"


class ChangeFailed(Exception):
    """
    A change failed the way the real one can (the backend refused, a crash
    killed it): the agent stops its turn here.
    """


class Disk(object):
    """
    What a volume holds: a filesystem (or nothing) and the data tokens
    written to it.
    """
    def __init__(self, filesystem, uuid, size):
        self.filesystem = filesystem
        self.uuid = uuid
        self.size = size
        self.tokens = set()


class ModelVolume(object):
    def __init__(self, volume_id, dataset, size, metadata):
        self.volume_id = volume_id
        self.dataset_id = dataset
        self.size = size
        self.attached_to = None
        self.metadata = dict(metadata)
        self.disk = None
        # The device of a fresh attachment shows only after one more look.
        self.device_late = False

    def listed(self):
        return Volume(volume_id=self.volume_id, dataset_id=self.dataset_id,
                      size=self.size, attached_to=self.attached_to,
                      metadata=self.metadata)


class ModelNode(object):
    def __init__(self, name):
        self.name = name
        self.backend_id = "i-" + name
        self.mounts = {}    # dataset id -> mountpoint
        self.running = {}   # application name -> pid
        self.ready = set()  # applications that passed their ready checks
        self.slice = None   # the last NodeDesired it was handed


class World(object):
    """
    A cluster of ``nodes`` (names) running ``applications`` (name ->
    Application, each with a volume) placed by ``placement`` (name -> node
    or None).
    """
    def __init__(self, nodes, applications, placement):
        self.nodes = {n: ModelNode(n) for n in nodes}
        self.applications = dict(applications)
        self.placement = dict(placement)
        self.volumes = {}     # dataset id -> ModelVolume
        self.listing = {}     # dataset id -> Volume, as last refreshed
        self.written = {}     # dataset id -> tokens ever written
        self.generation = 1
        # (node, dataset) -> changes a dataset worker planned, not yet run.
        self.planned = {}
        self._ids = itertools.count(1)

    # --- the control service ---

    def dataset(self, app_name):
        return dataset_id(CLUSTER, app_name)

    def refresh(self):
        """Refresh the cached listing from the backend."""
        self.listing = {d: v.listed() for d, v in self.volumes.items()}

    def deployment(self):
        return Deployment(
            cluster_name=CLUSTER, control_url="https://control.invalid",
            backend=BackendConfig(name="model"),
            nodes={n: Node(name=n, address="10.0.0.%d" % (i + 1,),
                           instance_id=node.backend_id)
                   for i, (n, node) in enumerate(sorted(self.nodes.items()))},
            applications=self.applications,
            placement={a: n for a, n in self.placement.items() if n})

    def slice_for(self, node_name):
        """The node's NodeDesired, from the placement and cached listing."""
        return desired_slices(self.deployment(), self.listing.values(),
                              MiB)[node_name].set(generation=self.generation)

    def deploy(self, placement=None, applications=None):
        if placement is not None:
            self.placement = dict(placement)
        if applications is not None:
            self.applications = dict(applications)
        self.generation += 1

    # --- a node, as its agent observes it ---

    def observe(self, node_name, datasets=None):
        """
        What the node's agent sees: of every dataset, or (a dataset's
        worker) only of those in ``datasets``, and the applications.
        """
        node = self.nodes[node_name]
        devices = {}
        for d, v in self.volumes.items():
            if v.attached_to != node.backend_id:
                continue
            if datasets is not None and d not in datasets:
                continue
            if v.device_late:
                v.device_late = False
                continue
            disk = v.disk
            devices[d] = Device(
                volume_id=v.volume_id, dataset_id=d, path=_device_path(d),
                size=v.size,
                filesystem=disk.filesystem if disk else None,
                filesystem_uuid=disk.uuid if disk else None,
                filesystem_size=disk.size if disk else None)
        return NodeState(
            node=node_name, backend_id=node.backend_id, devices=devices,
            mounts={d: Mount(dataset_id=d, device=_device_path(d),
                             mountpoint=mp)
                    for d, mp in node.mounts.items()
                    if datasets is None or d in datasets},
            running={a: RunningApplication(name=a, pid=pid,
                                           ready=a in node.ready)
                     for a, pid in node.running.items()})

    def write(self, app_name):
        """The application, where it runs, writes a token to its volume."""
        if self.applications[app_name].volume is None:
            return
        for node in self.nodes.values():
            if app_name in node.running:
                d = self.dataset(app_name)
                token = next(self._ids)
                self.volumes[d].disk.tokens.add(token)
                self.written.setdefault(d, set()).add(token)

    # --- the changes ---

    def apply(self, node_name, change, partial=False):
        """
        Run ``change`` on the node. ``partial``: the agent dies half-way
        through it (the backend may have acted, the node not yet).
        Raises ChangeFailed as the real change would fail.
        """
        node = self.nodes[node_name]
        handler = getattr(self, "_" + type(change).__name__)
        handler(node, change, partial)

    def _volume(self, change):
        for v in self.volumes.values():
            if v.volume_id == change.volume_id:
                assert v.dataset_id == change.dataset_id, change
                return v
        raise ChangeFailed("unknown volume %s" % (change.volume_id,))

    def _attached_here(self, node, change):
        v = self._volume(change)
        if v.attached_to != node.backend_id:
            raise ChangeFailed("%s is not attached to %s"
                               % (v.volume_id, node.name))
        return v

    def _CreateVolume(self, node, change, partial):
        if change.dataset_id not in self.volumes:
            self.volumes[change.dataset_id] = ModelVolume(
                "vol-%d" % (next(self._ids),), change.dataset_id,
                change.size, volume_metadata(CLUSTER, change.application))

    def _AttachVolume(self, node, change, partial):
        v = self._volume(change)
        if v.attached_to not in (None, node.backend_id):
            raise ChangeFailed("already attached to %s" % (v.attached_to,))
        if v.attached_to is None:
            v.attached_to = node.backend_id
            v.device_late = partial

    def _MakeFilesystem(self, node, change, partial):
        v = self._attached_here(node, change)
        if v.disk is None:
            assert v.metadata[FORMAT_KEY] == NEW, (
                "a filesystem made on a volume not marked new", change)
            assert not self.written.get(v.dataset_id), (
                "a filesystem made over data", change)
            v.disk = Disk(change.filesystem, change.dataset_id, v.size)
        elif v.disk.uuid != change.dataset_id:
            raise AssertionError("mkfs over another filesystem: %r"
                                 % (change,))
        elif v.disk.filesystem != change.filesystem:
            # As the real change: a filesystem of another type is refused.
            raise ChangeFailed("%s holds %s, not %s" % (
                v.volume_id, v.disk.filesystem, change.filesystem))
        if not partial:
            v.metadata[FORMAT_KEY] = FORMATTED

    def _MountFilesystem(self, node, change, partial):
        v = self._attached_here(node, change)
        assert v.disk is not None and v.disk.uuid == change.dataset_id, (
            "mounting a device without the dataset's filesystem", change)
        node.mounts[change.dataset_id] = change.mountpoint

    def _UnmountFilesystem(self, node, change, partial):
        for name in node.running:
            assert self.dataset(name) != change.dataset_id, (
                "unmounting under a running application", change)
        node.mounts.pop(change.dataset_id, None)

    def _DetachVolume(self, node, change, partial):
        v = self._volume(change)
        assert change.dataset_id not in node.mounts, (
            "detaching a mounted volume", change)
        # The change detaches only from this node: a stale listing must
        # never tear a volume away from the node that holds it now.
        if v.attached_to == node.backend_id:
            v.attached_to = None
            v.device_late = False

    def _GrowVolume(self, node, change, partial):
        v = self._volume(change)
        assert change.size > v.size, ("a shrink or no-op grow", change)
        v.size = change.size

    def _GrowFilesystem(self, node, change, partial):
        v = self._attached_here(node, change)
        assert v.disk is not None and v.disk.uuid == change.dataset_id
        mounted = change.dataset_id in node.mounts
        if v.disk.filesystem == "ext4":
            assert not mounted, ("ext4 grown while mounted", change)
        else:
            assert mounted, ("xfs grown while unmounted", change)
        v.disk.size = v.size

    def _StartApplication(self, node, change, partial):
        app = change.application
        assert app.volume is None or node.mounts.get(
            self.dataset(app.name)) == app.volume.mountpoint, (
            "starting an application without its volume mounted", change)
        node.running.setdefault(app.name, next(self._ids))

    def _AwaitReady(self, node, change, partial):
        name = change.application.name
        if name not in node.running:
            raise ChangeFailed("%s exited before it served" % (name,))
        if not partial:
            node.ready.add(name)

    def _StopApplication(self, node, change, partial):
        node.running.pop(change.name, None)
        node.ready.discard(change.name)

    # --- the safety invariants ---

    def check(self):
        """
        Assert DESIGN.md's safety invariants over the whole world.
        """
        backend_ids = {n.backend_id: n for n in self.nodes.values()}
        for d, v in self.volumes.items():
            mounted_on = [n.name for n in self.nodes.values()
                          if d in n.mounts]
            assert len(mounted_on) <= 1, (d, mounted_on)
            for name in mounted_on:
                assert v.attached_to == self.nodes[name].backend_id, (
                    "mounted where not attached", d, name)
            assert v.attached_to in backend_ids or v.attached_to is None
            tokens = v.disk.tokens if v.disk is not None else set()
            assert self.written.get(d, set()) <= tokens, ("data lost", d)
        for d in self.written:
            assert d in self.volumes, ("volume with data vanished", d)
        for name, app in self.applications.items():
            if app.volume is None:
                # Nothing ties it to one node: the node taking it cannot
                # see whether the node giving it up stopped it yet.
                continue
            running_on = [n for n in self.nodes.values()
                          if name in n.running]
            assert len(running_on) <= 1, (name, running_on)
            for n in running_on:
                assert n.mounts.get(self.dataset(name)) == \
                    app.volume.mountpoint, ("running without its volume",
                                            name, n.name)

    def converged(self):
        """
        Whether every application runs, with its volume at the desired
        size, exactly where the placement says, and nothing else runs.
        """
        for name, app in self.applications.items():
            where = self.placement.get(name)
            running_on = [n.name for n in self.nodes.values()
                          if name in n.running]
            if running_on != ([where] if where else []):
                return False
            if where is not None and name not in self.nodes[where].ready:
                return False
            if where is None or app.volume is None:
                continue
            v = self.volumes.get(self.dataset(name))
            if v is None or v.size < app.volume.size:
                return False
            if v.disk.size < v.size:
                return False
        return True

    def state(self):
        """A plain summary, for failure messages."""
        return {
            "placement": self.placement,
            "volumes": {v.volume_id: (v.attached_to, v.size,
                                      v.disk.size if v.disk else None,
                                      v.metadata[FORMAT_KEY])
                        for v in self.volumes.values()},
            "nodes": {n.name: (dict(n.mounts), sorted(n.running))
                      for n in self.nodes.values()},
        }
