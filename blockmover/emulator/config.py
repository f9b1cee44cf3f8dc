"""
The emulator's configuration: who may log in, which projects and servers
exist (and on which compute host each runs), quotas, latencies, faults at
start and the command told when a server's power changes. Read from a
small YAML file; everything has a default so ``blockmover-cloud serve``
runs without one.
"""

import copy
import uuid

import yaml

# Fixed namespace so servers, projects and users keep their ids across
# restarts of the emulator without storing them.
_NAMESPACE = uuid.UUID("0b7e3f0c-5d0e-4d0c-8f3a-2f6a7c1e9d55")

# stop and start: how long Nova takes to power a server off or on (it
# waits up to shutdown_timeout, 60 s by default, for a clean shutdown).
DEFAULT_LATENCY = {"create": 0.2, "attach": 2.0, "detach": 2.0,
                   "extend": 0.5, "delete": 0.2, "stop": 2.0, "start": 2.0}

# Nova's rpc_response_timeout: how long a call that needs a compute service
# that is down waits before it fails.
DEFAULT_RPC_TIMEOUT = 60.0

DEFAULT_QUOTAS = {"volumes": 10, "gigabytes": 1000,
                  "per_volume_gigabytes": -1}

DEFAULT = {
    # One region, or several: "regions: [RegionOne, RegionTwo]" (then
    # "region" is not read). Each has its own volumes, servers and quotas.
    "region": "RegionOne",
    "regions": None,
    "availability_zone": "nova",
    "domain": "Default",
    "projects": {"demo": {}},
    "users": {"demo": {"password": "demo-password", "project": "demo"}},
    "servers": {"node1": {}, "node2": {}},
    # Nova's max_disk_devices_to_attach; None is unlimited.
    "max_disk_devices": None,
    "quotas": DEFAULT_QUOTAS,
    "latency": DEFAULT_LATENCY,
    "token_lifetime": 3600,
    "admin_token": None,
    "faults": {},
    "rpc_timeout": DEFAULT_RPC_TIMEOUT,
    # argv run, with "off"|"on", the server's name and id appended, when a
    # server is powered off or on (see power.py); None runs nothing.
    "power_command": None,
}


class ConfigError(Exception):
    """
    The emulator's configuration file is unreadable or wrong; the message
    names the file and what to fix.
    """


def default_host(server_name):
    """
    The compute host of a server whose config names none.
    """
    return "compute-%s" % (server_name,)


def stable_id(kind, name, hex_only=False):
    """
    A UUID derived from ``kind`` and ``name``: the same on every run.
    Keystone ids are 32 hex digits, Nova's are dashed UUIDs.
    """
    value = uuid.uuid5(_NAMESPACE, "%s/%s" % (kind, name))
    return value.hex if hex_only else str(value)


class EmulatorConfig(object):
    """
    The parsed configuration. Attributes: ``regions`` (names, the first
    the default), ``region`` (the first, or the one region of a config
    from ``in_region``), ``regions_of`` ({server id: its region}),
    ``availability_zone``, ``domain``, ``projects`` ({name: id}),
    ``users`` ({name: {"id", "password", "project", "admin"}}), ``servers``
    ({id: name}), ``hosts`` ({server id: its compute host}),
    ``max_disk_devices``, ``quotas``, ``latency``, ``token_lifetime``,
    ``admin_token``, ``faults`` (raw data for ``faults.Faults``),
    ``rpc_timeout`` (seconds), ``power_command`` (an argv list or None).
    """

    def __init__(self, data, source="<default>"):
        merged = dict(DEFAULT)
        merged.update(data or {})
        self.source = source
        regions = merged["regions"] or [merged["region"]]
        if isinstance(regions, str):
            regions = [regions]
        if not isinstance(regions, list) or not all(
                isinstance(r, str) and r for r in regions):
            raise ConfigError("%s: regions must be a list of region names, "
                              "e.g. [RegionOne, RegionTwo]" % (source,))
        if len(set(regions)) != len(regions):
            raise ConfigError("%s: regions names a region twice: %s"
                              % (source, ", ".join(regions)))
        self.regions = list(regions)
        self.region = self.regions[0]
        self.availability_zone = str(merged["availability_zone"])
        self.domain = str(merged["domain"])
        self.projects = {}
        for name, spec in (merged["projects"] or {}).items():
            spec = spec or {}
            self.projects[str(name)] = str(
                spec.get("id") or stable_id("project", name, hex_only=True))
        self.users = {}
        for name, spec in (merged["users"] or {}).items():
            spec = spec or {}
            if "password" not in spec:
                raise ConfigError("%s: user %r has no password: add "
                                  "'password: ...'" % (source, name))
            project = str(spec.get("project", next(iter(self.projects), "")))
            if project not in self.projects:
                raise ConfigError("%s: user %r names project %r, which is "
                                  "not under 'projects:'"
                                  % (source, name, project))
            self.users[str(name)] = {
                "id": stable_id("user", name, hex_only=True),
                "password": str(spec["password"]),
                "project": project,
                # Cinder's admin-only actions (os-reset_status,
                # os-force_detach) need the admin role.
                "admin": bool(spec.get("admin", False)),
            }
        servers = merged["servers"] or {}
        if isinstance(servers, list):
            servers = {name: {} for name in servers}
        self.servers = {}
        self.hosts = {}
        self.regions_of = {}
        for name, spec in servers.items():
            spec = spec or {}
            server_id = str(spec.get("id") or stable_id("server", name))
            self.servers[server_id] = str(name)
            region = str(spec.get("region") or self.region)
            if region not in self.regions:
                raise ConfigError("%s: server %r is in region %r, which is "
                                  "not under 'regions:' (%s)" % (
                                      source, name, region,
                                      ", ".join(self.regions)))
            self.regions_of[server_id] = region
            # Its own compute host unless told to share one, so a host's
            # service going down concerns that server alone.
            self.hosts[server_id] = str(spec.get("host")
                                        or default_host(name))
        self.max_disk_devices = merged["max_disk_devices"]
        self.quotas = dict(DEFAULT_QUOTAS)
        self.quotas.update(merged["quotas"] or {})
        self.latency = dict(DEFAULT_LATENCY)
        self.latency.update(merged["latency"] or {})
        for key, value in self.latency.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError("%s: latency %s must be a number of "
                                  "seconds >= 0" % (source, key))
        self.token_lifetime = int(merged["token_lifetime"])
        self.admin_token = merged["admin_token"]
        self.faults = merged["faults"] or {}
        self.rpc_timeout = merged["rpc_timeout"]
        if (not isinstance(self.rpc_timeout, (int, float))
                or self.rpc_timeout < 0):
            raise ConfigError("%s: rpc_timeout must be a number of seconds "
                              ">= 0" % (source,))
        command = merged["power_command"]
        if isinstance(command, str):
            command = [command]
        if command is not None and (
                not command
                or not all(isinstance(word, str) for word in command)):
            raise ConfigError("%s: power_command must be a command as a "
                              "list of strings, e.g. [/usr/local/bin/power, "
                              "--cluster, demo]" % (source,))
        self.power_command = list(command) if command else None

    def in_region(self, region):
        """
        The config as the region ``region`` sees it: its own servers and
        their hosts only, ``region`` set to it.
        """
        if region not in self.regions:
            raise ConfigError("%s: no region %r; the regions are %s"
                              % (self.source, region,
                                 ", ".join(self.regions)))
        view = copy.copy(self)
        view.region = region
        view.servers = {sid: name for sid, name in self.servers.items()
                        if self.regions_of[sid] == region}
        view.hosts = {sid: host for sid, host in self.hosts.items()
                      if sid in view.servers}
        view.regions_of = {sid: region for sid in view.servers}
        return view

    def server_id(self, name):
        """
        The Nova id of the server called ``name``, or None.
        """
        for server_id, server_name in self.servers.items():
            if server_name == name:
                return server_id
        return None

    def find_server(self, name_or_id):
        """
        The id of the server with that id or name, or None.
        """
        if name_or_id in self.servers:
            return name_or_id
        return self.server_id(name_or_id)

    def __repr__(self):
        # Never show passwords or the admin token.
        return "<EmulatorConfig %s: %d users, %d servers in %s>" % (
            self.source, len(self.users), len(self.servers),
            ", ".join(self.regions))


def load_config(path):
    """
    The configuration in the YAML file at ``path``, or the default when
    ``path`` is None.

    :raise ConfigError: the file cannot be read or is not valid.
    """
    if path is None:
        return EmulatorConfig({})
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError("cannot read emulator config %s: %s" % (path, e))
    if data is not None and not isinstance(data, dict):
        raise ConfigError("%s: expected a mapping at the top level" % (path,))
    return EmulatorConfig(data, source=path)
