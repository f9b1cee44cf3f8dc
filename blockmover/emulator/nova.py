"""
Nova: version discovery, servers (the cluster's nodes, from the config),
flavors, and ``os-volume_attachments``, which reserve a volume and hand it
to the lifecycle to become a loop device.
"""

import string
import uuid

from blockmover.emulator.errors import ApiError, bad_request, not_found
from blockmover.emulator.keystone import COMPUTE_PATH
from blockmover.emulator.lifecycle import now_text
from blockmover.emulator.routing import Reply

PREFIX = "/compute"

CREATED = "2024-01-01T00:00:00Z"


def _version(base_url):
    return {"id": "v2.1", "status": "CURRENT", "version": "2.104",
            "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": base_url + COMPUTE_PATH + "/"}]}


class Nova(object):
    """
    The compute API over the config's servers and ``store``'s volumes.
    """

    def __init__(self, config, store, lifecycle, clock):
        self.config = config
        self.store = store
        self.lifecycle = lifecycle
        self.clock = clock

    def versions(self, call):
        return Reply(300, {"versions": [_version(call.base_url)]})

    def version(self, call):
        return Reply(200, {"version": _version(call.base_url)})

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

    def _render_server(self, call, server_id):
        link = "%s%s/servers/%s" % (call.base_url, COMPUTE_PATH, server_id)
        return {
            "id": server_id, "name": self.config.servers[server_id],
            "status": "ACTIVE", "tenant_id": call.project(),
            "user_id": call.auth["user"], "metadata": {},
            "hostId": uuid.uuid5(uuid.NAMESPACE_URL, server_id).hex,
            "image": "", "flavor": {"id": "1", "links": []},
            "created": CREATED, "updated": CREATED, "addresses": {},
            "accessIPv4": "", "accessIPv6": "",
            "links": [{"rel": "self", "href": link},
                      {"rel": "bookmark", "href": link}],
            "OS-DCF:diskConfig": "MANUAL", "progress": 0,
            "OS-EXT-AZ:availability_zone": self.config.availability_zone,
            "config_drive": "", "key_name": None,
            "OS-SRV-USG:launched_at": CREATED,
            "OS-SRV-USG:terminated_at": None,
            "OS-EXT-STS:task_state": None, "OS-EXT-STS:vm_state": "active",
            "OS-EXT-STS:power_state": 1,
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


def add_routes(router, nova):
    base = PREFIX + "/v2.1"
    router.add("GET", PREFIX, nova.versions, "compute", auth=False)
    router.add("GET", base, nova.version, "compute", auth=False)
    table = [
        ("GET", "/servers/detail", nova.servers_detail),
        ("GET", "/servers", nova.servers),
        ("GET", "/servers/{server}", nova.server),
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
        router.add(method, base + path, handler, "compute")
