"""
Mutual TLS between the control service and everyone who talks to it.

Every connection is TLS with the cluster's CA (``blockmover.ca``) as the
only trust root, both ways: the control service asks each client for a
certificate the CA issued, and each client believes only the certificate of
its cluster's control service, for the address it dialled. Who a peer is
comes from its certificate alone (``blockmover.certificates.identity_of``);
what it may do is ``blockmover.control.access``'s.

Where the files are:

- given one by one (``--ca``, ``--certificate``, ``--key``), or
- in a directory (``--tls-dir``, ``tls:`` in agent.yml, or the
  ``BLOCKMOVER_TLS_DIR`` environment variable), or
- in the standard places: ``~/.config/blockmover/`` for a user, then
  ``/etc/blockmover/``.

A directory holds ``ca.crt`` and the holder's certificate and key, under
the names ``blockmover ca`` says to install them as (``control.crt``,
``agent.crt``, ``user.crt`` and their ``.key``) or those it writes them
under (``node-NAME.crt``, ``user-NAME.crt``); the control service also
reads the CA's revocation list, ``crl.pem``, from there.
"""

import datetime
import glob
import os

from eliot import log_message
from OpenSSL import SSL
from pyrsistent import PClass, field
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname, verify_certificate_ip_address,
)
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator,
)

from blockmover import certificates
from blockmover.ca import CA_CERTIFICATE, CRL

SYSTEM_DIRECTORY = "/etc/blockmover"
USER_DIRECTORY = "~/.config/blockmover"
ENVIRONMENT = "BLOCKMOVER_TLS_DIR"

# OpenSSL's verification errors a person can act on
# (X509_V_ERR_* in openssl/x509_vfy.h).
_OPENSSL_REASONS = {
    9: "is not valid yet",
    10: "has expired",
    18: "is self-signed, not issued by the cluster's CA",
    19: "is not issued by the cluster's CA",
    20: "is not issued by the cluster's CA",
    21: "is not issued by the cluster's CA",
    23: "is revoked",
    26: "is not one a client may present (it is a server's only)",
}

# TLS alerts (RFC 8446, 6.2) the service sends a client that showed no
# certificate: certificate_required in TLS 1.3, handshake_failure in 1.2.
_NO_CERTIFICATE_ALERTS = (116, 40)
# An alert's level (RFC 5246, 7.2): a fatal one ends the handshake.
_FATAL = 2


class TLSError(Exception):
    """
    The TLS files cannot be found, read or used; the message says which
    and what to do.
    """


class ServiceNotTrusted(Exception):
    """
    The peer a client dialled is not its cluster's control service at that
    address; the message says what it showed instead.
    """


class TLSFiles(PClass):
    """
    Where one holder's certificate, its key and the cluster CA's
    certificate are.
    """
    ca = field(type=str, mandatory=True)
    certificate = field(type=str, mandatory=True)
    key = field(type=str, mandatory=True)

    def describe(self):
        return "certificate %s, key %s, CA %s" % (
            self.certificate, self.key, self.ca)


def files_in(directory, stem):
    """
    The ``TLSFiles`` of the holder whose files are named ``stem`` (an
    ``Identity.file_stem``) in ``directory``.
    """
    return TLSFiles(ca=os.path.join(directory, CA_CERTIFICATE),
                    certificate=os.path.join(directory, stem + ".crt"),
                    key=os.path.join(directory, stem + ".key"))


def standard_directories(user=False):
    """
    Where to look when nothing says: ``$BLOCKMOVER_TLS_DIR`` if set;
    otherwise ``~/.config/blockmover`` (for a user) and ``/etc/blockmover``.
    """
    if os.environ.get(ENVIRONMENT):
        return [os.environ[ENVIRONMENT]]
    directories = [SYSTEM_DIRECTORY]
    if user:
        directories.insert(0, os.path.expanduser(USER_DIRECTORY))
    return directories


# The file stems each holder's files go by: first the names the programs'
# defaults use ('blockmover ca' says to copy them there), then the names
# 'blockmover ca' writes them under, so that its --out directory works too.
CONTROL_STEMS = ("control",)
USER_STEMS = ("user", "user-*")


def agent_stems(node):
    """
    The file stems of node ``node``'s agent: ``agent``, ``node-NODE``.
    """
    return ("agent", "node-" + node)


def find_files(stems, directory=None, ca=None, certificate=None, key=None,
               user=False):
    """
    The ``TLSFiles`` to use: any path given wins; the others are looked up
    in ``directory``, or else in the first of ``standard_directories``
    holding a certificate named by one of ``stems`` (tried in order; a
    stem may be a glob such as ``user-*``, which must match one file).

    :raise TLSError: if no directory holds the files, or a glob matches
        more than one.
    """
    if ca and certificate and key:
        return TLSFiles(ca=ca, certificate=certificate, key=key)
    directories = ([directory] if directory
                   else standard_directories(user=user))
    tried = []
    for candidate in directories:
        for stem in stems:
            pattern = os.path.join(glob.escape(candidate), stem + ".crt")
            paths = sorted(glob.glob(pattern))
            tried.append(os.path.join(candidate, stem + ".crt"))
            if len(paths) > 1:
                raise TLSError(
                    "%s holds %d certificates (%s); say which with "
                    "--certificate and --key" % (
                        candidate, len(paths),
                        ", ".join(os.path.basename(p) for p in paths)))
            if paths:
                found = files_in(candidate,
                                 os.path.basename(paths[0])[:-len(".crt")])
                return found.set(
                    ca=ca or found.ca,
                    certificate=certificate or found.certificate,
                    key=key or found.key)
    if certificate and key:
        return TLSFiles(ca=ca or os.path.join(directories[0],
                                              CA_CERTIFICATE),
                        certificate=certificate, key=key)
    raise TLSError(
        "no certificate found (looked for %s); issue one with 'blockmover "
        "ca', copy it there, or give --tls-dir, or --certificate, --key "
        "and --ca" % (", ".join(tried),))


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSError("cannot read %s %s (%s); check the path, or issue it "
                       "with 'blockmover ca'" % (what, path, e.strerror))


class Credentials(object):
    """
    A holder's loaded TLS files: ``ca_certificate`` and ``certificate``
    (``cryptography`` certificates), the ``identity`` the certificate
    names, and what Twisted's TLS needs of them.
    """

    def __init__(self, files, ca_certificate, certificate, key, identity):
        self.files = files
        self.ca_certificate = ca_certificate
        self.certificate = certificate
        self.identity = identity
        self.cluster = identity.cluster
        self._key = key
        self._ca = ssl.Certificate.loadPEM(
            certificates.certificate_pem(ca_certificate))

    @classmethod
    def load(cls, files, now):
        """
        Read ``files`` (``TLSFiles``) and check they belong together: the
        certificate is the CA's, valid at ``now`` and not a CA's, and the
        key is its key.

        :raise TLSError: saying what is wrong.
        """
        ca_pem = _read(files.ca, "the cluster CA's certificate")
        certificate_pem = _read(files.certificate, "the certificate")
        key_pem = _read(files.key, "the key")
        try:
            ca_certificate = certificates.load_certificate(
                ca_pem, "the CA certificate %s" % (files.ca,))
            certificate = certificates.load_certificate(
                certificate_pem, "the certificate %s" % (files.certificate,))
            key = certificates.load_key(key_pem,
                                        "the key %s" % (files.key,))
            identity = certificates.check(certificate, ca_certificate,
                                          frozenset(), now)
        except certificates.CertificateError as e:
            raise TLSError("%s: %s" % (files.certificate, e))
        if key.public_key() != certificate.public_key():
            raise TLSError("the key %s is not the key of the certificate %s;"
                           " give the pair 'blockmover ca' wrote together"
                           % (files.key, files.certificate))
        return cls(files, ca_certificate, certificate, key, identity)

    def options(self):
        """
        Twisted's ``CertificateOptions`` presenting this certificate and
        trusting only the cluster's CA.
        """
        return ssl.CertificateOptions(
            privateKey=self._key,
            certificate=self.certificate,
            trustRoot=ssl.trustRootFromCertificates([self._ca]))


def _reason(errno):
    return _OPENSSL_REASONS.get(errno, "is not trusted (OpenSSL error %d)"
                                % (errno,))


def _subject(x509):
    try:
        return x509.to_cryptography().subject.rfc4514_string()
    except Exception:
        return "an unreadable subject"


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS(object):
    """
    The control service's side: presents its certificate, requires the
    client's, believes only the cluster's CA, and logs every client it
    refuses at the handshake (``blockmover:tls:client-refused``, with the
    peer's address and why), whether its certificate failed or it showed
    none, and refuses renegotiation. Revocation and identities are checked
    per request (``blockmover.control.access``).
    """

    def __init__(self, credentials):
        self._options = credentials.options()
        # A connection shows one client certificate for its life: who a
        # client is is checked once a connection
        # (``blockmover.control.access.Authority``).
        context = self._options.getContext()
        context.set_options(SSL.OP_NO_RENEGOTIATION)
        # Every node holds a connection open for its long poll, idle
        # nearly always: OpenSSL lets go of an idle connection's read and
        # write buffers (about 34 KiB) instead of keeping them.
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)

    def serverConnectionForTLS(self, tls_protocol):
        connection = self._options.serverConnectionForTLS(tls_protocol)
        refusal = _RefusalLog(tls_protocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                              refusal.verify)
        connection.set_info_callback(refusal.info)
        return connection


class _RefusalLog(object):
    """
    Logs, once, why the service refused one connection's client at the
    handshake. OpenSSL asks ``verify`` about each certificate the client
    shows, but says nothing of a client that shows none: that one is seen
    in ``info``, as the alert the service sends it.
    """

    def __init__(self, tls_protocol):
        self._tls_protocol = tls_protocol
        self._done = False

    def verify(self, connection, x509, errno, depth, ok):
        if not ok:
            self._log(_subject(x509), depth, "the certificate " +
                      _reason(errno))
        return bool(ok)

    def info(self, connection, where, ret):
        if where & SSL.SSL_CB_HANDSHAKE_DONE:
            # Alerts from now on end a connection, not refuse a client.
            self._done = True
        if self._done or (where & SSL.SSL_CB_WRITE_ALERT) != \
                SSL.SSL_CB_WRITE_ALERT or ret >> 8 != _FATAL:
            return
        alert = ret & 0xff
        if alert in _NO_CERTIFICATE_ALERTS and \
                connection.get_peer_certificate() is None:
            reason = ("it showed no certificate; a client presents one "
                      "issued by the cluster's CA")
        else:
            reason = "the TLS handshake failed (TLS alert %d)" % (alert,)
        self._log(None, None, reason)

    def _log(self, subject, depth, reason):
        self._done = True
        try:
            peer = self._tls_protocol.transport.getPeer()
            address = "%s:%s" % (peer.host, peer.port)
        except Exception:
            address = "an unknown address"
        log_message(message_type="blockmover:tls:client-refused",
                    peer=address, subject=subject, depth=depth,
                    reason=reason)


@implementer(IOpenSSLClientConnectionCreator)
class _ServiceConnection(object):
    """
    One client connection to the control service at ``hostname``: believes
    the peer only if the CA issued its certificate to cluster ``cluster``'s
    control service, for ``hostname``.
    """

    def __init__(self, options, hostname, cluster):
        self._options = options
        self._hostname = hostname
        self._cluster = cluster
        self._is_ip = isIPAddress(hostname) or isIPv6Address(hostname)

    def clientConnectionForTLS(self, tls_protocol):
        connection = self._options.clientConnectionForTLS(tls_protocol)
        if not self._is_ip:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                              self._verifier(tls_protocol))
        return connection

    def _verifier(self, tls_protocol):
        def verify(connection, x509, errno, depth, ok):
            # Whatever is raised in an OpenSSL callback is lost: every
            # refusal goes through failVerification with its reason.
            try:
                if not ok:
                    problem = "its certificate (%s) %s" % (_subject(x509),
                                                          _reason(errno))
                elif depth != 0:
                    return True
                else:
                    problem = self._problem(x509.to_cryptography())
            except Exception as e:
                problem = "its certificate cannot be checked: %s" % (e,)
            if problem is None:
                return True
            tls_protocol.failVerification(Failure(ServiceNotTrusted(
                "%s is not cluster %s's control service: %s"
                % (self._hostname, self._cluster, problem))))
            return False
        return verify

    def _problem(self, certificate):
        try:
            holder = certificates.identity_of(certificate)
        except certificates.NotAnIdentity as e:
            return str(e)
        if holder.kind != certificates.CONTROL or \
                holder.cluster != self._cluster:
            return "it presented the certificate of %s of cluster %s" % (
                holder, holder.cluster)
        try:
            if self._is_ip:
                verify_certificate_ip_address(certificate, self._hostname)
            else:
                verify_certificate_hostname(certificate, self._hostname)
        except VerificationError:
            return ("its certificate is not for %s; issue the control "
                    "service's certificate again with --address %s"
                    % (self._hostname, self._hostname))
        return None


@implementer(IPolicyForHTTPS)
class ClientTLS(object):
    """
    The ``IPolicyForHTTPS`` of every client of the control service:
    presents ``credentials``' certificate and believes only its cluster's
    control service.
    """

    def __init__(self, credentials):
        self.credentials = credentials
        self._options = credentials.options()

    def creatorForNetloc(self, hostname, port):
        return _ServiceConnection(self._options, hostname.decode("idna"),
                                  self.credentials.cluster)


def revocation_path(directory):
    """
    Where the control service reads the CA's revocation list by default.
    """
    return os.path.join(directory, CRL)


def add_arguments(parser, holder="this client"):
    """
    The command-line options naming ``holder``'s TLS files.
    """
    group = parser.add_argument_group(
        "TLS", "the files this program presents to the control service "
        "(mutual TLS). Without these options they are looked up in $%s, "
        "else %s, else %s, as ca.crt and user.crt/user.key (or the "
        "user-NAME.crt/.key 'blockmover ca user' writes)"
        % (ENVIRONMENT, USER_DIRECTORY, SYSTEM_DIRECTORY))
    group.add_argument("--tls-dir", metavar="DIR",
                       help="directory holding %s's files" % (holder,))
    group.add_argument("--ca", metavar="PATH",
                       help="the cluster CA's certificate")
    group.add_argument("--certificate", metavar="PATH",
                       help="%s's certificate" % (holder,))
    group.add_argument("--key", metavar="PATH",
                       help="%s's key" % (holder,))


def user_credentials(args, now=None):
    """
    The ``Credentials`` the options of ``add_arguments`` name, for a user.

    :raise TLSError: if they cannot be found or used.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    files = find_files(USER_STEMS, directory=args.tls_dir, ca=args.ca,
                       certificate=args.certificate, key=args.key,
                       user=True)
    return Credentials.load(files, now)
