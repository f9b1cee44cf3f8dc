"""
The cluster's CA: the identities its certificates carry, real TLS between
holders of its certificates (and refusal of others), revocation by name
seen without a restart, its files and their modes, and ``blockmover ca``
run as a user runs it.
"""

import datetime
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from blockmover import ca, certificates
from blockmover.certificates import (
    BadAddress, BadName, CertificateError, CertificateRefused, Identity,
    NotAnIdentity,
)
from tests.test_product_imports import imported_after, tools_in

BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")
NOW = datetime.datetime.now(datetime.timezone.utc)
PLAIN_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
                            fullmatch=True)


@pytest.fixture
def authority(workdir):
    """
    The CA of cluster ``demo`` in ``workdir/ca``.
    """
    return ca.init(os.path.join(workdir, "ca"), "demo")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def issued_into(authority, directory, kind, name=None, **kwargs):
    """
    Issue ``kind name``'s certificate into ``directory`` (made if need
    be); the paths of its certificate, key and the CA's certificate.
    """
    os.makedirs(directory, exist_ok=True)
    issued = authority.issue(authority.identity(kind, name), **kwargs)
    return ca.write_issued(issued, directory)


def certificate_at(path):
    with open(path) as f:
        return certificates.load_certificate(f.read())


# --- identities ------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(cluster=PLAIN_NAMES, kind=st.sampled_from(certificates.KINDS),
       name=PLAIN_NAMES)
def test_identity_round_trip(cluster, kind, name):
    """
    What a certificate is issued for is what ``identity_of`` reads back.
    """
    key = certificates.new_key()
    ca_certificate = certificates.make_ca(cluster, key, NOW, 30)
    holder = certificates.identity(
        cluster, kind, name if kind in certificates.NAMED_KINDS else None)
    issued = certificates.issue(ca_certificate, key, holder,
                                certificates.new_key().public_key(), NOW, 1,
                                addresses=["10.0.0.1"])
    assert certificates.identity_of(issued) == holder
    assert certificates.check(issued, ca_certificate, frozenset(),
                              NOW) == holder


def test_each_kind_says_what_it_is(authority):
    control = authority.issue(authority.identity("control"),
                              ["10.77.0.1", "control.example.com"])
    node = authority.issue(authority.identity("node", "node1"),
                           ["10.77.0.11"])
    user = authority.issue(authority.identity("user", "alice"))
    etcd = authority.issue(authority.identity("etcd", "etcd1"),
                           ["10.77.0.1", "etcd1.example.com"])
    parsed = {what: certificates.load_certificate(issued.certificate)
              for what, issued in (("control", control), ("node", node),
                                   ("user", user), ("etcd", etcd))}

    def extension(certificate, kind):
        return certificate.extensions.get_extension_for_class(kind).value

    assert parsed["control"].subject.rfc4514_string() == "CN=control,O=demo"
    assert parsed["node"].subject.rfc4514_string() == "CN=node:node1,O=demo"
    assert parsed["user"].subject.rfc4514_string() == "CN=user:alice,O=demo"
    assert parsed["etcd"].subject.rfc4514_string() == "CN=etcd:etcd1,O=demo"
    server, client = (x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    # A replica of the control service is a client of etcd and of the
    # leading replica; an etcd member dials its peers.
    for serving in ("control", "node", "etcd"):
        assert set(extension(parsed[serving], x509.ExtendedKeyUsage)) == {
            client, server}
    assert list(extension(parsed["user"], x509.ExtendedKeyUsage)) == [client]
    for addressed, name in (("control", "control.example.com"),
                            ("etcd", "etcd1.example.com")):
        names = extension(parsed[addressed], x509.SubjectAlternativeName)
        assert [str(a) for a in names.get_values_for_type(
            x509.IPAddress)] == ["10.77.0.1"]
        assert names.get_values_for_type(x509.DNSName) == [name]
    names = extension(parsed["node"], x509.SubjectAlternativeName)
    assert names.get_values_for_type(x509.DNSName) == ["node1"]
    for certificate in parsed.values():
        assert not extension(certificate, x509.BasicConstraints).ca
    assert extension(authority.certificate, x509.BasicConstraints).ca


def foreign(subject):
    """
    A self-signed certificate with ``subject``'s (type, value) pairs.
    """
    key = certificates.new_key()
    name = x509.Name([x509.NameAttribute(oid, value)
                      for oid, value in subject])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW).not_valid_after(NOW)
            .sign(key, hashes.SHA256()))


@pytest.mark.parametrize("subject", [
    [(NameOID.ORGANIZATION_NAME, "demo"), (NameOID.COMMON_NAME, "admin")],
    [(NameOID.ORGANIZATION_NAME, "demo"), (NameOID.COMMON_NAME, "node:")],
    [(NameOID.ORGANIZATION_NAME, "demo"),
     (NameOID.COMMON_NAME, "node:a b")],
    [(NameOID.ORGANIZATION_NAME, "demo"),
     (NameOID.COMMON_NAME, "control:x")],
    [(NameOID.COMMON_NAME, "control")],
    [(NameOID.ORGANIZATION_NAME, "demo"), (NameOID.COMMON_NAME, "control"),
     (NameOID.COMMON_NAME, "node:n1")],
    [(NameOID.ORGANIZATION_NAME, "de mo"),
     (NameOID.COMMON_NAME, "control")],
])
def test_a_subject_naming_no_identity_is_refused(subject):
    with pytest.raises(NotAnIdentity) as raised:
        certificates.identity_of(foreign(subject))
    assert "use a certificate made by 'blockmover ca'" in str(raised.value)


@pytest.mark.parametrize("name", ["bad name", "node1\n", "", "../etc",
                                  "-x", "a" * 64, "node:1", None])
def test_names_that_are_not_plain_are_refused(authority, name):
    with pytest.raises(BadName) as raised:
        authority.identity("node", name)
    assert str(raised.value) == (
        "node name %r is not a usable name; use up to 63 letters, digits, "
        "'_', '.' or '-', starting with a letter or digit" % (name,))


def test_a_cluster_name_that_is_not_plain_is_refused(workdir):
    with pytest.raises(BadName) as raised:
        ca.init(os.path.join(workdir, "ca"), "my cluster")
    assert "cluster name 'my cluster' is not a usable name" in str(
        raised.value)
    assert not os.path.exists(os.path.join(workdir, "ca", "ca.key"))


@pytest.mark.parametrize("address", ["not an address", "-a.example.com",
                                     "10.0.0.1/24", "a..b"])
def test_an_address_that_is_neither_ip_nor_dns_name_is_refused(authority,
                                                               address):
    with pytest.raises(BadAddress) as raised:
        authority.issue(authority.identity("control"), [address])
    assert "neither an IP address nor a DNS name" in str(raised.value)


@pytest.mark.parametrize("kind, name, holder", [
    ("control", None, "the control service"),
    ("etcd", "etcd1", "etcd member etcd1")])
def test_a_server_needs_an_address(authority, kind, name, holder):
    with pytest.raises(CertificateError) as raised:
        authority.issue(authority.identity(kind, name))
    assert str(raised.value) == (
        "the certificate of %s needs the addresses it serves at; give each "
        "IP address and DNS name with --address" % (holder,))
    assert authority.issued == ()


def test_no_certificate_outlives_the_ca(workdir):
    authority = ca.init(os.path.join(workdir, "ca"), "demo", days=30)
    with pytest.raises(CertificateError) as raised:
        authority.issue(authority.identity("user", "alice"), days=31)
    assert "give fewer days, or make a new CA" in str(raised.value)
    assert authority.issued == ()


# --- the files -------------------------------------------------------------

def test_the_ca_directory_and_keys_are_private(workdir):
    directory = os.path.join(workdir, "ca")
    os.mkdir(directory, 0o755)
    os.chmod(directory, 0o755)
    authority = ca.init(directory, "demo")
    assert mode(directory) == 0o700
    assert mode(os.path.join(directory, "ca.key")) == 0o600
    assert sorted(os.listdir(directory)) == ["ca.crt", "ca.key", "crl.pem",
                                             "issued.json"]
    out = os.path.join(workdir, "out")
    certificate, key, ca_certificate = issued_into(authority, out, "node",
                                                   "node1")
    assert (certificate, key, ca_certificate) == tuple(
        os.path.join(out, name)
        for name in ("node-node1.crt", "node-node1.key", "ca.crt"))
    assert mode(key) == 0o600
    assert sorted(os.listdir(out)) == ["ca.crt", "node-node1.crt",
                                       "node-node1.key"]


def test_an_existing_ca_is_not_replaced_unless_forced(workdir, authority):
    directory = authority.directory
    with open(os.path.join(directory, "ca.key")) as f:
        key = f.read()
    with pytest.raises(ca.CAExists) as raised:
        ca.init(directory, "demo")
    assert "replace it and every certificate it issued with --force" in str(
        raised.value)
    with open(os.path.join(directory, "ca.key")) as f:
        assert f.read() == key
    authority.issue(authority.identity("user", "alice"))

    replaced = ca.init(directory, "demo", force=True)
    with open(os.path.join(directory, "ca.key")) as f:
        assert f.read() != key
    assert ca.load(directory).issued == ()
    assert replaced.certificate != authority.certificate


def test_issued_files_are_not_replaced_unless_forced(workdir, authority):
    out = os.path.join(workdir, "out")
    certificate, key, _ = issued_into(authority, out, "node", "node1")
    with open(key) as f:
        first_key = f.read()
    again = authority.issue(authority.identity("node", "node1"))
    with pytest.raises(ca.WouldOverwrite) as raised:
        ca.write_issued(again, out)
    assert "replace it with --force" in str(raised.value)
    with open(key) as f:
        assert f.read() == first_key
    ca.write_issued(again, out, force=True)
    with open(key) as f:
        assert f.read() == again.key

    other = ca.init(os.path.join(workdir, "other-ca"), "demo")
    with pytest.raises(ca.WouldOverwrite) as raised:
        ca.write_issued(other.issue(other.identity("user", "bob")), out)
    assert "is another CA's certificate" in str(raised.value)


def test_the_index_survives_a_reload(authority):
    authority.issue(authority.identity("control"), ["10.0.0.1"])
    authority.issue(authority.identity("node", "n1"))
    authority.revoke(authority.identity("node", "n1"))
    assert ca.load(authority.directory).issued == authority.issued
    assert [entry.revoked_at is not None
            for entry in authority.issued] == [False, True]


def test_a_directory_without_a_ca_says_how_to_make_one(workdir):
    with pytest.raises(ca.NoCA) as raised:
        ca.load(workdir)
    assert "make one with 'blockmover ca init --cluster NAME'" in str(
        raised.value)


# --- real TLS --------------------------------------------------------------

class Handshake(object):
    """
    What each side of one TLS connection saw: the client certificate the
    server got (DER) or the server's error, and the client's error.
    """
    peer = server_error = client_error = None


def handshake(server, client, ca_file, server_hostname="127.0.0.1",
              crl_file=None):
    """
    One TLS connection on 127.0.0.1 from a client holding ``client`` (a
    certificate and key path) to a server holding ``server`` that requires
    a client certificate issued by the CA in ``ca_file`` (and, with
    ``crl_file``, checks it against that revocation list). Each side trusts
    that CA alone.
    """
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(*server)
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_verify_locations(ca_file)
    if crl_file is not None:
        server_context.load_verify_locations(crl_file)
        server_context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(ca_file)
    client_context.load_cert_chain(*client)
    seen = Handshake()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        # Only so that a broken test ends instead of hanging.
        connection.settimeout(30)
        try:
            with server_context.wrap_socket(connection,
                                            server_side=True) as tls:
                seen.peer = tls.getpeercert(binary_form=True)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            seen.server_error = e
        finally:
            connection.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(),
                                      timeout=30) as raw:
            try:
                with client_context.wrap_socket(
                        raw, server_hostname=server_hostname) as tls:
                    # TLS 1.3 tells a client its certificate was refused
                    # only after the handshake.
                    if tls.recv(2) != b"ok":
                        seen.client_error = "connection closed"
            except (ssl.SSLError, OSError) as e:
                seen.client_error = e
    finally:
        thread.join()
        listener.close()
    return seen


@pytest.fixture
def issued(workdir, authority):
    """
    The control service's certificate for 127.0.0.1 and localhost, node1's,
    user alice's and etcd member etcd1's for 127.0.0.1, each as the
    (certificate, key) paths; ``ca`` the CA's certificate.
    """
    paths = {}
    for what, kind, name, addresses in [
            ("control", "control", None, ["127.0.0.1", "localhost"]),
            ("node1", "node", "node1", []),
            ("alice", "user", "alice", []),
            ("etcd1", "etcd", "etcd1", ["127.0.0.1"])]:
        certificate, key, ca_file = issued_into(
            authority, os.path.join(workdir, what), kind, name,
            addresses=addresses)
        paths[what] = (certificate, key)
    paths["ca"] = ca_file
    return paths


def test_holders_of_the_cas_certificates_connect(issued, authority):
    for who, expected in [("node1", Identity(cluster="demo", kind="node",
                                             name="node1")),
                          ("alice", Identity(cluster="demo", kind="user",
                                             name="alice"))]:
        seen = handshake(issued["control"], issued[who], issued["ca"])
        assert (seen.server_error, seen.client_error) == (None, None)
        peer = x509.load_der_x509_certificate(seen.peer)
        assert certificates.check(peer, authority.certificate, frozenset(),
                                  datetime.datetime.now(
                                      datetime.timezone.utc)) == expected


def test_replicas_and_etcd_members_dial_with_their_own(issued):
    """
    A replica of the control service dials etcd and the leading replica
    with the control service's certificate, and etcd's members dial each
    other with theirs: a server asking for a client's certificate, which
    checks that it may be a client's, lets each in.
    """
    for server, client, expected in [
            ("etcd1", "control", Identity(cluster="demo", kind="control")),
            ("control", "control", Identity(cluster="demo", kind="control")),
            ("etcd1", "etcd1", Identity(cluster="demo", kind="etcd",
                                        name="etcd1"))]:
        seen = handshake(issued[server], issued[client], issued["ca"])
        assert (seen.server_error, seen.client_error) == (None, None), (
            server, client)
        assert certificates.identity_of(
            x509.load_der_x509_certificate(seen.peer)) == expected


def test_a_users_certificate_serves_nothing(issued):
    seen = handshake(issued["alice"], issued["node1"], issued["ca"])
    assert isinstance(seen.client_error, ssl.SSLCertVerificationError)
    assert "unsuitable certificate purpose" in \
        seen.client_error.verify_message
    assert seen.peer is None


def test_a_certificate_of_another_ca_is_refused(workdir, issued):
    other = ca.init(os.path.join(workdir, "other-ca"), "demo")
    stranger = issued_into(other, os.path.join(workdir, "stranger"), "node",
                           "node1")
    seen = handshake(issued["control"], stranger[:2], issued["ca"])
    assert seen.peer is None
    assert isinstance(seen.server_error, ssl.SSLCertVerificationError)
    assert seen.client_error is not None
    with pytest.raises(CertificateRefused) as raised:
        certificates.check(certificate_at(stranger[0]),
                           certificate_at(issued["ca"]), frozenset(), NOW)
    assert "is not issued by cluster demo's CA" in str(raised.value)


def test_an_expired_certificate_is_refused(workdir, authority, issued):
    two_years_ago = NOW - datetime.timedelta(days=730)
    expired = issued_into(authority, os.path.join(workdir, "expired"),
                          "node", "node2", days=365, now=two_years_ago)
    seen = handshake(issued["control"], expired[:2], issued["ca"])
    assert seen.peer is None
    assert "expired" in seen.server_error.verify_message
    with pytest.raises(CertificateRefused) as raised:
        certificates.check(certificate_at(expired[0]), authority.certificate,
                           frozenset(), NOW)
    assert "not now; issue a new one" in str(raised.value)


def test_the_client_refuses_a_control_service_at_another_address(
        workdir, authority, issued):
    elsewhere = issued_into(authority, os.path.join(workdir, "elsewhere"),
                            "control", addresses=["10.0.0.1"])
    seen = handshake(elsewhere[:2], issued["node1"], issued["ca"])
    assert isinstance(seen.client_error, ssl.SSLCertVerificationError)
    assert "IP address mismatch" in seen.client_error.verify_message
    assert seen.peer is None


def test_a_revoked_identity_is_refused_without_a_restart(issued, authority):
    """
    The one RevocationFile a service keeps sees a revocation as soon as the
    new list replaces the old; TLS alone (without the list) still lets the
    revoked certificate through, which is why the service checks.
    """
    revocations = certificates.RevocationFile(
        os.path.join(authority.directory, "crl.pem"), authority.certificate)
    node1 = certificate_at(issued["node1"][0])
    alice = certificate_at(issued["alice"][0])
    now = datetime.datetime.now(datetime.timezone.utc)
    assert revocations.revoked() == frozenset()
    certificates.check(node1, authority.certificate, revocations.revoked(),
                       now)

    revoked = authority.revoke(authority.identity("node", "node1"))

    assert [entry.serial for entry in revoked] == [node1.serial_number]
    assert handshake(issued["control"], issued["node1"],
                     issued["ca"]).peer is not None
    with pytest.raises(CertificateRefused) as raised:
        certificates.check(node1, authority.certificate,
                           revocations.revoked(), now)
    assert str(raised.value) == (
        "the certificate of node node1 (serial %x) is revoked; issue a new "
        "one with 'blockmover ca node node1'" % (node1.serial_number,))
    assert certificates.check(alice, authority.certificate,
                              revocations.revoked(), now).name == "alice"


def test_openssl_reads_the_revocation_list(issued, authority):
    """
    The list is one OpenSSL takes as it is: a TLS server that checks it
    refuses the revoked certificate and takes the others.
    """
    crl = os.path.join(authority.directory, "crl.pem")
    authority.revoke(authority.identity("node", "node1"))
    refused = handshake(issued["control"], issued["node1"], issued["ca"],
                        crl_file=crl)
    assert refused.peer is None
    assert "revoked" in refused.server_error.verify_message
    taken = handshake(issued["control"], issued["alice"], issued["ca"],
                      crl_file=crl)
    assert taken.server_error is None and taken.peer is not None


# Twisted hands pyOpenSSL objects of pyOpenSSL's own, which pyOpenSSL 26
# deprecates; the files are what this test is about.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:OpenSSL.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:twisted.*")
def test_twisted_takes_the_control_services_files(issued):
    """
    The files load as the control service's TLS will load them.
    """
    from twisted.internet import ssl as twisted_ssl
    certificate, key = issued["control"]
    with open(certificate) as c, open(key) as k, open(issued["ca"]) as a:
        private = twisted_ssl.PrivateCertificate.loadPEM(c.read() + k.read())
        trust = twisted_ssl.Certificate.loadPEM(a.read())
    options = twisted_ssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original, trustRoot=trust)
    assert options.getContext() is not None
    assert certificates.identity_of(
        private.original.to_cryptography()).kind == "control"


# --- revocation ------------------------------------------------------------

def test_revoking_a_name_revokes_every_certificate_it_was_issued(authority):
    node1 = authority.identity("node", "node1")
    first = authority.issue(node1)
    second = authority.issue(node1)
    other = authority.issue(authority.identity("node", "node2"))
    serials = [certificates.load_certificate(i.certificate).serial_number
               for i in (first, second, other)]

    assert len(authority.revoke(node1)) == 2

    with open(os.path.join(authority.directory, "crl.pem")) as f:
        revoked = certificates.revoked_serials(f.read(),
                                               authority.certificate)
    assert revoked == frozenset(serials[:2])
    assert authority.revoke(node1) == []
    fresh = authority.issue(node1)
    assert certificates.check(
        certificates.load_certificate(fresh.certificate),
        authority.certificate, revoked, NOW) == node1


def test_an_identity_never_issued_cannot_be_revoked(authority):
    with pytest.raises(ca.NotIssued) as raised:
        authority.revoke(authority.identity("user", "nobody"))
    assert "'blockmover ca list' shows those that were" in str(raised.value)


def test_a_revocation_list_of_another_ca_is_refused(workdir, authority):
    other = ca.init(os.path.join(workdir, "other-ca"), "demo")
    with open(os.path.join(other.directory, "crl.pem")) as f:
        text = f.read()
    with pytest.raises(CertificateError) as raised:
        certificates.revoked_serials(text, authority.certificate)
    assert "is not signed by cluster demo's CA" in str(raised.value)
    missing = certificates.RevocationFile(os.path.join(workdir, "none.pem"),
                                          authority.certificate)
    with pytest.raises(CertificateError) as raised:
        missing.revoked()
    assert "copy the CA's crl.pem there" in str(raised.value)


def test_a_ca_certificate_is_no_identity(authority):
    with pytest.raises(CertificateRefused):
        certificates.check(authority.certificate, authority.certificate,
                           frozenset(), NOW)


# --- the command -----------------------------------------------------------

def blockmover_ca(directory, *args):
    """
    ``blockmover ca ARGS`` run in ``directory``: (exit status, stdout,
    stderr).
    """
    result = subprocess.run([BLOCKMOVER, "ca"] + list(args), cwd=directory,
                            capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout, result.stderr


def test_the_command_end_to_end(workdir):
    ca_dir = os.path.join(workdir, "ca")
    where = ["--dir", ca_dir]
    code, out, err = blockmover_ca(workdir, "init", "--cluster", "demo",
                                   *where)
    assert (code, err) == (0, "")
    assert "made the CA of cluster demo" in out
    assert mode(ca_dir) == 0o700
    assert mode(os.path.join(ca_dir, "ca.key")) == 0o600

    code, out, err = blockmover_ca(workdir, "control", "--address",
                                   "10.77.0.1", "--address", "localhost",
                                   *where)
    assert (code, err) == (0, "")
    assert "./control.key  copy to /etc/blockmover/control.key" in out
    code, out, err = blockmover_ca(workdir, "node", "node1", *where)
    assert (code, err) == (0, "")
    assert "copy to /etc/blockmover/agent.crt on node node1" in out
    os.mkdir(os.path.join(workdir, "alice"))
    code, out, err = blockmover_ca(workdir, "user", "alice", "--out",
                                   "alice", *where)
    assert (code, err) == (0, "")
    assert mode(os.path.join(workdir, "alice", "user-alice.key")) == 0o600
    node1 = certificate_at(os.path.join(workdir, "node-node1.crt"))
    assert certificates.identity_of(node1) == Identity(
        cluster="demo", kind="node", name="node1")
    os.mkdir(os.path.join(workdir, "prometheus"))
    code, out, err = blockmover_ca(workdir, "metrics", "--out",
                                   "prometheus", *where)
    assert (code, err) == (0, "")
    assert "copy to /etc/prometheus/blockmover/metrics.crt on the " \
        "Prometheus server" in out
    scraper = certificate_at(os.path.join(workdir, "prometheus",
                                          "metrics.crt"))
    assert certificates.identity_of(scraper) == Identity(
        cluster="demo", kind="metrics")
    # A client's certificate only: it serves nothing.
    assert scraper.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH])
    code, out, err = blockmover_ca(workdir, "revoke", "metrics", *where)
    assert (code, err) == (0, "")
    assert "revoked 1 certificate of metrics: %x" % (
        scraper.serial_number,) in out

    os.mkdir(os.path.join(workdir, "etcd1"))
    code, out, err = blockmover_ca(workdir, "etcd", "etcd1", "--address",
                                   "10.77.0.5", "--out", "etcd1", *where)
    assert (code, err) == (0, "")
    assert "issued etcd etcd1 of cluster demo" in out
    assert "copy to /etc/etcd/blockmover/etcd.crt on the host of etcd " \
        "member etcd1" in out
    assert "etcd1/ca.crt" in out and "/etc/etcd/blockmover/ca.crt there" \
        in out
    assert mode(os.path.join(workdir, "etcd1", "etcd-etcd1.key")) == 0o600
    member = certificate_at(os.path.join(workdir, "etcd1", "etcd-etcd1.crt"))
    assert certificates.identity_of(member) == Identity(
        cluster="demo", kind="etcd", name="etcd1")
    assert [str(a) for a in member.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress)] == ["10.77.0.5"]
    code, out, err = blockmover_ca(workdir, "revoke", "etcd", "etcd1",
                                   *where)
    assert (code, err) == (0, "")
    assert "revoked 1 certificate of etcd etcd1: %x" % (
        member.serial_number,) in out
    assert "to /etc/etcd/blockmover/crl.pem on every etcd member's" in out

    code, out, err = blockmover_ca(workdir, "revoke", "node", "node1",
                                   *where)
    assert (code, err) == (0, "")
    assert "revoked 1 certificate of node node1: %x" % (
        node1.serial_number,) in out
    code, out, err = blockmover_ca(workdir, "list", *where)
    assert code == 0
    lines = {line.split()[0] + " " + line.split()[1]: line
             for line in out.splitlines()[2:]}
    assert lines["node node1"].endswith("revoked %s" % (
        datetime.datetime.now(datetime.timezone.utc).date(),))
    assert lines["user alice"].endswith("valid")
    assert out.splitlines()[-2].startswith("metrics ")
    assert "revoked" in out.splitlines()[-2]
    assert lines["etcd etcd1"].endswith("revoked %s" % (
        datetime.datetime.now(datetime.timezone.utc).date(),))
    assert out.splitlines()[2].startswith("control ")


@pytest.mark.parametrize("args, words", [
    (["init", "--cluster", "demo"], "already holds a CA"),
    (["node", "bad name"], "node name 'bad name' is not a usable name"),
    (["node", "node1"], "node-node1.crt exists; move it away"),
    (["control", "--address", "a b"], "neither an IP address nor a DNS name"),
    (["etcd", "etcd1", "--address", "a b"],
     "neither an IP address nor a DNS name"),
    (["etcd", "bad name", "--address", "10.0.0.1"],
     "etcd name 'bad name' is not a usable name"),
    (["revoke", "user", "nobody"], "no certificate was ever issued"),
    (["user", "bob", "--out", "missing"],
     "the output directory missing does not exist"),
])
def test_a_refusal_is_one_line_saying_what_to_do(workdir, args, words):
    ca_dir = os.path.join(workdir, "ca")
    assert blockmover_ca(workdir, "init", "--cluster", "demo", "--dir",
                         ca_dir)[0] == 0
    assert blockmover_ca(workdir, "node", "node1", "--dir", ca_dir)[0] == 0
    with open(os.path.join(ca_dir, "issued.json")) as f:
        index = f.read()
    code, out, err = blockmover_ca(workdir, *(args + ["--dir", ca_dir]))
    assert code == 1
    assert err.startswith("blockmover ca: ") and err.count("\n") == 1
    assert words in err
    with open(os.path.join(ca_dir, "issued.json")) as f:
        assert f.read() == index


def test_no_ca_where_asked_says_how_to_make_one(workdir):
    code, out, err = blockmover_ca(workdir, "list", "--dir",
                                   os.path.join(workdir, "nowhere"))
    assert code == 1
    assert "holds no CA; make one with 'blockmover ca init" in err


@pytest.mark.parametrize("args", [["revoke", "node"],
                                  ["revoke", "control", "x"],
                                  ["revoke", "metrics", "x"],
                                  ["revoke", "etcd"],
                                  ["etcd", "etcd1"],
                                  ["etcd", "--address", "10.0.0.1"],
                                  ["user", "alice", "--days", "0"],
                                  ["control"]])
def test_a_bad_command_line_exits_2(workdir, args):
    code, out, err = blockmover_ca(workdir, *args)
    assert code == 2
    assert "usage: blockmover ca" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("action, words", [
    ("control", "/etc/blockmover/control.key"),
    ("node", "/etc/blockmover/agent.key"),
    ("user", "~/.config/blockmover/user.key"),
    ("metrics", "/etc/prometheus/blockmover/metrics.key"),
    ("etcd", "/etc/etcd/blockmover/etcd.key"),
    ("init", "/etc/blockmover/ca.crt"),
    ("revoke", "/etc/blockmover/crl.pem"),
])
def test_help_says_where_each_file_goes(workdir, action, words):
    code, out, err = blockmover_ca(workdir, action, "--help")
    assert code == 0
    assert words in out
    assert "exit status:" in out


def test_the_ca_command_loads_no_local_cluster(workdir):
    modules = imported_after(
        "from blockmover.cli import main\n"
        "assert main(['ca', 'init', '--cluster', 'demo', '--dir', %r]) == 0\n"
        % (os.path.join(workdir, "ca"),))
    assert "blockmover.ca" in modules
    assert [m for m in tools_in(modules)
            if m.startswith("blockmover.localcluster")] == []
