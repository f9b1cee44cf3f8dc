"""
The CA's revocation list, shared by the replicas of the control service
through etcd: copy a new ``crl.pem`` to any one replica's host and every
replica refuses what it revokes within a second or two.

Each replica reads its own ``crl.pem`` (``certificates.RevocationFile``,
read again when replaced) and watches the key::

    /blockmover/<cluster>/revocations    the newest list, in PEM

A replica whose file holds a newer list than the key (by the list's
``last_update``) writes it there, with a transaction on the key's revision
so that a newer list is never replaced by an older one. Any replica may
write it, leading or not: the list is the CA's, signed, and each replica
checks the signature of what it reads as of what it writes. A replica
refuses the serial numbers of both lists, its file's and the key's.
"""

from cryptography import x509
from eliot import log_message
from twisted.internet.task import LoopingCall

from blockmover.certificates import CertificateError, revoked_serials
from blockmover.control.etcd import EtcdError, modified_at, put
from blockmover.control.etcdstore import cluster_prefix

KEY = b"revocations"
# How often a replica looks at its file.
INTERVAL = 1.0


class Revocations(object):
    """
    The serial numbers revoked by the file (``RevocationFile``) and by the
    list shared through etcd (``shared``): what ``access.Authority``
    refuses.
    """

    def __init__(self, revocation_file):
        self.file = revocation_file
        self._shared = frozenset()

    def revoked(self):
        """
        :raise CertificateError: the file cannot be read (see
            ``RevocationFile``).
        """
        return self.file.revoked() | self._shared

    def share(self, serials):
        self._shared = frozenset(serials)


def _last_update(pem):
    return x509.load_pem_x509_crl(pem).last_update_utc


class SharedRevocations(object):
    """
    Keeps ``revocations`` (a ``Revocations``) and the key in step: the
    newest list of the file and the key, as above.

    :param path: the replica's ``crl.pem``.
    """

    def __init__(self, client, cluster, path, ca_certificate, revocations,
                 reactor):
        self._client = client
        self._key = cluster_prefix(cluster) + KEY
        self._path = path
        self._ca = ca_certificate
        self._revocations = revocations
        self._reactor = reactor
        # What the key holds: its revision, and its list's last update.
        self._revision = 0
        self._published = None
        self._file_seen = None
        self._watch = None
        self._loop = LoopingCall(self._look)
        self._loop.clock = reactor
        self._busy = False

    def start(self):
        d = self._client.range(self._key)

        def found(listed):
            kv = listed.first
            if kv is not None:
                self._take(kv.value, kv.mod_revision)
            self._watch = self._client.watch(
                self._key, self._changed, start_revision=listed.revision + 1)
            self._loop.start(INTERVAL)
        d.addCallback(found)
        return d

    def stop(self):
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._loop.running:
            self._loop.stop()

    def _changed(self, events):
        for event in events:
            if event.type == "PUT":
                self._take(event.kv.value, event.kv.mod_revision)

    def _take(self, pem, revision):
        try:
            serials = revoked_serials(pem, self._ca, "the revocation list in "
                                      "etcd")
        except CertificateError as e:
            log_message(message_type="blockmover:control:revocations-bad",
                        reason=str(e))
            return
        self._revision = revision
        self._published = _last_update(pem)
        self._revocations.share(serials)
        log_message(message_type="blockmover:control:revocations-shared",
                    revoked=len(serials),
                    last_update=self._published.isoformat())

    def _look(self):
        """
        Publish the file's list if it is newer than the key's.
        """
        if self._busy:
            return
        try:
            with open(self._path, "rb") as f:
                pem = f.read()
            revoked_serials(pem, self._ca, "the revocation list %s"
                            % (self._path,))
            updated = _last_update(pem)
        except (OSError, ValueError, CertificateError):
            # The file's own reader (``RevocationFile``) says what is
            # wrong with it, on every request.
            return
        if self._published is not None and updated <= self._published:
            return
        if pem == self._file_seen:
            return
        self._busy = True
        d = self._client.txn([modified_at(self._key, self._revision)],
                             [put(self._key, pem)])

        def done(result):
            self._busy = False
            if result.succeeded:
                self._file_seen = pem
                log_message(
                    message_type="blockmover:control:revocations-published",
                    path=self._path, last_update=updated.isoformat())

        def failed(failure):
            self._busy = False
            failure.trap(EtcdError)
            log_message(message_type="blockmover:control:revocations-unsent",
                        reason=failure.getErrorMessage())
        d.addCallbacks(done, failed)
