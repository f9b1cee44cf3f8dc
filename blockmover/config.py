"""
The one place that knows the configuration files: ``cluster.yml`` and
``app.yml`` (together a ``Deployment``) and each node's ``agent.yml``.

Every mistake is a ``ConfigError`` naming the file, line and key, raised
before anything changes.
"""

import re
import threading

from pyrsistent import PClass, field

from blockmover import configfields, mountpoints
from blockmover.backends import BACKENDS
from blockmover.model import (
    DEFAULT_FENCE_DEADLINE, DEFAULT_FENCE_RETRIES, DEFAULT_LEASE,
    DEFAULT_READY_DEADLINE, FENCE_BACKEND, FENCE_COMMAND, FENCE_METHODS,
    FENCE_NONE, Application, BackendConfig, Deployment, ElectionTiming,
    Failover, Fencing, FILESYSTEMS, Limits, Node, Port, Push, ReadyCheck,
    SINGLE_SITE, VolumeSpec, optional, other_urls,
)
from blockmover.units import GiB
from blockmover.yamlsource import ConfigError, Source, join

__all__ = ["ConfigError", "AgentConfig", "load_deployment", "load_files",
           "load_cluster_control", "load_agent_config", "load_agent_file",
           "is_secrets", "is_fence_command", "DEFAULT_VOLUME_SIZE"]

# The size of a volume whose ``maximum_size`` is not given (as in Flocker).
DEFAULT_VOLUME_SIZE = GiB
DEFAULT_STATE_DIR = "/var/lib/blockmover/agent"
DEFAULT_BACKEND = "loopback"

_LIMIT_SIZES = ("min_size", "max_size", "region_size")
_LIMIT_COUNTS = ("volumes_per_node", "region_volumes")

# Flocker's v1 application keys that mean nothing to blockmover's process
# runtime; accepted so that existing Flocker configs load, and ignored.
_FLOCKER_IGNORED = ("links", "restart_policy", "mem_limit", "cpu_shares")
_APPLICATION_KEYS = ("command", "image", "ports", "environment",
                     "secrets", "volume", "ready",
                     "failover") + _FLOCKER_IGNORED
_READY_KEYS = ("tcp", "command", "deadline")
_FAILOVER_KEYS = ("to", "automatic")
_CLUSTER_KEYS = ("name", "control", "backend", "sites", "push",
                 "mountpoints_under", "allow_loader_environment", "lease",
                 "fencing", "election")
_ELECTION_KEYS = ("lease", "renew_deadline", "retry")
_SITE_KEYS = ("backend",)
_PUSH_KEYS = ("bandwidth", "port")
_FENCING_KEYS = ("method", "command", "deadline", "retries")
# The backends that can power a node off (``IFencesNodes``), for
# ``fencing: {method: backend}``.
_FENCING_BACKENDS = ("openstack",)
# A lease shorter than a second would lapse on a busy but live node; one
# longer than an hour leaves a dead node's applications down for that long.
_LEASE_BOUNDS = (1.0, 3600.0)

# Variables that change which code a program loads (the dynamic loader's,
# glibc's iconv modules, Python's module path): refused in an
# application's environment unless the cluster allows them.
_LOADER_VARIABLE = re.compile(r"LD_.*|GCONV_PATH|PYTHONPATH|PYTHONHOME")


def load_deployment(cluster_text, app_text, cluster_path="cluster.yml",
                    app_path="app.yml"):
    """
    The ``Deployment`` that ``cluster.yml`` and ``app.yml`` (given as text)
    describe; ``ConfigError`` naming the file and line of the first mistake.
    """
    cluster_src = Source(cluster_text, cluster_path)
    app_src = _APP_YML.source(app_text, app_path)
    cluster = _read_cluster(cluster_src)
    applications = _APP_YML.applications(app_src)
    nodes = _read_nodes(cluster_src, cluster["sites"])
    placement = _read_placement(cluster_src, nodes, applications, app_path)
    _check_mountpoints(app_src, placement, applications)
    _check_places(app_src, cluster, applications)
    _check_environment(app_src, cluster, applications)
    _check_ports(app_src, placement, applications)
    _check_failover(app_src, nodes, applications, cluster_src.path)
    return Deployment(cluster_name=cluster["name"],
                      control_url=cluster["control"][0],
                      other_control_urls=cluster["control"][1:],
                      backend=cluster["backend"], nodes=nodes,
                      applications=applications, placement=placement,
                      lease=cluster["lease"], fencing=cluster["fencing"],
                      sites=cluster["sites"], push=cluster["push"],
                      election=cluster["election"])


class _LastRead(object):
    """
    The last ``app.yml`` read, kept: a change of placement sends the same
    applications again, and on a large cluster they take a second to read.
    What is kept is read-only (the ``Source`` and the ``Application``
    records), so threads may share it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        # ((text, path), Source, {name: Application} or None)
        self._last = (None, None, None)

    def source(self, text, path):
        """
        The ``Source`` of the ``app.yml`` ``text``.

        :raise ConfigError: it is not YAML blockmover reads.
        """
        with self._lock:
            key, src, _ = self._last
        if key == (text, path):
            return src
        src = Source(text, path)
        src.let_go_of_nodes()
        with self._lock:
            self._last = ((text, path), src, None)
        return src

    def applications(self, src):
        """
        ``{name: Application}`` of ``src`` (from ``source``).

        :raise ConfigError: as ``_read_applications``.
        """
        with self._lock:
            key, last, applications = self._last
        if last is src and applications is not None:
            return applications
        applications = _read_applications(src)
        with self._lock:
            if self._last[1] is src:
                self._last = (key, src, applications)
        return applications


_APP_YML = _LastRead()


def load_files(cluster_path, app_path):
    """
    ``load_deployment`` of two files; a file that cannot be read is a
    ``ConfigError`` too.
    """
    return load_deployment(_read_file(cluster_path), _read_file(app_path),
                           cluster_path, app_path)


def load_cluster_control(path):
    """
    The cluster's name and its control service's URLs (a tuple: one per
    replica), from the ``cluster.yml`` at ``path`` alone: for the tools
    that only ask the control service (``blockmover status``). Its
    ``cluster:`` is checked as a deploy checks it.

    :raise ConfigError: it cannot be read, or its ``cluster:`` is wrong.
    """
    cluster = _read_cluster(Source(_read_file(path), path))
    return cluster["name"], cluster["control"]


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(path, None, None, "cannot read it (%s); check the "
                          "path" % (e.strerror or e,))


# --- cluster.yml ---------------------------------------------------------

def _read_cluster(src):
    data = src.data
    configfields.version(src, data)
    configfields.mapping(src, None, data, ("version", "cluster", "nodes",
                                           "deployment"), ("cluster", "nodes"))
    cluster = configfields.mapping(src, "cluster", data["cluster"],
                                   _CLUSTER_KEYS, ("name", "control"))
    sites = _read_sites(src, "cluster.sites", cluster.get("sites"))
    if sites and cluster.get("backend") is not None:
        raise src.error("cluster.backend", "a cluster with sites names each "
                        "site's backend under cluster.sites; remove "
                        "cluster.backend")
    if sites:
        backend = sites[sorted(sites)[0]]
    else:
        backend = _read_backend(src, "cluster.backend",
                                cluster.get("backend"), limits=True)
    # Fencing must work in every site: read against a backend that cannot
    # power nodes off if any site's cannot.
    names = sorted({b.name for b in (sites or {None: backend}).values()})
    fencing = _read_fencing(
        src, "cluster.fencing", cluster.get("fencing"),
        next((n for n in names if n not in _FENCING_BACKENDS), names[0]))
    return {
        "name": configfields.name(src, "cluster.name", cluster["name"],
                                  "cluster"),
        "control": configfields.urls(src, "cluster.control",
                                     cluster["control"]),
        "backend": backend,
        "mountpoints_under": _read_mountpoints_under(
            src, "cluster.mountpoints_under",
            cluster.get("mountpoints_under")),
        "allow_loader_environment": configfields.boolean(
            src, "cluster.allow_loader_environment",
            cluster.get("allow_loader_environment", False)),
        "lease": configfields.seconds(
            src, "cluster.lease", cluster.get("lease", DEFAULT_LEASE),
            *_LEASE_BOUNDS, example="20"),
        "fencing": fencing,
        "sites": sites,
        "push": _read_push(src, "cluster.push", cluster.get("push")),
        "election": _read_election(src, "cluster.election",
                                   cluster.get("election")),
    }


def _read_election(src, key, value):
    """
    ``cluster.election``: the times of the election of the control
    service's leader, when it runs as several replicas on etcd
    (``lease``, ``renew_deadline``, ``retry``, in seconds).
    """
    if value is None:
        return ElectionTiming()
    value = configfields.mapping(src, key, value, _ELECTION_KEYS,
                                 empty_ok=True)
    times = {name: configfields.seconds(src, join(key, name), value[name],
                                        0.1, 3600.0, example)
             for name, example in (("lease", "15"), ("renew_deadline", "10"),
                                   ("retry", "2"))
             if value.get(name) is not None}
    timing = ElectionTiming()
    times = dict(lease=times.get("lease", timing.lease),
                 renew_deadline=times.get("renew_deadline",
                                          timing.renew_deadline),
                 retry=times.get("retry", timing.retry))
    if not 0 < times["retry"] < times["renew_deadline"] < times["lease"]:
        raise src.error(key, "retry (%g) must be shorter than renew_deadline"
                        " (%g), and renew_deadline shorter than lease (%g): a"
                        " leader stops before its lease can end, and tries "
                        "to renew it several times first"
                        % (times["retry"], times["renew_deadline"],
                           times["lease"]))
    return ElectionTiming(**times)


def election_of(cluster_text, cluster_path="cluster.yml"):
    """
    The ``ElectionTiming`` of a ``cluster.yml`` (its text), for a replica
    about to campaign. :raise ConfigError: it cannot be read.
    """
    return _read_cluster(Source(cluster_text, cluster_path))["election"]


def _read_sites(src, key, value):
    """
    ``{site: BackendConfig}`` of ``cluster.sites`` (empty when absent):
    each site names its own backend, with its own limits.
    """
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise src.error(key, "must map each site's name to its backend, "
                        "such as '{east: {backend: {name: loopback, root: "
                        "/var/lib/blockmover/east}}}', or be left out for "
                        "one site of cluster.backend")
    sites = {}
    seen = {}
    for name, site in value.items():
        site_key = join(key, name)
        configfields.name(src, site_key, name, "site")
        site = configfields.mapping(src, site_key, site, _SITE_KEYS,
                                    ("backend",))
        backend = _read_backend(src, join(site_key, "backend"),
                                site["backend"], limits=True)
        where = (backend.name, tuple(sorted(
            (k, v) for k, v in backend.options.items()
            if k in ("root", "cloud", "region"))))
        if where in seen:
            raise src.error(join(site_key, "backend"), "sites %s and %s "
                            "name the same backend; each site is a backend "
                            "of its own (another root, cloud or region)"
                            % (seen[where], name))
        seen[where] = name
        sites[name] = backend
    return sites


def _read_push(src, key, value):
    """
    ``cluster.push``: ``bandwidth`` (bytes a second one push may send,
    such as 100M) and ``port`` (where agents receive pushes).
    """
    if value is None:
        return Push()
    value = configfields.mapping(src, key, value, _PUSH_KEYS, empty_ok=True)
    push = {}
    if value.get("bandwidth") is not None:
        push["bandwidth"] = configfields.size(src, join(key, "bandwidth"),
                                              value["bandwidth"])
    if value.get("port") is not None:
        push["port"] = configfields.integer(src, join(key, "port"),
                                            value["port"], high=65535,
                                            example="4524")
    return Push(**push)


def is_fence_command(path):
    """
    Whether ``path`` (a tuple of keys from the top of ``cluster.yml``) is
    the fence command: it may carry a fence device's password, so it is
    never shown back.
    """
    return tuple(path[:3]) == ("cluster", "fencing", "command")


def _read_fencing(src, key, value, backend_name):
    """
    The cluster's ``Fencing``: ``method`` backend (the backend powers the
    node off; the default where the backend can), command (the operator's
    fence command) or none (nodes are only confirmed down by an operator;
    the default elsewhere).
    """
    default = (FENCE_BACKEND if backend_name in _FENCING_BACKENDS
               else FENCE_NONE)
    if value is None:
        return Fencing(method=default)
    value = configfields.mapping(src, key, value, _FENCING_KEYS,
                                 ("method",))
    method = value["method"]
    if method not in FENCE_METHODS:
        raise src.error(join(key, "method"), "unknown fencing method %r; use"
                        " backend (the backend powers the node's server "
                        "off), command (your fence command) or none"
                        % (method,))
    if method == FENCE_BACKEND and backend_name not in _FENCING_BACKENDS:
        raise src.error(join(key, "method"), "the %s backend cannot power "
                        "a node off; use method: command with your fence "
                        "command, or method: none and confirm failed nodes "
                        "down with blockmover node confirm-down"
                        % (backend_name,))
    command = []
    if method == FENCE_COMMAND:
        if value.get("command") is None:
            raise src.error(key, "method command needs 'command': the "
                            "command that powers a node off, given the "
                            "node's name and address after it, such as "
                            "[/usr/local/bin/fence-node]")
        command = configfields.command(src, join(key, "command"),
                                       value["command"])
        if not command:
            raise src.error(join(key, "command"), "is empty; give the "
                            "command that powers a node off")
    elif "command" in value:
        raise src.error(join(key, "command"), "is used by method command "
                        "only; remove it or set method: command")
    return Fencing(
        method=method, command=command,
        deadline=configfields.seconds(
            src, join(key, "deadline"),
            value.get("deadline", DEFAULT_FENCE_DEADLINE), 1.0, 3600.0,
            example="60"),
        retries=configfields.integer(
            src, join(key, "retries"),
            value.get("retries", DEFAULT_FENCE_RETRIES), low=0, high=100,
            example="3"))


def _read_mountpoints_under(src, key, value):
    """
    The directories volumes may be mounted in (a path or a list of paths),
    normalized; None when the cluster does not restrict them.
    """
    if value is None:
        return None
    paths = value if isinstance(value, list) else [value]
    if not paths:
        raise src.error(key, "is an empty list; name the directories "
                        "volumes may be mounted in, such as /srv/data, or "
                        "remove the key")
    return [mountpoints.normalize(configfields.absolute_path(
        src, join(key, i) if isinstance(value, list) else key, path,
        root_ok=True)) for i, path in enumerate(paths)]


def _read_backend(src, key, value, limits):
    """
    A ``BackendConfig``: ``name``, ``limits`` (in cluster.yml only) and
    any other key as a string option for the backend.
    """
    if value is None:
        return BackendConfig(name=DEFAULT_BACKEND)
    if not isinstance(value, dict):
        raise src.error(key, "must be a mapping with 'name' (%s) and the "
                        "backend's options" % (", ".join(BACKENDS),))
    backend = value.get("name", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        raise src.error(join(key, "name"), "unknown backend %r; use one of %s"
                        % (backend, ", ".join(BACKENDS)))
    options = {}
    result_limits = Limits()
    for option, option_value in value.items():
        option_key = join(key, option)
        if option == "name":
            continue
        if option == "limits" and limits:
            result_limits = _read_limits(src, option_key, option_value)
            continue
        configfields.name(src, option_key, option, "option")
        options[option] = configfields.option(src, option_key, option_value)
    return BackendConfig(name=backend, options=options, limits=result_limits)


def _read_limits(src, key, value):
    value = configfields.mapping(src, key, value, _LIMIT_SIZES + _LIMIT_COUNTS,
                                 empty_ok=True)
    limits = {}
    for name, limit in value.items():
        if name in _LIMIT_SIZES:
            limits[name] = configfields.size(src, join(key, name), limit)
        else:
            limits[name] = configfields.integer(src, join(key, name), limit)
    if limits.get("min_size", 0) > limits.get("max_size", float("inf")):
        raise src.error(join(key, "min_size"), "min_size is above max_size; "
                        "make it smaller")
    return Limits(**limits)


def _read_nodes(src, sites):
    nodes = src.data["nodes"]
    if nodes is not None and not isinstance(nodes, dict):
        raise src.error("nodes", "must map each node's name to its address, "
                        "such as 'node1: {address: 10.0.0.11}'")
    if not nodes:
        raise src.error("nodes", "the cluster has no nodes; name at least "
                        "one, such as 'node1: {address: 10.0.0.11}'")
    result = {}
    owners = {}
    for name, value in nodes.items():
        key = join("nodes", name)
        configfields.name(src, key, name, "node")
        value = configfields.mapping(src, key, value,
                                     ("address", "instance_id", "site"),
                                     ("address",))
        site = _read_node_site(src, join(key, "site"), value.get("site"),
                               sites)
        node = Node(name=name, site=site,
                    address=configfields.string(src, join(key, "address"),
                                                value["address"],
                                                "an address"),
                    instance_id=None if value.get("instance_id") is None
                    else configfields.string(src, join(key, "instance_id"),
                                             value["instance_id"],
                                             "a backend instance id"))
        # The backend knows a node only by this id: two nodes cannot share
        # it (not even in two sites: a volume's holder is told by it).
        if node.backend_id in owners:
            raise src.error(key, "node %s has the same backend id %r as node "
                            "%s; give each node its own instance_id"
                            % (name, node.backend_id, owners[node.backend_id]))
        owners[node.backend_id] = name
        result[name] = node
    return result


def _read_node_site(src, key, value, sites):
    """
    The site a node belongs to: one of ``cluster.sites``, required when
    there are sites; the one site otherwise.
    """
    if not sites:
        if value is not None:
            raise src.error(key, "cluster.yml names no cluster.sites; name "
                            "the sites there, each with its backend, or "
                            "remove the node's site")
        return SINGLE_SITE
    if value is None:
        raise src.error(key.rsplit(".", 1)[0], "says no site; give it one "
                        "of %s, such as 'site: %s'"
                        % (", ".join(sorted(sites)), sorted(sites)[0]))
    value = configfields.string(src, key, value, "a site")
    if value not in sites:
        raise src.error(key, "unknown site %r; use one of %s"
                        % (value, ", ".join(sorted(sites))))
    return value


def _read_placement(src, nodes, applications, app_path):
    deployment = src.data.get("deployment")
    if deployment is None:
        return {}
    if not isinstance(deployment, dict):
        raise src.error("deployment", "must map each node to a list of "
                        "applications, such as 'node1: [mongodb]'")
    placement = {}
    for node, apps in deployment.items():
        key = join("deployment", node)
        if node not in nodes:
            raise src.error(key, "unknown node %r; the nodes are %s"
                            % (node, ", ".join(sorted(nodes))))
        if apps is None:
            apps = []
        if not isinstance(apps, list):
            raise src.error(key, "must be a list of applications, such as "
                            "[mongodb] or []")
        for i, app in enumerate(apps):
            line = src.line(join(key, i))
            if not isinstance(app, str) or app not in applications:
                raise src.error(key, "unknown application %r; %s defines %s"
                                % (app, app_path,
                                   ", ".join(sorted(applications))
                                   or "none"), line)
            if app in placement:
                where = ("twice on %s" % (node,) if placement[app] == node
                         else "on %s and %s" % (placement[app], node))
                raise src.error(key, "%s is deployed %s; an application runs"
                                " on one node" % (app, where), line)
            placement[app] = node
    return placement


# --- app.yml -------------------------------------------------------------

def _read_applications(src):
    data = src.data
    configfields.version(src, data)
    configfields.mapping(src, None, data, ("version", "applications"),
                         ("applications",))
    apps = data["applications"]
    if apps is None:
        return {}
    if not isinstance(apps, dict):
        raise src.error("applications", "must map each application's name "
                        "to what it is, such as 'mongodb: {command: ...}'")
    return {name: _read_application(src, join("applications", name), name,
                                    value)
            for name, value in apps.items()}


def _read_application(src, key, name, value):
    configfields.name(src, key, name, "application")
    value = configfields.mapping(src, key, value, _APPLICATION_KEYS)
    command = (configfields.command(src, join(key, "command"),
                                    value["command"])
               if value.get("command") is not None else [])
    image = value.get("image")
    if image is not None:
        image = configfields.string(src, join(key, "image"), image,
                                    "an image name")
    if not command and image is None:
        raise src.error(key, "has neither 'command' nor 'image'; give the "
                        "command that runs it, such as [secantusd-py, "
                        "--port, \"27017\"]")
    environment = _read_environment(src, join(key, "environment"),
                                    value.get("environment"))
    secrets = _read_environment(src, join(key, "secrets"),
                                value.get("secrets"), secret=True)
    both = sorted(set(environment) & set(secrets))
    if both:
        raise src.error(
            join(join(key, "secrets"), both[0]), "%s is in both environment "
            "and secrets; keep it in one of them (in secrets if its value is "
            "secret)" % (both[0],))
    return Application(
        name=name, command=command, image=image,
        ports=_read_ports(src, join(key, "ports"), value.get("ports")),
        environment=environment, secrets=secrets,
        volume=_read_volume(src, join(key, "volume"), value.get("volume")),
        ready=_read_ready(src, join(key, "ready"), value.get("ready")),
        failover=_read_failover(src, join(key, "failover"),
                                value.get("failover")))


def _read_failover(src, key, value):
    """
    An application's ``failover``: the nodes it may go to when its node
    fails (``to``, in order) and whether it goes there by itself
    (``automatic``, false unless said).
    """
    if value is None:
        return None
    value = configfields.mapping(src, key, value, _FAILOVER_KEYS, ("to",))
    to = value["to"]
    if not isinstance(to, list) or not to:
        raise src.error(join(key, "to"), "must be a list of the nodes the "
                        "application may fail over to, in order, such as "
                        "[node2, node3]")
    for i, node in enumerate(to):
        configfields.name(src, join(join(key, "to"), i), node, "node")
        if node in to[:i]:
            raise src.error(join(join(key, "to"), i), "node %s is named "
                            "twice; name each node once" % (node,))
    return Failover(to=to, automatic=configfields.boolean(
        src, join(key, "automatic"), value.get("automatic", False)))


def _check_failover(app_src, nodes, applications, cluster_path):
    """
    Every failover candidate is a node of ``cluster.yml``.
    """
    for app in sorted(applications):
        failover = applications[app].failover
        if failover is None:
            continue
        for i, node in enumerate(failover.to):
            if node not in nodes:
                raise app_src.error(
                    join(join(join(join("applications", app), "failover"),
                              "to"), i),
                    "unknown node %r; %s names the nodes %s"
                    % (node, cluster_path, ", ".join(sorted(nodes))))


def is_secrets(path):
    """
    Whether ``path`` (a tuple of keys from the top of ``app.yml``) is an
    application's ``secrets``: the values under it are never shown back.
    """
    return (len(path) == 3 and path[0] == "applications"
            and path[2] == "secrets")


def _read_ready(src, key, value):
    if value is None:
        return None
    value = configfields.mapping(src, key, value, _READY_KEYS)
    if ("tcp" in value) == ("command" in value):
        raise src.error(key, "give either 'tcp' (a port on the node that "
                        "accepts connections once the application serves) "
                        "or 'command' (run on the node, exit 0 once it "
                        "serves), such as {tcp: 27017}")
    port = None
    command = []
    if "tcp" in value:
        port = configfields.integer(src, join(key, "tcp"), value["tcp"],
                                    high=65535, example="27017")
    else:
        command = configfields.command(src, join(key, "command"),
                                       value["command"])
        if not command:
            raise src.error(join(key, "command"), "is empty; give the "
                            "command that exits 0 once the application "
                            "serves")
    deadline = DEFAULT_READY_DEADLINE
    if "deadline" in value:
        deadline = float(configfields.integer(
            src, join(key, "deadline"), value["deadline"], high=86400,
            example="120"))
    return ReadyCheck(port=port, command=command, deadline=deadline)


def _read_ports(src, key, value):
    if value is None:
        return []
    if not isinstance(value, list):
        raise src.error(key, "must be a list such as "
                        "[{internal: 27017, external: 27017}]")
    ports = []
    for i, port in enumerate(value):
        port_key = join(key, i)
        port = configfields.mapping(src, port_key, port,
                                    ("internal", "external"),
                                    ("internal", "external"))
        ports.append(Port(**{
            side: configfields.integer(src, join(port_key, side), port[side],
                                       high=65535, example="27017")
            for side in ("internal", "external")}))
    return ports


def _read_environment(src, key, value, secret=False):
    """
    An application's ``environment`` or, if ``secret``, its ``secrets``:
    variable names and their string values. No message quotes a value, and
    none about ``secrets`` quotes a name that is not a variable name (it
    may be a value written in the wrong place).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise src.error(key, "must be a mapping of variable names to "
                        "strings, such as %s"
                        % ("{DB_PASSWORD: \"...\"}" if secret
                           else "{LANG: C.UTF-8}",))
    for variable, setting in value.items():
        if "=" in variable or "\0" in variable:
            if secret:
                raise src.error(key, "a name on this line is not a variable "
                                "name (it holds '=' or a NUL); write each "
                                "as 'NAME: value'",
                                line=src.line(join(key, variable)))
            raise src.error(join(key, variable), "%r is not a variable name"
                            % (variable,))
        if not isinstance(setting, str) or "\0" in setting:
            raise src.error(join(key, variable), "the value must be a "
                            "string; write it in quotes")
    return value


def _read_volume(src, key, value):
    if value is None:
        return None
    value = configfields.mapping(src, key, value,
                                 ("mountpoint", "maximum_size", "filesystem"),
                                 ("mountpoint",))
    filesystem = value.get("filesystem", "ext4")
    if filesystem not in FILESYSTEMS:
        raise src.error(join(key, "filesystem"), "filesystem %r is not "
                        "supported; use one of %s"
                        % (filesystem, ", ".join(FILESYSTEMS)))
    size = value.get("maximum_size")
    written = configfields.absolute_path(src, join(key, "mountpoint"),
                                         value["mountpoint"])
    mountpoint = _check_mountpoint(src, join(key, "mountpoint"), written)
    return VolumeSpec(
        mountpoint=mountpoint,
        size=DEFAULT_VOLUME_SIZE if size is None
        else configfields.size(src, join(key, "maximum_size"), size),
        filesystem=filesystem)


def _check_mountpoint(src, key, written, protected=()):
    """
    ``written`` (a mountpoint as the file has it) normalized, unless it is
    a system directory or blockmover's state (see ``mountpoints``).
    """
    refused = mountpoints.refusal(written, protected)
    if refused is not None:
        raise src.error(key, "mountpoint %r is refused: %s; mount the volume"
                        " in a directory of its own, such as /data/db"
                        % (written, refused))
    return mountpoints.normalize(written)


def _check_places(app_src, cluster, applications):
    """
    Every volume is mounted where the cluster allows: not on its loopback
    backend's own directory, and inside ``mountpoints_under`` if set.
    """
    protected = tuple(
        backend.options["root"]
        for backend in (cluster["sites"] or {None: cluster["backend"]})
        .values()
        if backend.name == "loopback" and "root" in backend.options)
    allowed = cluster["mountpoints_under"]
    for app in sorted(applications):
        volume = applications[app].volume
        if volume is None:
            continue
        key = join(join("applications", app), "volume.mountpoint")
        _check_mountpoint(app_src, key, volume.mountpoint, protected)
        if allowed is not None and not any(
                mountpoints.is_within(volume.mountpoint, directory)
                for directory in allowed):
            raise app_src.error(
                key, "%s is outside %s, the directories cluster.yml's "
                "cluster.mountpoints_under allows; mount the volume inside "
                "one of them, or add its directory there"
                % (volume.mountpoint, ", ".join(allowed)))


def _check_environment(app_src, cluster, applications):
    """
    No application's environment or secrets change which code its
    programs load, unless the cluster allows it.
    """
    if cluster["allow_loader_environment"]:
        return
    for app in sorted(applications):
        for kind in ("environment", "secrets"):
            for variable in sorted(getattr(applications[app], kind)):
                if not _LOADER_VARIABLE.fullmatch(variable):
                    continue
                raise app_src.error(
                    join(join(join("applications", app), kind), variable),
                    "%s changes which code the application's programs load,"
                    " and is refused unless cluster.yml allows it; remove "
                    "it, or set cluster.allow_loader_environment: true in "
                    "cluster.yml if it is meant" % (variable,))


def _check_ports(src, placement, applications):
    """
    Applications on one node cannot share an external port.
    """
    taken = {}
    for app in sorted(placement):
        node = placement[app]
        for i, port in enumerate(applications[app].ports):
            owner = taken.setdefault((node, port.external), app)
            if owner != app:
                raise src.error(
                    join(join(join("applications", app), "ports"), i),
                    "%s and %s both run on %s and both use external port %d;"
                    " give one another port" % (owner, app, node,
                                                port.external))


def _check_mountpoints(app_src, placement, applications):
    """
    Applications on one node cannot mount their volumes on the same path,
    nor one inside another.
    """
    seen = {}
    for app in sorted(placement):
        volume = applications[app].volume
        if volume is None:
            continue
        node = placement[app]
        for other, path in seen.get(node, []):
            inside = (volume.mountpoint + "/").startswith(path + "/") or \
                (path + "/").startswith(volume.mountpoint + "/")
            if inside:
                raise app_src.error(
                    join(join("applications", app), "volume.mountpoint"),
                    "%s and %s both run on %s and their mountpoints %s and %s"
                    " overlap; give each its own directory"
                    % (other, app, node, path, volume.mountpoint))
        seen.setdefault(node, []).append((app, volume.mountpoint))


# --- agent.yml -----------------------------------------------------------

class TLSConfig(PClass):
    """
    Where an agent's TLS files are (``blockmover.tls``): each path given,
    or else looked up in ``directory``, or else in the standard places.
    """
    directory = optional(str)
    ca = optional(str)
    certificate = optional(str)
    key = optional(str)


class MetricsConfig(PClass):
    """
    Where an agent serves its Prometheus metrics (``agents.metrics``):
    ``listen``, a Twisted ``tcp:`` server endpoint the agent adds its TLS
    to, and ``crl``, the CA's revocation list to refuse revoked scrapers
    with (none checked without it).
    """
    listen = field(type=str, mandatory=True)
    crl = optional(str)


class AgentConfig(PClass):
    """
    One node's ``agent.yml``: which node this is, where the control service
    is (``control``, and ``other_control_urls`` when it lists several
    replicas), where the agent keeps its state and log, how it reaches the
    backend, and where it serves its metrics (None: nowhere).
    """
    node = field(type=str, mandatory=True)
    control = field(type=str, mandatory=True)
    other_control_urls = other_urls()
    # The cluster this node belongs to; a slice of another is refused.
    cluster = optional(str)
    state_dir = field(type=str, mandatory=True, initial=DEFAULT_STATE_DIR)
    log = field(type=str, mandatory=True, initial="-")
    instance_id = optional(str)
    backend = field(type=BackendConfig, mandatory=True,
                    initial=BackendConfig(name=DEFAULT_BACKEND))
    tls = field(type=TLSConfig, mandatory=True, initial=TLSConfig())
    metrics = field(type=(MetricsConfig, type(None)), mandatory=True,
                    initial=None)

    @property
    def control_url(self):
        return self.control

    @property
    def control_urls(self):
        """
        The URLs of the control service's replicas (one for a service of
        one), as agent.yml lists them.
        """
        return (self.control,) + self.other_control_urls


def load_agent_config(text, path="agent.yml"):
    """
    The ``AgentConfig`` ``agent.yml`` (given as text) describes;
    ``ConfigError`` naming the line of the first mistake.
    """
    src = Source(text, path)
    data = src.data
    configfields.version(src, data)
    configfields.mapping(src, None, data,
                         ("version", "node", "cluster", "control",
                          "state_dir", "log", "instance_id", "backend",
                          "tls", "metrics"),
                         ("node", "control"))
    log = data.get("log", "-")
    if log != "-":
        configfields.absolute_path(src, "log", log)
    instance_id = data.get("instance_id")
    cluster = data.get("cluster")
    control = configfields.urls(src, "control", data["control"])
    return AgentConfig(
        node=configfields.name(src, "node", data["node"], "node"),
        cluster=None if cluster is None else configfields.name(
            src, "cluster", cluster, "cluster"),
        control=control[0],
        other_control_urls=control[1:],
        state_dir=_read_state_dir(src, "state_dir",
                                  data.get("state_dir", DEFAULT_STATE_DIR)),
        log=log,
        instance_id=None if instance_id is None else configfields.string(
            src, "instance_id", instance_id, "a backend instance id"),
        backend=_check_calls(src, _read_backend(
            src, "backend", data.get("backend"), limits=False)),
        tls=_read_tls(src, "tls", data.get("tls")),
        metrics=_read_metrics(src, "metrics", data.get("metrics")))


# A node's backend option saying its cloud calls go through the control
# service (it holds no cloud credentials): ``calls: control``.
CALLS_OPTION = "calls"
CALLS_THROUGH_CONTROL = "control"
# The backends whose attach is a cloud's, and can be asked for remotely.
_RELAYABLE = ("openstack",)


def _check_calls(src, backend):
    calls = backend.options.get(CALLS_OPTION)
    if calls is None:
        return backend
    key = join("backend", CALLS_OPTION)
    if calls != CALLS_THROUGH_CONTROL:
        raise src.error(key, "must be %r (the node's cloud calls go through "
                        "the control service) or left out"
                        % (CALLS_THROUGH_CONTROL,))
    if backend.name not in _RELAYABLE:
        raise src.error(key, "the %s backend attaches on the node itself; "
                        "only %s nodes make their calls through the control "
                        "service" % (backend.name, ", ".join(_RELAYABLE)))
    stray = sorted(set(backend.options) & {"cloud", "region"})
    if stray:
        raise src.error(key, "a node whose calls go through the control "
                        "service holds no cloud credentials: remove %s"
                        % (", ".join(stray),))
    return backend


def _read_tls(src, key, value):
    if value is None:
        return TLSConfig()
    configfields.mapping(src, key, value,
                         ("directory", "ca", "certificate", "key"))
    return TLSConfig(**{
        name: configfields.absolute_path(src, join(key, name), path)
        for name, path in value.items()})


def _read_metrics(src, key, value):
    if value is None:
        return None
    configfields.mapping(src, key, value, ("listen", "crl"), ("listen",))
    listen = configfields.string(
        src, join(key, "listen"), value["listen"],
        "a tcp: endpoint such as tcp:9524:interface=10.0.0.11")
    if not listen.startswith("tcp:"):
        raise src.error(join(key, "listen"), "must be a tcp: endpoint such "
                        "as tcp:9524:interface=10.0.0.11; the agent adds its "
                        "TLS itself")
    crl = value.get("crl")
    return MetricsConfig(
        listen=listen, crl=None if crl is None else
        configfields.absolute_path(src, join(key, "crl"), crl))


def _read_state_dir(src, key, value):
    """
    The agent's state directory: one of its own, since the agent makes it
    readable by root only.
    """
    configfields.absolute_path(src, key, value)
    if mountpoints.shared(value):
        raise src.error(key, "%s is a directory the system shares, and the "
                        "agent makes its state directory readable by root "
                        "only; give it one of its own, such as %s"
                        % (mountpoints.normalize(value), DEFAULT_STATE_DIR))
    return value


def load_agent_file(path):
    """
    ``load_agent_config`` of a file; a file that cannot be read is a
    ``ConfigError`` too.
    """
    return load_agent_config(_read_file(path), path)
