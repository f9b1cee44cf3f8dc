"""
The admin API, for tests and demos, under ``/admin`` on the emulator's own
port. Who may call it: when the config sets ``admin_token``, requests
carrying it in ``X-Admin-Token``; otherwise only clients on a loopback
address.

``GET /admin/faults``            the faults in force (remaining counts)
``PUT /admin/faults``            replace them (body: see faults.py); 200
``DELETE /admin/faults``         clear them; 200
``GET /admin/counters``          ``{"counters": {"GET /v3/{project}/volumes/detail": N, ...}}``
``POST /admin/counters/reset``   zero them; 200
``GET /admin/volumes``           ``{"volumes": [{"id", "status", "size",
                                 "server_id", "loop", "path"}]}``
``GET /admin/servers``           ``{"servers": [{"id", "name", "host",
                                 "status", "vm_state", "task_state",
                                 "power_state", "compute_service"}]}``:
                                 what each server's owner needs to know
                                 (power_state 1 running, 4 shut down)
``POST /admin/servers/{server}/reset-state``
                                 ``{"state": "error"|"active"}``, as Nova's
                                 os-resetState: the vm_state changes, the
                                 power does not; 200 with the server
``GET /admin/services``          ``{"services": [{"host", "binary",
                                 "state", "forced_down", "servers"}]}``
``PUT /admin/services/{host}``   ``{"forced_down": true|false}``, as Nova's
                                 os-services: the host's compute service
                                 goes down (or comes back); 200 with it

``GET /admin/regions``            ``{"regions": [name, ...]}``, the first
                                 the default

``{server}`` is a server's id or name; ``{host}`` a compute host, or a
server's id or name for its host.

Each region has its own faults, counters, volumes, servers and services:
the paths above address the first region, and the same paths under
``/admin/regions/{region}`` (``/admin/regions/RegionTwo/faults``) address
any region.
"""

import collections
import hmac
import ipaddress

from blockmover.emulator.compute import RESET_STATES
from blockmover.emulator.errors import ApiError
from blockmover.emulator.faults import FaultError
from blockmover.emulator.routing import Reply

PREFIX = "/admin"


class Counters(object):
    """
    Requests per endpoint key (method and path template).
    """

    def __init__(self):
        self.counts = collections.Counter()

    def count(self, key):
        self.counts[key] += 1

    def to_data(self):
        return dict(self.counts)

    def reset(self):
        self.counts.clear()


class Admin(object):
    """
    The admin API of one region: its config view, ``store`` (a
    ``RegionStore``), faults, counters and compute.
    """

    def __init__(self, config, store, faults, counters, compute):
        self.config = config
        self.store = store
        self.faults = faults
        self.counters = counters
        self.compute = compute

    def authorize(self, call):
        """
        :raise ApiError: 403 unless the caller may use the admin API.
        """
        token = self.config.admin_token
        if token:
            given = call.headers.get("x-admin-token", "")
            if hmac.compare_digest(str(token).encode(), given.encode()):
                return
            raise ApiError(403, "Send the admin token from the emulator's "
                                "config in the X-Admin-Token header.")
        try:
            loopback = ipaddress.ip_address(call.client_address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ApiError(403, "The admin API answers only loopback "
                                "clients unless admin_token is set in the "
                                "emulator's config.")

    def get_faults(self, call):
        return Reply(200, {"faults": self.faults.to_data()})

    def put_faults(self, call):
        try:
            self.faults.replace(call.body or {})
        except FaultError as e:
            raise ApiError(400, str(e))
        return Reply(200, {"faults": self.faults.to_data()})

    def clear_faults(self, call):
        self.faults.replace({})
        return Reply(200, {"faults": {}})

    def get_counters(self, call):
        return Reply(200, {"counters": self.counters.to_data()})

    def reset_counters(self, call):
        self.counters.reset()
        return Reply(200, {"counters": {}})

    def volumes(self, call):
        result = []
        for volume in self.store.volumes.values():
            attachment = volume.get("attachment") or {}
            result.append({"id": volume["id"], "status": volume["status"],
                           "size": volume["size"],
                           "server_id": attachment.get("server_id"),
                           "loop": attachment.get("loop"),
                           "path": self.store.volume_path(volume["id"])})
        return Reply(200, {"volumes": result})

    def _server(self, call):
        server_id = self.config.find_server(call.params["server"])
        if server_id is None:
            raise ApiError(404, "No server %s: the config's servers are %s."
                           % (call.params["server"], ", ".join(
                               sorted(self.config.servers.values()))))
        return server_id

    def servers(self, call):
        return Reply(200, {"servers": [
            self.compute.describe(server_id)
            for server_id in sorted(self.config.servers,
                                    key=self.config.servers.get)]})

    def reset_state(self, call):
        server_id = self._server(call)
        state = (call.body or {}).get("state")
        if state not in RESET_STATES:
            raise ApiError(400, "Send {\"state\": \"error\"} or "
                                "{\"state\": \"active\"}.")
        d = self.compute.reset_state(server_id, state)
        return d.addCallback(lambda _: Reply(200, {
            "server": self.compute.describe(server_id)}))

    def services(self, call):
        return Reply(200, {"services": [
            self.compute.describe_service(host)
            for host in self.compute.hosts()]})

    def force_down(self, call):
        host = call.params["host"]
        if host not in self.compute.hosts():
            server_id = self.config.find_server(host)
            if server_id is None:
                raise ApiError(404, "No compute host or server %s: the "
                                    "hosts are %s." % (host, ", ".join(
                                        self.compute.hosts())))
            host = self.compute.host(server_id)
        forced_down = (call.body or {}).get("forced_down")
        if not isinstance(forced_down, bool):
            raise ApiError(400, "Send {\"forced_down\": true} or "
                                "{\"forced_down\": false}.")
        d = self.compute.force_down(host, forced_down)
        return d.addCallback(lambda _: Reply(200, {
            "service": self.compute.describe_service(host)}))


def region_path(region):
    """
    Where the admin API of ``region`` lives (None: the first region's).
    """
    if region is None:
        return PREFIX
    return "%s/regions/%s" % (PREFIX, region)


def add_routes(router, admin, prefix=PREFIX):
    table = [
        ("GET", "/faults", admin.get_faults),
        ("PUT", "/faults", admin.put_faults),
        ("DELETE", "/faults", admin.clear_faults),
        ("GET", "/counters", admin.get_counters),
        ("POST", "/counters/reset", admin.reset_counters),
        ("GET", "/volumes", admin.volumes),
        ("GET", "/servers", admin.servers),
        ("POST", "/servers/{server}/reset-state", admin.reset_state),
        ("GET", "/services", admin.services),
        ("PUT", "/services/{host}", admin.force_down),
    ]
    for method, path, handler in table:
        router.add(method, prefix + path, handler, "admin", auth=False)
