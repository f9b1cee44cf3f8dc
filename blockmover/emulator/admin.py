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
"""

import collections
import hmac
import ipaddress

from blockmover.emulator.errors import ApiError
from blockmover.emulator.faults import FaultError
from blockmover.emulator.routing import Reply


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

    def __init__(self, config, store, faults, counters):
        self.config = config
        self.store = store
        self.faults = faults
        self.counters = counters

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


def add_routes(router, admin):
    table = [
        ("GET", "/admin/faults", admin.get_faults),
        ("PUT", "/admin/faults", admin.put_faults),
        ("DELETE", "/admin/faults", admin.clear_faults),
        ("GET", "/admin/counters", admin.get_counters),
        ("POST", "/admin/counters/reset", admin.reset_counters),
        ("GET", "/admin/volumes", admin.volumes),
    ]
    for method, path, handler in table:
        router.add(method, path, handler, "admin", auth=False)
