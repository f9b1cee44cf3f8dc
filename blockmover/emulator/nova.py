"""
Nova of one region: version discovery, servers (the cluster's nodes, from the config)
with their power (``os-stop``, ``os-start``; see compute.py), flavors, and
``os-volume_attachments``, which reserve a volume and hand it to the
lifecycle to become a loop device.

Nova's refusals, as it words them: an action or attachment change in a
vm_state or task state that forbids it is 409 ``Cannot '<action>' instance
<id> while it is in vm_state <state>`` (or ``task_state``); a detach from
a server whose compute service is down is 409 ``Service is unavailable at
this time.``; an attach to one waits for the compute service as long as
Nova's RPC timeout (``rpc_timeout``) and fails with a 500.
"""

import string
import uuid

from twisted.internet.task import deferLater

from blockmover.emulator.errors import ApiError, bad_request, not_found
from blockmover.emulator.keystone import COMPUTE_PATH
from blockmover.emulator.lifecycle import now_text
from blockmover.emulator.routing import Reply

PREFIX = "/compute"

CREATED = "2024-01-01T00:00:00Z"

# The vm_states from which Nova lets a volume be attached or detached
# (nova.compute.api, attach_volume and detach_volume); of those the
# emulator has, ERROR is not one.
VOLUME_CHANGE_STATES = ("active", "paused", "stopped", "resized",
                        "soft-delete", "shelved", "shelved_offloaded")
# The vm_states Nova's stop and start are allowed from.
STOP_STATES = ("active", "error")
START_STATES = ("stopped",)

COMPUTE_DOWN = "Service is unavailable at this time."
# What Nova answers when a call to a compute service times out.
RPC_TIMED_OUT = (
    "Unexpected API Error. Please report this at "
    "http://bugs.launchpad.net/nova/ and attach the Nova API log if "
    "possible.\n<class 'oslo_messaging.exceptions.MessagingTimeout'>")


def _version(base_url):
    return {"id": "v2.1", "status": "CURRENT", "version": "2.104",
            "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": base_url + COMPUTE_PATH + "/"}]}


class Nova(object):
    """
    The compute API of one region over its config's servers and
    ``store``'s volumes (a ``RegionStore``): a volume of another region is
    not found, as Cinder there does not know it. ``prefix`` is the
    region's path before ``/compute``.
    """

    def __init__(self, config, store, lifecycle, compute, clock, prefix=""):
        self.config = config
        self.store = store
        self.lifecycle = lifecycle
        self.compute = compute
        self.clock = clock
        self.prefix = prefix

    def versions(self, call):
        return Reply(300, {"versions": [_version(call.base_url
                                                 + self.prefix)]})

    def version(self, call):
        return Reply(200, {"version": _version(call.base_url + self.prefix)})

    def _server_id(self, call):
        server_id = call.params["server"]
        if server_id not in self.config.servers:
            raise not_found("Instance %s could not be found." % (server_id,))
        return server_id

    def _attached(self, server_id):
        # Nova's block device mappings: from the reservation until the
        # detach completes.
        return sorted((v for v in self.store.volumes.values()
                       if (v.get("attachment") or {}).get("server_id")
                       == server_id),
                      key=lambda v: v["attachment"]["device"])

    def _check_state(self, server_id, action, vm_states):
        """
        :raise ApiError: 409 as Nova words it, unless the server is in one
            of ``vm_states`` with no task under way.
        """
        record = self.compute.server(server_id)
        for attribute, allowed in (("vm_state", vm_states),
                                   ("task_state", (None,))):
            if record[attribute] not in allowed:
                raise ApiError(409, "Cannot '%s' instance %s while it is in "
                                    "%s %s" % (action, server_id, attribute,
                                               record[attribute]))

    def _render_server(self, call, server_id):
        link = "%s%s%s/servers/%s" % (call.base_url, self.prefix,
                                      COMPUTE_PATH, server_id)
        power = self.compute.server(server_id)
        return {
            "id": server_id, "name": self.config.servers[server_id],
            "status": self.compute.status(server_id),
            "tenant_id": call.project(),
            "user_id": call.auth["user"], "metadata": {},
            "hostId": uuid.uuid5(uuid.NAMESPACE_URL, server_id).hex,
            "image": "", "flavor": {"id": "1", "links": []},
            "created": CREATED, "updated": power["updated"] or CREATED,
            "addresses": {},
            "accessIPv4": "", "accessIPv6": "",
            "links": [{"rel": "self", "href": link},
                      {"rel": "bookmark", "href": link}],
            "OS-DCF:diskConfig": "MANUAL", "progress": 0,
            "OS-EXT-AZ:availability_zone": self.config.availability_zone,
            "config_drive": "", "key_name": None,
            "OS-SRV-USG:launched_at": CREATED,
            "OS-SRV-USG:terminated_at": None,
            "OS-EXT-STS:task_state": power["task_state"],
            "OS-EXT-STS:vm_state": power["vm_state"],
            "OS-EXT-STS:power_state": power["power_state"],
            "os-extended-volumes:volumes_attached": [
                {"id": v["id"], "delete_on_termination": False}
                for v in self._attached(server_id)],
            "locked": False, "tags": [], "description": None,
        }

    def server(self, call):
        return Reply(200, {"server": self._render_server(
            call, self._server_id(call))})

    def servers_detail(self, call):
        return Reply(200, {"servers": [self._render_server(call, sid)
                                       for sid in sorted(self.config.servers)]})

    def servers(self, call):
        return Reply(200, {"servers": [
            {"id": s["id"], "name": s["name"], "links": s["links"]}
            for s in self.servers_detail(call).body["servers"]]})

    def action(self, call):
        """
        ``POST /servers/{id}/action``: ``{"os-stop": null}`` or
        ``{"os-start": null}``, 202 with no body once the task state is
        set; the status follows (see compute.py).
        """
        server_id = self._server_id(call)
        body = call.body
        if not isinstance(body, dict) or not body:
            raise bad_request("Malformed request body")
        name = next(iter(body))
        actions = {"os-stop": ("stop", STOP_STATES),
                   "os-start": ("start", START_STATES)}
        if name not in actions:
            raise bad_request("There is no such action: %s" % (name,))
        unexpected = sorted(set(body) - {name})
        if unexpected:
            raise bad_request("Additional properties are not allowed (%s "
                              "%s unexpected)" % (
                                  ", ".join(repr(k) for k in unexpected),
                                  "was" if len(unexpected) == 1 else "were"))
        operation, allowed = actions[name]
        self._check_state(server_id, operation, allowed)
        return self.compute.begin(server_id, operation).addCallback(
            lambda _: Reply(202))

    def flavors_detail(self, call):
        return Reply(200, {"flavors": [{
            "id": "1", "name": "m1.small", "ram": 2048, "vcpus": 1,
            "disk": 20, "swap": "", "OS-FLV-EXT-DATA:ephemeral": 0,
            "os-flavor-access:is_public": True, "rxtx_factor": 1.0,
            "OS-FLV-DISABLED:disabled": False, "description": None,
            "extra_specs": {}, "links": []}]})

    def flavors(self, call):
        return Reply(200, {"flavors": [{"id": "1", "name": "m1.small",
                                        "links": [], "description": None}]})

    def _render_attachment(self, volume):
        attachment = volume["attachment"]
        return {"volumeId": volume["id"],
                "serverId": attachment["server_id"],
                "device": attachment["device"], "tag": None,
                "delete_on_termination": False,
                "attachment_id": attachment["attachment_id"],
                "bdm_uuid": attachment["bdm_uuid"]}

    def attachments(self, call):
        server_id = self._server_id(call)
        return Reply(200, {"volumeAttachments": [
            self._render_attachment(v) for v in self._attached(server_id)]})

    def _attachment_of(self, call):
        server_id = self._server_id(call)
        volume_id = call.params["volume"]
        volume = self.store.volumes.get(volume_id)
        if (volume is None or volume["project_id"] != call.project()
                or (volume.get("attachment") or {}).get("server_id")
                != server_id):
            raise not_found("Instance %s is not attached to volume %s"
                            % (server_id, volume_id))
        return volume

    def attachment(self, call):
        return Reply(200, {"volumeAttachment": self._render_attachment(
            self._attachment_of(call))})

    def _free_device(self, server_id):
        used = {v["attachment"]["device"] for v in self._attached(server_id)}
        # vda is the root disk.
        for letter in string.ascii_lowercase[1:]:
            device = "/dev/vd" + letter
            if device not in used:
                return device
        raise ApiError(403, "The maximum allowed number of disk devices "
                            "(%d) to attach to a single instance has been "
                            "exceeded." % (len(used),))

    def attach(self, call):
        server_id = self._server_id(call)
        spec = (call.body or {}).get("volumeAttachment")
        if not isinstance(spec, dict) or not spec.get("volumeId"):
            raise bad_request("Invalid input for field/attribute "
                              "volumeAttachment.")
        self._check_state(server_id, "attach_volume", VOLUME_CHANGE_STATES)
        volume_id = spec["volumeId"]
        volume = self.store.volumes.get(volume_id)
        if volume is None or volume["project_id"] != call.project():
            raise not_found("Volume %s could not be found." % (volume_id,))
        attachment = volume.get("attachment")
        if attachment:
            raise bad_request("Invalid volume: volume %s is already attached "
                              "to instances: %s"
                              % (volume_id, attachment["server_id"]))
        if volume["status"] != "available":
            raise bad_request("Invalid volume: volume '%s' status must be "
                              "'available'. Currently in '%s'"
                              % (volume_id, volume["status"]))
        if not self.compute.service_up(server_id):
            # Nova asks the server's compute service to reserve a device
            # and waits for an answer that never comes.
            def timed_out():
                raise ApiError(500, RPC_TIMED_OUT)
            return deferLater(self.clock, self.config.rpc_timeout,
                              timed_out)
        limit = self.config.max_disk_devices
        if limit is not None and len(self._attached(server_id)) >= limit:
            raise ApiError(403, "The maximum allowed number of disk devices "
                                "(%d) to attach to a single instance has "
                                "been exceeded." % (limit,))
        volume["attachment"] = {
            "attachment_id": str(uuid.uuid4()),
            "bdm_uuid": str(uuid.uuid4()),
            "server_id": server_id,
            "device": self._free_device(server_id),
            "attached_at": None,
            "loop": None,
        }
        volume["status"] = "reserved"
        volume["updated_at"] = now_text(self.clock)
        self.lifecycle.attach(volume)
        reply = Reply(200, {"volumeAttachment": {
            "id": volume_id, "serverId": server_id, "volumeId": volume_id,
            "device": volume["attachment"]["device"], "tag": None,
            "delete_on_termination": False}})
        return self.store.save().addCallback(lambda _: reply)

    def detach(self, call):
        volume = self._attachment_of(call)
        server_id = volume["attachment"]["server_id"]
        self._check_state(server_id, "detach_volume", VOLUME_CHANGE_STATES)
        if not self.compute.service_up(server_id):
            # Nova refuses at once rather than send the compute service a
            # detach it would never act on (since 2020, Nova bug 1909120).
            raise ApiError(409, COMPUTE_DOWN)
        if volume["status"] == "detaching":
            return Reply(202)
        if volume["status"] != "in-use":
            raise ApiError(409, "Cannot 'detach_volume' while volume %s is "
                                "in status %s; wait until it is in-use."
                           % (volume["id"], volume["status"]))
        volume["status"] = "detaching"
        volume["updated_at"] = now_text(self.clock)
        self.lifecycle.detach(volume)
        return self.store.save().addCallback(lambda _: Reply(202))


def add_routes(router, nova, region=None):
    """
    The routes of ``nova``, under its region's prefix.
    """
    def add(method, path, handler, auth=True):
        router.add(method, nova.prefix + path, handler, "compute", auth=auth,
                   region=region)
    base = PREFIX + "/v2.1"
    add("GET", PREFIX, nova.versions, auth=False)
    add("GET", base, nova.version, auth=False)
    table = [
        ("GET", "/servers/detail", nova.servers_detail),
        ("GET", "/servers", nova.servers),
        ("GET", "/servers/{server}", nova.server),
        ("POST", "/servers/{server}/action", nova.action),
        ("GET", "/flavors/detail", nova.flavors_detail),
        ("GET", "/flavors", nova.flavors),
        ("GET", "/servers/{server}/os-volume_attachments", nova.attachments),
        ("POST", "/servers/{server}/os-volume_attachments", nova.attach),
        ("GET", "/servers/{server}/os-volume_attachments/{volume}",
         nova.attachment),
        ("DELETE", "/servers/{server}/os-volume_attachments/{volume}",
         nova.detach),
    ]
    for method, path, handler in table:
        add(method, base + path, handler)
