"""
Hostile and careless input to blockmover-control, as a real process over
real HTTP: each is refused with a clear message and the right status, and
nothing is stored or changed.
"""

import http.client
import json
import os
import socket
import threading

import pytest

from blockmover import identity
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.poll import Backoff, poll
from blockmover.units import GiB, MiB
from tests.test_config import BILLION_LAUGHS
from tests.control_process import owner
from tests.test_control_api import APP, CLUSTER, Control, configured, report


@pytest.fixture
def root(loopback_root):
    return loopback_root


def start_control(tmp_path, *args):
    service = Control(str(tmp_path / "state"), str(tmp_path / "control.log"),
                      args=args)
    return service.start()


@pytest.fixture
def control(tmp_path):
    service = start_control(tmp_path)
    yield service
    assert service.stop() in (0, None), "blockmover-control did not stop"


def unchanged(control, generation, cluster, app=APP):
    """
    Assert the stored configuration and its file are what they were.
    """
    status, answer = control.request("GET", "/v1/configuration")
    assert status == 200
    assert (answer["generation"], answer["cluster_yml"], answer["app_yml"]) \
        == (generation, cluster, app)
    with open(os.path.join(control.state_dir, "configuration.json")) as f:
        stored = json.load(f)
    assert (stored["generation"], stored["cluster_yml"], stored["app_yml"]) \
        == (generation, cluster, app)


def tls_connection(control, path, source="127.0.0.1", timeout=30):
    """
    A new TLS connection to ``control``, as the client a request of
    ``path`` is by default (``ControlProcess.request``).
    """
    kind, name = owner(path)
    client = socket.create_connection(("127.0.0.1", control.port),
                                      timeout=timeout,
                                      source_address=(source, 0))
    return control.ca.ssl_context(kind, name).wrap_socket(
        client, server_hostname="127.0.0.1")


def raw_request(control, head, body=b"", source="127.0.0.1"):
    """
    Send ``head`` (and ``body``) on a new TLS connection and read the
    answer to its end. :return: (status, headers, decoded JSON body).
    """
    path = head.split(b" ")[1].decode("ascii")
    client = tls_connection(control, path, source)
    try:
        client.sendall(head + body)
        response = http.client.HTTPResponse(client)
        response.begin()
        raw = response.read()
        return (response.status, dict(response.getheaders()),
                json.loads(raw) if raw else None)
    finally:
        client.close()


# --- bounded bodies -----------------------------------------------------

@pytest.mark.parametrize("path,length,limit", [
    (b"/v1/configuration", 10 * 1024 ** 3, "4096 KiB"),
    (b"/v1/configuration?dry_run=1", 4 * MiB + 1, "4096 KiB"),
    (b"/v1/nodes/node1/state", 256 * 1024 + 1, "256 KiB"),
    (b"/v1/state", 300 * 1024, "256 KiB"),
])
def test_announced_large_body_refused_before_it_is_read(
        control, root, path, length, limit):
    """
    A Content-Length over the bound is answered 413 at once: the client
    sends no byte of the body and still reads the answer.
    """
    cluster, generation = configured(control, root)
    status, headers, answer = raw_request(
        control, b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Content-Type: application/json\r\n\r\n" % (path, length))
    assert status == 413
    assert headers["Connection"] == "close"
    assert answer == {"errors": [
        "the request body is larger than %s, the most this request takes; "
        "send a smaller one (a configuration is at most 4 MiB, every other "
        "request body 256 KiB)" % (limit,)]}
    unchanged(control, generation, cluster)


def test_large_body_sent_anyway_is_refused(control, root):
    """
    A client that sends its whole 5 MiB body before reading still gets the
    413 (the body is read and dropped, not kept).
    """
    cluster, generation = configured(control, root)
    body = json.dumps({"cluster_yml": cluster,
                       "app_yml": APP + "#" * (5 * MiB)}).encode()
    status, answer = control.request("PUT", "/v1/configuration", body)
    assert status == 413
    assert "larger than 4096 KiB" in answer["errors"][0]
    unchanged(control, generation, cluster)


def test_chunked_body_over_its_bound_refused(control, root):
    cluster, generation = configured(control, root)
    chunk = b"x" * (64 * 1024)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk)
                      for _ in range(5)) + b"0\r\n\r\n"
    status, _, answer = raw_request(
        control, b"PUT /v1/nodes/node1/state HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413
    assert "larger than 256 KiB" in answer["errors"][0]
    unchanged(control, generation, cluster)
    status, state = control.request("GET", "/v1/state")
    assert state["nodes"]["node1"]["reported_at"] is None


def test_configuration_under_its_bound_is_read(control, root):
    """
    A configuration of 1 MiB (more than other bodies may be) is read and
    loads.
    """
    cluster = CLUSTER.format(root=root)
    status, answer = control.configure(cluster, APP + "#" * MiB + "\n")
    assert status == 200, answer


# --- hostile configurations ------------------------------------------------

def test_slow_configuration_does_not_hold_up_other_requests(control, root):
    """
    A large configuration that takes seconds to read and is refused: while
    it is read, GET /v1/state answers; the configuration answers after.
    """
    cluster, generation = configured(control, root)
    hostile = APP + "  junk: [" + ", ".join(["x"] * 100000) + "]\n"
    order = []
    sent = threading.Event()

    def put():
        connection = http.client.HTTPSConnection(
            "127.0.0.1", control.port, timeout=120,
            context=control.ca.ssl_context())
        try:
            connection.request("PUT", "/v1/configuration", json.dumps(
                {"cluster_yml": cluster, "app_yml": hostile}))
            sent.set()
            response = connection.getresponse()
            order.append(("configuration", response.status,
                          json.loads(response.read())))
        finally:
            sent.set()
            connection.close()

    putter = threading.Thread(target=put)
    putter.start()
    try:
        assert sent.wait(60)
        status, state = control.request("GET", "/v1/state", timeout=60)
        order.append(("state", status, state))
    finally:
        putter.join(120)
    assert [(name, status) for name, status, _ in order] == [
        ("state", 200), ("configuration", 400)]
    assert order[0][2]["generation"] == generation
    assert "applications.junk: must be a mapping" in order[1][2]["errors"][0]
    unchanged(control, generation, cluster)


@pytest.mark.parametrize("app,words", [
    (BILLION_LAUGHS, "app.yml:3: anchor &a is not supported"),
    (APP.replace("mountpoint: /data/db", "mountpoint: /data/../etc"),
     "app.yml:6: applications.mongodb.volume.mountpoint: mountpoint "
     "'/data/../etc' is refused: /etc is a system directory"),
    (APP.replace("volume:", "environment: {LD_PRELOAD: /tmp/x.so}\n"
                 "    volume:"),
     "app.yml:5: applications.mongodb.environment.LD_PRELOAD: LD_PRELOAD "
     "changes which code the application's programs load"),
    (APP.replace("mountpoint: /data/db", "mountpoint: /var/lib/blockmover"
                 "/agent"), "/var/lib/blockmover/agent is blockmover's own "
     "state"),
])
def test_hostile_configuration_refused(control, root, app, words):
    cluster, generation = configured(control, root)
    for query in ("", "?dry_run=1"):
        status, answer = control.configure(cluster, app, query=query)
        assert status == 400
        assert len(answer["errors"]) == 1 and words in answer["errors"][0]
    unchanged(control, generation, cluster)


def test_renaming_a_cluster_that_owns_volumes_refused(tmp_path, root):
    """
    A service with TLS refuses any name but its CA's cluster's; one
    without (which takes any name) still refuses to rename a cluster that
    owns volumes.
    """
    control = Control(str(tmp_path / "state"), str(tmp_path / "control.log"),
                      insecure_plain_http=True).start()
    try:
        renaming_refused(control, root)
    finally:
        assert control.stop() in (0, None)


def renaming_refused(control, root):
    cluster, generation = configured(control, root)
    volume = LoopbackBlockDeviceAPI(root, "demo").create_volume(
        identity.dataset_id("demo", "mongodb"), GiB,
        identity.volume_metadata("demo", "mongodb"))
    status, _ = control.request("PUT", "/v1/nodes/node1/state",
                                report("node1", changed_backend=True))
    assert status == 200
    poll(lambda: control.request("GET", "/v1/volumes")[1]["volumes"] or None,
         10, "the listing to show the volume", Backoff(initial=0.05))
    renamed = cluster.replace("name: demo", "name: other")
    for query in ("", "?dry_run=1"):
        status, answer = control.configure(renamed, query=query)
        assert status == 400
        assert answer["errors"] == [
            "cluster.yml renames the cluster from 'demo' to 'other', but "
            "the backend holds 1 volume(s) of cluster 'demo' "
            "(blockmover-demo-mongodb): volumes belong to their cluster by "
            "name, so under the new name every application would stop and "
            "start again on a new, blank volume. Keep cluster.name: demo; "
            "or first deploy with no applications on any node, remove those"
            " volumes, then deploy the new name"]
    unchanged(control, generation, cluster)
    status, desired = control.request("GET", "/v1/nodes/node1/desired")
    assert desired["cluster_name"] == "demo"
    assert desired["volumes"][volume.dataset_id]["volume_id"] == \
        volume.volume_id


# --- long polls per client and connections ------------------------------

def poll_status(control, generation, source="127.0.0.1"):
    """
    A long poll that waits no time: 204 when taken, 429 when refused.
    """
    status, headers, answer = raw_request(
        control, b"GET /v1/nodes/node1/desired?after=%d&timeout=0 HTTP/1.1\r\n"
        b"Host: x\r\nConnection: close\r\n\r\n" % (generation,),
        source=source)
    return status, headers, answer


def test_long_polls_per_client_are_bounded(tmp_path, root):
    control = start_control(tmp_path, "--max-polls-per-client", "3")
    waiting = []
    try:
        cluster, generation = configured(control, root)
        for _ in range(3):
            client = tls_connection(control, "/v1/nodes/node1/desired")
            waiting.append(client)
            client.sendall(b"GET /v1/nodes/node1/desired?after=%d&timeout=60"
                           b" HTTP/1.1\r\nHost: x\r\n\r\n" % (generation,))
        # Once the three wait, a fourth of the same address is refused.
        status, headers, answer = poll(
            lambda: (lambda r: r if r[0] == 429 else None)(
                poll_status(control, generation)),
            10, "a fourth long poll to be refused", Backoff(initial=0.02))
        assert headers["Retry-After"] == "5"
        assert answer == {"errors": [
            "127.0.0.1 holds 3 long polls already, the most one client may "
            "hold; end one before starting another (an agent needs only "
            "one)"]}
        # Another address is another client.
        assert poll_status(control, generation,
                           source="127.0.0.2")[0] == 204
        # Other requests of the same address are served.
        assert control.request("GET", "/v1/state")[0] == 200
        waiting.pop().close()
        poll(lambda: poll_status(control, generation)[0] == 204 or None,
             10, "a long poll to be taken again", Backoff(initial=0.02))
    finally:
        for client in waiting:
            client.close()
        assert control.stop() in (0, None)


def test_connections_are_bounded(tmp_path, root):
    control = start_control(tmp_path, "--max-connections", "4")
    idle = []
    try:
        for _ in range(4):
            idle.append(socket.create_connection(("127.0.0.1", control.port)))
        status, headers, answer = poll(
            lambda: (lambda r: r if r[0] == 503 else None)(raw_request(
                control, b"GET /v1/state HTTP/1.1\r\nHost: x\r\n\r\n")),
            10, "a fifth connection to be refused", Backoff(initial=0.02))
        assert headers["Retry-After"] == "5"
        assert "as many connections open as it takes" in answer["errors"][0]
        for client in idle:
            client.close()
        idle = []
        poll(lambda: control.request("GET", "/v1/state")[0] == 200 or None,
             10, "connections to be taken again", Backoff(initial=0.02))
    finally:
        for client in idle:
            client.close()
        assert control.stop() in (0, None)
