"""
Hostile clients of a real ``blockmover-control`` over real mutual TLS (a
``tests.control_process.ControlProcess``), each one held open half-way
while an honest client is served, for the trust tests
(``tests/test_control_trust.py``) and the benchmark of an honest client's
latency meanwhile (``benchmarks/hostile_latency.py``).

Each hostile client is a row of one of two tables:

- ``HANDSHAKES``: refused at the TLS handshake (no certificate, another
  CA's, an expired one, a server's only). The handshake is
  driven by hand and held just before the client's last flight (its
  certificate), so the service is mid-handshake with it while the honest
  client is served.
- ``REQUESTS``: a client the handshake lets in whose request is refused
  (another node's paths, a node deploying, forged reports, the control
  service's and an etcd member's certificates, oversized and hostile
  configurations). All of the request but its last byte is sent
  and held while the honest client is served.

An ``Honest`` client then asks again while the refusal is under way, and
every answer it got, with how long it took, is kept.
"""

import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyrsistent import PClass, field

from blockmover import ca, certificates, tls
from blockmover.certificates import CONTROL, ETCD, METRICS, NODE, USER
from blockmover.files import write_atomically
from blockmover.model import (
    NodeReport, NodeState, Progress, to_data,
)
from blockmover.poll import Backoff, poll
from blockmover.units import MiB
from tests.cluster_ca import OPERATOR, TestCA
from tests.test_config import BILLION_LAUGHS

HOST = "127.0.0.1"
# How long a client waits for the service's answer before calling it
# silent (a refusal comes at once; only a client it accepts waits this).
SILENCE = 5.0
# In a refused configuration: what the service must never echo or log.
CANARY = "canary-5e3ret-0f-the-app"

CLUSTER = """\
version: 1
cluster:
  name: {name}
  control: https://127.0.0.1:4523
  backend:
    name: loopback
    root: {root}
nodes:
  node1: {{address: 10.77.0.11}}
  node2: {{address: 10.77.0.12}}
deployment:
  node1: [mongodb]
  node2: []
"""

APP = """\
version: 1
applications:
  mongodb:
    command: [secantusd-py, --port, "27017"]
    volume:
      mountpoint: /data/db
      maximum_size: 1G
"""


def configure(control, root):
    """
    Deploy the two-node configuration of ``control``'s cluster, with the
    loopback backend in ``root``. :return: its generation.
    """
    status, answer = control.request(
        "PUT", "/v1/configuration",
        {"cluster_yml": CLUSTER.format(name=control.cluster, root=root),
         "app_yml": APP})
    assert status == 200, answer
    return answer["generation"]


def client_context(ca_file, files=None, version=ssl.TLSVersion.TLSv1_3):
    """
    A client ``ssl.SSLContext`` believing ``ca_file`` and presenting
    ``files`` (``tls.TLSFiles``; None for no certificate), speaking TLS
    ``version`` only.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = context.maximum_version = version
    if files is not None:
        context.load_cert_chain(files.certificate, files.key)
    return context


# --- the clients' certificates ---------------------------------------------

def _another_ca(control, directory):
    """
    A CA made in ``directory`` for a cluster of the same name as
    ``control``'s: its certificates say the right cluster and identity, and
    are not the cluster CA's.
    """
    return TestCA(tempfile.mkdtemp(dir=directory), control.cluster)


def issue_expired(test_ca, kind, name, directory):
    """
    Issue ``kind`` ``name`` a certificate valid for one day, ten days ago;
    :return: its ``tls.TLSFiles`` in ``directory``.
    """
    authority = test_ca.authority
    holder = authority.identity(kind, name)
    ten_days_ago = datetime.datetime.now(datetime.timezone.utc) - \
        datetime.timedelta(days=10)
    ca.write_issued(authority.issue(holder, days=1, now=ten_days_ago),
                    directory)
    return tls.files_in(directory, holder.file_stem)


def _expired(control, directory):
    return issue_expired(control.ca, NODE, "node1",
                         tempfile.mkdtemp(dir=directory))


def _server_only(control, directory):
    """
    The control service's certificate as the CA issued it before the
    service's replicas dialled etcd and each other: a server's (serverAuth)
    only, which no client may present. Made in a directory of
    ``directory``; :return: its ``tls.TLSFiles``.
    """
    authority = control.ca.authority
    with open(os.path.join(authority.directory, ca.CA_KEY)) as f:
        ca_key = certificates.load_key(f.read())
    key = certificates.new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, control.cluster),
            x509.NameAttribute(NameOID.COMMON_NAME, CONTROL)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    files = tls.files_in(tempfile.mkdtemp(dir=directory), CONTROL)
    write_atomically(files.key, certificates.key_pem(key), 0o600)
    write_atomically(files.certificate,
                     certificates.certificate_pem(certificate), 0o644)
    write_atomically(files.ca,
                     certificates.certificate_pem(authority.certificate),
                     0o644)
    return files


class Handshake(PClass):
    """
    A client refused at the handshake: ``certificate(control, directory)``
    gives the ``tls.TLSFiles`` it presents (None: none), made in
    ``directory`` if need be; ``alert`` is the TLS alert
    Python's ``ssl`` reports (``SSLError.reason``), ``refused`` the reason
    the service logs (``blockmover:tls:client-refused``) and ``subject``
    the certificate's subject it logs with it (``{cluster}`` standing for
    the cluster's name; None for no certificate). The client speaks TLS
    ``version``.
    """
    name = field(type=str, mandatory=True)
    certificate = field(mandatory=True)
    version = field(type=ssl.TLSVersion, mandatory=True,
                    initial=ssl.TLSVersion.TLSv1_3)
    alert = field(type=str, mandatory=True)
    refused = field(type=str, mandatory=True)
    subject = field(type=(str, type(None)), mandatory=True)


HANDSHAKES = (
    Handshake(name="no client certificate",
              certificate=lambda control, directory: None,
              alert="TLSV13_ALERT_CERTIFICATE_REQUIRED",
              refused="it showed no certificate; a client presents one "
                      "issued by the cluster's CA",
              subject=None),
    Handshake(name="no client certificate, TLS 1.2",
              certificate=lambda control, directory: None,
              version=ssl.TLSVersion.TLSv1_2,
              alert="SSLV3_ALERT_HANDSHAKE_FAILURE",
              refused="it showed no certificate; a client presents one "
                      "issued by the cluster's CA",
              subject=None),
    Handshake(name="another CA's certificate, same cluster name",
              certificate=lambda control, directory: _another_ca(
                  control, directory).files(USER, OPERATOR),
              alert="TLSV1_ALERT_UNKNOWN_CA",
              refused="the certificate is not issued by the cluster's CA",
              subject="CN=user:%s,O={cluster}" % (OPERATOR,)),
    Handshake(name="an expired certificate",
              certificate=_expired,
              alert="SSLV3_ALERT_CERTIFICATE_EXPIRED",
              refused="the certificate has expired",
              subject="CN=node:node1,O={cluster}"),
    Handshake(name="a certificate a server's only",
              certificate=_server_only,
              alert="SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
              refused="the certificate is not one a client may present (it "
                      "is a server's only)",
              subject="CN=control,O={cluster}"),
)


class HeldHandshake(object):
    """
    A TLS handshake with the service driven by hand: ``hold`` sends the
    client's hello and runs the handshake until the client's last flight
    (its certificate, or its saying it has none) is ready, and keeps that;
    ``send_rest`` sends it, ``answer`` reads what the service answers.
    """

    def __init__(self, port, context):
        self.socket = socket.create_connection((HOST, port),
                                               timeout=SILENCE)
        self.address = "%s:%d" % self.socket.getsockname()[:2]
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing,
                                     server_hostname=HOST)

    def hold(self):
        self._step()
        self._send()
        while True:
            # What the client sends after its hello is its certificate
            # (or that it has none) and the rest of its last flight.
            done = self._step()
            if self._outgoing.pending:
                return self
            assert not done, "the handshake ended with the client silent"
            self._receive()

    def _step(self):
        """
        Take the handshake as far as what came in lets it. :return: True
        once the client is done.
        """
        try:
            self._tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def send_rest(self):
        self._send()

    def answer(self):
        """
        :return: the ``ssl.SSLError`` the service refused the client with,
            or None if it did not within ``SILENCE`` seconds.
        """
        try:
            while True:
                try:
                    self._tls.read(1)
                except ssl.SSLWantReadError:
                    self._receive()
        except ssl.SSLError as e:
            return e
        except (socket.timeout, EOFError):
            return None
        finally:
            self.socket.close()

    def close(self):
        self.socket.close()

    def _send(self):
        data = self._outgoing.read()
        if data:
            self.socket.sendall(data)

    def _receive(self):
        data = self.socket.recv(65536)
        if not data:
            raise EOFError("the service closed the connection")
        self._incoming.write(data)


# --- requests the handshake lets in ---------------------------------------

def report(node):
    """
    A node report in JSON naming ``node``.
    """
    state = NodeState(node=node, backend_id=node)
    return to_data(NodeReport(state=state, progress=Progress(
        converged=True, generation=1)))


def _no_body(control, root):
    return None


def configuration_body(control, root, app=APP):
    return {"cluster_yml": CLUSTER.format(name=control.cluster, root=root),
            "app_yml": app}


class Request(PClass):
    """
    A request refused though its client's certificate is the cluster's:
    ``kind`` ``who`` sends ``method`` ``path`` with ``body(control, root)``
    (a JSON-able value, or bytes as they are; None for none) and
    ``headers``, and gets ``status`` with ``message`` (its one error).
    A ``slow`` one takes the service seconds to refuse (its work runs off
    the reactor).
    """
    name = field(type=str, mandatory=True)
    kind = field(type=str, mandatory=True)
    who = field(mandatory=True)
    method = field(type=str, mandatory=True)
    path = field(type=str, mandatory=True)
    # (pyrsistent calls a callable initial for the field's value.)
    body = field(mandatory=True, initial=lambda: _no_body)
    headers = field(type=dict, mandatory=True, initial={})
    status = field(type=int, mandatory=True)
    message = field(type=str, mandatory=True)
    slow = field(type=bool, mandatory=True, initial=False)

    def data(self, control, root):
        """
        The request's bytes on the wire.
        """
        body = self.body(control, root)
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode("utf-8")
        headers = dict({"Host": HOST}, **self.headers)
        if body is not None and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
            headers["Content-Type"] = "application/json"
        head = "%s %s HTTP/1.1\r\n%s\r\n" % (
            self.method, self.path, "".join(
                "%s: %s\r\n" % item for item in sorted(headers.items())))
        return head.encode("ascii") + (body or b"")


def _hostile_app(line):
    return APP.replace("    volume:", "    %s\n    volume:" % (line,))


REQUESTS = (
    Request(name="node A reads node B's slice",
            kind=NODE, who="node1", method="GET",
            path="/v1/nodes/node2/desired?after=0&token=" + CANARY,
            status=403,
            message="node node1 may not GET /v1/nodes/node2/desired: a node "
                    "reads only its own slice"),
    Request(name="node A writes node B's state",
            kind=NODE, who="node1", method="PUT",
            path="/v1/nodes/node2/state",
            body=lambda control, root: report("node2"), status=403,
            message="node node1 may not PUT /v1/nodes/node2/state: a node "
                    "reports only its own state"),
    Request(name="node A attaches node B's volume",
            kind=NODE, who="node1", method="POST",
            path="/v1/nodes/node2/volumes/attach",
            body=lambda control, root: {"dataset_id": "x"}, status=403,
            message="node node1 may not POST /v1/nodes/node2/volumes/attach:"
                    " a node asks for the cloud calls of only its own "
                    "volumes"),
    Request(name="node A reads node B's slice below its path",
            kind=NODE, who="node1", method="GET",
            path="/v1/nodes/node2/desired/", status=404,
            message="no such resource /v1/nodes/node2/desired/; see the API "
                    "in blockmover.control"),
    Request(name="a node puts a configuration",
            kind=NODE, who="node1", method="PUT", path="/v1/configuration",
            body=lambda control, root: configuration_body(
                control, root, APP.replace("/data/db", "/data/stolen")),
            status=403,
            message="node node1 may not PUT /v1/configuration: only an "
                    "operator deploys a configuration"),
    Request(name="a node puts a configuration below its path",
            kind=NODE, who="node1", method="PUT", path="/v1/configuration/",
            body=lambda control, root: configuration_body(
                control, root, APP.replace("/data/db", "/data/stolen")),
            status=404,
            message="no such resource /v1/configuration/; see the API in "
                    "blockmover.control"),
    Request(name="a node reads the configuration",
            kind=NODE, who="node1", method="GET", path="/v1/configuration",
            status=403,
            message="node node1 may not GET /v1/configuration: the "
                    "configuration is the operators'"),
    Request(name="a user forges a node's report",
            kind=USER, who=OPERATOR, method="PUT",
            path="/v1/nodes/node1/state",
            body=lambda control, root: report("node1"), status=403,
            message="user operator may not PUT /v1/nodes/node1/state: a "
                    "node reports only its own state"),
    Request(name="a node reports a state naming another node",
            kind=NODE, who="node1", method="PUT",
            path="/v1/nodes/node1/state",
            body=lambda control, root: report("node2"), status=400,
            message="a report of node 'node2' was sent for node 'node1'; "
                    "send it to /v1/nodes/node2/state"),
    Request(name="the control service's certificate reads the state",
            kind=CONTROL, who=None, method="GET", path="/v1/state",
            status=403,
            message="control may not GET /v1/state: the cluster's state is "
                    "the operators'"),
    Request(name="an etcd member's certificate puts a configuration",
            kind=ETCD, who="etcd1", method="PUT", path="/v1/configuration",
            body=configuration_body, status=403,
            message="etcd etcd1 may not PUT /v1/configuration: only an "
                    "operator deploys a configuration"),
    Request(name="an etcd member's certificate reads a node's slice",
            kind=ETCD, who="etcd1", method="GET",
            path="/v1/nodes/node1/desired?after=0", status=403,
            message="etcd etcd1 may not GET /v1/nodes/node1/desired: a node "
                    "reads only its own slice"),
    Request(name="the metrics scraper reads the state",
            kind=METRICS, who=None, method="GET", path="/v1/state",
            status=403,
            message="metrics may not GET /v1/state: the cluster's state is "
                    "the operators'"),
    Request(name="a 10 GiB configuration announced",
            kind=USER, who=OPERATOR, method="PUT", path="/v1/configuration",
            body=lambda control, root: b"",
            headers={"Content-Length": str(10 * 1024 ** 3),
                     "Content-Type": "application/json"},
            status=413,
            message="the request body is larger than 4096 KiB, the most "
                    "this request takes; send a smaller one (a configuration"
                    " is at most 4 MiB, every other request body 256 KiB)"),
    Request(name="a 5 MiB configuration sent",
            kind=USER, who=OPERATOR, method="PUT", path="/v1/configuration",
            body=lambda control, root: configuration_body(
                control, root, APP + "#" * (5 * MiB)),
            status=413,
            message="the request body is larger than 4096 KiB, the most "
                    "this request takes; send a smaller one (a configuration"
                    " is at most 4 MiB, every other request body 256 KiB)"),
    Request(name="the alias bomb",
            kind=USER, who=OPERATOR, method="PUT", path="/v1/configuration",
            body=lambda control, root: configuration_body(
                control, root, BILLION_LAUGHS),
            status=400,
            message="app.yml:3: anchor &a is not supported: anchors and "
                    "aliases are refused (they can make a small file expand "
                    "without bound); write the value out in full"),
    Request(name="a configuration slow to read (100 000 items)",
            kind=USER, who=OPERATOR, method="PUT", path="/v1/configuration",
            body=lambda control, root: configuration_body(
                control, root, APP + "  junk: [" + ", ".join(
                    ["x"] * 100000) + "]\n"),
            status=400, slow=True,
            message="app.yml:8: applications.junk: must be a mapping of "
                    "command, image, ports, environment, secrets, volume, "
                    "ready, failover, links, restart_policy, mem_limit, "
                    "cpu_shares, "
                    "not a list"),
    Request(name="a system mountpoint",
            kind=USER, who=OPERATOR, method="PUT", path="/v1/configuration",
            body=lambda control, root: configuration_body(
                control, root, APP.replace("/data/db", "/data/../etc")),
            status=400,
            message="app.yml:6: applications.mongodb.volume.mountpoint: "
                    "mountpoint '/data/../etc' is refused: /etc is a system "
                    "directory; a volume mounted there would hide what the "
                    "node runs from; mount the volume in a directory of its "
                    "own, such as /data/db"),
    Request(name="LD_PRELOAD, beside a secret",
            kind=USER, who=OPERATOR, method="PUT", path="/v1/configuration",
            body=lambda control, root: configuration_body(
                control, root, _hostile_app(
                    "environment: {DB_PASSWORD: %s, LD_PRELOAD: /tmp/x.so}"
                    % (CANARY,))),
            headers={"Authorization": "Bearer " + CANARY},
            status=400,
            message="app.yml:5: applications.mongodb.environment.LD_PRELOAD:"
                    " LD_PRELOAD changes which code the application's "
                    "programs load, and is refused unless cluster.yml allows"
                    " it; remove it, or set cluster.allow_loader_environment:"
                    " true in cluster.yml if it is meant"),
)


class HeldRequest(object):
    """
    A request's bytes, ``data``, on a new TLS connection: ``hold`` sends
    all but the last byte, ``send_rest`` that; ``answer`` reads the
    service's answer.
    """

    def __init__(self, port, context, data):
        self.socket = context.wrap_socket(
            socket.create_connection((HOST, port), timeout=30),
            server_hostname=HOST)
        self._data = data

    def hold(self):
        self.socket.sendall(self._data[:-1])
        return self

    def send_rest(self):
        self.socket.sendall(self._data[-1:])

    def answer_begun(self):
        """
        Whether any of the answer is in, without waiting (what TLS sends
        after the handshake, its session tickets, is not an answer). Ask
        only to know it is not: what is in is read and lost.
        """
        self.socket.setblocking(False)
        try:
            return bool(self.socket.recv(65536))
        except ssl.SSLWantReadError:
            return False
        finally:
            self.socket.settimeout(30)

    def answer(self):
        """
        :return: (status, decoded JSON body).
        """
        try:
            response = http.client.HTTPResponse(self.socket)
            response.begin()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            self.socket.close()

    def close(self):
        self.socket.close()


def held(control, case, root, scratch):
    """
    The hostile client of ``case`` (a row of ``HANDSHAKES`` or
    ``REQUESTS``) connected to ``control``, ready to ``hold``; what it
    needs made is made in ``scratch``, and a configuration names the
    loopback backend's ``root``.
    """
    if isinstance(case, Handshake):
        return HeldHandshake(control.port, client_context(
            control.ca.files(USER, OPERATOR).ca,
            case.certificate(control, scratch), case.version))
    return HeldRequest(control.port,
                       control.ca.ssl_context(case.kind, case.who),
                       case.data(control, root))


# --- the honest client ----------------------------------------------------

class Honest(object):
    """
    The operator on one persistent connection, asking for the state: every
    answer is kept in ``answers`` and how long it took (seconds) in
    ``latencies``, by the hostile client it was asked beside.
    """

    def __init__(self, control):
        self._connection = http.client.HTTPSConnection(
            HOST, control.port, timeout=30,
            context=control.ca.ssl_context(USER, OPERATOR))
        self.answers = []
        self.latencies = {}
        # The handshake now, so that no answer timed waits for it.
        self.state()

    def state(self, beside=None):
        """
        GET /v1/state, timed as asked ``beside`` a hostile client (if
        any). :return: (status, decoded body).
        """
        started = time.monotonic()
        self._connection.request("GET", "/v1/state")
        response = self._connection.getresponse()
        raw = response.read()
        if beside is not None:
            self.latencies.setdefault(beside, []).append(
                time.monotonic() - started)
        self.answers.append(raw.decode("utf-8", "replace"))
        return response.status, json.loads(raw)

    def close(self):
        self._connection.close()


def honest_meanwhile(honest, hostile, name, generation, begun=None):
    """
    Hold ``hostile`` (a ``HeldHandshake`` or ``HeldRequest``) half-way and
    have ``honest`` answered; send the rest and have it answered again
    before reading what the hostile client gets, and return that. Each
    honest answer must be the state of configuration ``generation``.

    :param begun: for a request the service takes long to refuse, a
        callable returning once the service has begun to work on it
        (``work_begun``): the second honest answer must then come before
        any of the hostile one's.
    """
    try:
        hostile.hold()
        for when in ("held", "being refused"):
            status, state = honest.state("%s, %s" % (name, when))
            assert status == 200, state
            assert state["generation"] == generation, state
            if when == "held":
                hostile.send_rest()
                if begun is not None:
                    begun()
        if begun is not None:
            assert not hostile.answer_begun(), \
                "%s was answered before the honest client" % (name,)
        return hostile.answer()
    finally:
        hostile.close()


def logged(path):
    """
    The eliot messages in the log at ``path``, in order (a line being
    written as it is read is left for the next read).
    """
    messages = []
    with open(path) as f:
        for line in f:
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
    return messages


def _started(log, method, path):
    return sum(1 for message in logged(log)
               if message.get("action_type") == "blockmover:control:request"
               and message.get("action_status") == "started"
               and (message.get("method"), message.get("path"))
               == (method, path))


def work_begun(control, case):
    """
    For ``case`` (a ``REQUESTS`` row), a callable returning once
    ``control``'s log shows it began one more request like it than it had
    when this was called.
    """
    path = case.path.split("?")[0]
    before = _started(control.log, case.method, path)
    return lambda: poll(
        lambda: _started(control.log, case.method, path) > before or None,
        30, "the service to begin %s" % (case.name,),
        Backoff(initial=0.002, maximum=0.05))
