"""
Injected faults: what goes wrong, set in the config at start or through
``PUT /admin/faults`` while the emulator runs. The data (JSON or YAML)::

    {"errors":    [{"match": "POST /v3/{project}/volumes", "status": 503,
                    "fraction": 0.5}],
     "over_limit": [{"match": "GET *", "count": 2, "retry_after": 1}],
     "latency":   [{"match": "*", "seconds": 0.3}],
     "stuck":     [{"operation": "detach", "seconds": 20, "count": 1},
                   {"operation": "attach", "seconds": 600,
                    "name": "blockmover-demo-mongodb*", "server": "node2"}],
     "attach_errors": [{"count": 1, "volume": "<volume id>"}],
     "power_errors": [{"operation": "stop", "server": "node1", "count": 1}]}

``match`` is a shell-style pattern tried against the request's endpoint
key (method and path template, as in the counters, e.g. ``GET
/v3/{project}/volumes/detail``) and against its method and actual path.
``count`` makes a fault apply to the next N matching requests (or
operations) only; without it, it applies until the faults are replaced.

``stuck`` holds a volume in ``attaching`` or ``detaching`` for ``seconds``
more (operations ``attach``, ``detach``), or a server in task state
``powering-off`` or ``powering-on`` (operations ``stop``, ``start``);
``attach_errors`` makes an attach end in error; ``power_errors`` makes a
server's stop or start fail as a hypervisor's would: its power stays as it
was, its task state is cleared and its status is what it was before (as
Nova reverts a failed stop). They apply to every volume and server unless
narrowed to one (or some) by any of:

- ``volume``: the volume's id (or a shell-style pattern of ids);
- ``name``: a shell-style pattern of the volume's name (blockmover names a
  volume after its cluster and application, so this picks one dataset);
- ``server``: the server attached to or detached from, by id or name.

So one dataset's attach can hang while every other proceeds; a ``count``
then counts only the operations that match. A server's stop and start are
narrowed by ``server`` only.
"""

import fnmatch
import random


class FaultError(ValueError):
    """
    Fault data that cannot be understood; the message says which entry.
    """


def _number(entry, key, default, kind=float):
    try:
        return kind(entry.get(key, default))
    except (TypeError, ValueError):
        raise FaultError("fault %r: %s must be a number" % (entry, key))


class Faults(object):
    """
    The faults in force. Methods are called on the reactor thread and
    consume ``count``-limited faults as they fire.
    """

    KINDS = ("errors", "over_limit", "latency", "stuck", "attach_errors",
             "power_errors")
    VOLUME_OPERATIONS = ("attach", "detach")
    SERVER_OPERATIONS = ("stop", "start")

    def __init__(self, data=None, rng=None, servers=None):
        """
        :param servers: {server id: name}, so a fault may name a server
            either way.
        """
        self._random = rng or random.Random()
        self._servers = dict(servers or {})
        self.replace(data or {})

    def replace(self, data):
        """
        Put ``data`` in force instead of the current faults.

        :raise FaultError: ``data`` is malformed; nothing changes.
        """
        if not isinstance(data, dict):
            raise FaultError("faults must be a JSON object with keys %s"
                             % (", ".join(self.KINDS),))
        unknown = set(data) - set(self.KINDS)
        if unknown:
            raise FaultError("unknown fault kinds %s: use %s" % (
                ", ".join(sorted(unknown)), ", ".join(self.KINDS)))
        parsed = {}
        for kind in self.KINDS:
            entries = data.get(kind) or []
            if isinstance(entries, dict):
                entries = [entries]
            checked = []
            for entry in entries:
                if not isinstance(entry, dict):
                    raise FaultError("fault %r in %s must be an object"
                                     % (entry, kind))
                entry = dict(entry)
                if kind in ("errors", "over_limit", "latency"):
                    entry.setdefault("match", "*")
                self._check_operation(kind, entry)
                for key in ("volume", "name", "server"):
                    if key in entry and not isinstance(entry[key], str):
                        raise FaultError("fault %r: %s must be a string"
                                         % (entry, key))
                if "count" in entry:
                    entry["count"] = _number(entry, "count", 0, int)
                for key in ("fraction", "seconds", "retry_after"):
                    if key in entry:
                        entry[key] = _number(entry, key, 0)
                if "status" in entry:
                    entry["status"] = _number(entry, "status", 500, int)
                checked.append(entry)
            parsed[kind] = checked
        self._faults = parsed

    def _check_operation(self, kind, entry):
        # What a stuck or failing operation is, and what may narrow it.
        if kind == "stuck":
            allowed = self.VOLUME_OPERATIONS + self.SERVER_OPERATIONS
        elif kind == "power_errors":
            allowed = self.SERVER_OPERATIONS
        else:
            return
        operation = entry.get("operation")
        if operation not in allowed:
            raise FaultError("%s fault %r: operation must be %s"
                             % (kind, entry, " or ".join(allowed)))
        if operation in self.SERVER_OPERATIONS and (
                "volume" in entry or "name" in entry):
            raise FaultError("%s fault %r: a server's %s is narrowed by "
                             "server only" % (kind, entry, operation))

    def to_data(self):
        """
        The faults in force, with the remaining counts.
        """
        return {kind: [dict(e) for e in entries]
                for kind, entries in self._faults.items() if entries}

    def _take(self, kind, predicate=lambda entry: True):
        # The first live matching entry; a counted one is used up by one.
        for entry in self._faults[kind]:
            if "count" in entry and entry["count"] <= 0:
                continue
            if not predicate(entry):
                continue
            if "count" in entry:
                entry["count"] -= 1
            return entry
        return None

    @staticmethod
    def _matcher(keys):
        return lambda entry: any(fnmatch.fnmatchcase(key, entry["match"])
                                 for key in keys)

    def latency(self, keys):
        """
        Seconds to hold back a request known by ``keys`` before answering.
        """
        entry = self._take("latency", self._matcher(keys))
        return entry.get("seconds", 0.0) if entry else 0.0

    def error(self, keys):
        """
        The HTTP status (500, 503, ...) to fail this request with, or None.
        """
        match = self._matcher(keys)

        def fires(entry):
            return match(entry) and (
                self._random.random() < entry.get("fraction", 1.0))
        entry = self._take("errors", fires)
        return entry.get("status", 503) if entry else None

    def over_limit(self, keys):
        """
        Seconds for Retry-After if this request is to get a 413, or None.
        """
        entry = self._take("over_limit", self._matcher(keys))
        return entry.get("retry_after", 1) if entry else None

    def _concerns(self, entry, volume, server_id):
        # An entry narrowed by volume, name or server matches only those.
        candidates = {
            "volume": [volume.get("id") or ""],
            "name": [volume.get("name") or ""],
            "server": [server_id or "", self._servers.get(server_id, "")],
        }
        return all(any(fnmatch.fnmatchcase(value, entry[key])
                       for value in values)
                   for key, values in candidates.items() if key in entry)

    def stuck(self, operation, volume, server_id):
        """
        Extra seconds ``volume`` (its record) stays in ``attaching`` or
        ``detaching`` while it is attached to or detached from
        ``server_id``; for ``stop`` and ``start`` (``volume`` empty), the
        extra seconds ``server_id`` stays powering off or on.
        """
        entry = self._take("stuck", lambda e: e["operation"] == operation
                           and self._concerns(e, volume, server_id))
        return entry.get("seconds", 0.0) if entry else 0.0

    def attach_fails(self, volume, server_id):
        """
        Whether this attach of ``volume`` (its record) to ``server_id`` is
        to end in error.
        """
        return self._take("attach_errors", lambda e: self._concerns(
            e, volume, server_id)) is not None

    def power_fails(self, operation, server_id):
        """
        Whether this ``stop`` or ``start`` of ``server_id`` is to fail.
        """
        return self._take("power_errors", lambda e: (
            e["operation"] == operation
            and self._concerns(e, {}, server_id))) is not None
