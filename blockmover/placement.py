"""
Where everything should be, computed purely from a ``Deployment`` and the
backend's volume listing: each node's desired slice, the checks that refuse
a deployment before anything changes, and the plan a person reads.

No I/O here: the control service, the deploy CLI and the tests call these
with values.
"""

import weakref

from pyrsistent import pmap

from blockmover.identity import (
    APPLICATION_KEY, dataset_id, generation as data_generation, is_incoming,
)
from blockmover.model import DesiredDataset, Limits, NodeDesired
from blockmover.units import MiB, format_size, round_up


def _datasets(deployment, allocation_unit):
    """
    ``{dataset id: DesiredDataset}`` for every configured application with
    a volume, placed or not.
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


def _preference(backend_id):
    """
    The order in which volumes claiming one dataset are chosen for the
    node ``backend_id`` (None: for no node): the data of the highest
    generation first (a push between sites leaves the volume it came from
    behind, one generation older); of one generation (a create interrupted
    and retried), the one attached there, then an unattached one, then the
    lowest volume id, so that every caller sees the same choice.
    """
    def key(volume):
        return (-data_generation(volume),
                volume.attached_to != backend_id or backend_id is None,
                volume.attached_to is not None, volume.volume_id)
    return key


class Listing(object):
    """
    A listing of volumes indexed three ways: by volume id, by dataset (the
    volumes claiming it, by volume id) and by attachment (the ids of the
    volumes attached to each backend id). A value: it never changes once
    made, and ``changed`` makes a new one at the cost of the changes (and
    of copying the indexes' tables, not their volumes), so a listing taken
    before a refresh stays whole while it is used.

    Iterating it yields its volumes sorted by volume id.
    """

    def __init__(self, by_id, by_dataset, by_attachment):
        self._by_id = by_id
        self._by_dataset = by_dataset
        self._by_attachment = by_attachment
        self._sorted = None

    @classmethod
    def of(cls, volumes):
        """
        The ``Listing`` of ``volumes`` (an iterable of ``Volume``; of two
        with one id, the last).
        """
        if isinstance(volumes, Listing):
            return volumes
        by_id = {volume.volume_id: volume for volume in volumes}
        by_dataset = {}
        by_attachment = {}
        for volume in sorted(by_id.values(), key=_volume_id):
            by_dataset.setdefault(volume.dataset_id, []).append(volume)
            if volume.attached_to is not None:
                by_attachment.setdefault(volume.attached_to, set()).add(
                    volume.volume_id)
        return cls(by_id,
                   {d: tuple(vs) for d, vs in by_dataset.items()},
                   {b: frozenset(ids) for b, ids in by_attachment.items()})

    def __len__(self):
        return len(self._by_id)

    def __iter__(self):
        return iter(self.volumes())

    def volumes(self):
        """
        Every volume, sorted by volume id (a list made once per listing).
        """
        if self._sorted is None:
            self._sorted = sorted(self._by_id.values(), key=_volume_id)
        return self._sorted

    def get(self, volume_id):
        return self._by_id.get(volume_id)

    def claiming(self, dataset):
        """
        The volumes claiming ``dataset``, by volume id; usually one.
        """
        return self._by_dataset.get(dataset, ())

    def chosen(self, dataset, backend_id=None):
        """
        The volume of ``dataset`` the node ``backend_id`` (None: no node)
        sees, chosen as ``_preference`` says; None when there is none. A
        volume being pushed into is never chosen: it holds no data yet.
        """
        volumes = self._by_dataset.get(dataset)
        if not volumes:
            return None
        if len(volumes) == 1:
            return None if is_incoming(volumes[0]) else volumes[0]
        data = [v for v in volumes if not is_incoming(v)]
        if not data:
            return None
        return min(data, key=_preference(backend_id))

    def incoming(self, dataset, site):
        """
        The volume of ``dataset`` in ``site`` marked incoming, or None.
        """
        for volume in self._by_dataset.get(dataset, ()):
            if volume.site == site and is_incoming(volume):
                return volume
        return None

    def kept(self, dataset):
        """
        The volumes of ``dataset`` neither chosen as its data nor being
        pushed into: the copies pushes left behind, by volume id.
        """
        data = self.chosen(dataset)
        return [v for v in self._by_dataset.get(dataset, ())
                if v is not data and not is_incoming(v)]

    def volumes_attached_to(self, backend_id):
        """
        The volumes attached to ``backend_id``, by volume id.
        """
        return sorted((self._by_id[volume_id] for volume_id in
                       self._by_attachment.get(backend_id, ())),
                      key=_volume_id)

    def datasets_attached_to(self, backend_id):
        """
        The datasets with a volume attached to ``backend_id``.
        """
        return {self._by_id[volume_id].dataset_id
                for volume_id in self._by_attachment.get(backend_id, ())}

    def changed(self, volumes, whole=False):
        """
        ``(listing, changes)``: this listing with ``volumes`` replacing
        the volumes of the same ids (and, when ``whole``, without the
        volumes ``volumes`` lacks), and every change as a pair ``(old,
        new)`` of volumes (None for one added or removed). With no change
        the listing is this one.
        """
        changes = []
        seen = set() if whole else None
        for volume in volumes:
            old = self._by_id.get(volume.volume_id)
            if seen is not None:
                seen.add(volume.volume_id)
            if old is None or old != volume:
                changes.append((old, volume))
        if whole:
            changes.extend((self._by_id[volume_id], None)
                           for volume_id in sorted(self._by_id.keys() - seen))
        if not changes:
            return self, []
        by_id = dict(self._by_id)
        by_dataset = dict(self._by_dataset)
        by_attachment = dict(self._by_attachment)
        for old, new in changes:
            if old is not None:
                del by_id[old.volume_id]
                _without(by_dataset, old.dataset_id, old)
                if old.attached_to is not None:
                    _take(by_attachment, old.attached_to, old.volume_id)
            if new is not None:
                by_id[new.volume_id] = new
                by_dataset[new.dataset_id] = tuple(sorted(
                    by_dataset.get(new.dataset_id, ()) + (new,),
                    key=_volume_id))
                if new.attached_to is not None:
                    by_attachment[new.attached_to] = by_attachment.get(
                        new.attached_to, frozenset()) | {new.volume_id}
        return Listing(by_id, by_dataset, by_attachment), changes


def _no_pause():
    pass


def _volume_id(volume):
    return volume.volume_id


def _without(by_dataset, dataset, volume):
    kept = tuple(v for v in by_dataset[dataset]
                 if v.volume_id != volume.volume_id)
    if kept:
        by_dataset[dataset] = kept
    else:
        del by_dataset[dataset]


def _take(by_attachment, backend_id, volume_id):
    kept = by_attachment[backend_id] - {volume_id}
    if kept:
        by_attachment[backend_id] = kept
    else:
        del by_attachment[backend_id]


def _kept_here(listing, dataset, backend_id):
    """
    The volume of ``dataset`` attached to ``backend_id`` that is not its
    data (a copy a push left, or the volume of a push that failed), or
    None. A volume a push under way goes into is the push's to keep: the
    slice's ``incoming`` says so, and the agent heeds that first.
    """
    for volume in listing.claiming(dataset):
        if volume.attached_to == backend_id:
            return volume
    return None


class Placement(object):
    """
    A ``Deployment`` indexed for computing slices one node at a time: the
    datasets it wants (sizes rounded up to ``allocation_unit``), the
    applications on each node, the node wanting each dataset and the nodes
    of each backend id. A value, made once per configuration.
    """

    def __init__(self, deployment, allocation_unit, previous=None):
        """
        :param previous: the ``Placement`` of the configuration before, or
            None: the datasets of the applications that stay as they were
            are taken from it, and which applications changed is kept for
            ``touched``.
        """
        self.deployment = deployment
        self.allocation_unit = allocation_unit
        if previous is not None and (
                previous.deployment.cluster_name != deployment.cluster_name
                or previous.allocation_unit != allocation_unit):
            previous = None
        # Weakly: each configuration's must not keep all those before.
        self._previous = None if previous is None else weakref.ref(previous)
        if previous is None:
            self._changed = None
            self.datasets = _datasets(deployment, allocation_unit)
        else:
            self._changed, self.datasets = self._datasets_after(previous)
        dataset_of = {d.application: d.dataset_id
                      for d in self.datasets.values()}
        on = {}
        self._wanted_on = {}
        for app, node in deployment.placement.items():
            on.setdefault(node, []).append(app)
            if app in dataset_of:
                self._wanted_on[dataset_of[app]] = node
        self._applications_on = {node: tuple(sorted(apps))
                                 for node, apps in on.items()}
        self._dataset_of = dataset_of
        self._nodes_of = {}
        for node in deployment.nodes.values():
            self._nodes_of.setdefault(node.backend_id, set()).add(node.name)

    def _datasets_after(self, previous):
        """
        ``(changed, datasets)``: the names of the applications whose
        records differ from ``previous``'s (or that either lacks), and
        ``_datasets``, those of the others taken from ``previous``.
        """
        before = previous.deployment.applications
        changed = set(before) - set(self.deployment.applications)
        datasets = {}
        for name, app in self.deployment.applications.items():
            if before.get(name) == app:
                dataset = previous._dataset_of.get(name)
                if dataset is not None:
                    datasets[dataset] = previous.datasets[dataset]
                continue
            changed.add(name)
            if app.volume is not None:
                dataset = dataset_id(self.deployment.cluster_name, name)
                datasets[dataset] = DesiredDataset(
                    dataset_id=dataset, application=name,
                    size=round_up(app.volume.size, self.allocation_unit),
                    filesystem=app.volume.filesystem,
                    mountpoint=app.volume.mountpoint)
        return changed, datasets

    def applications_on(self, node):
        """
        The names of the applications placed on ``node``, sorted.
        """
        return self._applications_on.get(node, ())

    def volume_applications_on(self, node):
        """
        The names of the applications with a volume placed on ``node``,
        sorted.
        """
        return [a for a in self.applications_on(node)
                if a in self._dataset_of]

    def node_wanting(self, dataset):
        """
        The name of the node ``dataset``'s application is placed on, or
        None.
        """
        return self._wanted_on.get(dataset)

    def wanted_on(self, node):
        """
        ``{dataset id: DesiredDataset}`` of the applications placed on
        ``node``.
        """
        wanted = {}
        for app in self.applications_on(node):
            dataset = self._dataset_of.get(app)
            if dataset is not None:
                wanted[dataset] = self.datasets[dataset]
        return wanted

    def node_slice(self, node, listing, listed_at=0.0, generation=0,
                   task_id=None):
        """
        The ``NodeDesired`` of the node named ``node``, as
        ``desired_slices`` describes it, from ``listing`` (a ``Listing``):
        at the cost of what is on that node alone. ``generation`` and
        ``task_id`` are those it is to be handed out with, if known.
        """
        deployment = self.deployment
        backend_id = deployment.nodes[node].backend_id
        apps = self.applications_on(node)
        wanted = self.wanted_on(node)
        relevant = {}
        for dataset in set(wanted) | listing.datasets_attached_to(
                backend_id):
            volume = listing.chosen(dataset, backend_id)
            if dataset not in wanted and (volume is None or
                                          volume.attached_to != backend_id):
                # A copy a push left attached here: given up.
                volume = _kept_here(listing, dataset, backend_id)
            if volume is not None and (dataset in wanted
                                       or volume.attached_to == backend_id):
                relevant[dataset] = volume
        return NodeDesired(
            node=node, backend_id=backend_id,
            cluster_name=deployment.cluster_name, generation=generation,
            datasets=wanted,
            applications={a: deployment.applications[a] for a in apps},
            volumes=relevant, listed_at=float(listed_at or 0.0),
            task_id=task_id)

    def slices(self, listing, listed_at=0.0, nodes=None, generation=0,
               tasks=None):
        """
        ``{node: NodeDesired}`` of ``nodes`` (names; None: every node of
        the deployment; names it lacks are left out), with ``generation``
        and each node's task of ``tasks`` (node -> task id).
        """
        names = self.deployment.nodes if nodes is None else [
            n for n in nodes if n in self.deployment.nodes]
        tasks = tasks or {}
        return {name: self.node_slice(name, listing, listed_at, generation,
                                      tasks.get(name))
                for name in names}

    def touched(self, previous):
        """
        The names of the nodes whose slices may differ between
        ``previous`` (the ``Placement`` of the configuration before, or
        None) and this one over the same listing, of either
        configuration; None when that is every node (a first
        configuration, another cluster name or allocation unit).

        A node's slice is made of its own ``Node``, the applications placed
        on it (with their datasets) and the volumes of those datasets and
        attached to it: a node none of these changed for keeps its slice.
        """
        if previous is None:
            return None
        old, new = previous.deployment, self.deployment
        if (old.cluster_name != new.cluster_name
                or previous.allocation_unit != self.allocation_unit):
            return None
        nodes = {name for name in set(old.nodes) | set(new.nodes)
                 if old.nodes.get(name) != new.nodes.get(name)}
        if self._previous is not None and self._previous() is previous:
            changed = self._changed
        else:
            changed = {app for app in set(old.applications)
                       | set(new.applications)
                       if old.applications.get(app)
                       != new.applications.get(app)}
        # An application placed nowhere, before or after, is in no slice.
        for app in set(old.placement) | set(new.placement):
            before, after = old.placement.get(app), new.placement.get(app)
            if before != after or app in changed:
                nodes.update(n for n in (before, after) if n is not None)
        return nodes

    def affected(self, changes):
        """
        The names of the nodes whose slices ``changes`` (pairs ``(old,
        new)`` of volumes, as ``Listing.changed`` gives them) may change:
        the node wanting each changed volume's dataset and the nodes it was
        or is attached to. A volume claiming a dataset matters to no other
        node: one not wanting the dataset sees the volumes of it attached
        to itself, and no other.
        """
        nodes = set()
        for pair in changes:
            for volume in pair:
                if volume is None:
                    continue
                node = self._wanted_on.get(volume.dataset_id)
                if node is not None:
                    nodes.add(node)
                if volume.attached_to is not None:
                    nodes.update(self._nodes_of.get(volume.attached_to, ()))
        return nodes


def desired_slices(deployment, volumes, allocation_unit, listed_at=0.0):
    """
    ``pmap`` of node name -> ``NodeDesired`` (generation 0) for every node
    of ``deployment``.

    ``volumes`` is the cached listing of this cluster's volumes (an
    iterable of ``Volume``, or a ``Listing``); ``allocation_unit`` (bytes)
    is what desired sizes round up to. A slice carries the datasets and
    applications placed on its node, and the listed volumes wanted there
    or attached there, keyed by dataset id (of two volumes claiming one
    dataset, the one ``_preference`` chooses for the node). An
    application's ``secrets`` are in its own node's slice alone: no other
    node's slice names the application at all.
    """
    return pmap(Placement(deployment, allocation_unit).slices(
        Listing.of(volumes), listed_at))


def node_slice(deployment, node, volumes, allocation_unit, listed_at=0.0):
    """
    The ``NodeDesired`` of ``node`` (a ``model.Node`` of ``deployment``)
    alone, as ``desired_slices`` computes it.
    """
    return Placement(deployment, allocation_unit).node_slice(
        node.name, Listing.of(volumes), listed_at)


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
                     backend_limits=None, placement=None):
    """
    What is wrong with ``deployment`` against the backend's limits and the
    volumes that already exist (an iterable of ``Volume``, or a
    ``Listing``), as messages naming the application, the limit and the
    numbers; an empty list when it can go ahead.

    ``backend_limits`` (a ``Limits`` the backend reports) tightens the
    cluster's own; region limits count every configured dataset plus this
    cluster's volumes whose application is no longer configured.
    ``placement`` is ``Placement(deployment, allocation_unit)`` where the
    caller has it already.
    """
    listing = Listing.of(volumes)
    if placement is None:
        placement = Placement(deployment, allocation_unit)
    if deployment.sites:
        return _site_errors(deployment, listing, placement,
                            backend_limits or {})
    limits = combined_limits(deployment.backend.limits, backend_limits)
    datasets = placement.datasets
    errors = []
    for dataset in sorted(datasets.values(), key=lambda d: d.application):
        errors.extend(_size_errors(dataset, listing.chosen(dataset.dataset_id),
                                   limits))
    errors.extend(_node_errors(deployment, placement, limits))
    errors.extend(_region_errors(datasets, listing, limits))
    return errors


def _site_errors(deployment, listing, placement, backend_limits):
    """
    ``check_deployment`` of a cluster of several sites: each site against
    its own limits (``backend_limits`` is ``{site: Limits or None}``),
    counting the datasets placed on its nodes (a push into a site makes
    its volume there) and every other volume it holds (the copies pushes
    leave behind among them).
    """
    errors = []
    by_site = {}
    for volume in listing.volumes():
        by_site.setdefault(volume.site, []).append(volume)
    for site, backend in sorted(deployment.sites.items()):
        limits = combined_limits(backend.limits, backend_limits.get(site))
        # As configured, not as a push under way places it for now: a
        # site must have room for what is being pushed into it.
        here = {d: dataset for d, dataset in placement.datasets.items()
                if deployment.placement.get(dataset.application) is not None
                and deployment.site_of(deployment.placement[
                    dataset.application]) == site}
        site_listing = Listing.of(by_site.get(site, ()))
        found = []
        for dataset in sorted(here.values(), key=lambda d: d.application):
            found.extend(_size_errors(
                dataset, listing.chosen(dataset.dataset_id), limits))
        found.extend(_node_errors(
            deployment, placement, limits,
            [n for n in deployment.nodes if deployment.site_of(n) == site]))
        found.extend(_region_errors(here, site_listing, limits))
        errors.extend("site %s: %s" % (site, e) for e in found)
    errors.extend(_unpushable(deployment, listing, placement))
    return errors


def _unpushable(deployment, listing, placement):
    """
    An application placed in another site than its volume can go there
    only by a push from the node of that site holding the volume.
    """
    for dataset, want in sorted(placement.datasets.items(),
                                key=lambda item: item[1].application):
        node = placement.node_wanting(dataset)
        volume = listing.chosen(dataset)
        if node is None or volume is None or \
                volume.site == deployment.site_of(node):
            continue
        holder = (deployment.node_by_backend_id(volume.attached_to)
                  if volume.attached_to is not None else None)
        if holder is None or holder.site != volume.site:
            yield ("%s: its volume is in site %s and attached to no node "
                   "there, so it cannot be pushed to %s in site %s; place "
                   "it on a node of site %s first, then move it"
                   % (want.application, volume.site, node,
                      deployment.site_of(node), volume.site))


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


def _node_errors(deployment, placement, limits, nodes=None):
    if limits.volumes_per_node is None:
        return
    for node in sorted(deployment.nodes if nodes is None else nodes):
        apps = placement.volume_applications_on(node)
        if len(apps) > limits.volumes_per_node:
            yield ("%s: %d volumes on %s but volumes_per_node is %d; move "
                   "some of them to another node"
                   % (", ".join(apps), len(apps), node,
                      limits.volumes_per_node))


def _region_errors(datasets, listing, limits):
    """
    Region limits refuse only what this deployment adds: new volumes and
    growth. A region already over its limit can still be shrunk in use.
    """
    if limits.region_volumes is None and limits.region_size is None:
        return
    leftovers = [v for v in listing.volumes() if v.dataset_id not in datasets]
    count = len(datasets) + len(leftovers)
    listed = {d: listing.chosen(d) for d in datasets}
    existing = {d: listed[d].size if listed[d] is not None else 0
                for d in datasets}
    total = sum(max(d.size, existing[d.dataset_id])
                for d in datasets.values()) + sum(v.size for v in leftovers)
    created = sorted(d.application for d in datasets.values()
                     if listed[d.dataset_id] is None)
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


def describe_changes(old, new, volumes, allocation_unit=1, reported=None,
                     placement=None, pause=None):
    """
    ``{node: [line, ...]}``: what deploying ``new`` over ``old`` (a
    ``Deployment``, or None for the first deploy) changes on each node,
    given the volume listing (an iterable of ``Volume``, or a ``Listing``)
    and what nodes last ``reported`` they hold (node -> ``NodeState``): one
    line per application, its steps in the order the node's agent takes
    them. Every node of either deployment has a list, empty where nothing
    changes. This is the plan ``blockmover-deploy`` and ``--dry-run``
    print; it is foreseen by the agents' own planner (``agents.foresee``),
    so it says what they do. ``placement`` is ``Placement(new,
    allocation_unit)`` where the caller has it already. ``pause``, if
    given, is called between the steps of the work (each node's look, each
    node's slice while foreseen): a caller running this beside others
    lets them have their turn there.

    Nodes only meet through the datasets they share (one gives up a volume
    the other takes), so the cluster is foreseen in groups that share
    none, and a group whose nodes all have nothing to do is not foreseen
    at all: a change of one node in ten thousand costs that node's group,
    and one look at each other node.
    """
    listing = Listing.of(volumes)
    if placement is None:
        placement = Placement(new, allocation_unit)
    made = _Foresight(old, new, listing, placement, reported or {},
                      pause).made()
    nodes = dict(new.nodes)
    if old is not None:
        nodes = dict(old.nodes, **nodes)
    by_backend_id = {n.backend_id: name for name, n in nodes.items()}
    volumes = listing.volumes()
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


class _Foresight(object):
    """
    ``agents.foresee.foresee`` of a whole cluster, one group of nodes that
    share no dataset with the others at a time, with the same result.

    In ``foresee`` a node's changes touch only the listed volumes of its
    own slice (the datasets it wants and the volumes attached to it), and
    a volume only becomes attached to the node that attaches it: so the
    datasets a node's slice can ever name are those it wants and those
    attached to it at the start, and nodes sharing none of those never
    see each other's changes. A group whose nodes all plan nothing at
    the start stays as it is.
    """

    def __init__(self, old, new, listing, placement, reported, pause=None):
        # Late import: placement is the control side; the agents' planner
        # is what it foresees with, pure like placement itself.
        from agents import foresee, plan
        self._foresee = foresee
        self._plan = plan.plan
        self._pause = pause if pause is not None else _no_pause
        self._old = old
        self._new = new
        self._listing = listing
        self._placement = placement
        nodes = dict(new.nodes)
        if old is not None:
            nodes = dict(old.nodes, **nodes)
        self._nodes = nodes
        self._reported = reported
        self._old_on = {}
        if old is not None:
            for app, node in old.placement.items():
                self._old_on.setdefault(node, []).append(app)
        self._new_on = {name: placement.applications_on(name)
                        for name in new.nodes}
        # As foresee's: each dataset's volume spec, the new deployment's
        # where both name it.
        self._specs = {}
        for deployment in (old, new):
            if deployment is None:
                continue
            for name, app in deployment.applications.items():
                if app.volume is not None:
                    self._specs[dataset_id(deployment.cluster_name,
                                           name)] = app.volume
        # foresee's listing: one volume a dataset, the last by volume id.
        self._last = {}
        for volume in listing.volumes():
            self._last[volume.dataset_id] = volume
        # Every dataset each node's slice can name while foreseen, in a
        # fixed order.
        self._datasets = {}
        for name, node in nodes.items():
            named = set(listing.datasets_attached_to(node.backend_id))
            if name in new.nodes:
                named.update(placement.wanted_on(name))
            self._datasets[name] = tuple(sorted(named))
        # node -> (the volumes its last slice was made of, that slice).
        self._slices = {}

    def made(self):
        """
        ``{node: [change, ...]}`` as ``foresee`` makes it.
        """
        made = {name: [] for name in self._nodes}
        observed = {}
        busy = set()
        for name in self._nodes:
            self._pause()
            observed[name] = self._observed(name)
            if self._plans_something(name, observed[name]):
                busy.add(name)
        for group in self._groups():
            if busy.isdisjoint(group):
                continue
            self._pause()
            made.update(self._foresee_group(group, observed))
        return made

    def _observed(self, name):
        """
        What ``foresee`` takes node ``name`` to hold: what it reported,
        else what the old deployment put there.
        """
        state = self._reported.get(name)
        if state:
            return state
        node = self._nodes[name]
        return self._foresee.node_as_deployed(
            self._part(self._old, self._old_on, [name]), node,
            self._listing.volumes_attached_to(node.backend_id), self._specs)

    def _plans_something(self, name, observed):
        if name in self._new.nodes:
            desired = self._slice(self._new.nodes[name], self._last)
        else:
            desired = self._leaving(name, self._last)
        return bool(self._plan(desired, observed))

    def _slice(self, node, listing):
        """
        ``foresee``'s node slice of ``node`` over its listing ``listing``
        (dataset id -> volume): as ``Placement.node_slice``, at the cost
        of the datasets the node's slice can name, and made again only
        when their volumes changed since the last time.
        """
        candidates = self._datasets[node.name]
        seen = tuple(listing.get(dataset) for dataset in candidates)
        made = self._slices.get(node.name)
        if made is not None and len(made[0]) == len(seen) and all(
                a is b for a, b in zip(made[0], seen)):
            return made[1]
        backend_id = node.backend_id
        wanted = self._placement.wanted_on(node.name)
        relevant = {}
        for dataset, volume in zip(candidates, seen):
            if volume is not None and (dataset in wanted
                                       or volume.attached_to == backend_id):
                relevant[dataset] = volume
        apps = self._placement.applications_on(node.name)
        desired = NodeDesired(
            node=node.name, backend_id=backend_id,
            cluster_name=self._new.cluster_name, generation=0,
            datasets=wanted,
            applications={a: self._new.applications[a] for a in apps},
            volumes=relevant)
        self._slices[node.name] = (seen, desired)
        return desired

    def _leaving(self, name, listing):
        node = self._nodes[name]
        return NodeDesired(
            node=name, backend_id=node.backend_id,
            cluster_name=self._new.cluster_name, generation=0,
            volumes={d: listing[d] for d in self._datasets[name]
                     if d in listing
                     and listing[d].attached_to == node.backend_id})

    def _groups(self):
        """
        The nodes in groups sharing no dataset with each other.
        """
        parent = {name: name for name in self._nodes}

        def root(name):
            while parent[name] != name:
                parent[name] = parent[parent[name]]
                name = parent[name]
            return name
        first = {}
        for name in sorted(self._nodes):
            for dataset in self._datasets[name]:
                other = first.setdefault(dataset, name)
                a, b = root(name), root(other)
                if a != b:
                    parent[a] = b
        groups = {}
        for name in self._nodes:
            groups.setdefault(root(name), []).append(name)
        return list(groups.values())

    def _foresee_group(self, group, observed):
        """
        ``foresee`` of ``group`` alone: the deployments cut down to its
        nodes, the listing to the volumes of its datasets, each node's
        observed state given as reported (so none is worked out again
        from the whole deployment).
        """
        datasets = set()
        for name in group:
            datasets.update(self._datasets[name])
        volumes = sorted((v for d in datasets
                          for v in self._listing.claiming(d)),
                         key=_volume_id)
        return self._foresee.foresee(
            self._part(self._old, self._old_on, group),
            self._part(self._new, self._new_on, group),
            volumes, self._group_slice, {n: observed[n] for n in group})

    def _group_slice(self, node, values):
        # foresee passes its listing's values: a view of the dict it
        # keeps, read here by dataset rather than scanned.
        self._pause()
        return self._slice(node, values.mapping)

    @staticmethod
    def _part(deployment, on, names):
        """
        ``deployment`` with only the nodes ``names`` and the applications
        placed on them (``on``: node -> application names); None stays
        None.
        """
        if deployment is None:
            return None
        placement = {app: name for name in names
                     for app in on.get(name, ())}
        return deployment.set(
            nodes={name: deployment.nodes[name] for name in names
                   if name in deployment.nodes},
            applications={app: deployment.applications[app]
                          for app in placement},
            placement=placement)


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
