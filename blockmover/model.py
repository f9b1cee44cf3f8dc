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


def other_urls():
    """
    A field holding the URLs of a control service's replicas after the
    first (a tuple of strings; none for a service of one).
    """
    return field(type=tuple, mandatory=True, initial=(), factory=tuple,
                 invariant=lambda urls: (
                     all(isinstance(url, str) for url in urls),
                     "a URL is a string"))


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


# How long an application may take to become ready when app.yml says
# nothing: a database replaying its journal takes a while.
DEFAULT_READY_DEADLINE = 120.0


class ReadyCheck(PClass):
    """
    How to tell that an application serves: a TCP ``port`` on this node
    that accepts connections, or a ``command`` run on the node that exits
    0; given up on after ``deadline`` seconds.
    """
    port = optional(int)
    command = pvector_field(str)
    deadline = field(type=float, mandatory=True,
                     initial=DEFAULT_READY_DEADLINE,
                     invariant=_positive("deadline"))

    __invariant__ = lambda self: (
        (self.port is None) != (not self.command),
        "a ready check is a port or a command, one of the two")


# What a secret's value is shown as wherever it is shown at all: in the
# configuration the control service hands back and in a record's repr.
REDACTED = "<redacted>"


class Failover(PClass):
    """
    Where an application may go when its node fails (``app.yml``'s
    ``failover:``): the nodes ``to`` try, in order, and whether the control
    service moves it there by itself once its node is fenced or confirmed
    down (``automatic``), or only tells the operator.
    """
    to = pvector_field(str)
    automatic = field(type=bool, mandatory=True, initial=False)


class Application(PClass):
    """
    An application as ``app.yml`` describes it: a plain process
    (``command``) or, in Flocker's format, a container ``image``.

    ``environment`` and ``secrets`` are both variables of its process's
    environment, no name in both. They are kept apart so that a secret can
    be told from a plain setting wherever an application goes: only the
    slice of the node that runs it carries its secrets, the configuration
    shown back redacts them, and ``repr`` never shows their values.

    ``ready`` says how to tell that it serves; None means every
    ``ports[].internal`` accepts connections (or, with no ports, that its
    process runs).
    """
    name = field(type=str, mandatory=True)
    command = pvector_field(str)
    image = optional(str)
    ports = pvector_field(Port)
    environment = pmap_field(str, str)
    secrets = pmap_field(str, str)
    volume = optional_record(VolumeSpec)
    ready = optional_record(ReadyCheck)
    failover = optional_record(Failover)

    def __repr__(self):
        # A repr lands in logs, tracebacks and test output: names only.
        shown = self.set(secrets={name: REDACTED for name in self.secrets})
        return PClass.__repr__(shown)

    def ready_checks(self):
        """
        The ``ReadyCheck`` values that must all pass for the application
        to count as ready: the configured one, else one per internal port.
        """
        if self.ready is not None:
            return [self.ready]
        return [ReadyCheck(port=port.internal) for port in self.ports]

    def __invariant__(self):
        if not (self.command or self.image is not None):
            return (False, "an application needs a command or an image")
        both = sorted(set(self.environment) & set(self.secrets))
        return (not both, "%s in both environment and secrets; a variable "
                "is one or the other" % (", ".join(both),))


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


# How long a node's lease lasts when cluster.yml says nothing: an agent
# renews it with every long poll and report, so a live node renews it
# several times a lease (``blockmover.control.leases``).
DEFAULT_LEASE = 20.0

# The ways of fencing a node (``cluster.fencing.method``): ``backend`` asks
# the block-storage backend to power the node's server off; ``command``
# runs the operator's fence command; ``none`` fences nothing, and a node
# that stops renewing its lease waits for an operator's confirm-down.
FENCE_BACKEND = "backend"
FENCE_COMMAND = "command"
FENCE_NONE = "none"
FENCE_METHODS = (FENCE_BACKEND, FENCE_COMMAND, FENCE_NONE)
DEFAULT_FENCE_DEADLINE = 60.0
DEFAULT_FENCE_RETRIES = 3


class Fencing(PClass):
    """
    How the control service makes sure a node that stopped renewing its
    lease can no longer write (``cluster.yml``'s ``cluster.fencing``):
    ``method`` (one of ``FENCE_METHODS``); for ``command``, the operator's
    ``command``, run with the node's name and address after it, which
    exits 0 once the node is off. One try may take ``deadline`` seconds;
    a failed one is tried again ``retries`` times, with backoff.
    """
    method = field(type=str, mandatory=True, initial=FENCE_NONE,
                   invariant=lambda m: (m in FENCE_METHODS,
                                        "method must be one of %s"
                                        % (", ".join(FENCE_METHODS),)))
    command = pvector_field(str)
    deadline = field(type=float, mandatory=True,
                     initial=DEFAULT_FENCE_DEADLINE,
                     invariant=_positive("deadline"))
    retries = field(type=int, mandatory=True, initial=DEFAULT_FENCE_RETRIES)

    __invariant__ = lambda self: (
        (self.method == FENCE_COMMAND) == bool(self.command),
        "a command is given exactly when the method is command")

    def __repr__(self):
        # The command may carry a fence device's password: never shown.
        return "Fencing(method=%r)" % (self.method,)


# The site of a cluster whose cluster.yml names one ``backend`` and no
# ``sites``.
SINGLE_SITE = "main"

# Where an agent listens for the blocks another node's agent pushes to it.
DEFAULT_PUSH_PORT = 4524


# Kubernetes' defaults for its controllers' leader election: a leader that
# cannot renew for 10 s stops, 5 s before anyone else may take over.
ELECTION_LEASE = 15.0
ELECTION_RENEW_DEADLINE = 10.0
ELECTION_RETRY = 2.0


class ElectionTiming(PClass):
    """
    The times of the election of the control service's leader
    (``cluster.yml``'s ``cluster.election``; ``blockmover.control.election``),
    in seconds: how long the lease lasts once renewed, how long a leader
    goes on without renewing it, and how often it renews (and followers
    try to lead).
    """
    lease = field(type=float, mandatory=True, initial=ELECTION_LEASE)
    renew_deadline = field(type=float, mandatory=True,
                           initial=ELECTION_RENEW_DEADLINE)
    retry = field(type=float, mandatory=True, initial=ELECTION_RETRY)

    __invariant__ = staticmethod(lambda t: (
        0 < t.retry < t.renew_deadline < t.lease,
        "the retry period must be shorter than the renew deadline, and the"
        " renew deadline shorter than the lease"))


class Push(PClass):
    """
    How volumes are pushed between sites (``cluster.yml``'s
    ``cluster.push``): the most bytes a second one push may send (None: as
    fast as it goes), and the port agents receive pushes on.
    """
    bandwidth = optional(int)
    port = field(type=int, mandatory=True, initial=DEFAULT_PUSH_PORT)


class Node(PClass):
    """
    A machine of the cluster. ``instance_id`` is how the backend names it
    (a Nova server id); when unset the node's name is used. ``site`` is
    the site whose backend holds its volumes.
    """
    name = field(type=str, mandatory=True)
    address = field(type=str, mandatory=True)
    instance_id = optional(str)
    site = field(type=str, mandatory=True, initial=SINGLE_SITE)

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
    # When cluster.yml names the control service's replicas: those after
    # the first, ``control_url`` (see ``control_urls``).
    other_control_urls = other_urls()
    backend = field(type=BackendConfig, mandatory=True)
    nodes = pmap_field(str, Node)
    applications = pmap_field(str, Application)
    placement = pmap_field(str, str)
    # Seconds a node's lease lasts (``blockmover.control.leases``).
    lease = field(type=float, mandatory=True, initial=DEFAULT_LEASE,
                  invariant=_positive("lease"))
    fencing = field(type=Fencing, mandatory=True, initial=Fencing())
    # Site name -> its backend, when cluster.yml names ``sites``; empty
    # for the one site (``SINGLE_SITE``) of ``backend``, which is then
    # also the first site's backend.
    sites = pmap_field(str, BackendConfig)
    push = field(type=Push, mandatory=True, initial=Push())
    election = field(type=ElectionTiming, mandatory=True,
                     initial=ElectionTiming())

    def __invariant__(self):
        for app, node in self.placement.items():
            if app not in self.applications:
                return (False, "placement names unknown application %r"
                        % (app,))
            if node not in self.nodes:
                return (False, "placement names unknown node %r" % (node,))
        return (True, "")

    @property
    def control_urls(self):
        """
        The URLs of the control service's replicas, as cluster.yml lists
        them (one for a service of one).
        """
        return (self.control_url,) + self.other_control_urls

    def applications_on(self, node):
        return sorted(a for a, n in self.placement.items() if n == node)

    def site_backends(self):
        """
        ``{site name: BackendConfig}`` of every site.
        """
        if self.sites:
            return dict(self.sites)
        return {SINGLE_SITE: self.backend}

    def backends_described(self):
        """
        The backends for a person: "the loopback backend", or "the backends
        of sites east (loopback), west (openstack)".
        """
        if not self.sites:
            return "the %s backend" % (self.backend.name,)
        return "the backends of sites %s" % (", ".join(
            "%s (%s)" % (site, backend.name)
            for site, backend in sorted(self.sites.items())),)

    def site_of(self, node):
        """
        The name of the site of the node named ``node``.
        """
        return self.nodes[node].site

    def backend_of(self, node):
        """
        The ``BackendConfig`` of the site of the node named ``node``.
        """
        return self.site_backends()[self.site_of(node)]

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
    # The site whose backend holds it (the control service says; a
    # backend itself knows of no other site).
    site = field(type=str, mandatory=True, initial=SINGLE_SITE)


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


class IncomingPush(PClass):
    """
    A dataset whose blocks another node pushes into a volume of this
    node's site, for the target node's slice: the volume to receive them
    is made (or the one of the dataset this site keeps is taken), marked
    incoming with ``push_id`` and ``generation``, attached here and grown
    to ``size``, and never mounted; ``source_node`` alone may push into
    it. ``volume`` is that volume as listed, once it is.
    """
    push_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    application = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    generation = field(type=int, mandatory=True)
    source_node = field(type=str, mandatory=True)
    volume = optional_record(Volume)
    # Where this node's agent receives pushes.
    port = field(type=int, mandatory=True, initial=DEFAULT_PUSH_PORT)


class OutgoingPush(PClass):
    """
    A dataset this node pushes to ``target_node`` (at ``target_address``,
    ``port``), for the source node's slice: while ``final`` is False its
    application runs on and rounds are pushed until what changes between
    two of them stops shrinking; once ``final``, the application is
    stopped and its filesystem unmounted, its volume stays attached, a
    last round is pushed and both sides' digests compared.
    ``target_volume`` is the volume receiving, once it is attached to the
    target (None until then).
    """
    push_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    application = field(type=str, mandatory=True)
    source_volume = field(type=str, mandatory=True)
    target_node = field(type=str, mandatory=True)
    target_address = field(type=str, mandatory=True)
    port = field(type=int, mandatory=True)
    target_volume = optional(str)
    size = field(type=int, mandatory=True)
    final = field(type=bool, mandatory=True, initial=False)
    bandwidth = optional(int)


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
    # The applications this node must stop and never start, and whose
    # volumes it must give up (detach), by name: they failed over to
    # another node, or this node was fenced and is returning, or it is no
    # longer in the configuration. Said explicitly so that a node coming
    # back knows why its slice lost them.
    release = pvector_field(str)
    # Pushes between sites this node takes part in, by dataset id.
    incoming = pmap_field(str, IncomingPush)
    outgoing = pmap_field(str, OutgoingPush)
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
    """
    An application whose process runs on this node; ``ready`` once its
    ready checks passed for this very process.
    """
    name = field(type=str, mandatory=True)
    pid = field(type=int, mandatory=True)
    ready = field(type=bool, mandatory=True, initial=False)


# The phases of one side of a push (``PushProgress.phase``).
PUSH_WAITING = "waiting"     # for the target's volume, or to start
PUSH_LIVE = "live"           # rounds while the application runs
PUSH_FINAL = "final"         # the last round, the application stopped
PUSH_VERIFIED = "verified"   # both digests taken and equal
PUSH_FAILED = "failed"       # given up: the application runs at the source
PUSH_RECEIVING = "receiving"  # the target's side


class PushProgress(PClass):
    """
    How far one push is, as one of its two nodes sees it: ``round`` (1 is
    the first, whole one), bytes sent and left to look at in the current
    round, the last round's rate (bytes a second), the outage a last
    round would take at that rate (``estimated_downtime``, seconds),
    ``settled`` once rounds stopped shrinking, the digests of the whole
    device once taken, and the error that made it fail.
    """
    push_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    phase = field(type=str, mandatory=True)
    round = field(type=int, mandatory=True, initial=0)
    bytes_sent = field(type=int, mandatory=True, initial=0)
    bytes_left = field(type=int, mandatory=True, initial=0)
    last_round_bytes = optional(int)
    rate = optional(float)
    estimated_downtime = optional(float)
    settled = field(type=bool, mandatory=True, initial=False)
    source_digest = optional(str)
    target_digest = optional(str)
    error = optional(str)


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
    # The devices of volumes pushed into here (``NodeDesired.incoming``),
    # by dataset id: never data until their push completes.
    incoming = pmap_field(str, Device)
    # How far the pushes this node takes part in are, by dataset id.
    pushes = pmap_field(str, PushProgress)


class Step(PClass):
    """
    One state change as reports show it: its ``kind`` (``stop``,
    ``unmount``, ``detach``, ``create``, ``attach``, ``mkfs``, ``mount``,
    ``grow``, ``growfs``, ``start``, ``ready``), the dataset it belongs to
    and, where it has one, the application.
    """
    kind = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    application = optional(str)


class RunningStep(PClass):
    """
    A change running now, since ``since`` (seconds since the epoch), and
    what it waits for while it runs (None when it waits for nothing).
    """
    step = field(type=Step, mandatory=True)
    since = field(type=float, mandatory=True)
    waiting_for = optional(str)


class FinishedStep(PClass):
    """
    A change that ran to its end: how long it took and when it ended.
    """
    step = field(type=Step, mandatory=True)
    seconds = field(type=float, mandatory=True)
    finished_at = field(type=float, mandatory=True)


class StepError(PClass):
    """
    The last failure of a dataset's change: the error's ``kind`` (its
    type), its ``message`` for a person, how many attempts failed in a row
    and when the next one is due (seconds since the epoch).
    """
    step = field(type=Step, mandatory=True)
    kind = field(type=str, mandatory=True)
    message = field(type=str, mandatory=True)
    attempts = field(type=int, mandatory=True, initial=1)
    retry_at = optional(float)


class Waiting(PClass):
    """
    A dataset that cannot go on yet and why: ``reason`` is one of
    ``agents.plan``'s wait reasons (``held elsewhere``, ...), ``detail``
    the sentence for a person, ``holder`` the node holding its volume
    where that is the reason.
    """
    dataset_id = field(type=str, mandatory=True)
    application = optional(str)
    reason = field(type=str, mandatory=True)
    detail = field(type=str, mandatory=True)
    holder = optional(str)


class Progress(PClass):
    """
    How far a node's convergence is on the slice of ``generation``: the
    changes running now (one per dataset at most), the datasets waiting
    and why, the last error of each failing dataset, the changes finished
    since the slice's datasets or applications last changed, and
    ``trouble`` when the node itself cannot be looked at.
    """
    converged = field(type=bool, mandatory=True)
    generation = field(type=int, mandatory=True, initial=-1)
    running = pvector_field(RunningStep)
    waiting = pvector_field(Waiting)
    errors = pvector_field(StepError)
    finished = pvector_field(FinishedStep)
    trouble = optional(str)


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

