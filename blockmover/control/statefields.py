"""
What ``GET /v1/state`` shows beyond the nodes' last reports, for
``blockmover status``: since when each node is converged (or not) and each
application placed as it is, and which node the volume listing shows each
volume attached to.

Times are the control service's clock, kept in memory: after a restart of
the service they start again from when it first heard of each thing.
"""

from blockmover import identity


def _placement(report, applications):
    """
    ``{app: ready}`` of the applications in ``applications`` that the
    ``NodeReport`` ``report`` says run on its node.
    """
    if report is None:
        return {}
    return {name: running.ready for name, running in
            report.state.running.items() if name in applications}


class Transitions(object):
    """
    When each node's ``progress.converged`` last took the value it has, and
    when each application last changed the node it is wanted on, the nodes
    it runs on or whether it serves there. Costs what changed: a report
    looks at its own node's applications only.
    """

    def __init__(self):
        self._nodes = {}
        self._applications = {}

    def node(self, name):
        """
        Seconds since the epoch when node ``name``'s reports last turned
        converged or not converged; None before its first report.
        """
        return self._nodes.get(name)

    def application(self, name):
        """
        Seconds since the epoch when application ``name`` was last wanted
        elsewhere, started or stopped somewhere, or became ready or not.
        """
        return self._applications.get(name)

    def configured(self, old, new, now):
        """
        The ``Deployment`` ``new`` replaced ``old`` (None at the service's
        start) at ``now``: each application it places anew changed then;
        what it no longer names is forgotten.
        """
        for app in new.applications:
            if old is None or app not in old.applications or \
                    old.placement.get(app) != new.placement.get(app):
                self._applications[app] = now
        for app in set(self._applications) - set(new.applications):
            del self._applications[app]
        for node in set(self._nodes) - set(new.nodes):
            del self._nodes[node]

    def reported(self, node, old, new, now, applications):
        """
        ``node`` reported the ``NodeReport`` ``new`` at ``now``, after
        ``old`` (None for its first since the service started);
        ``applications`` are the names the configuration knows, the only
        ones kept.
        """
        if old is None or old.progress.converged != new.progress.converged:
            self._nodes[node] = now
        before = _placement(old, applications)
        after = _placement(new, applications)
        for app in set(before) | set(after):
            if before.get(app) != after.get(app):
                self._applications[app] = now


def attachments(deployment, volumes):
    """
    Where the listing ``volumes`` shows the volumes of ``deployment``'s
    cluster attached.

    :return: ``(attached, unwanted)``: ``attached`` maps each dataset id
        to the sorted names of the nodes holding its volume (a backend id
        no node has stands for itself); ``unwanted`` lists, as plain data
        (``volume_id``, ``dataset_id``, ``name``, ``attached_to``), the
        attached volumes of datasets no application of ``deployment``
        uses: no node should hold those.
    """
    if deployment is None or volumes is None:
        return {}, []
    nodes = {node.backend_id: node.name
             for node in deployment.nodes.values()}
    used = {identity.dataset_id(deployment.cluster_name, app)
            for app in deployment.applications}
    attached = {}
    unwanted = []
    for volume in volumes:
        if volume.attached_to is None or volume.metadata.get(
                identity.CLUSTER_KEY, deployment.cluster_name) \
                != deployment.cluster_name:
            continue
        holder = nodes.get(volume.attached_to, volume.attached_to)
        attached.setdefault(volume.dataset_id, []).append(holder)
        if volume.dataset_id not in used:
            unwanted.append({
                "volume_id": volume.volume_id,
                "dataset_id": volume.dataset_id,
                "name": volume.metadata.get(identity.NAME_KEY),
                "attached_to": holder})
    for holders in attached.values():
        holders.sort()
    unwanted.sort(key=lambda v: (v["attached_to"], v["volume_id"]))
    return attached, unwanted
