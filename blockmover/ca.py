"""
The cluster's CA as a directory on the host that keeps it
(``/etc/blockmover/ca`` by default, readable by root only):

``ca.crt``
    the CA's certificate; every host of the cluster gets a copy.
``ca.key``
    its private key (0600); never leaves the directory.
``issued.json``
    the index of every certificate issued: serial, identity, expiry and
    when it was revoked, so that ``revoke`` finds every certificate of an
    identity by its name.
``crl.pem``
    the revocation list, made from the index and signed by the CA; the
    control service reads a copy of it.

Certificates are issued into an output directory as ``<stem>.crt``,
``<stem>.key`` (0600) and ``ca.crt``, where the stem is the identity's
(``control``, ``node-NAME``, ``user-NAME``, ``etcd-NAME``). Every file is
written atomically; keys and the CA's directory are never replaced unless
asked to.
"""

import datetime
import json
import os

from pyrsistent import InvariantException, PClass, field

from blockmover import certificates
from blockmover.certificates import CertificateError
from blockmover.files import write_atomically

DEFAULT_DIR = "/etc/blockmover/ca"
CA_DAYS = 3650
LEAF_DAYS = 365

CA_CERTIFICATE = "ca.crt"
CA_KEY = "ca.key"
INDEX = "issued.json"
CRL = "crl.pem"

_PRIVATE = 0o600
_PUBLIC = 0o644
_PRIVATE_DIRECTORY = 0o700


class CAError(CertificateError):
    """
    The CA's directory or an output directory is not as an operation needs
    it; the message says what to do.
    """


class NoCA(CAError):
    """
    The directory holds no CA.
    """


class CAExists(CAError):
    """
    The directory holds a CA already.
    """


class WouldOverwrite(CAError):
    """
    Issued files would replace others.
    """


class NotIssued(CAError):
    """
    No certificate was ever issued for an identity.
    """


class Issued(PClass):
    """
    One certificate in the CA's index. ``revoked_at`` is None while it is
    not revoked.
    """
    serial = field(type=int, mandatory=True)
    identity = field(type=certificates.Identity, mandatory=True)
    not_after = field(type=datetime.datetime, mandatory=True)
    revoked_at = field(type=(datetime.datetime, type(None)), mandatory=True,
                       initial=None)

    def to_data(self):
        return {"serial": "%x" % (self.serial,),
                "kind": self.identity.kind, "name": self.identity.name,
                "not_after": self.not_after.isoformat(),
                "revoked_at": (None if self.revoked_at is None
                               else self.revoked_at.isoformat())}

    @classmethod
    def from_data(cls, cluster, data):
        revoked_at = data["revoked_at"]
        return cls(
            serial=int(data["serial"], 16),
            identity=certificates.Identity(cluster=cluster, kind=data["kind"],
                                           name=data["name"]),
            not_after=datetime.datetime.fromisoformat(data["not_after"]),
            revoked_at=(None if revoked_at is None
                        else datetime.datetime.fromisoformat(revoked_at)))


class IssuedFiles(PClass):
    """
    A new certificate as the files its holder needs: the certificate, its
    key and the CA's certificate, in PEM.
    """
    identity = field(type=certificates.Identity, mandatory=True)
    certificate = field(type=str, mandatory=True)
    key = field(type=str, mandatory=True)
    ca_certificate = field(type=str, mandatory=True)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _read(path, what, missing):
    """
    The text of ``path``; ``missing`` (a CAError) if it does not exist.
    """
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        raise missing
    except OSError as e:
        raise CAError("cannot read %s %s (%s); run as root, or give the CA's "
                      "directory with --dir" % (what, path, e.strerror))


def _make_private_directory(directory):
    try:
        os.makedirs(directory, mode=_PRIVATE_DIRECTORY, exist_ok=True)
        # makedirs leaves an existing directory, and the umask may narrow
        # the mode of a new one: the CA's is 0700 either way.
        os.chmod(directory, _PRIVATE_DIRECTORY)
    except OSError as e:
        raise CAError("cannot make the CA's directory %s (%s); run as root, "
                      "or give another with --dir" % (directory, e.strerror))


def init(directory, cluster, days=CA_DAYS, force=False, now=None):
    """
    Make the CA of ``cluster`` in ``directory`` (made 0700 if need be): its
    key, its certificate valid for ``days``, an empty index and an empty
    revocation list.

    :raise CAExists: if the directory holds a CA already and not ``force``;
        with ``force`` the old CA, and every certificate it issued, is
        replaced by the new one.
    :raise BadName: if ``cluster`` is not a plain name.
    :return: the new ``CertificateAuthority``.
    """
    now = now or _now()
    if not force:
        for name in (CA_KEY, CA_CERTIFICATE):
            if os.path.exists(os.path.join(directory, name)):
                raise CAExists(
                    "%s already holds a CA (%s); keep it, give another "
                    "--dir, or replace it and every certificate it issued "
                    "with --force" % (directory, name))
    key = certificates.new_key()
    certificate = certificates.make_ca(cluster, key, now, days)
    _make_private_directory(directory)
    authority = CertificateAuthority(directory, certificate, key, ())
    # The key first: a certificate without its key is of no use, and a
    # crash between the two leaves a directory init refuses until --force.
    write_atomically(os.path.join(directory, CA_KEY),
                     certificates.key_pem(key), _PRIVATE)
    write_atomically(os.path.join(directory, CA_CERTIFICATE),
                     certificates.certificate_pem(certificate), _PUBLIC)
    authority._write_index()
    authority._write_crl(now)
    return authority


def load(directory):
    """
    The CA kept in ``directory``.

    :raise NoCA: if there is none; ``CAError`` if it cannot be read.
    """
    missing = NoCA("%s holds no CA; make one with 'blockmover ca init "
                   "--cluster NAME', or give its directory with --dir"
                   % (directory,))
    certificate = certificates.load_certificate(
        _read(os.path.join(directory, CA_CERTIFICATE), "the CA's certificate",
              missing),
        "the CA's certificate %s" % (os.path.join(directory, CA_CERTIFICATE),))
    key = certificates.load_key(
        _read(os.path.join(directory, CA_KEY), "the CA's key", missing),
        "the CA's key %s" % (os.path.join(directory, CA_KEY),))
    cluster = certificates.cluster_of(certificate)
    index_path = os.path.join(directory, INDEX)
    text = _read(index_path, "the CA's index", CAError(
        "the CA's index %s is missing; restore it from a backup (without "
        "it no certificate can be revoked by name)" % (index_path,)))
    try:
        data = json.loads(text)
        issued = tuple(Issued.from_data(cluster, entry)
                       for entry in data["certificates"])
    except (ValueError, KeyError, TypeError, AttributeError,
            InvariantException) as e:
        raise CAError("the CA's index %s is damaged (%s); restore it from a "
                      "backup" % (index_path, e))
    return CertificateAuthority(directory, certificate, key, issued)


class CertificateAuthority(object):
    """
    A cluster's CA, as kept in its directory: issues certificates and
    revokes them, recording each in the index before any file of it is
    written, so that nothing issued escapes ``revoke``.
    """

    def __init__(self, directory, certificate, key, issued):
        self.directory = directory
        self.certificate = certificate
        self._key = key
        self._issued = tuple(issued)

    @property
    def cluster(self):
        return certificates.cluster_of(self.certificate)

    @property
    def issued(self):
        """
        Every certificate issued, as ``Issued`` records, oldest first.
        """
        return self._issued

    def identity(self, kind, name=None):
        """
        The identity ``kind`` ``name`` in this CA's cluster.

        :raise BadName: if ``name`` is not plain.
        """
        return certificates.identity(self.cluster, kind, name)

    def issue(self, holder, addresses=(), days=LEAF_DAYS, now=None):
        """
        A new key and certificate for ``holder`` (see
        ``certificates.issue`` for what each kind's says), recorded in the
        index.

        :return: the ``IssuedFiles`` to hand to the holder.
        """
        now = now or _now()
        key = certificates.new_key()
        certificate = certificates.issue(self.certificate, self._key, holder,
                                         key.public_key(), now, days,
                                         addresses)
        self._issued += (Issued(serial=certificate.serial_number,
                                identity=holder,
                                not_after=certificate.not_valid_after_utc),)
        self._write_index()
        return IssuedFiles(
            identity=holder,
            certificate=certificates.certificate_pem(certificate),
            key=certificates.key_pem(key),
            ca_certificate=certificates.certificate_pem(self.certificate))

    def revoke(self, holder, now=None):
        """
        Revoke every certificate issued for ``holder`` and not yet revoked,
        and write the revocation list again. A certificate issued for it
        afterwards is valid: revoke what was lost, then issue anew.

        :raise NotIssued: if none was ever issued for ``holder``.
        :return: the ``Issued`` records revoked now (none if all were
            already).
        """
        now = now or _now()
        if not any(entry.identity == holder for entry in self._issued):
            raise NotIssued("no certificate was ever issued for %s; "
                            "'blockmover ca list' shows those that were"
                            % (holder,))
        revoked = []
        issued = []
        for entry in self._issued:
            if entry.identity == holder and entry.revoked_at is None:
                entry = entry.set(revoked_at=now)
                revoked.append(entry)
            issued.append(entry)
        self._issued = tuple(issued)
        # The index first: the list is made from it, so running revoke
        # again after a crash in between writes the list that was meant.
        self._write_index()
        self._write_crl(now)
        return revoked

    def _write_index(self):
        write_atomically(
            os.path.join(self.directory, INDEX),
            json.dumps({"version": 1, "cluster": self.cluster,
                        "certificates": [entry.to_data()
                                         for entry in self._issued]},
                       indent=1, sort_keys=True) + "\n", _PUBLIC)

    def _write_crl(self, now):
        crl = certificates.make_crl(
            self.certificate, self._key,
            [(entry.serial, entry.revoked_at) for entry in self._issued
             if entry.revoked_at is not None], now)
        write_atomically(os.path.join(self.directory, CRL),
                         certificates.crl_pem(crl), _PUBLIC)


def file_paths(out, holder):
    """
    Where ``write_issued`` puts ``holder``'s files in ``out``: the
    certificate, the key and the CA's certificate.
    """
    return (os.path.join(out, holder.file_stem + ".crt"),
            os.path.join(out, holder.file_stem + ".key"),
            os.path.join(out, CA_CERTIFICATE))


def refuse_overwrite(out, holder, ca_certificate, force=False):
    """
    Check, before anything is issued, that ``holder``'s files may be
    written into ``out``.

    :raise CAError: if ``out`` is not a directory.
    :raise WouldOverwrite: if ``out`` holds a key or certificate of those
        names already, or the certificate of a CA other than
        ``ca_certificate`` (PEM), and not ``force``.
    """
    if not os.path.isdir(out):
        raise CAError("the output directory %s does not exist; make it, or "
                      "give another with --out" % (out,))
    if force:
        return
    certificate_path, key_path, ca_path = file_paths(out, holder)
    for path in (certificate_path, key_path):
        if os.path.exists(path):
            raise WouldOverwrite(
                "%s exists; move it away, give another --out, or replace "
                "it with --force" % (path,))
    if os.path.exists(ca_path):
        with open(ca_path) as f:
            if f.read() != ca_certificate:
                raise WouldOverwrite(
                    "%s is another CA's certificate; give another --out, or "
                    "replace it with --force" % (ca_path,))


def write_issued(issued, out, force=False):
    """
    Write ``issued`` (``IssuedFiles``) into the directory ``out``: the key
    0600, the certificates 0644.

    :raise WouldOverwrite: see ``refuse_overwrite``.
    :return: the paths written.
    """
    refuse_overwrite(out, issued.identity, issued.ca_certificate, force)
    certificate_path, key_path, ca_path = file_paths(out, issued.identity)
    write_atomically(key_path, issued.key, _PRIVATE)
    write_atomically(certificate_path, issued.certificate, _PUBLIC)
    write_atomically(ca_path, issued.ca_certificate, _PUBLIC)
    return [certificate_path, key_path, ca_path]
