"""
Who a client is, checked at the cost a connection can bear: the CA's
signature once a connection, validity and revocation on every request.
"""

import datetime

import pytest
from OpenSSL import SSL, crypto

from blockmover import certificates, tls
from blockmover.certificates import CONTROL, NODE, RevocationFile
from blockmover.control import access
from blockmover.control.access import Authority
from tests.cluster_ca import cluster_ca


class Transport(object):
    """
    A TLS connection as the API sees it: the certificate its client
    showed.
    """

    def __init__(self, certificate):
        self.certificate = certificate

    def getPeerCertificate(self):
        # A new object each time, as OpenSSL hands it out.
        return crypto.X509.from_cryptography(self.certificate)


class Clock(object):
    def __init__(self):
        self.now = datetime.datetime.now(datetime.timezone.utc).timestamp()

    def __call__(self):
        return self.now


def loaded(path):
    with open(path, "rb") as f:
        return certificates.load_certificate(f.read())


@pytest.fixture
def checks(monkeypatch):
    """
    How many times the CA's signature was checked.
    """
    counted = []
    verify = certificates._check_signature

    def counting(*args):
        counted.append(args)
        return verify(*args)
    monkeypatch.setattr(certificates, "_check_signature", counting)
    return counted


def authority(clock):
    ca = cluster_ca("identify")
    return ca, Authority(ca.authority.certificate,
                         RevocationFile(ca.crl, ca.authority.certificate),
                         clock)


def test_the_signature_is_checked_once_a_connection(checks):
    ca, identify = authority(Clock())
    node1 = Transport(loaded(ca.files(NODE, "n1").certificate))
    for _ in range(3):
        assert identify.identify(node1).name == "n1"
    assert len(checks) == 1
    # Another connection is checked on its own.
    assert identify.identify(Transport(node1.certificate)).name == "n1"
    assert len(checks) == 2


class _Factory(object):
    wrappedFactory = object()


class _Protocol(object):
    """
    What ``tls.ServerTLS`` asks of the TLS protocol it serves.
    """
    factory = _Factory()

    class transport(object):
        @staticmethod
        def getPeer():
            return "127.0.0.1:1"


def _exchange(client, server):
    for sender, receiver in ((client, server), (server, client)):
        try:
            receiver.bio_write(sender.bio_read(65536))
        except SSL.WantReadError:
            continue


def _step(connection, call, *args):
    try:
        call(*args)
    except SSL.WantReadError:
        pass


def test_a_connection_keeps_its_certificate():
    """
    What the identity kept per connection relies on: a client cannot
    renegotiate another certificate onto its connection (TLS 1.3 has no
    renegotiation; the service refuses it in TLS 1.2).
    """
    ca = cluster_ca("identify")
    now = datetime.datetime.now(datetime.timezone.utc)
    server = tls.ServerTLS(tls.Credentials.load(
        ca.files(CONTROL), now)).serverConnectionForTLS(_Protocol())
    server.set_accept_state()
    context = tls.Credentials.load(ca.files(NODE, "n2"), now).options() \
        .getContext()
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    for _ in range(5):
        _step(client, client.do_handshake)
        _step(server, server.do_handshake)
        _exchange(client, server)
    shown = server.get_peer_certificate().to_cryptography()
    assert certificates.identity_of(shown).name == "n2"
    client.renegotiate()
    refused = []
    for _ in range(5):
        for connection in (client, server):
            try:
                _step(connection, connection.recv, 1)
            except SSL.Error as e:
                refused.append(e)
        _exchange(client, server)
    assert server.total_renegotiations() == 0
    assert any("no renegotiation" in str(e) for e in refused)


def test_expiry_and_revocation_count_on_a_connection_checked_before():
    clock = Clock()
    ca, identify = authority(clock)
    certificate = loaded(ca.files(NODE, "n4").certificate)
    connection = Transport(certificate)
    assert identify.identify(connection).name == "n4"
    now = clock.now
    clock.now = certificate.not_valid_after_utc.timestamp() + 1
    with pytest.raises(access.Refused, match="not now; issue a new one"):
        identify.identify(connection)
    clock.now = now
    assert identify.identify(connection).name == "n4"
    ca.revoke(NODE, "n4")
    with pytest.raises(access.Refused, match="is revoked"):
        identify.identify(connection)


def test_a_certificate_of_another_ca_is_refused_every_time(checks):
    _, identify = authority(Clock())
    stranger = cluster_ca("identify-other")
    connection = Transport(loaded(stranger.files(NODE, "n5").certificate))
    for _ in range(2):
        with pytest.raises(access.Refused, match="not issued by"):
            identify.identify(connection)
    assert len(checks) == 2
