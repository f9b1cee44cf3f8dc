"""
A node learns its Nova server id from the metadata service (here a local
HTTP server) when no configuration names it, and says clearly when nothing
answers.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from blockmover.backends import instance
from blockmover.backends.openstack import OpenStackBlockDeviceAPI

SERVER_ID = "8d2c6a0e-1f3b-4c5d-9e7f-a1b2c3d4e5f6"
PATH = "/openstack/latest/meta_data.json"


@pytest.fixture
def metadata_service():
    """
    ``(url prefix, replies)``: a metadata service on 127.0.0.1 answering
    ``PATH`` with ``replies["body"]`` (404 for any other path).
    """
    replies = {"body": json.dumps({"uuid": SERVER_ID, "name": "node1"})}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != PATH:
                self.send_error(404)
                return
            data = replies["body"].encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            # Keep test output to what fails.
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % (server.server_address[1],), replies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def no_config_drive(tmp_path):
    return str(tmp_path / "no-config-drive")


@pytest.fixture
def closed_port():
    # A port nothing listens on: bound, then released.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_from_the_metadata_service(metadata_service, no_config_drive):
    url, _ = metadata_service
    assert instance.discover(url + PATH, no_config_drive) == SERVER_ID


def test_backend_asks_once(metadata_service, no_config_drive):
    url, replies = metadata_service
    api = OpenStackBlockDeviceAPI(None, "demo", metadata_url=url + PATH,
                                  config_drive=no_config_drive)
    assert api.compute_instance_id() == SERVER_ID
    replies["body"] = json.dumps({"uuid": "changed"})
    assert api.compute_instance_id() == SERVER_ID


def test_configured_id_wins(closed_port, no_config_drive):
    api = OpenStackBlockDeviceAPI(
        None, "demo", instance_id="configured",
        metadata_url="http://127.0.0.1:%d%s" % (closed_port, PATH),
        config_drive=no_config_drive)
    assert api.compute_instance_id() == "configured"


def test_nothing_answers(closed_port, no_config_drive):
    url = "http://127.0.0.1:%d%s" % (closed_port, PATH)
    with pytest.raises(instance.NoInstanceId) as raised:
        instance.discover(url, no_config_drive, timeout=2.0)
    message = str(raised.value)
    assert url in message and no_config_drive in message
    assert "instance_id" in message


@pytest.mark.parametrize("body", ["not json", json.dumps({"name": "x"})])
def test_answer_without_an_id(metadata_service, no_config_drive, body):
    url, replies = metadata_service
    replies["body"] = body
    with pytest.raises(instance.NoInstanceId):
        instance.discover(url + PATH, no_config_drive)


def test_wrong_path_is_no_answer(metadata_service, no_config_drive):
    url, _ = metadata_service
    with pytest.raises(instance.NoInstanceId):
        instance.discover(url + "/elsewhere", no_config_drive)
