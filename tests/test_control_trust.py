"""
Trust, as issue 8 asks, against one real blockmover-control over real
mutual TLS: each hostile client (``tests.hostile_clients``) is refused with
a message that says why, nothing is stored or changed, and an honest client
is answered while the hostile one is held half-way and again while it is
being refused; a revoked certificate is refused from the next request, on a
connection opened before; a client refuses a server that is not its
cluster's control service; and after all of it no key or secret is in the
service's log, its stderr or any answer.

Every test of the module shares one service, of a cluster ("trust") with a
CA of its own, so that the last can grep everything the others made it
write. Timing is not asserted (machines are noisy): the honest client's
latencies go to the test's properties (``--junitxml``) and
``benchmarks/hostile_latency.py`` measures them.
"""

import http.client
import json
import os
import uuid

import pytest
from cryptography import x509
from twisted.internet import ssl as twisted_ssl
from twisted.internet.defer import inlineCallbacks
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from blockmover import ca, certificates, tls
from blockmover.certificates import CONTROL, ETCD, NODE, USER
from blockmover.client import ControlClient, ControlUnreachable
from blockmover.poll import Backoff, poll
from tests.cluster_ca import OPERATOR, TestCA
from tests.control_process import ControlProcess
from tests.hostile_clients import (
    CANARY, HANDSHAKES, HOST, REQUESTS, Honest, configure, held,
    honest_meanwhile, logged, report, work_begun,
)
from tests.reactors import run_reactor

CLUSTER = "trust"


class Service(object):
    """
    The module's control service, what it was given, and everything its
    clients were answered (``seen``: bodies and TLS errors, as text).
    """

    def __init__(self, control, root, scratch, generation):
        self.control = control
        self.root = root
        self.scratch = scratch
        self.generation = generation
        self.seen = []

    def request(self, method, path, body=None, kind=USER, name=OPERATOR):
        status, answer = self.control.request(method, path, body,
                                              kind=kind, name=name)
        self.seen.append(json.dumps(answer))
        return status, answer

    def stored(self):
        """
        What the service keeps and shows: each file of its state directory,
        its configuration and its nodes' state.
        """
        files = {}
        for name in sorted(os.listdir(self.control.state_dir)):
            with open(os.path.join(self.control.state_dir, name), "rb") as f:
                files[name] = f.read()
        status, configuration = self.request("GET", "/v1/configuration")
        assert status == 200
        status, state = self.request("GET", "/v1/state")
        assert status == 200
        # When the cloud was last listed, and the service's clock, are not
        # the clients' to change.
        state.pop("listed_at")
        state.pop("now")
        return files, configuration, state


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trust")
    for name in ("control-state", "loopback", "scratch"):
        (directory / name).mkdir()
    control = ControlProcess(str(directory / "control-state"),
                             str(directory / "control.log"),
                             cluster=CLUSTER).start()
    try:
        root = str(directory / "loopback")
        yield Service(control, root, str(directory / "scratch"),
                      configure(control, root))
    finally:
        assert control.stop() in (0, None), "blockmover-control did not stop"


def messages_of(path, message_type):
    return [message for message in logged(path)
            if message.get("message_type") == message_type]


def latencies(honest, record_property):
    for beside, seconds in honest.latencies.items():
        record_property("honest GET /v1/state ms, " + beside,
                        ["%.1f" % (s * 1000,) for s in seconds])


# --- refused at the handshake -----------------------------------------------

@pytest.mark.parametrize("case", HANDSHAKES, ids=lambda case: case.name)
def test_refused_at_the_handshake(service, case, record_property):
    """
    The service refuses the client's certificate (or its having none) with
    a TLS alert saying why, and logs whom it refused and why.
    """
    error = handshake_refused(service, case, record_property)
    record_property("what the client saw", str(error))


def handshake_refused(service, case, record_property=lambda *a: None):
    control = service.control
    before = service.stored()
    honest = Honest(control)
    hostile = held(control, case, service.root, service.scratch)
    try:
        error = honest_meanwhile(honest, hostile, case.name,
                                 service.generation)
    finally:
        honest.close()
    latencies(honest, record_property)
    service.seen.extend(honest.answers)
    assert error is not None, "%s: the service did not refuse" % (case.name,)
    service.seen.append(str(error))
    assert error.reason == case.alert, str(error)
    logged = poll(lambda: [m for m in messages_of(
        control.log, "blockmover:tls:client-refused")
        if m["peer"] == hostile.address] or None, 10,
        "the service to log the refusal", Backoff(initial=0.01))
    subject = None if case.subject is None else case.subject.format(
        cluster=control.cluster)
    assert [(m["reason"], m["subject"]) for m in logged] == [
        (case.refused, subject)]
    assert service.stored() == before
    return error


# --- let in, then refused ---------------------------------------------------

@pytest.mark.parametrize("case", REQUESTS, ids=lambda case: case.name)
def test_refused_request(service, case, record_property):
    """
    The request of a client the handshake let in is refused with the
    status and message that say why.
    """
    answer = request_refused(service, case, record_property)
    record_property("what the client got", answer)


def request_refused(service, case, record_property=lambda *a: None):
    control = service.control
    before = service.stored()
    honest = Honest(control)
    hostile = held(control, case, service.root, service.scratch)
    try:
        answer = honest_meanwhile(
            honest, hostile, case.name, service.generation,
            begun=work_begun(control, case) if case.slow else None)
    finally:
        honest.close()
    latencies(honest, record_property)
    service.seen.extend(honest.answers)
    service.seen.append(json.dumps(answer))
    assert answer == (case.status, {"errors": [case.message]})
    assert service.stored() == before
    return answer


# --- revoked ----------------------------------------------------------------

@pytest.mark.parametrize("kind,name", [(USER, "departed"), (NODE, "node2")])
def test_revoked_refused_from_the_next_request(service, kind, name):
    """
    ``blockmover ca revoke`` counts from the very next request, without a
    restart, on a connection made before it as on a new one; reading and
    writing alike.
    """
    revoked_refused(service, kind, name)


def revoked_refused(service, kind, name):
    control = service.control
    if kind == NODE:
        read, write, body = ("/v1/nodes/%s/desired?timeout=0" % (name,),
                             "/v1/nodes/%s/state" % (name,), report(name))
    else:
        read, write, body = ("/v1/state", "/v1/configuration",
                             {"cluster_yml": "", "app_yml": ""})
    files = control.ca.files(kind, name)
    with open(files.certificate, "rb") as f:
        serial = x509.load_pem_x509_certificate(f.read()).serial_number
    opened = http.client.HTTPSConnection(
        HOST, control.port, timeout=30,
        context=control.ca.ssl_context(kind, name))
    try:
        assert ask(service, opened, "GET", read)[0] == 200
        before = service.stored()
        control.ca.revoke(kind, name)
        holder = "%s %s" % (kind, name)
        refused = (403, {"errors": [
            "the client certificate is refused: the certificate of %s "
            "(serial %x) is revoked; issue a new one with 'blockmover ca %s'"
            % (holder, serial, holder)]})
        assert ask(service, opened, "GET", read) == refused
        assert ask(service, opened, "PUT", write, body) == refused
        assert service.request("GET", read, kind=kind, name=name) == refused
        assert service.stored() == before
    finally:
        opened.close()


def ask(service, connection, method, path, body=None):
    connection.request(method, path, body=None if body is None
                       else json.dumps(body))
    response = connection.getresponse()
    raw = response.read()
    service.seen.append(raw.decode("utf-8", "replace"))
    return response.status, json.loads(raw) if raw else None


# --- a client believes only its control service -----------------------------

class Impostor(Resource):
    """
    Answers every request 200 and keeps what it was sent.
    """
    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.requests = []

    def render(self, request):
        self.requests.append((request.method, request.path,
                              request.content.read()))
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"generation": 0}'


def impostor_files(service, impostor):
    """
    The ``tls.TLSFiles`` the server shows, by what it is.
    """
    control = service.control
    if impostor == "the control service":
        return control.ca.files(CONTROL)
    if impostor == "node1":
        return control.ca.files(NODE, "node1")
    if impostor == "etcd member etcd1":
        return control.ca.files(ETCD, "etcd1")
    directory = os.path.join(service.scratch, uuid.uuid4().hex)
    os.makedirs(directory)
    if impostor == "the control service at another address":
        authority = control.ca.authority
        holder = authority.identity(CONTROL)
        ca.write_issued(authority.issue(holder, ("10.9.9.9",
                                                 "control.example")),
                        directory)
        return tls.files_in(directory, holder.file_stem)
    if impostor == "another CA's control service, same cluster name":
        return TestCA(directory, control.cluster).files(CONTROL)
    assert impostor == "another cluster's control service"
    return TestCA(directory, "elsewhere").files(CONTROL)


@pytest.mark.parametrize("impostor,why", [
    ("the control service", None),
    ("node1", "it presented the certificate of node node1 of cluster trust"),
    ("etcd member etcd1",
     "it presented the certificate of etcd etcd1 of cluster trust"),
    ("the control service at another address",
     "its certificate is not for 127.0.0.1; issue the control service's "
     "certificate again with --address 127.0.0.1"),
    ("another CA's control service, same cluster name",
     "its certificate (CN=control,O=trust) is not issued by the cluster's "
     "CA"),
    ("another cluster's control service",
     "its certificate (CN=control,O=elsewhere) is not issued by the "
     "cluster's CA"),
])
def test_client_believes_only_its_control_service(service, impostor, why):
    """
    ``ControlClient`` refuses a server showing any certificate but its
    cluster's control service's, for the address it dialled, with a
    message saying what it showed, and sends it nothing. (The first row
    shows the same server is believed with the right certificate.)
    """
    files = impostor_files(service, impostor)
    with open(files.certificate, "rb") as f:
        certificate = certificates.load_certificate(f.read())
    with open(files.key, "rb") as f:
        key = certificates.load_key(f.read())
    options = twisted_ssl.CertificateOptions(privateKey=key,
                                             certificate=certificate)
    resource = Impostor()

    @inlineCallbacks
    def use(reactor):
        # TLS's timers on this reactor: listenSSL's run on the global one.
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(
            options, False, Site(resource), clock=reactor), interface=HOST)
        url = "https://%s:%d" % (HOST, port.getHost().port)
        client = ControlClient(url, reactor, credentials=service.control.
                               credentials(NODE, "node1"))
        try:
            return url, (yield client.get_state())
        except ControlUnreachable as e:
            return url, e
        finally:
            yield client.close()
            yield port.stopListening()

    url, outcome = run_reactor(use)
    if why is None:
        assert outcome == {"generation": 0}
        assert [r[:2] for r in resource.requests] == [(b"GET", b"/v1/state")]
        return
    assert isinstance(outcome, ControlUnreachable), outcome
    assert str(outcome) == (
        "cannot reach the control service at %s: TLS refused: 127.0.0.1 is "
        "not cluster trust's control service: %s" % (url, why))
    assert resource.requests == []


# --- nothing secret anywhere ------------------------------------------------

def key_material(directories):
    """
    Every line of every key file (``*.key``) under ``directories``, but
    the PEM armour: what must never leave the files.
    """
    lines = set()
    for directory in directories:
        for parent, _, names in os.walk(directory):
            for name in names:
                if name.endswith(".key"):
                    with open(os.path.join(parent, name)) as f:
                        lines.update(line.strip() for line in f
                                     if not line.startswith("-----"))
    lines.discard("")
    assert lines, "no key files under %s" % (directories,)
    return lines


def test_no_key_or_secret_in_log_stderr_or_answers(service):
    """
    After every hostile client above, run once more against the module's
    service (and whatever else of this module ran before): no key, no PEM
    key armour and no secret of a refused configuration, header or query
    is in its log, its stderr or any answer a client got.
    """
    for case in HANDSHAKES:
        handshake_refused(service, case)
    for case in REQUESTS:
        request_refused(service, case)
    revoked_refused(service, USER, "gone-" + uuid.uuid4().hex[:8])
    service.request("GET", "/v1/configuration")
    control = service.control
    with open(control.log) as f:
        log = f.read()
    with open(control.stderr_path) as f:
        stderr = f.read()
    # The log told the story of the refusals: the grep covered them.
    for case in REQUESTS:
        if case.status == 403:
            assert json.dumps(case.message)[1:-1] in log, case.name
    assert len(messages_of(control.log, "blockmover:tls:client-refused")) \
        >= len(HANDSHAKES)
    secrets = key_material([control.ca.directory, service.scratch])
    secrets |= {"PRIVATE KEY", CANARY}
    for what, text in [("the log", log), ("stderr", stderr)] + [
            ("an answer", seen) for seen in service.seen]:
        found = sorted(secret for secret in secrets if secret in text)
        assert not found, "%s holds %s" % (what, found)
