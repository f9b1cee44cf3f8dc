"""
Where everything should be, computed purely from a ``Deployment`` and the
backend's volume listing: each node's desired slice, the checks that refuse
a deployment before anything changes, and the plan a person reads.

No I/O here: the control service, the deploy CLI and the tests call these
with values.
"""

from pyrsistent import pmap

from blockmover.identity import APPLICATION_KEY, dataset_id
from blockmover.model import DesiredDataset, Limits, NodeDesired
from blockmover.units import MiB, format_size, round_up


def _datasets(deployment, allocation_unit):
    """
    ``{dataset id: (application, DesiredDataset)}`` for every configured
    application with a volume, placed or not.
    """
    result = {}
    for app in deployment.applications.values():
        if app.volume is None:
            continue
        dataset = dataset_id(deployment.cluster_name, app.name)
        result[dataset] = DesiredDataset(
            dataset_id=dataset, application=app.name,
            size=round_up(app.volume.size, allocation_unit),
            filesystem=app.volume.filesystem,
            mountpoint=app.volume.mountpoint)
    return result


def _by_dataset(volumes, backend_id=None):
    """
    The listing keyed by dataset id. Where two volumes claim one dataset
    (a create interrupted and retried), the one attached to ``backend_id``
    wins, then an unattached one, then the lowest volume id, so that every
    caller sees the same choice.
    """
    def preference(volume):
        return (volume.attached_to != backend_id or backend_id is None,
                volume.attached_to is not None, volume.volume_id)
    chosen = {}
    for volume in sorted(volumes, key=preference):
        chosen.setdefault(volume.dataset_id, volume)
    return chosen


def desired_slices(deployment, volumes, allocation_unit, listed_at=0.0):
    """
    ``pmap`` of node name -> ``NodeDesired`` (generation 0) for every node
    of ``deployment``.

    ``volumes`` is the cached listing of this cluster's volumes;
    ``allocation_unit`` (bytes) is what desired sizes round up to. A slice
    carries the datasets and applications placed on its node, and the
    listed volumes wanted there or attached there, keyed by dataset id. An
    application's ``secrets`` are in its own node's slice alone: no other
    node's slice names the application at all.
    """
    volumes = list(volumes)
    datasets = _datasets(deployment, allocation_unit)
    return pmap({node.name: _node_slice(deployment, node, volumes, datasets,
                                        listed_at)
                 for node in deployment.nodes.values()})


def node_slice(deployment, node, volumes, allocation_unit, listed_at=0.0):
    """
    The ``NodeDesired`` of ``node`` (a ``model.Node`` of ``deployment``)
    alone, as ``desired_slices`` computes it.
    """
    return _node_slice(deployment, node, list(volumes),
                       _datasets(deployment, allocation_unit), listed_at)


def _node_slice(deployment, node, volumes, datasets, listed_at):
    backend_id = node.backend_id
    apps = deployment.applications_on(node.name)
    wanted = {d.dataset_id: d for d in datasets.values()
              if d.application in apps}
    listed = _by_dataset(volumes, backend_id)
    relevant = {dataset: volume for dataset, volume in listed.items()
                if dataset in wanted or volume.attached_to == backend_id}
    return NodeDesired(
        node=node.name, backend_id=backend_id,
        cluster_name=deployment.cluster_name, generation=0,
        datasets=wanted,
        applications={a: deployment.applications[a] for a in apps},
        volumes=relevant, listed_at=float(listed_at or 0.0))


def combined_limits(cluster_limits, backend_limits=None):
    """
    The stricter of the cluster's configured limits and the backend's own.
    """
    if backend_limits is None:
        return cluster_limits

    def stricter(name, pick):
        values = [v for v in (getattr(cluster_limits, name),
                              getattr(backend_limits, name)) if v is not None]
        return pick(values) if values else None
    return Limits(min_size=stricter("min_size", max),
                  **{name: stricter(name, min) for name in (
                      "max_size", "volumes_per_node", "region_volumes",
                      "region_size")})


def check_deployment(deployment, volumes, allocation_unit,
                     backend_limits=None):
    """
    What is wrong with ``deployment`` against the backend's limits and the
    volumes that already exist, as messages naming the application, the
    limit and the numbers; an empty list when it can go ahead.

    ``backend_limits`` (a ``Limits`` the backend reports) tightens the
    cluster's own; region limits count every configured dataset plus this
    cluster's volumes whose application is no longer configured.
    """
    limits = combined_limits(deployment.backend.limits, backend_limits)
    datasets = _datasets(deployment, allocation_unit)
    listed = _by_dataset(volumes)
    errors = []
    for dataset in sorted(datasets.values(), key=lambda d: d.application):
        errors.extend(_size_errors(dataset, listed.get(dataset.dataset_id),
                                   limits))
    errors.extend(_node_errors(deployment, datasets, limits))
    errors.extend(_region_errors(datasets, volumes, limits))
    return errors


# mkfs.xfs refuses filesystems of 300 MB (decimal) or less.
FILESYSTEM_MINIMUM = {"xfs": 300 * MiB}


def _size_errors(dataset, volume, limits):
    app, size = dataset.application, dataset.size
    smallest = FILESYSTEM_MINIMUM.get(dataset.filesystem)
    if smallest is not None and size < smallest:
        yield ("%s: volume size %s is too small for %s, which needs at least "
               "%s; make maximum_size at least %s or use ext4"
               % (app, format_size(size), dataset.filesystem,
                  format_size(smallest), format_size(smallest)))
    if limits.min_size is not None and size < limits.min_size:
        yield ("%s: volume size %s is below the minimum size (min_size) of "
               "%s; make maximum_size at least %s"
               % (app, format_size(size), format_size(limits.min_size),
                  format_size(limits.min_size)))
    if limits.max_size is not None and size > limits.max_size:
        yield ("%s: volume size %s is above the maximum size (max_size) of "
               "%s; make maximum_size at most %s"
               % (app, format_size(size), format_size(limits.max_size),
                  format_size(limits.max_size)))
    if volume is not None and volume.size > size:
        yield ("%s: volume is %s and cannot shrink to %s; volumes only grow"
               % (app, format_size(volume.size), format_size(size)))


def _node_errors(deployment, datasets, limits):
    if limits.volumes_per_node is None:
        return
    for node in sorted(deployment.nodes):
        apps = sorted(d.application for d in datasets.values()
                      if deployment.placement.get(d.application) == node)
        if len(apps) > limits.volumes_per_node:
            yield ("%s: %d volumes on %s but volumes_per_node is %d; move "
                   "some of them to another node"
                   % (", ".join(apps), len(apps), node,
                      limits.volumes_per_node))


def _region_errors(datasets, volumes, limits):
    """
    Region limits refuse only what this deployment adds: new volumes and
    growth. A region already over its limit can still be shrunk in use.
    """
    listed = _by_dataset(volumes)
    leftovers = [v for v in volumes if v.dataset_id not in datasets]
    count = len(datasets) + len(leftovers)
    existing = {d: listed[d].size if d in listed else 0 for d in datasets}
    total = sum(max(d.size, existing[d.dataset_id])
                for d in datasets.values()) + sum(v.size for v in leftovers)
    created = sorted(d.application for d in datasets.values()
                     if d.dataset_id not in listed)
    grown = sorted(d.application for d in datasets.values()
                   if d.size > existing[d.dataset_id])
    kept = ("" if not leftovers else " and %d kept from applications no "
            "longer configured" % (len(leftovers),))
    if (limits.region_volumes is not None and created
            and count > limits.region_volumes):
        yield ("%s: %d volumes (%d configured%s) but region_volumes is %d; "
               "configure fewer volumes or destroy old ones"
               % (", ".join(created), count, len(datasets), kept,
                  limits.region_volumes))
    if limits.region_size is not None and grown and \
            total > limits.region_size:
        yield ("%s: volumes total %s but region_size is %s; make them "
               "smaller or destroy old ones"
               % (", ".join(grown), format_size(total),
                  format_size(limits.region_size)))


# --- what a new deployment changes, for people ---------------------------


def describe_changes(old, new, volumes, allocation_unit=1, reported=None):
    """
    ``{node: [line, ...]}``: what deploying ``new`` over ``old`` (a
    ``Deployment``, or None for the first deploy) changes on each node,
    given the volume listing and what nodes last ``reported`` they hold
    (node -> ``NodeState``): one line per application, its steps in the
    order the node's agent takes them. Every node of either deployment has
    a list, empty where nothing changes. This is the plan
    ``blockmover-deploy`` and ``--dry-run`` print; it is foreseen by the
    agents' own planner (``agents.foresee``), so it says what they do.
    """
    # Late import: placement is the control side; the agents' planner is
    # what it foresees with, pure like placement itself.
    from agents.foresee import foresee
    datasets = _datasets(new, allocation_unit)
    made = foresee(old, new, volumes,
                   lambda node, listing: _node_slice(new, node, list(listing),
                                                     datasets, 0.0),
                   reported)
    nodes = dict(new.nodes)
    if old is not None:
        nodes = dict(old.nodes, **nodes)
    by_backend_id = {n.backend_id: name for name, n in nodes.items()}
    holders = {v.dataset_id: by_backend_id.get(v.attached_to)
               for v in volumes if v.attached_to is not None}
    names = _application_names(old, new, volumes)
    lines = {}
    for node, changes in made.items():
        steps = {}
        for change in changes:
            app = names.get(change.dataset_id, change.dataset_id)
            steps.setdefault(app, []).append(_say(
                change, app, node, new, holders))
        lines[node] = ["%s: %s" % (app, ", ".join(said))
                       for app, said in steps.items()]
    return lines


def _application_names(old, new, volumes):
    """
    ``{dataset id: application name}`` from both deployments and, for
    volumes of applications no longer configured, their metadata.
    """
    names = {v.dataset_id: v.metadata.get(APPLICATION_KEY, v.volume_id)
             for v in volumes}
    for deployment in (old, new):
        if deployment is not None:
            names.update((dataset_id(deployment.cluster_name, app), app)
                         for app in deployment.applications)
    return names


def _say(change, app, node, new, holders):
    """
    One step of a change for a person, in the words of the plan.
    """
    kind = change.kind
    if kind == "stop":
        target = new.placement.get(app)
        if app not in new.applications:
            return "stop (no longer configured)"
        if target is None:
            return "stop (no longer deployed)"
        if target != node:
            return "stop (moving to %s)" % (target,)
        return "stop"
    if kind == "detach":
        if app not in new.applications:
            return "detach its volume (no longer configured; the volume " \
                   "is kept)"
        target = new.placement.get(app)
        if target is None:
            return "detach its volume (no longer deployed; the volume is " \
                   "kept)"
        return "detach its volume for %s" % (target,)
    if kind == "attach":
        holder = holders.get(change.dataset_id)
        if holder is not None and holder != node:
            return "attach its volume from %s" % (holder,)
        return "attach its volume"
    if kind == "create":
        return "create a %s volume" % (format_size(change.size),)
    if kind == "mkfs":
        return "make %s on it" % (change.filesystem,)
    if kind == "mount":
        return "mount it at %s" % (change.mountpoint,)
    if kind == "unmount":
        return "unmount %s" % (change.mountpoint,)
    if kind == "grow":
        return "grow its volume to %s" % (format_size(change.size),)
    if kind == "growfs":
        return "grow its %s filesystem" % (change.filesystem,)
    if kind == "ready":
        return "wait until it serves"
    return kind
