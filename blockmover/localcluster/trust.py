"""
The local cluster's own CA and the certificates of its parts, so that it
runs the secure path a real cluster runs: mutual TLS between the control
service and every client.

Everything is kept in the cluster's state directory, readable by root
only, and goes with it on ``cluster down``:

- the CA (``blockmover.ca``'s directory: key 0600, directory 0700) in
  ``layout.ca_dir``; the control service reads its revocation list there,
  so ``blockmover ca revoke --dir CA_DIR`` counts at once;
- the control service's certificate, for the bridge's address and every
  replica's, in ``layout.control_tls_dir``: each replica presents it to
  etcd and to the other replicas too;
- each etcd member's (kind ``etcd``, for the bridge's address) in the
  member's ``tls_dir``;
- each node's in the node's ``tls_dir``, named in its agent.yml;
- the operator's (user ``operator``) in ``layout.operator_tls_dir``, for
  ``blockmover-deploy --tls-dir`` and the tools.

``ensure`` makes what is missing and keeps the rest: a cluster brought up
again keeps its CA and every certificate that is still good.
"""

import datetime
import os

from blockmover import ca, certificates, tls
from blockmover.certificates import (
    CONTROL, ETCD, NODE, USER, CertificateError,
)
from blockmover.localcluster import ClusterError

# The user whose certificate the local cluster's tools act with.
OPERATOR = "operator"

_PRIVATE_DIRECTORY = 0o700


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def revocation_list(layout):
    """
    The CA's revocation list, which the control service reads.
    """
    return os.path.join(layout.ca_dir, ca.CRL)


def _holders(layout, authority):
    """
    ``(identity, directory, addresses)`` of every certificate the cluster
    needs.
    """
    holders = [(authority.identity(CONTROL), layout.control_tls_dir,
                tuple(layout.control_addresses)),
               (authority.identity(USER, OPERATOR), layout.operator_tls_dir,
                ())]
    holders += [(authority.identity(NODE, node.name), node.tls_dir, ())
                for node in layout.nodes]
    holders += [(authority.identity(ETCD, member.name), member.tls_dir,
                 (layout.bridge_address,))
                for member in layout.etcd_members]
    return holders


def _private_directory(directory):
    os.makedirs(directory, mode=_PRIVATE_DIRECTORY, exist_ok=True)
    # makedirs leaves an existing directory as it is, and the umask may
    # have narrowed a new one's mode: 0700 either way.
    os.chmod(directory, _PRIVATE_DIRECTORY)


def _authority(layout):
    """
    The cluster's CA and whether it was made now.
    """
    try:
        return ca.load(layout.ca_dir), False
    except ca.NoCA:
        # None yet, or an ``up`` that crashed wrote half of one: without
        # both its key and its certificate it issued nothing usable.
        return ca.init(layout.ca_dir, layout.name, force=True), True


def _is_current(authority, holder, directory, now):
    """
    Whether ``directory`` holds a certificate of ``holder`` the CA issued,
    with its key, valid now and not revoked, beside the CA's certificate.
    """
    try:
        credentials = tls.Credentials.load(
            tls.files_in(directory, holder.file_stem), now)
    except tls.TLSError:
        return False
    revoked = {entry.serial for entry in authority.issued
               if entry.revoked_at is not None}
    return (credentials.ca_certificate == authority.certificate
            and credentials.identity == holder
            and credentials.certificate.serial_number not in revoked)


def ensure(layout):
    """
    Make the cluster's CA unless it has one, and issue every certificate
    of the cluster (the control service's, each node's, the operator's,
    each etcd member's) that is missing, damaged, expired or revoked; keep
    the rest.

    :return: ``(made, issued)``: whether the CA was made now, and the
        identities issued a certificate now.
    :raise ClusterError: if the CA's directory cannot be used.
    """
    now = _now()
    try:
        _private_directory(layout.tls_dir)
        authority, made = _authority(layout)
        issued = []
        for holder, directory, addresses in _holders(layout, authority):
            _private_directory(directory)
            if not _is_current(authority, holder, directory, now):
                ca.write_issued(authority.issue(holder, addresses, now=now),
                                directory, force=True)
                issued.append(holder)
    except CertificateError as e:
        raise ClusterError(
            "cannot make cluster %s's certificates: %s; or take the cluster "
            "down (`blockmover cluster down --name %s`) and bring it up "
            "again with a new CA" % (layout.name, e, layout.name))
    return made, issued


def _stem(layout, kind, name):
    return certificates.identity(layout.name, kind, name).file_stem


def operator_files(layout):
    """
    The operator's ``tls.TLSFiles``.
    """
    return tls.files_in(layout.operator_tls_dir,
                        _stem(layout, USER, OPERATOR))


def node_files(layout, node):
    """
    The ``tls.TLSFiles`` of ``node`` (a ``NodeLayout`` of ``layout``).
    """
    return tls.files_in(node.tls_dir, _stem(layout, NODE, node.name))


def control_files(layout):
    """
    The control service's ``tls.TLSFiles``, which every replica presents.
    """
    return tls.files_in(layout.control_tls_dir, _stem(layout, CONTROL, None))


def etcd_files(layout, member):
    """
    The ``tls.TLSFiles`` of etcd member ``member`` (an
    ``EtcdMemberLayout`` of ``layout``).
    """
    return tls.files_in(member.tls_dir, _stem(layout, ETCD, member.name))


def credentials(files, layout):
    """
    The loaded ``files`` (``tls.TLSFiles``) of a holder in ``layout``.

    :raise ClusterError: if they cannot be used.
    """
    try:
        return tls.Credentials.load(files, _now())
    except tls.TLSError as e:
        raise ClusterError("cannot use cluster %s's TLS files: %s; "
                           "`blockmover cluster up --name %s` issues them "
                           "again" % (layout.name, e, layout.name))


def operator_credentials(layout):
    """
    The operator's ``tls.Credentials``, which the tools present to the
    control service.

    :raise ClusterError: if they cannot be used.
    """
    return credentials(operator_files(layout), layout)


def operator_hint(layout):
    """
    For a person: where the operator's TLS files are and how to use them.
    """
    directory = layout.operator_tls_dir
    return ("operator's TLS files in %s: blockmover-deploy --tls-dir %s "
            "..., or export %s=%s" % (directory, directory, tls.ENVIRONMENT,
                                      directory))
