"""
Cluster CAs for tests: one per cluster name, made on first use in a
temporary directory removed when the test run ends, with the control
service's certificate for 127.0.0.1 and certificates issued on demand to
any node, user or etcd member (for 127.0.0.1 too). Everything a test
talks to the control service with is real mutual TLS on these.
"""

import atexit
import datetime
import os
import shutil
import ssl
import tempfile
import threading

from blockmover import ca, tls
from blockmover.ca import write_issued
from blockmover.certificates import ADDRESSED_KINDS, CONTROL, NODE, USER

# The user whose certificate tests act with unless they say otherwise.
OPERATOR = "operator"
# Where the control service and etcd's members serve, unless a test says.
SERVER_ADDRESSES = ("127.0.0.1", "localhost")

_lock = threading.Lock()
_root = []
_cas = {}


def _directory():
    if not _root:
        _root.append(tempfile.mkdtemp(prefix="blockmover-test-ca-"))
        atexit.register(shutil.rmtree, _root[0], True)
    return _root[0]


class TestCA(object):
    """
    The CA of one cluster, in ``directory``; or ``authority`` (a
    ``ca.Authority`` made elsewhere), issuing into ``directory``.
    """
    __test__ = False

    def __init__(self, directory, cluster, authority=None):
        self.directory = directory
        self.cluster = cluster
        self.authority = authority if authority is not None else ca.init(
            os.path.join(directory, "ca"), cluster)
        self._issued = {}

    @property
    def crl(self):
        return os.path.join(self.authority.directory, ca.CRL)

    def files(self, kind, name=None, addresses=()):
        """
        The ``tls.TLSFiles`` of ``kind`` ``name``, issued on first use; the
        control service's directory also holds the CA's revocation list.
        """
        holder = self.authority.identity(kind, name)
        with _lock:
            if holder not in self._issued:
                out = os.path.join(self.directory, holder.file_stem)
                os.makedirs(out)
                if kind in ADDRESSED_KINDS:
                    addresses = addresses or SERVER_ADDRESSES
                write_issued(self.authority.issue(holder, addresses), out)
                self._issued[holder] = out
            return tls.files_in(self._issued[holder], holder.file_stem)

    def control_dir(self):
        """
        The directory to give ``blockmover-control --tls-dir``; its
        ``--crl`` is ``self.crl``, the CA's own list.
        """
        return os.path.dirname(self.files(CONTROL).certificate)

    def credentials(self, kind=USER, name=OPERATOR):
        return tls.Credentials.load(
            self.files(kind, name),
            datetime.datetime.now(datetime.timezone.utc))

    def ssl_context(self, kind=USER, name=OPERATOR):
        """
        A client ``ssl.SSLContext`` presenting ``kind`` ``name``'s
        certificate and trusting only this CA.
        """
        files = self.files(kind, name)
        context = ssl.create_default_context(cafile=files.ca)
        context.load_cert_chain(files.certificate, files.key)
        return context

    def revoke(self, kind, name=None):
        self.authority.revoke(self.authority.identity(kind, name))


def cluster_ca(cluster):
    """
    The ``TestCA`` of ``cluster``, made on first use.
    """
    with _lock:
        if cluster not in _cas:
            directory = os.path.join(_directory(), cluster)
            os.makedirs(directory)
            _cas[cluster] = TestCA(directory, cluster)
        return _cas[cluster]


def node_tls(cluster, node):
    """
    The ``tls:`` mapping of node ``node``'s agent.yml.
    """
    files = cluster_ca(cluster).files(NODE, node)
    return {"ca": files.ca, "certificate": files.certificate,
            "key": files.key}
