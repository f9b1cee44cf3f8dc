"""
What the agents will do, foreseen without touching anything: the planner
(``agents.plan``) run over a model of the cluster, each change's effect
applied purely (``apply_change``), node after node, until nothing is left
to do. This is how a deploy's plan is described to people, so the plan
they read and the changes the agents run come from the same table.
"""

from pyrsistent import pmap

from agents.changes import (
    AttachVolume, AwaitReady, CreateVolume, DetachVolume, GrowFilesystem,
    GrowVolume, MakeFilesystem, MountFilesystem, StartApplication,
    StopApplication, UnmountFilesystem,
)
from agents.plan import plan
from blockmover.identity import FORMAT_KEY, FORMATTED, NEW, dataset_id
from blockmover.model import (
    Device, Mount, NodeDesired, NodeState, RunningApplication, Volume,
)

# Rounds of every node's plan after which a cluster that still changes is
# described as far as it got (a move takes two: give up, then take).
MAX_ROUNDS = 8


def _device_path(dataset):
    return "/dev/foreseen-" + dataset[:8]


def apply_change(desired, observed, change):
    """
    ``(desired, observed)`` of one node after ``change`` succeeded on it,
    with ``desired.volumes`` as a fresh listing would show it.
    """
    d = change.dataset_id
    volumes, devices = desired.volumes, observed.devices
    if isinstance(change, CreateVolume):
        if d not in volumes:
            volumes = volumes.set(d, Volume(
                volume_id="vol-" + d[:8], dataset_id=d, size=change.size,
                metadata={FORMAT_KEY: NEW}))
    elif isinstance(change, AttachVolume):
        volume = volumes[d].set(attached_to=observed.backend_id)
        volumes = volumes.set(d, volume)
        want = desired.datasets.get(d)
        formatted = volume.metadata.get(FORMAT_KEY) != NEW
        devices = devices.set(d, Device(
            volume_id=volume.volume_id, dataset_id=d, path=_device_path(d),
            size=volume.size,
            filesystem=want.filesystem if formatted else None,
            filesystem_uuid=d if formatted else None,
            filesystem_size=volume.size if formatted else None))
    elif isinstance(change, MakeFilesystem):
        device = devices[d]
        if device.filesystem_uuid is None:
            devices = devices.set(d, device.set(
                filesystem=change.filesystem, filesystem_uuid=d,
                filesystem_size=device.size))
        if d in volumes:
            volumes = volumes.transform([d, "metadata", FORMAT_KEY],
                                        FORMATTED)
    elif isinstance(change, MountFilesystem):
        observed = observed.transform(["mounts", d], Mount(
            dataset_id=d, device=devices[d].path,
            mountpoint=change.mountpoint))
    elif isinstance(change, UnmountFilesystem):
        observed = observed.set(mounts=observed.mounts.discard(d))
    elif isinstance(change, DetachVolume):
        devices = devices.discard(d)
        if d in volumes:
            volumes = volumes.transform([d, "attached_to"], None)
    elif isinstance(change, GrowVolume):
        if d in volumes:
            volumes = volumes.transform([d, "size"], change.size)
        devices = devices.transform([d, "size"], change.size)
    elif isinstance(change, GrowFilesystem):
        devices = devices.transform([d, "filesystem_size"],
                                    devices[d].size)
    elif isinstance(change, StartApplication):
        name = change.application.name
        if name not in observed.running:
            observed = observed.transform(
                ["running", name], RunningApplication(name=name, pid=1))
    elif isinstance(change, AwaitReady):
        observed = observed.transform(
            ["running", change.application.name, "ready"], True)
    elif isinstance(change, StopApplication):
        observed = observed.set(running=observed.running.discard(
            change.name))
    else:
        raise ValueError("no effect known for %r" % (change,))
    return (desired.set(volumes=volumes),
            observed.set(devices=devices))


def _volume_specs(*deployments):
    """
    ``{dataset id: VolumeSpec}`` of every application with a volume in
    ``deployments`` (None entries skipped), the first one naming it wins.
    """
    specs = {}
    for deployment in reversed([d for d in deployments if d is not None]):
        for name, app in deployment.applications.items():
            if app.volume is not None:
                specs[dataset_id(deployment.cluster_name, name)] = app.volume
    return specs


def node_as_deployed(deployment, node, volumes, specs):
    """
    The ``NodeState`` ``node`` (a ``model.Node``) holds, as far as the
    control service can tell without asking it: the listed volumes attached
    to it, holding their dataset's filesystem unless marked new; mounted
    and running where ``deployment`` (None: nothing deployed) placed their
    application on it. ``specs`` is ``_volume_specs``.
    """
    placed = set(deployment.applications_on(node.name)) \
        if deployment is not None else set()
    attached = {v.dataset_id: v for v in volumes
                if v.attached_to == node.backend_id}
    devices, mounts = {}, {}
    for name in placed:
        spec = deployment.applications[name].volume
        d = dataset_id(deployment.cluster_name, name)
        if spec is not None and d in attached:
            mounts[d] = Mount(dataset_id=d, device=_device_path(d),
                              mountpoint=spec.mountpoint)
    for d, volume in attached.items():
        # Mounted for its application, it holds a filesystem whatever its
        # mark says.
        blank = volume.metadata.get(FORMAT_KEY) == NEW and d not in mounts
        spec = specs.get(d)
        devices[d] = Device(
            volume_id=volume.volume_id, dataset_id=d, path=_device_path(d),
            size=volume.size,
            filesystem=None if blank or spec is None else spec.filesystem,
            filesystem_uuid=None if blank else d,
            filesystem_size=None if blank else volume.size)
    running = {name: RunningApplication(name=name, pid=1, ready=True)
               for name in placed
               if deployment.applications[name].volume is None
               or dataset_id(deployment.cluster_name, name) in mounts}
    return NodeState(node=node.name, backend_id=node.backend_id,
                     devices=devices, mounts=mounts, running=running)


def foresee(old, new, volumes, node_slice, reported=None):
    """
    ``{node: [change, ...]}``: the changes each node's agent will make, in
    order, to go from ``old`` (a ``Deployment`` or None) to ``new``,
    starting from the listing ``volumes``. ``node_slice(node, listing)`` is
    the control service's placement: the ``NodeDesired`` of ``new`` for a
    node of ``new`` and a listing. ``reported`` (node -> ``NodeState``) is
    what nodes last said they hold; other nodes are taken to hold what
    ``old`` put there (``node_as_deployed``).
    """
    nodes = dict(new.nodes)
    if old is not None:
        nodes = dict(old.nodes, **nodes)
    specs = _volume_specs(new, old)
    listing = {v.dataset_id: v for v in volumes}
    reported = reported or {}
    observed = {name: reported.get(name)
                or node_as_deployed(old, node, volumes, specs)
                for name, node in nodes.items()}
    made = {name: [] for name in nodes}
    for _ in range(MAX_ROUNDS):
        changed = False
        for name in sorted(nodes):
            if name in new.nodes:
                desired = node_slice(new.nodes[name], listing.values())
            else:
                # A node leaving the cluster gives up everything.
                desired = _empty_slice(new, nodes[name], listing)
            for change in plan(desired, observed[name]):
                desired, observed[name] = apply_change(
                    desired, observed[name], change)
                listing.update(desired.volumes)
                made[name].append(change)
                changed = True
        if not changed:
            break
    return made


def _empty_slice(deployment, node, listing):
    return NodeDesired(
        node=node.name, backend_id=node.backend_id,
        cluster_name=deployment.cluster_name, generation=0,
        volumes=pmap({d: v for d, v in listing.items()
                      if v.attached_to == node.backend_id}))
