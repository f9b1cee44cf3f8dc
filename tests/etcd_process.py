"""
Real etcd for tests: ``EtcdCluster(size)`` runs one member or several of
Debian's ``/usr/bin/etcd`` on 127.0.0.1, each a child process (by its pid,
``blockmover.proc``) with its data in a temporary directory, started as
the local cluster starts its members (``blockmover.localcluster.etcd``):
speaking mutual TLS to its peers and its clients with certificates of a CA
made for the cluster alone, and refusing those its revocation list names.
``cleanup()`` (or leaving the ``with``) kills every member it started and
removes the directory, CA and certificates with it.

    with EtcdCluster(3) as etcd:
        client = EtcdClient(etcd.endpoints, EtcdTLS(etcd.client_files), r)
        etcd.members[0].kill()     # as a crash would; .start() again
        etcd.members[1].pause()    # a member that stops answering

Members have etcd members' certificates (``blockmover ca etcd``:
``etcd1``..., for 127.0.0.1): etcd's peers dial each other, and its gateway
dials its own gRPC server with the server's certificate, so each needs
serverAuth and clientAuth, which those have. Clients present the control
service's, as its replicas do.
"""

import os
import shutil
import signal
import socket
import tempfile
import uuid

from blockmover import proc
from blockmover.certificates import CONTROL, ETCD
from blockmover.localcluster import etcd
from blockmover.poll import Backoff, poll
from tests.cluster_ca import TestCA

HOST = "127.0.0.1"


def free_port():
    """
    A port of 127.0.0.1 nobody listens on now (the kernel's pick).
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class EtcdMember(object):
    """
    One member: its ``name``, ports, data directory and log; ``process``
    while it runs.
    """

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = os.path.join(cluster.directory, name)
        self.log = os.path.join(cluster.directory, name + ".log")
        self.files = cluster.ca.files(ETCD, name, addresses=(HOST,))
        self.process = None

    @property
    def client_url(self):
        return "https://%s:%d" % (HOST, self.client_port)

    @property
    def peer_url(self):
        return "https://%s:%d" % (HOST, self.peer_port)

    def argv(self):
        return etcd.member_argv(
            self.name, self.data_dir, self.client_url, self.peer_url,
            self.cluster.initial_cluster(), self.cluster.token, self.files,
            crl=self.cluster.ca.crl)

    def start(self):
        """
        Start the member (again, after ``kill``: same ports, same data).
        """
        self.process = proc.start(self.argv(), self.log,
                                  env=etcd.member_env(), session=False)
        return self

    def running(self):
        return self.process is not None and proc.is_running(self.process)

    def kill(self):
        """
        SIGKILL the member, as a crash would; wait until it is gone.
        """
        if self.process is not None:
            proc.kill(self.process)

    def pause(self):
        """
        Stop the member answering (SIGSTOP): its connections stay open and
        silent, like a link cut. ``resume`` undoes it.
        """
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.process.pid, signal.SIGCONT)

    def healthy(self):
        """
        Whether the member answers ``/health`` with a leader known, over
        mutual TLS as a client would.
        """
        return etcd.healthy(self.client_url,
                            self.cluster.ca.ssl_context(CONTROL, None))


class EtcdCluster(object):
    """
    ``size`` members on 127.0.0.1, started by ``start()``. ``endpoints``
    are their client URLs; ``client_files`` the ``tls.TLSFiles`` of a
    client every member trusts: the control service's, for 127.0.0.1.
    """

    def __init__(self, size=1, ca=None):
        self.directory = tempfile.mkdtemp(prefix="blockmover-etcd-")
        # Its own CA, unless it serves the replicas of a cluster's control
        # service: then that cluster's (``tests.cluster_ca``).
        self.ca = ca if ca is not None else TestCA(
            os.path.join(self.directory, "pki"), "etcdtest")
        self.token = "blockmover-test-" + uuid.uuid4().hex[:8]
        self.members = [EtcdMember(self, "etcd%d" % (n + 1,))
                        for n in range(size)]
        self.client_files = self.ca.files(CONTROL)

    @property
    def endpoints(self):
        return [m.client_url for m in self.members]

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url)
                        for m in self.members)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()

    def start(self, timeout=60):
        for member in self.members:
            member.start()
        self.wait_healthy(self.members, timeout)
        return self

    def wait_healthy(self, members, timeout=60):
        """
        Wait until each of ``members`` answers with a leader known.
        """
        def check():
            for member in members:
                if not member.running():
                    raise AssertionError("etcd member %s exited: %s"
                                         % (member.name, self.log(member)))
            return True if all(m.healthy() for m in members) else None
        poll(check, timeout, "etcd to have a leader",
             Backoff(initial=0.05, maximum=0.5))

    def log(self, member):
        with open(member.log, errors="replace") as f:
            return f.read()[-3000:]

    def cleanup(self):
        for member in self.members:
            if member.running():
                # A paused member takes no SIGTERM; SIGKILL takes anyone.
                member.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
