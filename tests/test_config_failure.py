"""
What cluster.yml and app.yml say about node failure: the lease, the
fencing method, each application's failover candidates; each mistake
refused with its file, line, key and how to fix it.
"""

import pytest

from blockmover.config import is_fence_command, load_deployment
from blockmover.control.scrub import scrub_yaml
from blockmover.model import DEFAULT_LEASE, Failover, Fencing
from blockmover.yamlsource import ConfigError
from tests.test_config import APP, CLUSTER, edit


def cluster_with(lines, backend="name: loopback"):
    """
    ``CLUSTER`` with ``lines`` (indented under ``cluster:``) added.
    """
    return edit(CLUSTER, "  backend:\n    name: loopback\n",
                "  backend:\n    %s\n%s" % (backend, lines))


def test_defaults():
    """
    Without a word about failure: a 20 s lease, no fencing on a backend
    that cannot power a node off, fencing by the backend on OpenStack,
    and no failover.
    """
    deployment = load_deployment(CLUSTER, APP)
    assert deployment.lease == DEFAULT_LEASE == 20.0
    assert deployment.fencing == Fencing(method="none")
    assert deployment.applications["mongodb"].failover is None
    openstack = load_deployment(
        edit(CLUSTER, "name: loopback", "name: openstack\n    cloud: c"), APP)
    assert openstack.fencing.method == "backend"


def test_lease_fencing_and_failover_load():
    cluster = cluster_with(
        "  lease: 7.5\n"
        "  fencing: {method: command, command: [/usr/sbin/fence-node, -P, "
        "hunter2], deadline: 30, retries: 5}\n")
    app = APP + "    failover: {to: [node2], automatic: true}\n"
    deployment = load_deployment(cluster, app)
    assert deployment.lease == 7.5
    assert deployment.fencing == Fencing(
        method="command", command=["/usr/sbin/fence-node", "-P", "hunter2"],
        deadline=30.0, retries=5)
    assert deployment.applications["mongodb"].failover == Failover(
        to=["node2"], automatic=True)
    # The fence command may hold a password: never in a repr, nor in the
    # configuration shown back.
    assert "hunter2" not in repr(deployment)
    shown = scrub_yaml(cluster, "cluster.yml", is_fence_command)
    assert "hunter2" not in shown and "fence-node" not in shown
    assert "lease: 7.5" in shown


def test_failover_is_not_automatic_unless_said():
    app = APP + "    failover: {to: [node2]}\n"
    failover = load_deployment(CLUSTER, app).applications["mongodb"].failover
    assert failover == Failover(to=["node2"], automatic=False)


@pytest.mark.parametrize("cluster,app,file,key,words", [
    (cluster_with("  lease: 0\n"), APP, "cluster.yml", "cluster.lease",
     "must be a number of seconds from 1 to 3600"),
    (cluster_with("  lease: soon\n"), APP, "cluster.yml", "cluster.lease",
     "'soon' must be a number of seconds"),
    (cluster_with("  fencing: {method: backend}\n"), APP, "cluster.yml",
     "cluster.fencing.method", "the loopback backend cannot power a node "
     "off; use method: command"),
    (cluster_with("  fencing: {method: ipmi}\n"), APP, "cluster.yml",
     "cluster.fencing.method", "unknown fencing method 'ipmi'"),
    (cluster_with("  fencing: {method: command}\n"), APP, "cluster.yml",
     "cluster.fencing", "method command needs 'command'"),
    (cluster_with("  fencing: {method: command, command: []}\n"), APP,
     "cluster.yml", "cluster.fencing.command", "is empty"),
    (cluster_with("  fencing: {method: none, command: [x]}\n"), APP,
     "cluster.yml", "cluster.fencing.command", "is used by method command "
     "only"),
    (cluster_with("  fencing: {method: command, command: [x], deadline: "
                  "0}\n"), APP, "cluster.yml", "cluster.fencing.deadline",
     "from 1 to 3600"),
    (cluster_with("  fencing: {method: command, command: [x], retries: "
                  "-1}\n"), APP, "cluster.yml", "cluster.fencing.retries",
     "from 0 to 100"),
    (CLUSTER, APP + "    failover: {to: [node3]}\n", "app.yml",
     "applications.mongodb.failover.to[0]", "unknown node 'node3'; "
     "cluster.yml names the nodes node1, node2"),
    (CLUSTER, APP + "    failover: {to: []}\n", "app.yml",
     "applications.mongodb.failover.to", "must be a list of the nodes"),
    (CLUSTER, APP + "    failover: {to: [node2, node2]}\n", "app.yml",
     "applications.mongodb.failover.to[1]", "node node2 is named twice"),
    (CLUSTER, APP + "    failover: {to: [node2], automatic: yes please}\n",
     "app.yml", "applications.mongodb.failover.automatic",
     "must be true or false"),
    (CLUSTER, APP + "    failover: {to: [node2], when: always}\n", "app.yml",
     "applications.mongodb.failover.when", "unknown key 'when'"),
])
def test_errors(cluster, app, file, key, words):
    with pytest.raises(ConfigError) as info:
        load_deployment(cluster, app)
    assert (info.value.file, info.value.key) == (file, key)
    assert words in info.value.message
