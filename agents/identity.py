"""
Who this node is, from its own configuration and its own backend, never
from the slice the control service sends: a slice that names another node,
another cluster or another backend instance is refused before anything on
the node changes, so a stale or hostile slice can never make the agent
detach or mount another node's volume.
"""

from pyrsistent import PClass, field


class SliceRefused(Exception):
    """
    The control service sent a slice that is not this node's.
    """


class NodeIdentity(PClass):
    """
    This node: its name, the cluster it belongs to (None: whichever the
    control service names, for an ``agent.yml`` that does not say) and its
    backend id (None: not known yet).
    """
    node = field(type=str, mandatory=True)
    cluster = field(initial=None)
    instance_id = field(initial=None)


def check_slice(identity, desired):
    """
    :raise SliceRefused: ``desired`` (a ``NodeDesired``) is another node's,
        another cluster's or another backend instance's, naming every
        difference.
    """
    wrong = []
    if desired.node != identity.node:
        wrong.append("node %r, not this node %r" % (desired.node,
                                                     identity.node))
    if identity.cluster is not None and \
            desired.cluster_name != identity.cluster:
        wrong.append("cluster %r, not this node's cluster %r"
                     % (desired.cluster_name, identity.cluster))
    if identity.instance_id is not None and \
            desired.backend_id != identity.instance_id:
        wrong.append("backend instance %r, not this node's %r"
                     % (desired.backend_id, identity.instance_id))
    if wrong:
        raise SliceRefused(
            "refusing the slice of generation %d: it names %s; nothing is "
            "changed on this node. Check this node's agent.yml (node, "
            "cluster, instance_id) and its entry in cluster.yml"
            % (desired.generation, " and ".join(wrong)))
