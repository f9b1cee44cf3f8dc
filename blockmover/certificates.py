"""
Who a certificate of the cluster's CA says its holder is, and whether to
believe it: the identities (``control``, ``node:NAME``, ``user:NAME``,
``metrics``, ``etcd:NAME``), the certificates the CA issues for them, the
revocation list, and the one check a service makes of a peer's
certificate.

Everything here is a pure function of its arguments, clock included (pass
``now``), except ``RevocationFile``, which reads one file when it changes.
The CA's directory and its files are ``blockmover.ca``'s.

A certificate names its cluster in its subject's organization (O) and its
identity in its common name (CN); ``identity_of`` is the one reader of
both. Keys are ECDSA on P-256: every TLS stack blockmover meets (OpenSSL
through Twisted, Python's ``ssl``, etcd's Go) handles them, and they are
small and fast to make.
"""

import datetime
import ipaddress
import os
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyrsistent import PClass, field

from blockmover.configfields import NAME_RULE, is_plain_name

CONTROL = "control"
NODE = "node"
USER = "user"
# The Prometheus server scraping the control service's and the agents'
# metrics ('blockmover ca metrics').
METRICS = "metrics"
# A member of the etcd cluster the control service's replicas keep their
# state in ('blockmover ca etcd'): it serves etcd's clients and peers, and
# dials its peers.
ETCD = "etcd"
NAMED_KINDS = (NODE, USER, ETCD)
KINDS = (CONTROL, NODE, USER, METRICS, ETCD)
# The kinds that serve at addresses their certificate must name.
ADDRESSED_KINDS = (CONTROL, ETCD)

# Certificates are issued this long before "now": the clocks of the hosts
# that use them differ a little.
CLOCK_SKEW = datetime.timedelta(minutes=5)

_CA_COMMON_NAME = "blockmover CA"

# A DNS name in a certificate: dot-separated labels of letters, digits and
# inner hyphens, 253 characters at most.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)%s(?:\.%s)*" % (_LABEL, _LABEL))


class CertificateError(Exception):
    """
    A certificate, key or revocation list cannot be made, read or believed;
    the message says why and what to do.
    """


class BadName(CertificateError):
    """
    A name given for a cluster, node or user is not a plain name.
    """


class BadAddress(CertificateError):
    """
    An address given for a certificate is neither an IP address nor a DNS
    name.
    """


class NotAnIdentity(CertificateError):
    """
    A certificate's subject names no blockmover identity.
    """


class CertificateRefused(CertificateError):
    """
    A certificate is not one to believe: not issued by the cluster's CA,
    not valid now, revoked, or of another cluster.
    """


class Identity(PClass):
    """
    Who holds a certificate: ``kind`` (one of ``KINDS``) in ``cluster``;
    ``name`` is the node's, user's or etcd member's name, None for
    ``control`` and ``metrics``.
    """
    cluster = field(type=str, mandatory=True)
    kind = field(type=str, mandatory=True,
                 invariant=lambda k: (k in KINDS, "kind must be one of %s"
                                      % (", ".join(KINDS),)))
    name = field(type=(str, type(None)), mandatory=True, initial=None)

    __invariant__ = staticmethod(lambda i: (
        (i.name is not None) == (i.kind in NAMED_KINDS),
        "a node, user or etcd identity has a name; control and metrics "
        "have none"))

    @property
    def common_name(self):
        """
        The certificate's CN: ``control``, ``node:NAME``, ``user:NAME``,
        ``etcd:NAME``.
        """
        if self.name is None:
            return self.kind
        return "%s:%s" % (self.kind, self.name)

    @property
    def file_stem(self):
        """
        The base of the identity's file names: ``control``, ``node-NAME``,
        ``user-NAME``, ``etcd-NAME`` (no ``:``, which scp and rsync read as
        a host).
        """
        if self.name is None:
            return self.kind
        return "%s-%s" % (self.kind, self.name)

    def __str__(self):
        """
        As a person writes it on the command line: ``node NAME``.
        """
        if self.name is None:
            return self.kind
        return "%s %s" % (self.kind, self.name)


def identity(cluster, kind, name=None):
    """
    The ``Identity`` of ``kind`` ``name`` in ``cluster``, checking that the
    names are plain.

    :raise BadName: if the cluster's or the holder's name is not.
    """
    if not is_plain_name(cluster):
        raise BadName("cluster name %r is not a usable name; %s"
                      % (cluster, NAME_RULE))
    if kind in NAMED_KINDS and not is_plain_name(name):
        raise BadName("%s name %r is not a usable name; %s"
                      % (kind, name, NAME_RULE))
    return Identity(cluster=cluster, kind=kind, name=name)


def identity_of(certificate):
    """
    The ``Identity`` a certificate names: the one reader of a certificate's
    subject, for whoever authorizes its holder. Believe it only after
    ``check``.

    :raise NotAnIdentity: if the subject names no blockmover identity.
    """
    subject = certificate.subject
    clusters = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(clusters) != 1 or len(names) != 1:
        raise NotAnIdentity(
            "the certificate's subject (%s) does not name one cluster and "
            "one identity; use a certificate made by 'blockmover ca'"
            % (subject.rfc4514_string(),))
    cluster, common_name = clusters[0].value, names[0].value
    kind, colon, name = common_name.partition(":")
    named = kind in NAMED_KINDS and colon and is_plain_name(name)
    unnamed = kind in (CONTROL, METRICS) and not colon
    if not (is_plain_name(cluster) and (named or unnamed)):
        raise NotAnIdentity(
            "the certificate's subject (%s) names no blockmover identity "
            "(control, metrics, node:NAME, user:NAME or etcd:NAME of a "
            "cluster); use a "
            "certificate made by 'blockmover ca'"
            % (subject.rfc4514_string(),))
    return Identity(cluster=cluster, kind=kind, name=name if named else None)


def subject_alternative_names(addresses):
    """
    The SAN entries for ``addresses``: each an IP address or a DNS name.

    :raise BadAddress: for one that is neither.
    """
    entries = []
    for address in addresses:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            if not isinstance(address, str) or not _DNS_NAME.fullmatch(
                    address):
                raise BadAddress(
                    "%r is neither an IP address nor a DNS name; give one "
                    "such as 10.0.0.1 or control.example.com" % (address,))
            entries.append(x509.DNSName(address))
    return entries


def new_key():
    """
    A new private key (ECDSA, P-256).
    """
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    """
    ``key`` as unencrypted PKCS#8 PEM text: keep it in a file only its
    owner reads.
    """
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode("ascii")


def certificate_pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM).decode(
        "ascii")


def crl_pem(crl):
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_key(pem, what="the key"):
    """
    A private key from PEM text or bytes.

    :raise CertificateError: if it is not one.
    """
    try:
        return serialization.load_pem_private_key(_bytes(pem), password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError("%s is not an unencrypted PEM private key "
                               "(%s)" % (what, e))


def load_certificate(pem, what="the certificate"):
    """
    A certificate from PEM text or bytes.

    :raise CertificateError: if it is not one.
    """
    try:
        return x509.load_pem_x509_certificate(_bytes(pem))
    except ValueError as e:
        raise CertificateError("%s is not a PEM certificate (%s)" % (what, e))


def _bytes(pem):
    return pem.encode("ascii") if isinstance(pem, str) else pem


def _name(cluster, common_name):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def cluster_of(ca_certificate):
    """
    The name of the cluster whose CA ``ca_certificate`` is.
    """
    return ca_certificate.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)[0].value


def make_ca(cluster, key, now, days):
    """
    A self-signed CA certificate for ``cluster`` with ``key``, valid for
    ``days`` from ``now``. It signs certificates and revocation lists, and
    no other CA.

    :raise BadName: if ``cluster`` is not a plain name.
    """
    if not is_plain_name(cluster):
        raise BadName("cluster name %r is not a usable name; %s"
                      % (cluster, NAME_RULE))
    name = _name(cluster, _CA_COMMON_NAME)
    return _builder(name, name, key.public_key(), now,
                    now + datetime.timedelta(days=days),
                    ca=True).sign(key, hashes.SHA256())


def _builder(subject, issuer, public_key, now, not_after, ca):
    """
    What every certificate of the cluster has: its names, key, a random
    serial, its validity (from a little before ``now``, for clocks that
    differ), whether it is the CA (which alone signs certificates and
    revocation lists), and its key's identifier.
    """
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(
            ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            public_key), critical=False))


def issue(ca_certificate, ca_key, holder, public_key, now, days,
          addresses=()):
    """
    A certificate for ``holder`` (an ``Identity`` of the CA's cluster) with
    ``public_key``, valid for ``days`` from ``now``, signed by the CA.

    The control service's says it serves (serverAuth) at ``addresses`` (IP
    addresses and DNS names, at least one: every replica's) and is a client
    (clientAuth): a replica is a client of etcd and of the leading replica.
    An etcd member's says the same, at its ``addresses``: it serves etcd's
    clients and peers, and dials its peers (and its own gateway dials its
    gRPC server with it). A node's says it is a client and a server, for
    the node's name and any ``addresses``: an agent serves its peers the
    blocks of a volume being pushed (and its metrics). A user's and the
    metrics scraper's say they are clients.

    :raise CertificateError: if ``holder`` is of another cluster, the
        control service or an etcd member has no address, or the CA
        expires first.
    :raise BadAddress: for an address that is neither IP nor DNS name.
    """
    cluster = cluster_of(ca_certificate)
    if holder.cluster != cluster:
        raise CertificateError("this CA is cluster %s's, not %s's; use the "
                               "CA of cluster %s" % (cluster, holder.cluster,
                                                     holder.cluster))
    not_after = now + datetime.timedelta(days=days)
    if not_after > ca_certificate.not_valid_after_utc:
        raise CertificateError(
            "the CA expires on %s, before a certificate valid for %d days "
            "would; give fewer days, or make a new CA"
            % (ca_certificate.not_valid_after_utc.date(), days))
    names = list(subject_alternative_names(addresses))
    if holder.kind in ADDRESSED_KINDS and not names:
        raise CertificateError(
            "the certificate of %s needs the addresses it serves at; give "
            "each IP address and DNS name with --address" % (
                "the control service" if holder.kind == CONTROL
                else "etcd member %s" % (holder.name,)))
    if holder.kind == NODE:
        names.insert(0, x509.DNSName(holder.name))
    if holder.kind in (CONTROL, NODE, ETCD):
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH,
                  ExtendedKeyUsageOID.SERVER_AUTH]
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        _builder(_name(cluster, holder.common_name), ca_certificate.subject,
                 public_key, now, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names),
                                        critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_crl(ca_certificate, ca_key, revoked, now):
    """
    The CA's revocation list of ``revoked``, pairs of (serial number, when
    revoked). It is next updated, as far as TLS stacks that read it are
    told, when the CA expires: blockmover rewrites it on every revocation
    rather than on a schedule.
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(ca_certificate.not_valid_after_utc)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False))
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when)
            .build())
    return builder.sign(ca_key, hashes.SHA256())


def revoked_serials(pem, ca_certificate, what="the revocation list"):
    """
    The serial numbers a revocation list in PEM revokes, once it is known
    to be the CA's.

    :raise CertificateError: if it is not a revocation list signed by
        ``ca_certificate``.
    """
    try:
        crl = x509.load_pem_x509_crl(_bytes(pem))
    except ValueError as e:
        raise CertificateError("%s is not a PEM revocation list (%s); make "
                               "it again with 'blockmover ca revoke'"
                               % (what, e))
    if (crl.issuer != ca_certificate.subject
            or not crl.is_signature_valid(ca_certificate.public_key())):
        raise CertificateError("%s is not signed by cluster %s's CA; copy "
                               "the CA's crl.pem again" % (
                                   what, cluster_of(ca_certificate)))
    return frozenset(entry.serial_number for entry in crl)


def check(certificate, ca_certificate, revoked, now):
    """
    The ``Identity`` of ``certificate`` if it is to be believed at ``now``:
    a certificate (not a CA) issued by ``ca_certificate``, for the CA's
    cluster, valid at ``now`` (and the CA too), whose serial number is not
    in ``revoked``.

    A TLS handshake with the CA as the only trust root makes most of these
    checks already; this one is the application's, made on every request,
    so that a revocation counts from the moment the revocation list says
    so, without a restart; what can change (validity, revocation) may be
    checked again on its own with ``check_current``.

    :raise CertificateRefused: saying why not.
    :raise NotAnIdentity: if it names no blockmover identity.
    """
    cluster = cluster_of(ca_certificate)
    _check_signature(certificate, ca_certificate, cluster)
    _check_validity(certificate, ca_certificate, now)
    holder = _check_holder(certificate, cluster)
    _check_revocation(certificate, holder, revoked)
    return holder


class Believed(PClass):
    """
    A certificate ``check`` believed, as little of it as ``check_current``
    needs to check it again: whose it is, its serial number and when it is
    valid (named as ``cryptography``'s certificate names them).
    """
    holder = field(type=Identity, mandatory=True)
    serial_number = field(type=int, mandatory=True)
    not_valid_before_utc = field(type=datetime.datetime, mandatory=True)
    not_valid_after_utc = field(type=datetime.datetime, mandatory=True)

    @classmethod
    def of(cls, certificate, holder):
        return cls(holder=holder, serial_number=certificate.serial_number,
                   not_valid_before_utc=certificate.not_valid_before_utc,
                   not_valid_after_utc=certificate.not_valid_after_utc)


def check_current(believed, ca_certificate, revoked, now):
    """
    What ``check`` checks of a certificate that changes with time, for one
    it believed before (a ``Believed``): both it and the CA's are valid at
    ``now``, and it is not in ``revoked``. What depends on the two
    certificates alone (the CA's signature, the identity) is checked once.

    :raise CertificateRefused: saying why not.
    """
    _check_validity(believed, ca_certificate, now)
    _check_revocation(believed, believed.holder, revoked)


def _check_signature(certificate, ca_certificate, cluster):
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused(
            "the certificate (serial %x) is not issued by cluster %s's CA"
            % (certificate.serial_number, cluster))


def _check_validity(certificate, ca_certificate, now):
    for what, valid in (("certificate", certificate),
                        ("CA's certificate", ca_certificate)):
        if not (valid.not_valid_before_utc <= now
                <= valid.not_valid_after_utc):
            raise CertificateRefused(
                "the %s is valid from %s to %s, not now; issue a new one"
                % (what, valid.not_valid_before_utc,
                   valid.not_valid_after_utc))


def _check_holder(certificate, cluster):
    try:
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or constraints.ca:
        raise CertificateRefused("the certificate (serial %x) is not one "
                                 "the CA issued to a service, node or user"
                                 % (certificate.serial_number,))
    holder = identity_of(certificate)
    if holder.cluster != cluster:
        raise CertificateRefused("the certificate is cluster %s's, not %s's"
                                 % (holder.cluster, cluster))
    return holder


def _check_revocation(certificate, holder, revoked):
    if certificate.serial_number in revoked:
        raise CertificateRefused("the certificate of %s (serial %x) is "
                                 "revoked; issue a new one with 'blockmover "
                                 "ca %s'" % (holder, certificate.serial_number,
                                             holder))


class RevocationFile(object):
    """
    The serial numbers revoked by the CA's revocation list at ``path``, read
    again whenever the file is replaced, so that a service refuses a
    revoked certificate from the moment a new list is copied in, without a
    restart. The file is replaced by rename (as ``blockmover ca`` writes
    it), so a new inode or size or time says it changed.
    """

    def __init__(self, path, ca_certificate):
        self._path = path
        self._ca_certificate = ca_certificate
        self._seen = None
        self._revoked = frozenset()

    def revoked(self):
        """
        The serial numbers revoked now.

        :raise CertificateError: if the file cannot be read or is not the
            CA's revocation list, on every call until it is fixed: a
            service refuses rather than believe an old list.
        """
        try:
            status = os.stat(self._path)
        except OSError as e:
            raise CertificateError("cannot read the revocation list %s (%s);"
                                   " copy the CA's crl.pem there"
                                   % (self._path, e.strerror))
        seen = (status.st_ino, status.st_size, status.st_mtime_ns)
        if seen != self._seen:
            try:
                with open(self._path, "rb") as f:
                    text = f.read()
            except OSError as e:
                raise CertificateError(
                    "cannot read the revocation list %s (%s); copy the CA's "
                    "crl.pem there" % (self._path, e.strerror))
            self._revoked = revoked_serials(text, self._ca_certificate,
                                            "the revocation list %s"
                                            % (self._path,))
            self._seen = seen
        return self._revoked
