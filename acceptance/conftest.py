"""
The acceptance fixtures: a 2-node local cluster with its services, unique
to this test session (its own name, bridge and subnet, so a demo or
another run beside it is untouched), once on each backend (loopback, and
openstack on the OpenStack emulator with slow attach and detach), a
watcher checking the safety invariants the whole time, and MongoDB with
documents on it. Afterwards the cluster is taken down and nothing of it
may be left.
"""

import os
import tempfile
import uuid

import pytest

from acceptance.clusters import WatchedCluster, watched
from blockmover.backends import BACKENDS
from blockmover.localcluster import trust
from blockmover.localcluster.cloud import admin as cloud_admin
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.namespaces import unused_subnet
from blockmover.localcluster.up import up
from blockmover.poll import Backoff, Timeout, poll

HERE = os.path.dirname(os.path.abspath(__file__))
# Seconds the emulator takes to attach and to detach, like a slow cloud.
CLOUD_LATENCY = 2.0
# Seconds within which the watcher, looking every few tens of milliseconds,
# looks again; longer only if it has stopped.
WATCHER_LOOKS_WITHIN = 10.0


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.acceptance)


class Cluster(WatchedCluster):
    """
    The session's cluster: a ``WatchedCluster`` that knows its operator's
    credentials, its backend and its emulated cloud.
    """
    _operator = None

    @property
    def operator(self):
        """
        The operator's ``tls.Credentials``, which the cluster issued.
        """
        if self._operator is None:
            self._operator = trust.operator_credentials(self.layout)
        return self._operator

    @property
    def backend(self):
        return self.layout.backend

    def cloud(self):
        """
        The emulator's admin API (openstack backend only).
        """
        return cloud_admin(self.layout)

    def up(self):
        """
        Bring the cluster up, or restart whatever of it is not running.
        """
        return up(self.layout, echo=self.echo)


@pytest.fixture(scope="session", params=BACKENDS)
def cluster(request):
    if os.geteuid() != 0:
        pytest.skip("the acceptance tests need root: namespaces, loop "
                    "devices and mounts")
    name = "a" + uuid.uuid4().hex[:6]
    state_dir = os.path.join(tempfile.gettempdir(),
                             "blockmover-acceptance-" + name)
    layout = make_layout(name, 2, unused_subnet("10.79"), state_dir,
                         backend=request.param,
                         attach_latency=CLOUD_LATENCY,
                         detach_latency=CLOUD_LATENCY)
    with watched(Cluster, layout, "acceptance") as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def safe_throughout(request):
    """
    Every acceptance test fails if the watcher saw an invariant broken
    while it ran.
    """
    if "cluster" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("cluster")
    before = cluster.watcher.checks
    yield
    # A quick test may end before the watcher's next look: wait for one.
    try:
        poll(lambda: True if cluster.watcher.checks > before else None,
             WATCHER_LOOKS_WITHIN, "the watcher to look again",
             backoff=Backoff(initial=0.01, maximum=0.1))
    except Timeout:
        raise AssertionError("the watcher stopped looking")
    assert cluster.watcher.violations == [], cluster.watcher.violations
