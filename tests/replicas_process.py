"""
Replicas of ``blockmover-control`` on a real etcd, for tests: ``Replicas(n,
members)`` runs ``members`` etcd processes and ``n`` replicas on
127.0.0.1, all with certificates of the cluster's test CA
(``tests.cluster_ca``), each replica a child process by its pid.
``cleanup()`` stops them all and removes their directory.
"""

import os
import shutil
import signal
import tempfile
import time

from blockmover.poll import Backoff, poll
from tests.cluster_ca import cluster_ca
from tests.control_process import ControlProcess
from tests.etcd_process import EtcdCluster, free_port

# Short election times, so that tests of a leader's death wait seconds.
ELECTION = "{lease: 4, renew_deadline: 3, retry: 0.5}"


def cluster_yml(root, nodes=("n1", "n2"), placement=None, lease=20,
                election=ELECTION):
    """
    A cluster.yml of ``nodes`` on a loopback backend under ``root``;
    ``placement`` maps a node to the applications it runs.
    """
    lines = ["version: 1", "cluster:", "  name: demo",
             "  control: https://127.0.0.1:4523",
             "  backend: {name: loopback, root: %s}" % (root,),
             "  lease: %s" % (lease,), "  election: %s" % (election,),
             "nodes:"]
    lines.extend("  %s: {address: 127.0.1.%d}" % (node, n + 1)
                 for n, node in enumerate(nodes))
    lines.append("deployment: {%s}" % (", ".join(
        "%s: [%s]" % (node, ", ".join(apps))
        for node, apps in sorted((placement or {}).items())),))
    return "\n".join(lines) + "\n"


APP_YML = """version: 1
applications:
  db: {command: [sleep, "1000"], volume: {mountpoint: /var/lib/db}}
"""


class Replicas(object):
    """
    ``size`` replicas of cluster demo's control service on an etcd of
    ``members``.
    """

    def __init__(self, size=3, members=3):
        self.directory = tempfile.mkdtemp(prefix="blockmover-replicas-")
        self.ca = cluster_ca("demo")
        self.etcd = EtcdCluster(members, ca=self.ca)
        self.replicas = []
        for n in range(size):
            port = free_port()
            name = "r%d" % (n + 1,)
            state_dir = os.path.join(self.directory, name)
            os.makedirs(state_dir)
            # Each its own copy of the CA's revocation list, as on a host
            # of its own.
            crl = os.path.join(self.directory, name + "-crl.pem")
            shutil.copyfile(self.ca.crl, crl)
            self.replicas.append(ControlProcess(
                state_dir, os.path.join(self.directory, name + ".log"),
                port=port, crl=crl, args=[
                    "--etcd", ",".join(self.etcd.endpoints),
                    "--replica-name", name,
                    "--advertise", "https://127.0.0.1:%d" % (port,)]))

    def __enter__(self):
        try:
            self.etcd.start()
            for replica in self.replicas:
                replica.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        for replica in self.replicas:
            replica.stop()
        self.etcd.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)

    def running(self):
        return [r for r in self.replicas
                if r.process is not None and r.process.poll() is None]

    def leader(self, timeout=60, among=None):
        """
        The replica that serves ``GET /v1/state`` (the leader, its service
        started), once exactly one of the running ones does.
        """
        def check():
            found = [r for r in (among or self.running())
                     if _answers(r, "/v1/state") == 200]
            return found[0] if len(found) == 1 else None
        return poll(check, timeout, "one replica to lead",
                    Backoff(initial=0.05, maximum=0.25))

    def followers(self, leader):
        return [r for r in self.running() if r is not leader]

    def kill(self, replica, sig=signal.SIGKILL):
        """
        Signal ``replica`` (SIGKILL by default); :return: when (monotonic).
        """
        killed = time.monotonic()
        replica.stop(sig)
        return killed

    def deploy(self, cluster_text, app_text=APP_YML, timeout=60):
        """
        PUT the configuration to whichever replica leads (following its
        421s), until one takes it. :return: its answer.
        """
        def attempt():
            status, body = ask(self.leader(timeout), "PUT",
                               "/v1/configuration",
                               {"cluster_yml": cluster_text,
                                "app_yml": app_text})
            if status in (None, 421, 503):
                return None
            assert status == 200, body
            return body
        return poll(attempt, timeout, "the configuration to be taken",
                    Backoff(initial=0.1, maximum=0.5))


def ask(replica, method, path, body=None, timeout=10, **kwargs):
    """
    ``replica.request``, or ``(None, None)`` while nothing listens at its
    port (a replica starting afresh).
    """
    try:
        return replica.request(method, path, body, timeout=timeout, **kwargs)
    except (ConnectionError, TimeoutError):
        return None, None


def _answers(replica, path):
    return ask(replica, "GET", path, timeout=5)[0]
