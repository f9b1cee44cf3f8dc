"""
The records blockmover reasons about: configuration, desired state and
observed state, all immutable values.

Every record converts to plain JSON-able data with ``to_data`` and back with
``from_data``; that is the wire format between the deploy CLI, the control
service and the agents.
"""

import os.path

from pyrsistent import (
    PClass, PMap, PSet, PVector, field, pmap_field, pvector_field,
)

FILESYSTEMS = ("ext4", "xfs")


def optional_record(record_type):
    """
    A field holding a ``record_type`` or None, created from plain data too.
    """
    def factory(value):
        if isinstance(value, dict):
            return record_type.create(value)
        return value
    return field(type=(record_type, type(None)), mandatory=True,
                 initial=None, factory=factory)


def optional(value_type):
    return field(type=(value_type, type(None)), mandatory=True, initial=None)


def _positive(name):
    def check(value):
        return (value is None or value > 0, "%s must be positive" % (name,))
    return check


# --- configuration -------------------------------------------------------

class VolumeSpec(PClass):
    """
    The volume an application keeps its data on.

    ``size`` is in bytes; growing it later grows the volume and the
    filesystem, shrinking is refused.
    """
    mountpoint = field(type=str, mandatory=True,
                       invariant=lambda p: (os.path.isabs(p) and p != "/",
                                            "mountpoint must be an absolute "
                                            "path other than /"))
    size = field(type=int, mandatory=True, invariant=_positive("size"))
    filesystem = field(type=str, mandatory=True, initial="ext4",
                       invariant=lambda f: (f in FILESYSTEMS,
                                            "filesystem must be one of %s"
                                            % (", ".join(FILESYSTEMS),)))


class Port(PClass):
    internal = field(type=int, mandatory=True)
    external = field(type=int, mandatory=True)


class Application(PClass):
    """
    An application as ``app.yml`` describes it: a plain process
    (``command``) or, in Flocker's format, a container ``image``.
    """
    name = field(type=str, mandatory=True)
    command = pvector_field(str)
    image = optional(str)
    ports = pvector_field(Port)
    environment = pmap_field(str, str)
    volume = optional_record(VolumeSpec)

    __invariant__ = lambda self: (
        bool(self.command) or self.image is not None,
        "an application needs a command or an image")


class Limits(PClass):
    """
    What the backend allows; None means no limit. Sizes are in bytes.
    """
    min_size = optional(int)
    max_size = optional(int)
    volumes_per_node = optional(int)
    region_volumes = optional(int)
    region_size = optional(int)


class BackendConfig(PClass):
    """
    Which block-storage backend the cluster uses, and its options
    (``loopback``: ``root``; ``openstack``: ``cloud``,
    ``availability_zone``, ``volume_type`` ...).
    """
    name = field(type=str, mandatory=True)
    options = pmap_field(str, str)
    limits = field(type=Limits, mandatory=True, initial=Limits(),
                   factory=lambda v: Limits.create(v)
                   if isinstance(v, dict) else v)


class Node(PClass):
    """
    A machine of the cluster. ``instance_id`` is how the backend names it
    (a Nova server id); when unset the node's name is used.
    """
    name = field(type=str, mandatory=True)
    address = field(type=str, mandatory=True)
    instance_id = optional(str)

    @property
    def backend_id(self):
        return self.instance_id if self.instance_id is not None else self.name


class Deployment(PClass):
    """
    The whole desired configuration of a cluster: ``cluster.yml`` and
    ``app.yml`` together. ``placement`` maps an application to the node it
    should run on; an application on no node is stopped and its volume kept.
    """
    cluster_name = field(type=str, mandatory=True)
    control_url = field(type=str, mandatory=True)
    backend = field(type=BackendConfig, mandatory=True)
    nodes = pmap_field(str, Node)
    applications = pmap_field(str, Application)
    placement = pmap_field(str, str)

    def __invariant__(self):
        for app, node in self.placement.items():
            if app not in self.applications:
                return (False, "placement names unknown application %r"
                        % (app,))
            if node not in self.nodes:
                return (False, "placement names unknown node %r" % (node,))
        return (True, "")

    def applications_on(self, node):
        return sorted(a for a, n in self.placement.items() if n == node)

    def node_by_backend_id(self, backend_id):
        for node in self.nodes.values():
            if node.backend_id == backend_id:
                return node
        return None


# --- the backend's view ---------------------------------------------------

class Volume(PClass):
    """
    A volume as the block-storage backend lists it. ``attached_to`` is the
    backend id of the node holding it (see ``Node.backend_id``), or None.
    """
    volume_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    attached_to = optional(str)
    metadata = pmap_field(str, str)


# --- desired state of one node -------------------------------------------

class DesiredDataset(PClass):
    """
    A dataset that should be attached and mounted on the node, and how big.
    """
    dataset_id = field(type=str, mandatory=True)
    application = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    filesystem = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)


class NodeDesired(PClass):
    """
    One node's slice of the cluster's desired state, as the control service
    hands it out.

    ``datasets`` should be mounted here, ``applications`` should run here;
    anything else this node holds or runs it should give up. ``volumes`` is
    the control service's cached listing of the volumes that matter to this
    node (wanted here or attached here), keyed by dataset id, so that the
    agent never lists the backend itself. ``generation`` grows whenever the
    slice changes.
    """
    node = field(type=str, mandatory=True)
    backend_id = field(type=str, mandatory=True)
    cluster_name = field(type=str, mandatory=True)
    generation = field(type=int, mandatory=True)
    datasets = pmap_field(str, DesiredDataset)
    applications = pmap_field(str, Application)
    volumes = pmap_field(str, Volume)
    listed_at = field(type=float, mandatory=True, initial=0.0)
    # The eliot task of the deploy that last changed this slice, for this
    # node alone; the agent makes its changes inside it, so one move reads
    # as one tree across the CLI, the control service and the agents.
    task_id = optional(str)


# --- observed state of one node ------------------------------------------

class Device(PClass):
    """
    A block device of a volume attached to this node, as found on the node,
    with what its filesystem says of itself (None where it holds none).
    """
    volume_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    path = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    filesystem = optional(str)
    filesystem_uuid = optional(str)
    filesystem_size = optional(int)


class Mount(PClass):
    """
    A mounted filesystem of a dataset on this node.
    """
    dataset_id = field(type=str, mandatory=True)
    device = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)


class RunningApplication(PClass):
    name = field(type=str, mandatory=True)
    pid = field(type=int, mandatory=True)


class NodeState(PClass):
    """
    What is on one node now: the devices of attached volumes by dataset id,
    the mounted datasets by dataset id, and the applications running.
    """
    node = field(type=str, mandatory=True)
    backend_id = field(type=str, mandatory=True)
    devices = pmap_field(str, Device)
    mounts = pmap_field(str, Mount)
    running = pmap_field(str, RunningApplication)


class FinishedChange(PClass):
    change = field(type=str, mandatory=True)
    seconds = field(type=float, mandatory=True)


class Progress(PClass):
    """
    How far a node's convergence is: the change it runs now (None when it
    has nothing to do), since when, and the last error of each failing
    change.
    """
    converged = field(type=bool, mandatory=True)
    generation = field(type=int, mandatory=True, initial=-1)
    current = optional(str)
    since = optional(float)
    errors = pvector_field(str)
    # The changes finished since the slice of ``generation`` arrived.
    finished = pvector_field(FinishedChange)


class NodeReport(PClass):
    """
    What an agent tells the control service after every turn of its loop.
    ``changed_backend`` asks for a fresh volume listing.
    """
    state = field(type=NodeState, mandatory=True)
    progress = field(type=Progress, mandatory=True)
    changed_backend = field(type=bool, mandatory=True, initial=False)


# --- plain data ------------------------------------------------------------

def to_data(value):
    """
    A record, or any nesting of records and persistent collections, as
    plain JSON-able data.
    """
    if isinstance(value, PClass):
        return {name: to_data(getattr(value, name))
                for name in value._pclass_fields}
    if isinstance(value, PMap) or isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    if isinstance(value, (PVector, PSet, list, tuple, set, frozenset)):
        return [to_data(v) for v in value]
    return value


def from_data(record_type, data):
    """
    The ``record_type`` described by plain ``data`` (as ``to_data`` made it).
    """
    return record_type.create(data)

