"""
Where a local cluster's parts live and what they are called: a pure
function of the cluster's name, its subnet, its state directory and how
many replicas its control service runs.
"""

import hashlib
import os.path
import re

from pyrsistent import PClass, field, pmap_field, pvector_field

from blockmover.backends import BACKENDS
from blockmover.control import DEFAULT_PORT
from blockmover.localcluster import ClusterError

DEFAULT_NAME = "demo"
DEFAULT_SUBNET = "10.77.0"
# Like a slow real cloud (a healthy Cinder attach takes seconds).
DEFAULT_LATENCY = 2.0
DEFAULT_REFRESH_INTERVAL = 30.0
# Cinder's own default quota of volumes per project.
DEFAULT_VOLUME_QUOTA = 10
STATE_ROOT = "/var/lib/blockmover/cluster"
# Network-namespace files and the mount-namespace files live under /run so
# that a reboot forgets them, as the kernel forgets the namespaces.
RUN_ROOT = "/run/blockmover"
MAX_NODES = 200
# Linux limits interface names to 15 characters.
IFNAMSIZ = 15
# One control service with its file store, or replicas on an etcd cluster
# of as many members: an odd number, so that a majority survives the loss
# of one (of three) or two (of five).
CONTROL_REPLICAS = (1, 3, 5)
# Replica k has the address <subnet>.(REPLICA_TOP + 1 - k): from the top of
# the subnet down, where no node's (.11 to .210) ever is.
REPLICA_TOP = 254
# etcd member k listens on the bridge's address, for clients at the control
# service's port + ETCD_CLIENT_PORTS + k and for its peers at the port +
# ETCD_PEER_PORTS + k: beside the emulator's (the port + 1), away from
# etcd's usual 2379 and 2380, which a system etcd may hold.
ETCD_CLIENT_PORTS = 10
ETCD_PEER_PORTS = 20

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_SUBNET = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


class NodeLayout(PClass):
    """
    One node: its network namespace, the host end of its veth pair, its
    address, its mount-namespace file and its agent's files.
    """
    name = field(type=str, mandatory=True)
    netns = field(type=str, mandatory=True)
    veth = field(type=str, mandatory=True)
    address = field(type=str, mandatory=True)
    mount_ns = field(type=str, mandatory=True)
    agent_config = field(type=str, mandatory=True)
    agent_state_dir = field(type=str, mandatory=True)
    agent_log = field(type=str, mandatory=True)
    # The node's site, in a cluster of several ("" in a cluster of one).
    site = field(type=str, mandatory=True, initial="")

    @property
    def netns_path(self):
        return "/run/netns/" + self.netns

    @property
    def tls_dir(self):
        """
        The agent's TLS files (its node's certificate and key, the CA's
        certificate), beside its agent.yml as on a real node; readable by
        root only.
        """
        return os.path.join(os.path.dirname(self.agent_config), "tls")


class ReplicaLayout(PClass):
    """
    One replica of the control service, in a cluster of several: its name
    (``control1``..., also its ``--replica-name`` and the key its process
    is recorded under in the state file), its network namespace and the
    host end of its veth pair (``ip link set dev VETH down`` cuts it off
    from etcd, the agents and the other replicas), its address and the
    URL it serves and advertises at, its state directory, its log
    (``--log``) and the file its stdout and stderr go to (``output``).
    """
    name = field(type=str, mandatory=True)
    netns = field(type=str, mandatory=True)
    veth = field(type=str, mandatory=True)
    address = field(type=str, mandatory=True)
    url = field(type=str, mandatory=True)
    state_dir = field(type=str, mandatory=True)
    log = field(type=str, mandatory=True)
    output = field(type=str, mandatory=True)

    @property
    def netns_path(self):
        return "/run/netns/" + self.netns


class EtcdMemberLayout(PClass):
    """
    One member of the etcd cluster the replicas keep their state in: its
    name (``etcd1``..., also the key its process is recorded under), the
    URLs it serves clients and peers at (on the bridge's address), its
    data directory, its TLS files' directory (its ``etcd`` certificate,
    key and the CA's certificate; readable by root only) and the file its
    output (etcd's log) goes to.
    """
    name = field(type=str, mandatory=True)
    client_url = field(type=str, mandatory=True)
    peer_url = field(type=str, mandatory=True)
    data_dir = field(type=str, mandatory=True)
    tls_dir = field(type=str, mandatory=True)
    output = field(type=str, mandatory=True)


# cluster.yml's default lease (blockmover.model.DEFAULT_LEASE).
DEFAULT_LEASE = 20.0


class ClusterLayout(PClass):
    """
    The whole local cluster: a bridge with the host's address, the nodes,
    the control service's address and files, the shared backend root.
    With the openstack backend, ``backend_root`` is the state directory of
    the OpenStack emulator the cluster runs on the host, at ``cloud_url``,
    with its files (config, clouds.yaml, admin token) in ``cloud_dir``.
    The cluster's own CA and the certificates it issued to the control
    service and the operator are under ``tls_dir``; each node's are in its
    ``tls_dir``.

    A cluster of several control replicas (``replicated``) has
    ``replicas``, each in a network namespace of its own on the bridge,
    and as many ``etcd_members`` on the host; the ``control_*`` fields
    then describe no process (``control_port`` is still every replica's
    port). A process's pid is in the state file
    (``state.load(layout.state_file).processes[KEY]``), under
    ``services.CONTROL``, ``services.agent_key(node)``, or a replica's or
    an etcd member's name.
    """
    name = field(type=str, mandatory=True)
    subnet = field(type=str, mandatory=True)
    state_dir = field(type=str, mandatory=True)
    bridge = field(type=str, mandatory=True)
    bridge_address = field(type=str, mandatory=True)
    mount_ns_dir = field(type=str, mandatory=True)
    backend_root = field(type=str, mandatory=True)
    control_port = field(type=int, mandatory=True)
    control_state_dir = field(type=str, mandatory=True)
    control_log = field(type=str, mandatory=True)
    cluster_yml = field(type=str, mandatory=True)
    logs_dir = field(type=str, mandatory=True)
    nodes = pvector_field(NodeLayout)
    backend = field(type=str, mandatory=True, initial="loopback")
    attach_latency = field(type=float, mandatory=True,
                           initial=DEFAULT_LATENCY)
    detach_latency = field(type=float, mandatory=True,
                           initial=DEFAULT_LATENCY)
    refresh_interval = field(type=float, mandatory=True,
                             initial=DEFAULT_REFRESH_INTERVAL)
    # openstack: how many volumes the emulated project may hold.
    volume_quota = field(type=int, mandatory=True,
                         initial=DEFAULT_VOLUME_QUOTA)
    # Seconds a node's lease lasts (cluster.yml's cluster.lease).
    lease = field(type=float, mandatory=True, initial=DEFAULT_LEASE)
    # Site name -> the backend it runs on (loopback: a root of its own;
    # openstack: a region of the emulated cloud named after the site), for
    # a cluster of several sites; empty for one site of ``backend``.
    sites = pmap_field(str, str)
    # Empty for one control service (with its file store).
    replicas = pvector_field(ReplicaLayout)
    etcd_members = pvector_field(EtcdMemberLayout)
    # The replicas' election times, cluster.yml's cluster.election (lease,
    # renew_deadline, retry); empty for the defaults.
    election = pmap_field(str, float)

    @property
    def replicated(self):
        """
        Whether the control service runs as replicas on etcd.
        """
        return len(self.replicas) > 0

    @property
    def control_replicas(self):
        return len(self.replicas) or 1

    @property
    def control_urls(self):
        """
        The URL of every control service the cluster runs: the one's, or
        each replica's.
        """
        if self.replicated:
            return [replica.url for replica in self.replicas]
        return [self.control_url]

    @property
    def control(self):
        """
        What clients are given to reach the control service, as
        cluster.yml's and agent.yml's ``control:`` say it: the one's URL,
        or the list of the replicas'.
        """
        if self.replicated:
            return self.control_urls
        return self.control_url

    @property
    def control_option(self):
        """
        The control service as ``--control`` takes it: URL[,URL...].
        """
        return ",".join(self.control_urls)

    @property
    def control_addresses(self):
        """
        The addresses the control service's certificate is for: the
        bridge's (the one service's), and every replica's.
        """
        return [self.bridge_address] + [replica.address
                                        for replica in self.replicas]

    @property
    def etcd_endpoints(self):
        """
        The etcd members' client URLs, as ``blockmover-control --etcd``
        takes them (joined by commas).
        """
        return [member.client_url for member in self.etcd_members]

    @property
    def etcd_initial_cluster(self):
        return ",".join("%s=%s" % (member.name, member.peer_url)
                        for member in self.etcd_members)

    @property
    def etcd_token(self):
        # The cluster's members talk to no other etcd cluster's.
        return "blockmover-" + self.name

    @property
    def host_netns(self):
        """
        The name under which a cluster of replicas keeps the host's own
        network namespace in /run/netns: a replica's fence command (``cluster
        power off``) enters it to cut a node's link, which is the host's.
        """
        return "bm-%s-host" % (self.name,)

    @property
    def host_netns_path(self):
        return "/run/netns/" + self.host_netns

    def site_backend(self, site):
        """
        The backend (name) of ``site`` ("" for the one site).
        """
        return self.sites[site] if site else self.backend

    def site_root(self, site):
        """
        The loopback root of ``site`` ("" for the one site).
        """
        if not site:
            return self.backend_root
        return os.path.join(self.state_dir, "sites", site)

    @property
    def loopback_roots(self):
        """
        Every directory whose files loop devices of this cluster may use:
        the backend's (or the emulator's) and each loopback site's.
        """
        return [self.backend_root] + [
            self.site_root(site) for site, backend in sorted(
                self.sites.items()) if backend == "loopback"]

    @property
    def uses_cloud(self):
        """
        Whether the cluster runs the emulated cloud (a site, or its one
        backend, on openstack).
        """
        if self.sites:
            return "openstack" in self.sites.values()
        return self.backend == "openstack"

    @property
    def control_url(self):
        """
        The one control service's URL.

        :raise ClusterError: the cluster runs replicas: they have a URL
            each (``control_urls``, ``control``).
        """
        if self.replicated:
            raise ClusterError(
                "cluster %s runs %d control replicas, each at its own URL "
                "(%s): use them all" % (self.name, len(self.replicas),
                                        ", ".join(self.control_urls)))
        # The control service speaks only mutual TLS.
        return "https://%s:%d" % (self.bridge_address, self.control_port)

    @property
    def cloud_port(self):
        return self.control_port + 1

    @property
    def cloud_url(self):
        return "http://%s:%d" % (self.bridge_address, self.cloud_port)

    @property
    def cloud_dir(self):
        return os.path.join(self.state_dir, "cloud")

    @property
    def clouds_yaml(self):
        return os.path.join(self.cloud_dir, "clouds.yaml")

    @property
    def tls_dir(self):
        """
        Everything of the cluster's TLS but the nodes' files, readable by
        root only: the CA (``ca_dir``), the control service's files
        (``control_tls_dir``) and the operator's (``operator_tls_dir``).
        """
        return os.path.join(self.state_dir, "tls")

    @property
    def ca_dir(self):
        return os.path.join(self.tls_dir, "ca")

    @property
    def control_tls_dir(self):
        return os.path.join(self.tls_dir, "control")

    @property
    def operator_tls_dir(self):
        """
        The operator's certificate, key and the CA's certificate: what
        ``blockmover-deploy --tls-dir`` (or ``BLOCKMOVER_TLS_DIR``) is
        given to talk to this cluster.
        """
        return os.path.join(self.tls_dir, "operator")

    @property
    def state_file(self):
        return os.path.join(self.state_dir, "cluster.json")

    def node(self, name):
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError("the cluster %s has no node %r; it has %s"
                           % (self.name, name,
                              ", ".join(n.name for n in self.nodes)))

    def replica(self, name):
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise ClusterError("the cluster %s has no control replica %r; it "
                           "has %s" % (self.name, name, ", ".join(
                               r.name for r in self.replicas) or "none"))


def _tag(name):
    # Interface names are short: a long cluster name becomes a stable hash.
    if len(name) <= 7:
        return name
    return hashlib.sha1(name.encode("ascii")).hexdigest()[:7]


def check_name(name):
    if not _NAME.match(name):
        raise ClusterError(
            "cluster name %r is not usable: use lowercase letters, digits "
            "and dashes, starting with a letter, at most 31 characters"
            % (name,))
    return name


def check_subnet(subnet):
    match = _SUBNET.match(subnet)
    if not match or any(int(octet) > 255 for octet in match.groups()):
        raise ClusterError(
            "subnet %r is not usable: give the first three octets of a /24, "
            "e.g. 10.77.0" % (subnet,))
    return subnet


def default_state_dir(name):
    return os.path.join(STATE_ROOT, name)


def make_layout(name=DEFAULT_NAME, nodes=2, subnet=DEFAULT_SUBNET,
                state_dir=None, control_port=DEFAULT_PORT,
                backend="loopback", attach_latency=DEFAULT_LATENCY,
                detach_latency=DEFAULT_LATENCY,
                refresh_interval=DEFAULT_REFRESH_INTERVAL,
                volume_quota=DEFAULT_VOLUME_QUOTA, lease=None, sites=(),
                control_replicas=1, election=None):
    """
    The layout of the cluster ``name`` with ``nodes`` nodes, named
    ``node1`` ... ``nodeN``, node k at ``<subnet>.(10 + k)`` and the host's
    bridge at ``<subnet>.1``, on ``backend`` (loopback, or openstack: an
    emulated cloud whose attach and detach take the latencies given, in
    seconds). The control service lists the backend every
    ``refresh_interval`` seconds when nothing asks sooner. The emulated
    project may hold ``volume_quota`` volumes. A node whose agent is not
    heard from for ``lease`` seconds (default ``DEFAULT_LEASE``) is fenced:
    powered off by ``blockmover cluster power`` (loopback) or by stopping
    its server in the emulator (openstack).

    ``sites``, pairs of (site name, backend name) for a cluster of several
    sites, puts node k in the k-th site round the list: a loopback site
    has a root of its own, an openstack site is the emulated cloud's
    region of its name.

    ``control_replicas`` (1, 3 or 5): one control service on the host's
    bridge address with its file store, or that many replicas on an etcd
    cluster of as many members; replica k (``controlK``) in a network
    namespace of its own at ``<subnet>.(255 - k)``, etcd member k
    (``etcdK``) on the bridge's address at ports of its own (see
    ``ETCD_CLIENT_PORTS``). ``election`` (``lease``, ``renew_deadline``,
    ``retry``) goes into cluster.yml's ``cluster.election``.

    :raise ClusterError: a name, subnet, node count, backend or latency
        that cannot work.
    """
    check_name(name)
    check_subnet(subnet)
    if backend not in BACKENDS:
        raise ClusterError("a local cluster runs on %s, not %r"
                           % (" or ".join(BACKENDS), backend))
    for what, value in (("attach latency", attach_latency),
                        ("detach latency", detach_latency)):
        if not 0 <= value <= 600:
            raise ClusterError("the %s is 0 to 600 seconds, not %r"
                               % (what, value))
    if not refresh_interval > 0:
        raise ClusterError("the refresh interval must be more than 0 "
                           "seconds, not %r" % (refresh_interval,))
    if not 1 <= volume_quota <= 10000:
        raise ClusterError("the volume quota is 1 to 10000 volumes, not %r"
                           % (volume_quota,))
    lease = DEFAULT_LEASE if lease is None else float(lease)
    if not 1 <= lease <= 3600:
        raise ClusterError("the lease is 1 to 3600 seconds, not %r"
                           % (lease,))
    if not 1 <= nodes <= MAX_NODES:
        raise ClusterError("a local cluster has 1 to %d nodes, not %d"
                           % (MAX_NODES, nodes))
    sites = list(sites)
    for site, site_backend in sites:
        if not _NAME.match(site):
            raise ClusterError(
                "site name %r is not usable: use lowercase letters, digits "
                "and dashes, starting with a letter" % (site,))
        if site_backend not in BACKENDS:
            raise ClusterError("site %s runs on %s, not %r"
                               % (site, " or ".join(BACKENDS), site_backend))
    if len({site for site, _ in sites}) != len(sites):
        raise ClusterError("each site is named once, not %s"
                           % (", ".join(site for site, _ in sites),))
    if len(sites) == 1:
        raise ClusterError("a cluster of sites has two or more; for one, "
                           "leave --sites out")
    if sites and nodes < len(sites):
        raise ClusterError("%d sites need at least %d nodes, one each"
                           % (len(sites), len(sites)))
    if control_replicas not in CONTROL_REPLICAS:
        raise ClusterError(
            "a local cluster runs 1, 3 or 5 control replicas, not %r: one "
            "with its file store, or an odd number on as many etcd members, "
            "so that a majority outlives one lost (or two of five)"
            % (control_replicas,))
    state_dir = os.path.abspath(state_dir or default_state_dir(name))
    tag = _tag(name)
    run_dir = os.path.join(RUN_ROOT, name)
    node_layouts = []
    for k in range(1, nodes + 1):
        node = "node%d" % (k,)
        node_dir = os.path.join(state_dir, "nodes", node)
        node_layouts.append(NodeLayout(
            name=node,
            netns="bm-%s-%s" % (name, node),
            veth="bm-%s-n%d" % (tag, k),
            address="%s.%d" % (subnet, 10 + k),
            mount_ns=os.path.join(run_dir, "mnt", node),
            agent_config=os.path.join(node_dir, "agent.yml"),
            agent_state_dir=os.path.join(node_dir, "state"),
            agent_log=os.path.join(state_dir, "logs", "agent-%s.log"
                                   % (node,)),
            site=sites[(k - 1) % len(sites)][0] if sites else "",
        ))
    replicas, members = _replicas(name, tag, subnet, state_dir, control_port,
                                  control_replicas)
    layout = ClusterLayout(
        name=name,
        subnet=subnet,
        state_dir=state_dir,
        bridge="bm-%s" % (tag,),
        bridge_address="%s.1" % (subnet,),
        mount_ns_dir=os.path.join(run_dir, "mnt"),
        backend_root=os.path.join(state_dir, "backend"),
        control_port=control_port,
        control_state_dir=os.path.join(state_dir, "control"),
        control_log=os.path.join(state_dir, "logs", "control.log"),
        cluster_yml=os.path.join(state_dir, "cluster.yml"),
        logs_dir=os.path.join(state_dir, "logs"),
        nodes=node_layouts,
        backend=backend,
        attach_latency=float(attach_latency),
        detach_latency=float(detach_latency),
        refresh_interval=float(refresh_interval),
        volume_quota=int(volume_quota),
        lease=lease,
        sites=dict(sites),
        replicas=replicas,
        etcd_members=members,
        election={k: float(v) for k, v in (election or {}).items()},
    )
    for iface in [layout.bridge] + [n.veth for n in layout.nodes] + [
            r.veth for r in layout.replicas]:
        assert len(iface) <= IFNAMSIZ, iface
    return layout


def _replicas(name, tag, subnet, state_dir, control_port, count):
    """
    The ``ReplicaLayout`` and ``EtcdMemberLayout`` lists of ``count``
    control replicas: none for one control service.
    """
    if count == 1:
        return [], []
    if control_port + ETCD_PEER_PORTS + count > 65535:
        raise ClusterError("etcd's members listen at ports up to %d above "
                           "the control service's: give a --port up to %d"
                           % (ETCD_PEER_PORTS + count,
                              65535 - ETCD_PEER_PORTS - count))
    logs_dir = os.path.join(state_dir, "logs")
    bridge_address = "%s.1" % (subnet,)
    replicas = []
    members = []
    for k in range(1, count + 1):
        replica = "control%d" % (k,)
        address = "%s.%d" % (subnet, REPLICA_TOP + 1 - k)
        replicas.append(ReplicaLayout(
            name=replica,
            netns="bm-%s-%s" % (name, replica),
            veth="bm-%s-c%d" % (tag, k),
            address=address,
            url="https://%s:%d" % (address, control_port),
            state_dir=os.path.join(state_dir, "replicas", replica),
            log=os.path.join(logs_dir, replica + ".log"),
            output=os.path.join(logs_dir, replica + ".out"),
        ))
        member = "etcd%d" % (k,)
        members.append(EtcdMemberLayout(
            name=member,
            client_url="https://%s:%d" % (
                bridge_address, control_port + ETCD_CLIENT_PORTS + k),
            peer_url="https://%s:%d" % (
                bridge_address, control_port + ETCD_PEER_PORTS + k),
            data_dir=os.path.join(state_dir, "etcd", member),
            tls_dir=os.path.join(state_dir, "tls", "etcd", member),
            output=os.path.join(logs_dir, member + ".out"),
        ))
    return replicas, members
