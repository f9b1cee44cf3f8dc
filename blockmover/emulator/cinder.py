"""
Cinder v3 of one region: version discovery, volumes (create, get, list
with filters, sorting and pagination, update, delete), metadata,
``os-extend``, the admin actions ``os-reset_status`` and
``os-force_detach``, limits and quota sets, each path with and without
``/{project_id}`` after ``/v3``. What Cinder refuses is refused with its
words, by the rules the openstack backend checks before sending
(``blockmover.backends.cinder_rules``).
"""

import ast
import datetime
import json
import uuid
from urllib.parse import urlencode

from blockmover.backends import cinder_rules
from blockmover.backends.cinder_rules import Refused
from blockmover.emulator.errors import ApiError, bad_request, not_found
from blockmover.emulator.lifecycle import now_text
from blockmover.emulator.routing import Reply

MAX_LIMIT = 1000

DELETABLE = ("available", "error", "error_restoring", "error_extending",
             "error_managing")

DELETE_REFUSED = (
    "Invalid volume: Volume status must be available or error or "
    "error_restoring or error_extending or error_managing and must not be "
    "migrating, attached, belong to a group, have snapshots, awaiting a "
    "transfer, or be disassociated from snapshots after volume transfer.")

SUMMARY_FILTERS = ("name", "status", "bootable", "availability_zone", "size")
TIME_FILTERS = ("created_at", "updated_at")
# Cinder honours updated_at=<op>:<time> from this microversion on (3.60
# is only where it was documented) and ignores it below.
TIME_FILTER_VERSION = (3, 31)

# The statuses os-reset_status may set.
RESET_STATUSES = ("available", "error", "creating", "deleting", "in-use",
                  "attaching", "detaching", "error_deleting", "maintenance",
                  "reserved", "error_extending", "extending")


def _refusal(error):
    # Cinder's 400 for what its schemas refuse.
    return bad_request(error.message)


def forbidden(policy):
    """
    Cinder's 403 for an action its policy keeps for admins.
    """
    return ApiError(403, "Policy doesn't allow %s to be performed."
                    % (policy,))


def versions_body(base_url):
    return {"versions": [{
        "id": "v3.0", "status": "CURRENT", "version": "3.71",
        "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "describedby", "type": "text/html",
                   "href": "https://docs.openstack.org/"},
                  {"rel": "self", "href": base_url + "/v3/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.volume+json;"
                                 "version=3"}],
    }]}


def _parse_time(text):
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


_COMPARE = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
}


def _time_filter(value):
    # "gte:2024-01-01T00:00:00Z" (several comma-separated), as Cinder takes.
    checks = []
    for part in value.split(","):
        op, _, moment = part.partition(":")
        if op not in _COMPARE or not moment:
            op, moment = "eq", part
        try:
            checks.append((_COMPARE[op], _parse_time(moment)))
        except ValueError:
            raise bad_request("Invalid filter: %s is not a valid time; use "
                              "<op>:<ISO 8601 time>" % (part,))
    return lambda text: text is not None and all(
        compare(_parse_time(text), moment) for compare, moment in checks)


def _metadata_filter(value):
    # Cinder literal-evals the value: "{'k': 'v'}".
    try:
        wanted = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        try:
            wanted = json.loads(value)
        except ValueError:
            return lambda metadata: False
    if not isinstance(wanted, dict):
        # Cinder finds no volume whose metadata is not a dictionary.
        return lambda metadata: False
    return lambda metadata: all(metadata.get(str(k)) == str(v)
                                for k, v in wanted.items())


class Cinder(object):
    """
    The block-storage API of one region over ``store``'s volumes (a
    ``RegionStore``), moving them through ``lifecycle``; ``prefix`` is the
    region's path before ``/v3``.
    """

    def __init__(self, config, store, lifecycle, clock, prefix=""):
        self.config = config
        self.store = store
        self.lifecycle = lifecycle
        self.clock = clock
        self.prefix = prefix

    # helpers
    def _project_of(self, call):
        project = call.project()
        asked = call.params.get("project")
        if asked is not None and asked != project:
            raise bad_request("Malformed request url")
        return project

    def _volume(self, call):
        project = self._project_of(call)
        volume_id = call.params["volume"]
        volume = self.store.volumes.get(volume_id)
        if volume is None or volume["project_id"] != project:
            raise not_found("Volume %s could not be found." % (volume_id,))
        return volume

    def _owned(self, project):
        return [v for v in self.store.volumes.values()
                if v["project_id"] == project]

    def quotas(self, project):
        limits = dict(self.config.quotas)
        limits.update(self.store.quotas.get(project, {}))
        return limits

    def usage(self, project):
        volumes = self._owned(project)
        return {"volumes": len(volumes),
                "gigabytes": sum(v["size"] for v in volumes)}

    def _check_quota(self, project, new_volumes, new_gigabytes, size):
        limits = self.quotas(project)
        used = self.usage(project)
        per_volume = limits.get("per_volume_gigabytes", -1)
        if per_volume >= 0 and size > per_volume:
            raise ApiError(413, "VolumeSizeExceedsLimit: Requested volume "
                                "size %dG is larger than maximum allowed "
                                "limit %dG." % (size, per_volume))
        if (new_volumes and limits["volumes"] >= 0
                and used["volumes"] + new_volumes > limits["volumes"]):
            raise ApiError(413, "VolumeLimitExceeded: Maximum number of "
                                "volumes allowed (%d) exceeded for quota "
                                "'volumes'." % (limits["volumes"],))
        if (limits["gigabytes"] >= 0
                and used["gigabytes"] + new_gigabytes > limits["gigabytes"]):
            raise ApiError(413, "VolumeSizeExceedsAvailableQuota: Requested "
                                "volume or snapshot exceeds allowed "
                                "gigabytes quota. Requested %dG, quota is "
                                "%dG and %dG has been consumed."
                           % (new_gigabytes, limits["gigabytes"],
                              used["gigabytes"]))

    def _links(self, call, volume):
        base = call.base_url + self.prefix
        return [{"rel": "self", "href": "%s/v3/%s/volumes/%s" % (
                    base, volume["project_id"], volume["id"])},
                {"rel": "bookmark", "href": "%s/%s/volumes/%s" % (
                    base, volume["project_id"], volume["id"])}]

    def _attachments(self, volume):
        attachment = volume.get("attachment")
        if not attachment or not attachment.get("attached_at"):
            return []
        return [{"id": volume["id"],
                 "attachment_id": attachment["attachment_id"],
                 "volume_id": volume["id"],
                 "server_id": attachment["server_id"],
                 "host_name": None,
                 "device": attachment["device"],
                 "attached_at": attachment["attached_at"]}]

    def render(self, call, volume):
        """
        The volume as Cinder shows it, with exactly its body keys.
        """
        return {
            "id": volume["id"],
            "status": volume["status"],
            "size": volume["size"],
            "availability_zone": volume["availability_zone"],
            "created_at": volume["created_at"],
            "updated_at": volume["updated_at"],
            "name": volume["name"],
            "description": volume["description"],
            "volume_type": volume["volume_type"],
            "snapshot_id": None,
            "source_volid": None,
            "metadata": dict(volume["metadata"]),
            "links": self._links(call, volume),
            "user_id": volume["user_id"],
            "bootable": "false",
            "encrypted": False,
            "multiattach": False,
            "attachments": self._attachments(volume),
            "replication_status": None,
            "consistencygroup_id": None,
            "group_id": None,
            "shared_targets": True,
            "service_uuid": None,
            "volume_type_id": volume["volume_type_id"],
            "consumes_quota": True,
            "os-vol-tenant-attr:tenant_id": volume["project_id"],
        }

    def _summary(self, call, volume):
        return {"id": volume["id"], "name": volume["name"],
                "links": self._links(call, volume)}

    # handlers
    def versions(self, call):
        return Reply(300, versions_body(call.base_url + self.prefix))

    def version(self, call):
        return Reply(200, versions_body(call.base_url + self.prefix))

    def create(self, call):
        project = self._project_of(call)
        if not isinstance((call.body or {}).get("volume"), dict):
            raise bad_request("Missing required element 'volume' in "
                              "request body.")
        try:
            cinder_rules.check_create(call.body, call.microversion)
        except Refused as e:
            raise _refusal(e)
        spec = call.body["volume"]
        try:
            size = int(spec.get("size"))
        except (TypeError, ValueError):
            raise bad_request("Invalid input for field/attribute size. "
                              "Value: %s. It must be an integer."
                              % (spec.get("size"),))
        if size < 1:
            raise bad_request("Invalid input for field/attribute size. "
                              "Value: %s. %s is less than the minimum of 1"
                              % (size, size))
        metadata = spec.get("metadata") or {}
        zone = spec.get("availability_zone") or self.config.availability_zone
        if zone != self.config.availability_zone:
            raise bad_request("Invalid input received: Availability zone "
                              "'%s' is invalid." % (zone,))
        self._check_quota(project, 1, size, size)
        now = now_text(self.clock)
        volume_type = spec.get("volume_type") or "__DEFAULT__"
        volume = {
            "id": str(uuid.uuid4()),
            "project_id": project,
            "user_id": call.auth["user"],
            "name": spec.get("name"),
            "description": spec.get("description"),
            "size": size,
            "status": "creating",
            "availability_zone": zone,
            "volume_type": volume_type,
            "volume_type_id": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                             "type/" + volume_type)),
            "metadata": dict(metadata),
            "created_at": now,
            "updated_at": None,
            "attachment": None,
        }
        self.store.volumes[volume["id"]] = volume
        self.lifecycle.create(volume)
        reply = Reply(202, {"volume": self.render(call, volume)})
        return self.store.save().addCallback(lambda _: reply)

    def get(self, call):
        return Reply(200, {"volume": self.render(call, self._volume(call))})

    def _filtered(self, call, project):
        try:
            cinder_rules.check_list_query(call.query)
        except Refused as e:
            raise _refusal(e)
        volumes = self._owned(project)
        for name in SUMMARY_FILTERS:
            value = call.arg(name)
            if value is None:
                continue
            if name == "size":
                volumes = [v for v in volumes if str(v["size"]) == value]
            elif name == "bootable":
                volumes = [v for v in volumes
                           if value.lower() in ("false", "0")]
            else:
                volumes = [v for v in volumes if v.get(name) == value]
        for name in TIME_FILTERS:
            value = call.arg(name)
            if value is None or (name == "updated_at"
                                 and call.microversion < TIME_FILTER_VERSION):
                continue
            check = _time_filter(value)
            volumes = [v for v in volumes if check(v.get(name))]
        metadata = call.arg("metadata")
        if metadata is not None:
            check = _metadata_filter(metadata)
            volumes = [v for v in volumes if check(v["metadata"])]
        return volumes

    @staticmethod
    def _sorted(volumes, order):
        """
        ``volumes`` in ``order`` ([(key, direction)]), then newest first
        by creation and id, as Cinder breaks ties; no value sorts first.
        """
        order = list(order) + [("created_at", "desc"), ("id", "desc")]
        result = list(volumes)
        # Stable sorts from the last key to the first.
        for key, direction in reversed(order):
            result.sort(key=lambda v: (v.get(key) is not None,
                                       v.get(key) or ""),
                        reverse=direction == "desc")
        return result

    def _list(self, call, render, collection_path):
        project = self._project_of(call)
        try:
            order = cinder_rules.sort_order(call.arg("sort"),
                                            call.arg("sort_key"),
                                            call.arg("sort_dir"))
        except Refused as e:
            raise _refusal(e)
        volumes = self._sorted(self._filtered(call, project), order)
        try:
            limit = min(int(call.arg("limit", MAX_LIMIT)), MAX_LIMIT)
            if limit < 0:
                raise ValueError(limit)
        except ValueError:
            raise bad_request("limit param must be an integer")
        marker = call.arg("marker")
        if marker is not None:
            anchor = self.store.volumes.get(marker)
            if anchor is None or anchor["project_id"] != project:
                raise not_found("Volume %s could not be found." % (marker,))
            # Items after the marker in sort order, as Cinder pages: the
            # order is total (the id breaks ties), so a position in it
            # says what comes after.
            everything = self._sorted(self._owned(project), order)
            position = {v["id"]: i for i, v in enumerate(everything)}
            volumes = [v for v in volumes
                       if position[v["id"]] > position[marker]]
        page = volumes[:limit]
        body = {"volumes": [render(call, v) for v in page]}
        if page and limit <= len(page):
            query = [(k, v) for k, values in call.query.items()
                     for v in values if k != "marker"]
            query.append(("marker", page[-1]["id"]))
            body["volumes_links"] = [{"rel": "next", "href": "%s/v3/%s/%s?%s"
                                      % (call.base_url + self.prefix, project,
                                         collection_path, urlencode(query))}]
        return Reply(200, body)

    def list_detail(self, call):
        return self._list(call, self.render, "volumes/detail")

    def list_summary(self, call):
        return self._list(call, self._summary, "volumes")

    def update(self, call):
        volume = self._volume(call)
        try:
            cinder_rules.check_update(call.body)
        except Refused as e:
            raise _refusal(e)
        spec = call.body["volume"]
        for key in ("name", "description"):
            if key in spec:
                volume[key] = spec[key]
        if "metadata" in spec:
            volume["metadata"] = dict(spec["metadata"])
        volume["updated_at"] = now_text(self.clock)
        reply = Reply(200, {"volume": self.render(call, volume)})
        return self.store.save().addCallback(lambda _: reply)

    def delete(self, call):
        volume = self._volume(call)
        if volume["status"] == "deleting":
            return Reply(202)
        if volume["status"] not in DELETABLE or volume.get("attachment"):
            raise bad_request(DELETE_REFUSED)
        volume["status"] = "deleting"
        volume["updated_at"] = now_text(self.clock)
        self.lifecycle.delete(volume)
        return self.store.save().addCallback(lambda _: Reply(202))

    def action(self, call):
        volume = self._volume(call)
        body = call.body or {}
        actions = {"os-extend": self._extend,
                   "os-reset_status": self._reset_status,
                   "os-force_detach": self._force_detach}
        for name, act in actions.items():
            if name in body:
                return act(call, volume, body[name])
        raise bad_request("There is no such action: %s"
                          % (", ".join(body) or "none",))

    def _reset_status(self, call, volume, spec):
        """
        ``os-reset_status`` (admin only): the status changes and nothing
        else happens, as in Cinder; ``attach_status: detached`` also
        drops the attachment and its device.
        """
        if not call.auth.get("admin"):
            raise forbidden("volume_extension:volume_admin_actions:"
                            "reset_status")
        spec = spec if isinstance(spec, dict) else {}
        status = spec.get("status")
        if status is not None and status not in RESET_STATUSES:
            raise bad_request("Invalid input received: Must specify a valid "
                              "status")
        if spec.get("attach_status") == "detached" and volume.get(
                "attachment"):
            d = self.lifecycle.drop_attachment(volume,
                                               status or "available")
        else:
            if status is not None:
                volume["status"] = status
                volume["updated_at"] = now_text(self.clock)
            d = self.store.save()
        return d.addCallback(lambda _: Reply(202))

    def _force_detach(self, call, volume, spec):
        """
        ``os-force_detach`` (admin only): Cinder ends the attachment and
        the storage connection at once and never tells Nova.
        """
        if not call.auth.get("admin"):
            raise forbidden("volume_extension:volume_admin_actions:"
                            "force_detach")
        if not volume.get("attachment"):
            raise bad_request("Invalid volume: Volume %s is not attached."
                              % (volume["id"],))
        d = self.lifecycle.drop_attachment(volume, "available")
        return d.addCallback(lambda _: Reply(202))

    def _extend(self, call, volume, spec):
        try:
            new_size = int(spec["new_size"])
        except (KeyError, TypeError, ValueError):
            raise bad_request("Invalid input for field/attribute new_size.")
        allowed = ["available"]
        if call.microversion >= (3, 42):
            allowed.append("in-use")
        if volume["status"] not in allowed:
            raise bad_request("Invalid volume: Volume %s status must be %s "
                              "to extend, currently %s."
                              % (volume["id"], " or ".join(allowed),
                                 volume["status"]))
        if new_size <= volume["size"]:
            raise bad_request("Invalid input received: New size for extend "
                              "must be greater than current size. "
                              "(current: %d, extended: %d)."
                              % (volume["size"], new_size))
        self._check_quota(volume["project_id"], 0,
                          new_size - volume["size"], new_size)
        volume["status"] = "extending"
        volume["updated_at"] = now_text(self.clock)
        self.lifecycle.extend(volume, new_size)
        return self.store.save().addCallback(lambda _: Reply(202))

    # metadata
    def metadata_get(self, call):
        return Reply(200, {"metadata": dict(self._volume(call)["metadata"])})

    def _metadata_body(self, call):
        try:
            cinder_rules.check_metadata_body(call.body)
        except Refused as e:
            raise _refusal(e)
        return dict(call.body["metadata"])

    def _metadata_saved(self, call, volume):
        volume["updated_at"] = now_text(self.clock)
        reply = Reply(200, {"metadata": dict(volume["metadata"])})
        return self.store.save().addCallback(lambda _: reply)

    def metadata_merge(self, call):
        volume = self._volume(call)
        volume["metadata"].update(self._metadata_body(call))
        return self._metadata_saved(call, volume)

    def metadata_replace(self, call):
        volume = self._volume(call)
        volume["metadata"] = self._metadata_body(call)
        return self._metadata_saved(call, volume)

    def metadata_key_get(self, call):
        volume = self._volume(call)
        key = call.params["key"]
        if key not in volume["metadata"]:
            raise not_found("Volume %s has no metadata with key %s."
                            % (volume["id"], key))
        return Reply(200, {"meta": {key: volume["metadata"][key]}})

    def metadata_key_delete(self, call):
        volume = self._volume(call)
        key = call.params["key"]
        if key not in volume["metadata"]:
            raise not_found("Volume %s has no metadata with key %s."
                            % (volume["id"], key))
        del volume["metadata"][key]
        volume["updated_at"] = now_text(self.clock)
        return self.store.save().addCallback(lambda _: Reply(200))

    # limits and quotas
    def limits(self, call):
        project = self._project_of(call)
        limits = self.quotas(project)
        used = self.usage(project)
        return Reply(200, {"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": limits["volumes"],
            "maxTotalVolumeGigabytes": limits["gigabytes"],
            "maxTotalSnapshots": 10, "maxTotalBackups": 10,
            "maxTotalBackupGigabytes": 1000,
            "totalVolumesUsed": used["volumes"],
            "totalGigabytesUsed": used["gigabytes"],
            "totalSnapshotsUsed": 0, "totalBackupsUsed": 0,
            "totalBackupGigabytesUsed": 0,
        }}})

    def _quota_project(self, call):
        self._project_of(call)
        project = call.params["quota_project"]
        if project not in self.config.projects.values():
            raise not_found("Project %s could not be found." % (project,))
        return project

    def _quota_set(self, project, usage):
        limits = self.quotas(project)
        used = self.usage(project)
        quota = {"volumes": limits["volumes"],
                 "gigabytes": limits["gigabytes"],
                 "per_volume_gigabytes": limits["per_volume_gigabytes"],
                 "snapshots": 10, "backups": 10, "backup_gigabytes": 1000,
                 "groups": 10}
        if usage:
            quota = {k: {"limit": v, "in_use": used.get(k, 0),
                         "reserved": 0, "allocated": 0}
                     for k, v in quota.items()}
        quota["id"] = project
        return {"quota_set": quota}

    def quota_get(self, call):
        project = self._quota_project(call)
        usage = str(call.arg("usage", "false")).lower() in ("true", "1")
        return Reply(200, self._quota_set(project, usage))

    def quota_update(self, call):
        project = self._quota_project(call)
        wanted = (call.body or {}).get("quota_set")
        if not isinstance(wanted, dict):
            raise bad_request("Missing required element 'quota_set' in "
                              "request body.")
        stored = self.store.quotas.setdefault(project, {})
        for key in ("volumes", "gigabytes", "per_volume_gigabytes"):
            if key in wanted:
                try:
                    stored[key] = int(wanted[key])
                except (TypeError, ValueError):
                    raise bad_request("Quota %s must be an integer."
                                      % (key,))
        reply = Reply(200, self._quota_set(project, False))
        return self.store.save().addCallback(lambda _: reply)


def add_routes(router, cinder, region=None):
    """
    The routes of ``cinder``, under its region's prefix.
    """
    def add(method, path, handler, auth=True):
        router.add(method, cinder.prefix + path, handler, "volume", auth=auth,
                   region=region)
    add("GET", "/", cinder.versions, auth=False)
    add("GET", "/v3", cinder.version, auth=False)
    for prefix in ("/v3", "/v3/{project}"):
        table = [
            ("GET", "/volumes/detail", cinder.list_detail),
            ("GET", "/volumes", cinder.list_summary),
            ("POST", "/volumes", cinder.create),
            ("GET", "/volumes/{volume}", cinder.get),
            ("PUT", "/volumes/{volume}", cinder.update),
            ("DELETE", "/volumes/{volume}", cinder.delete),
            ("POST", "/volumes/{volume}/action", cinder.action),
            ("GET", "/volumes/{volume}/metadata", cinder.metadata_get),
            ("POST", "/volumes/{volume}/metadata", cinder.metadata_merge),
            ("PUT", "/volumes/{volume}/metadata", cinder.metadata_replace),
            ("GET", "/volumes/{volume}/metadata/{key}",
             cinder.metadata_key_get),
            ("DELETE", "/volumes/{volume}/metadata/{key}",
             cinder.metadata_key_delete),
            ("GET", "/limits", cinder.limits),
            ("GET", "/os-quota-sets/{quota_project}", cinder.quota_get),
            ("PUT", "/os-quota-sets/{quota_project}", cinder.quota_update),
        ]
        for method, path, handler in table:
            add(method, prefix + path, handler)
