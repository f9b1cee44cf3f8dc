"""
Keystone v3: version discovery, password authentication with a
project-scoped token and a service catalog, and token checks for the
other services. Tokens are kept only as hashes, and never logged.
"""

import datetime
import hashlib
import hmac
import secrets
import uuid

from blockmover.emulator.errors import KeystoneError
from blockmover.emulator.routing import Reply

PREFIX = "/identity"
VOLUME_PATH = "/v3"
COMPUTE_PATH = "/compute/v2.1"
REGIONS_PATH = "/regions"


def region_prefix(config, region):
    """
    The path before the Cinder and Nova URLs of ``region``: none for the
    config's first region, so a one-region emulator's URLs are what they
    always were; ``/regions/<name>`` for the others.
    """
    if region == config.regions[0]:
        return ""
    return "%s/%s" % (REGIONS_PATH, region)


def _iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def version_body(base_url):
    return {
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": base_url + PREFIX + "/v3/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.identity-v3+json"}],
    }


class Keystone(object):
    """
    Issues and checks tokens for the users in ``config``, remembering them
    in ``store`` so they outlive a restart.
    """

    def __init__(self, config, store, clock):
        self.config = config
        self.store = store
        self.clock = clock

    def _now(self):
        return datetime.datetime.fromtimestamp(self.clock.seconds(),
                                               datetime.timezone.utc)

    def check(self, token):
        """
        ``{"user", "project", "admin"}`` (their ids, whether the user has
        the admin role) for a valid ``token``, or None.
        """
        if not token:
            return None
        entry = self.store.state["tokens"].get(_hash(token))
        if entry is None or entry["expires"] < self.clock.seconds():
            return None
        return {"user": entry["user"], "project": entry["project"],
                "admin": entry.get("admin", False)}

    def catalog(self, base_url, project_id):
        """
        Keystone, and Cinder and Nova once per region (Keystone is the
        same in every region).
        """
        def entry(kind, name, urls):
            return {"type": kind, "name": name,
                    "id": uuid.uuid5(uuid.NAMESPACE_URL, kind).hex,
                    "endpoints": [{
                        "id": uuid.uuid5(uuid.NAMESPACE_URL,
                                         region + " " + url).hex,
                        "interface": "public", "region": region,
                        "region_id": region, "url": url}
                        for region, url in urls]}

        def each_region(path):
            return [(region, base_url + region_prefix(self.config, region)
                     + path) for region in self.config.regions]
        volume_path = "%s/%s" % (VOLUME_PATH, project_id)
        identity = [(region, base_url + PREFIX + "/v3")
                    for region in self.config.regions]
        return [
            entry("identity", "keystone", identity),
            entry("block-storage", "cinder", each_region(volume_path)),
            entry("volumev3", "cinderv3", each_region(volume_path)),
            entry("compute", "nova", each_region(COMPUTE_PATH)),
        ]

    def authenticate(self, call):
        """
        POST /v3/auth/tokens with password credentials.
        """
        try:
            identity = call.body["auth"]["identity"]
            user = identity["password"]["user"]
            name, password = user.get("name"), user["password"]
            user_id = user.get("id")
        except (KeyError, TypeError):
            raise KeystoneError(400, "Expecting to find password auth "
                                     "credentials in the request body.")
        found = None
        for user_name, spec in self.config.users.items():
            if name == user_name or (user_id and user_id == spec["id"]):
                found = user_name
        spec = self.config.users.get(found)
        # Compare anyway so a wrong name and a wrong password look alike.
        good = hmac.compare_digest(
            (spec or {"password": ""})["password"].encode("utf-8"),
            str(password).encode("utf-8"))
        if spec is None or not good:
            raise KeystoneError(401, "The request you have made requires "
                                     "authentication.")
        project_name = spec["project"]
        scope = ((call.body["auth"].get("scope") or {}).get("project")
                 or {})
        if scope.get("name") or scope.get("id"):
            asked = scope.get("name") or scope.get("id")
            if asked not in (project_name,
                             self.config.projects[project_name]):
                raise KeystoneError(401, "User %s has no access to project "
                                         "%s" % (spec["id"], asked))
        project_id = self.config.projects[project_name]
        token = secrets.token_hex(24)
        now = self._now()
        expires = now + datetime.timedelta(seconds=self.config.token_lifetime)
        tokens = self.store.state["tokens"]
        for key in [k for k, v in tokens.items()
                    if v["expires"] < now.timestamp()]:
            del tokens[key]
        tokens[_hash(token)] = {"user": spec["id"], "project": project_id,
                                "admin": spec["admin"],
                                "expires": expires.timestamp()}
        domain = {"id": "default", "name": self.config.domain}
        roles = ["member", "reader"] + (["admin"] if spec["admin"] else [])
        body = {"token": {
            "methods": ["password"],
            "user": {"id": spec["id"], "name": found, "domain": domain,
                     "password_expires_at": None},
            "audit_ids": [secrets.token_urlsafe(16)],
            "expires_at": _iso(expires),
            "issued_at": _iso(now),
            "project": {"id": project_id, "name": project_name,
                        "domain": domain},
            "is_domain": False,
            "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, role).hex,
                       "name": role} for role in roles],
            "catalog": self.catalog(call.base_url, project_id),
        }}
        reply = Reply(201, body, {"X-Subject-Token": token})
        return self.store.save().addCallback(lambda _: reply)


def add_routes(router, keystone):
    def versions(call):
        return Reply(300, {"versions": {"values": [
            version_body(call.base_url)]}})

    def version(call):
        return Reply(200, {"version": version_body(call.base_url)})

    router.add("GET", PREFIX, versions, "identity", auth=False)
    router.add("GET", PREFIX + "/v3", version, "identity", auth=False)
    router.add("POST", PREFIX + "/v3/auth/tokens", keystone.authenticate,
               "identity", auth=False)
