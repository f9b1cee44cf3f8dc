"""
The one client of the emulator's admin API (see ``admin.py``: faults,
counters, volumes), for the tools and tests that drive a running emulator:
the local cluster, the acceptance tests, the emulator's own tests. The
only place outside the emulator that knows the admin API's paths.

Synchronous: call it from a tool or a test, never on a reactor.
"""

import json
import urllib.error
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
    The admin API of the emulator at ``url`` (e.g. ``http://127.0.0.1:8776``).

    :param token: the config's ``admin_token``, sent in ``X-Admin-Token``;
        None for an emulator without one, which answers loopback clients.
    :param timeout: seconds a call may take.
    """

    def __init__(self, url, token=None, timeout=10.0):
        self.url = url.rstrip("/") + "/admin"
        self.timeout = timeout
        self._token = token

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
