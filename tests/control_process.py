"""
``blockmover-control`` as a real child process on 127.0.0.1, for tests that
talk to it over HTTPS with mutual TLS (certificates of
``tests.cluster_ca``).
"""

import http.client
import json
import os
import signal
import subprocess
import sys
from urllib.parse import unquote

from blockmover.certificates import NODE, USER
from blockmover.poll import Backoff, poll
from tests.cluster_ca import OPERATOR, cluster_ca

VENV_BIN = os.path.dirname(sys.executable)


class ControlProcess(object):
    """
    One ``blockmover-control`` listening on a port of 127.0.0.1 the kernel
    picks (read back from its "listening on" line, so no race for a free
    port), with its state in ``state_dir`` and its eliot log in ``log``,
    serving ``cluster`` with that cluster's test CA; ``args`` are more of
    its options.
    """

    def __init__(self, state_dir, log, refresh_interval=3600, args=(),
                 cluster="demo", insecure_plain_http=False, env=None,
                 startup_grace=0, port=0, crl=None):
        self.ca = cluster_ca(cluster)
        self.cluster = cluster
        # For tests of what the service does whatever its clients' names.
        self.insecure_plain_http = insecure_plain_http
        # More environment variables (say OS_CLIENT_CONFIG_FILE).
        self.env = dict(env or {})
        self.args = list(args)
        self.state_dir = state_dir
        self.log = log
        self.stderr_path = log + ".stderr"
        self.refresh_interval = refresh_interval
        # A node not heard from since the start is unresponsive one lease
        # after it, not after the production grace: tests of leases wait
        # less.
        self.startup_grace = startup_grace
        self.process = None
        # The revocation list it reads: the CA's own unless given.
        self.crl = crl if crl is not None else self.ca.crl
        # The port asked for (0: the kernel's pick), the one it listens on
        # once started.
        self._listen_port = port
        self.port = None

    @property
    def url(self):
        scheme = "http" if self.insecure_plain_http else "https"
        return "%s://127.0.0.1:%d" % (scheme, self.port)

    def _security_args(self):
        if self.insecure_plain_http:
            return ["--insecure-plain-http-for-tests"]
        return ["--tls-dir", self.ca.control_dir(), "--crl", self.crl]

    def start(self):
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [os.path.join(VENV_BIN, "blockmover-control"),
                 "--listen", "tcp:%d:interface=127.0.0.1"
                 % (self._listen_port,),
                 *self._security_args(),
                 "--state-dir", self.state_dir, "--log", self.log,
                 "--refresh-interval", str(self.refresh_interval),
                 "--startup-grace", str(self.startup_grace)]
                + self.args,
                stdout=subprocess.DEVNULL, stderr=stderr,
                env=dict(os.environ, **self.env))
        self.port = poll(self._port, 20, "blockmover-control to listen",
                         Backoff(initial=0.02, maximum=0.2))
        return self

    def _port(self):
        with open(self.stderr_path) as f:
            text = f.read()
        for line in text.splitlines():
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        if self.process.poll() is not None:
            raise AssertionError("blockmover-control exited %d: %s"
                                 % (self.process.returncode, text))
        return None

    def stop(self, sig=signal.SIGTERM):
        """
        Signal the process (by its pid) and wait for it; SIGKILL if it does
        not end within 20 seconds. :return: its exit code, or None if it was
        not running.
        """
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(sig)
        try:
            return self.process.wait(20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def request(self, method, path, body=None, headers=None, timeout=30,
                kind=None, name=None):
        """
        Make a request as ``kind`` ``name``: by default the node a
        ``/v1/nodes/NODE/...`` path names, else the operator.

        :return: (status, decoded JSON body or None).
        """
        if kind is None:
            kind, name = owner(path)
        if self.insecure_plain_http:
            connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                    timeout=timeout)
        else:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout,
                context=self.ca.ssl_context(kind, name))
        try:
            data = None if body is None else (
                body if isinstance(body, bytes) else json.dumps(body).encode())
            connection.request(method, path, body=data,
                               headers=dict(headers or {}))
            response = connection.getresponse()
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
        finally:
            connection.close()


    def credentials(self, kind=USER, name=OPERATOR):
        """
        The ``tls.Credentials`` of ``kind`` ``name`` for a ``ControlClient``.
        """
        return self.ca.credentials(kind, name)


def owner(path):
    parts = path.split("?")[0].strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["v1", "nodes"]:
        return NODE, unquote(parts[2])
    return USER, OPERATOR


def started_control(directory, **kwargs):
    """
    A started ``ControlProcess`` keeping its state and log in ``directory``.
    """
    state_dir = os.path.join(directory, "control-state")
    os.makedirs(state_dir)
    return ControlProcess(state_dir, os.path.join(directory, "control.log"),
                          **kwargs).start()
