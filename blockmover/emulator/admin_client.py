"""
The one client of the emulator's admin API (see ``admin.py``: faults,
counters, volumes, servers' power and compute services), for the tools
and tests that drive a running emulator: the local cluster, the
acceptance tests, the emulator's own tests. The only place outside the
emulator that knows the admin API's paths.

Synchronous: call it from a tool or a test, never on a reactor.
"""

import json
import urllib.error
import urllib.parse
import urllib.request


class AdminError(Exception):
    """
    A call to the emulator's admin API failed; the message says why.
    """


class AdminRefused(AdminError):
    """
    The admin API answered with an error: ``code`` is the HTTP status,
    ``body`` the parsed answer (or None).
    """
    def __init__(self, method, path, code, body):
        self.code = code
        self.body = body
        AdminError.__init__(
            self, "the emulator's admin API refused %s %s: HTTP %d %s"
            % (method, path, code, json.dumps(body) if body else ""))


class AdminUnreachable(AdminError):
    """
    The emulator does not answer at its URL: is it running?
    """


class EmulatorAdmin(object):
    """
    The admin API of the emulator at ``url`` (e.g. ``http://127.0.0.1:8776``),
    for one of its regions: faults, counters, volumes, servers and
    services are each region's own.

    :param token: the config's ``admin_token``, sent in ``X-Admin-Token``;
        None for an emulator without one, which answers loopback clients.
    :param timeout: seconds a call may take.
    :param region: the region addressed; None for the config's first.
    """

    def __init__(self, url, token=None, timeout=10.0, region=None):
        self._base = url.rstrip("/")
        self.region = region
        self.url = self._base + "/admin"
        if region is not None:
            self.url += "/regions/" + urllib.parse.quote(region, safe="")
        self.timeout = timeout
        self._token = token

    def in_region(self, region):
        """
        The same emulator's admin API for ``region``.
        """
        return EmulatorAdmin(self._base, token=self._token,
                             timeout=self.timeout, region=region)

    def regions(self):
        """
        The emulator's regions, the first the default.
        """
        return EmulatorAdmin(self._base, token=self._token,
                             timeout=self.timeout)._call(
                                 "GET", "/regions")["regions"]

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["X-Admin-Token"] = self._token
        request = urllib.request.Request(self.url + path, data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request,
                                        timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            try:
                answer = json.load(e)
            except ValueError:
                answer = None
            raise AdminRefused(method, path, e.code, answer)
        except (urllib.error.URLError, OSError) as e:
            raise AdminUnreachable("the emulator's admin API at %s does not "
                                   "answer: %s" % (self.url, e))

    def set_faults(self, faults):
        """
        Put ``faults`` (see ``blockmover.emulator.faults``) in force,
        replacing those before; return them as the emulator holds them.

        :raise AdminRefused: (code 400) the faults are not valid; those in
            force stay.
        """
        return self._call("PUT", "/faults", faults)["faults"]

    def faults(self):
        """
        The faults in force, with the counts they have left.
        """
        return self._call("GET", "/faults")["faults"]

    def clear_faults(self):
        self._call("DELETE", "/faults")

    def counters(self):
        """
        ``{"GET /v3/{project}/volumes/detail": N, ...}``: requests per
        endpoint since the last reset.
        """
        return self._call("GET", "/counters")["counters"]

    def reset_counters(self):
        self._call("POST", "/counters/reset")

    def volumes(self):
        """
        Every volume: ``[{"id", "status", "size", "server_id", "loop",
        "path"}]``.
        """
        return self._call("GET", "/volumes")["volumes"]

    def servers(self):
        """
        Every server: ``[{"id", "name", "host", "status", "vm_state",
        "task_state", "power_state", "compute_service"}]``; ``power_state``
        is Nova's (1 running, 4 shut down).
        """
        return self._call("GET", "/servers")["servers"]

    def reset_server_state(self, server, state):
        """
        Put the server (its name or id) in vm_state ``state`` (``error`` or
        ``active``), as Nova's os-resetState does; its power stays as it
        is. Returns the server as ``servers`` shows it.

        :raise AdminRefused: (code 404) no such server; (400) another state.
        """
        return self._call("POST", "/servers/%s/reset-state"
                          % (urllib.parse.quote(server, safe=""),),
                          {"state": state})["server"]

    def compute_services(self):
        """
        Every compute host: ``[{"host", "binary", "state", "forced_down",
        "servers"}]``.
        """
        return self._call("GET", "/services")["services"]

    def force_down(self, host, forced_down=True):
        """
        Force the compute service of ``host`` (a host, or a server's name
        or id for its host) down, or, with ``forced_down=False``, up again.
        While it is down Nova refuses detaches from its servers with 409
        and leaves their stops and starts unfinished.

        :raise AdminRefused: (code 404) no such host or server.
        """
        return self._call("PUT", "/services/%s"
                          % (urllib.parse.quote(host, safe=""),),
                          {"forced_down": forced_down})["service"]
