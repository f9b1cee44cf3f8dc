"""
Where applications run when their node failed: pure functions of the
configuration, the failover decisions recorded
(``failurestore.FailoverDecision``) and which nodes are live.

The operator's ``deployment:`` is never rewritten: a decision holds while
the configuration still places its application on the node it failed over
from, and the placement the slices are computed from is the operator's
with the decisions that hold applied (``effective``). A configuration that
places the application anywhere else ends the decision: the operator's
word wins.
"""

from blockmover.placement import combined_limits


def holds(deployment, application, decision):
    """
    Whether ``decision`` still places ``application``: the configuration
    places it on the node it failed over from.
    """
    return deployment.placement.get(application) == decision.from_node


def effective_placement(deployment, failovers):
    """
    ``{application: node}``: ``deployment``'s placement with the decisions
    of ``failovers`` (application -> ``FailoverDecision``) that hold.
    """
    placement = dict(deployment.placement)
    for application, decision in failovers.items():
        if holds(deployment, application, decision):
            placement[application] = decision.to_node
    return placement


def effective(deployment, failovers):
    """
    ``deployment`` with its placement replaced by ``effective_placement``
    (``deployment`` itself when no decision holds).
    """
    placement = effective_placement(deployment, failovers)
    if placement == dict(deployment.placement):
        return deployment
    return deployment.set(placement=placement)


def _overlaps(a, b):
    return (a + "/").startswith(b + "/") or (b + "/").startswith(a + "/")


def _why_not(deployment, placement, application, node, now_on=None):
    """
    Why ``application`` (on ``now_on``) cannot join ``node`` next to what
    ``placement`` (effective) puts there, or None when it can: another
    site, the site's volumes_per_node, a shared external port,
    overlapping mountpoints.
    """
    app = deployment.applications[application]
    there = [deployment.applications[a] for a, n in sorted(placement.items())
             if n == node and a != application]
    limits = combined_limits(deployment.backend_of(node).limits)
    if app.volume is not None and now_on is not None and \
            deployment.site_of(now_on) != deployment.site_of(node):
        # A volume goes to another site only by a push, from a live node.
        return ("it is in site %s, and the volume in site %s"
                % (deployment.site_of(node), deployment.site_of(now_on)))
    if app.volume is not None and limits.volumes_per_node is not None:
        volumes = len([a for a in there if a.volume is not None])
        if volumes + 1 > limits.volumes_per_node:
            return ("it holds %d volumes already, the most volumes_per_node "
                    "allows" % (volumes,))
    ports = {p.external: a.name for a in there for p in a.ports}
    for port in app.ports:
        if port.external in ports:
            return ("%s there uses external port %d too"
                    % (ports[port.external], port.external))
    if app.volume is not None:
        for other in there:
            if other.volume is not None and _overlaps(
                    other.volume.mountpoint, app.volume.mountpoint):
                return ("%s there mounts %s, which overlaps %s"
                        % (other.name, other.volume.mountpoint,
                           app.volume.mountpoint))
    return None


def choose(deployment, placement, application, live):
    """
    Where ``application`` fails over to: the first of its ``failover.to``
    candidates that is live (``live(node)``), is not where it is now and
    can take it within the limits.

    :param placement: the effective placement now (``{app: node}``).
    :return: ``(node, reasons)``: the node, or None with the reason each
        candidate was passed over, for the operator.
    """
    failover = deployment.applications[application].failover
    now_on = placement.get(application)
    reasons = []
    for node in failover.to if failover is not None else ():
        if node == now_on:
            reasons.append("%s: it is the node that failed" % (node,))
        elif node not in deployment.nodes:
            reasons.append("%s: not in the configuration" % (node,))
        elif not live(node):
            reasons.append("%s: not live" % (node,))
        else:
            why = _why_not(deployment, placement, application, node,
                           now_on)
            if why is None:
                return node, reasons
            reasons.append("%s: %s" % (node, why))
    return None, reasons
