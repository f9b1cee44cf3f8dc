"""
A running emulator for tests: ``RunningEmulator`` starts
``blockmover-cloud serve`` as a child process on a free loopback port with
its own temporary state directory, hands out clients (openstacksdk, raw
HTTP for the wire protocol, ``EmulatorAdmin`` for its admin API) and, on
``cleanup()``, stops the process it started and removes its loop devices
and files.

    with RunningEmulator({"latency": {"attach": 0.2}}) as cloud:
        conn = cloud.connect()
        status, headers, body = cloud.request("GET", "/v3/volumes/detail")
        cloud.admin.set_faults({"latency": [{"seconds": 0.5}]})
"""

import http.client
import json
import os
import shutil
import sys
import tempfile

import yaml

from blockmover import proc
from blockmover.emulator.admin_client import EmulatorAdmin
from blockmover.emulator.config import EmulatorConfig
from blockmover.emulator.main import clouds_yaml, main as cloud_main
from blockmover.emulator.store import BY_ID_DIR, URL_FILE
from blockmover.poll import Backoff, poll

CLOUD = "blockmover-cloud"


class EmulatorDied(Exception):
    """
    The emulator process exited; its output is in the message.
    """


class RunningEmulator(object):
    """
    An emulator child process configured by ``config`` (a dict, as the
    YAML file would hold). Attributes once started: ``url``, ``state_dir``,
    ``clouds_yaml`` (path of a clouds.yaml naming cloud ``CLOUD``),
    ``admin`` (an ``EmulatorAdmin``), ``project_id``, ``servers`` ({name:
    id}).
    """

    def __init__(self, config=None, base_dir=None):
        self.config_data = dict(config or {})
        self.config = EmulatorConfig(self.config_data)
        self.dir = tempfile.mkdtemp(prefix="blockmover-cloud-", dir=base_dir)
        self.state_dir = os.path.join(self.dir, "state")
        self.config_path = os.path.join(self.dir, "emulator.yml")
        self.log_path = os.path.join(self.dir, "emulator.log")
        self.clouds_yaml = os.path.join(self.dir, "clouds.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config_data, f)
        self.process = None
        self.url = None
        self.admin = None
        self._tokens = {}
        user = next(iter(self.config.users.values()))
        self.project_id = self.config.projects[user["project"]]
        self.servers = {name: sid for sid, name in self.config.servers.items()}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def start(self, timeout=30):
        """
        Start the process and wait until it listens.

        :raise EmulatorDied: it exited before listening.
        """
        url_file = os.path.join(self.state_dir, URL_FILE)
        if os.path.exists(url_file):
            os.remove(url_file)
        # In our session: a test run stopped with ^C takes it along.
        self.process = proc.start(
            [sys.executable, "-m", "blockmover.emulator.main", "serve",
             "--listen", "tcp:0:interface=127.0.0.1",
             "--state-dir", self.state_dir, "--config", self.config_path,
             "--log", self.log_path],
            os.path.join(self.dir, "output"), session=False)

        def listening():
            if not proc.is_running(self.process):
                raise EmulatorDied("blockmover-cloud exited: %s"
                                   % (self.output(),))
            try:
                with open(url_file) as f:
                    return f.read().strip() or None
            except FileNotFoundError:
                return None
        self.url = poll(listening, timeout, "the emulator to listen",
                        Backoff(initial=0.05, maximum=0.5))
        self.admin = EmulatorAdmin(self.url, token=self.config.admin_token)
        with open(self.clouds_yaml, "w") as f:
            f.write(clouds_yaml(self.config, self.url, CLOUD))
        os.chmod(self.clouds_yaml, 0o600)
        self._tokens = {}
        return self

    def output(self):
        with open(os.path.join(self.dir, "output"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """
        Stop the process this object started (SIGTERM, then SIGKILL).
        """
        if self.process is None:
            return
        proc.stop(self.process, timeout=10)
        self.process = None

    def by_id_root(self, server):
        """
        The by-id directory of server ``server`` (its name): where the
        emulator links the server's devices, the ``device_root`` of the
        openstack backend on that node.
        """
        return os.path.join(os.path.realpath(self.state_dir), BY_ID_DIR,
                            self.servers[server])

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        """
        Stop the process, detach the loop devices of its volumes and remove
        every file it made.
        """
        self.stop()
        cloud_main(["cleanup", "--state-dir", self.state_dir])
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, region=None):
        """
        An openstacksdk connection to the emulator, from a clouds.yaml
        whose entry names ``region`` (None: the first region's, the one in
        ``clouds_yaml``).
        """
        # Late: openstacksdk takes seconds to import, and only the tests
        # that connect need it.
        import openstack
        from openstack.config import loader
        path = self.clouds_yaml
        if region is not None:
            path = os.path.join(self.dir, "clouds-%s.yaml" % (region,))
            with open(path, "w") as f:
                f.write(clouds_yaml(self.config, self.url, CLOUD, region))
            os.chmod(path, 0o600)
        cloud = loader.OpenStackConfig(
            config_files=[path]).get_one(cloud=CLOUD)
        return openstack.connection.Connection(config=cloud)

    def request(self, method, path, body=None, headers=None, token=True,
                user=None):
        """
        One raw HTTP request; returns (status, headers as a dict with
        lower-case names, parsed JSON body or None). With ``token``, the
        token of ``user`` (None: the first user) goes in X-Auth-Token.
        """
        host, port = self.url[len("http://"):].rsplit(":", 1)
        headers = dict(headers or {})
        if token:
            headers.setdefault("X-Auth-Token", self.token(user))
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            reply_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        return (response.status, reply_headers,
                json.loads(raw) if raw else None)

    def token(self, name=None):
        """
        A project-scoped token for the user ``name`` (None: the config's
        first user).
        """
        if name is None:
            name = next(iter(self.config.users))
        if name not in self._tokens:
            user = self.config.users[name]
            status, headers, body = self.request(
                "POST", "/identity/v3/auth/tokens", token=False, body={
                    "auth": {"identity": {"methods": ["password"],
                                          "password": {"user": {
                                              "name": name,
                                              "password": user["password"],
                                              "domain": {"name": "Default"}}}},
                             "scope": {"project": {
                                 "name": user["project"],
                                 "domain": {"name": "Default"}}}}})
            if status != 201:
                raise EmulatorDied("authentication failed: %s %s"
                                   % (status, body))
            self._tokens[name] = headers["x-subject-token"]
        return self._tokens[name]

    def prefix(self, region=None):
        """
        The path before the Cinder and Nova URLs of ``region`` (None: the
        first region's, which has none).
        """
        if region is None or region == self.config.regions[0]:
            return ""
        return "/regions/" + region

    def volume_status(self, volume_id, region=None):
        status, _, body = self.request(
            "GET", "%s/v3/%s/volumes/%s" % (self.prefix(region),
                                           self.project_id, volume_id))
        return body["volume"]["status"] if status == 200 else None

    def wait_for_status(self, volume_id, wanted, timeout=20, region=None):
        """
        Poll until the volume's status is ``wanted`` (None: it is gone).
        """
        def check():
            status = self.volume_status(volume_id, region)
            return True if status == wanted else None
        return poll(check, timeout, "volume %s to be %s" % (volume_id,
                                                            wanted),
                    Backoff(initial=0.05, maximum=0.5))
