"""
MongoDB (secantusd-py) and its volume moved between the nodes of a local
cluster with every document intact, also when the source agent or the
control service is killed in the middle of a move. The session's watcher
checks throughout that the volume is never mounted, and the server never
runs, on two nodes at once. On the openstack backend the cloud attaches
and detaches slowly, and fails a fifth of the volume and attachment calls
with 503 and one attach with 413 and Retry-After during the moves.
"""

import os

import pytest

from acceptance.cloudfiles import cloud_secrets
from acceptance.moving import MongoDB, wait_for_stop_on
from blockmover import proc
from blockmover.localcluster import state
from blockmover.localcluster.services import CONTROL, agent_key


@pytest.fixture(scope="module")
def mongodb(cluster):
    mongodb = MongoDB(cluster)
    mongodb.start("node1")
    return mongodb


def recorded(cluster, key):
    return state.load(cluster.layout.state_file).processes[key]


# A count far above what a move uses: what is left of it says how many
# times the fault fired.
MANY = 100000
FLAKY_CLOUD = {
    "errors": [
        # A move makes only a few attachment calls: one detach is sure to
        # meet a 503, the rest a fifth of the time.
        {"match": "DELETE /compute/*/os-volume_attachments/*",
         "status": 503, "count": 1},
        {"match": "* /v3/*volumes*", "status": 503, "fraction": 0.2,
         "count": MANY},
        {"match": "* /compute/*/os-volume_attachments*", "status": 503,
         "fraction": 0.2, "count": MANY},
    ],
    "over_limit": [
        {"match": "POST /compute/*/os-volume_attachments", "count": 1,
         "retry_after": 1},
    ],
}


def test_moves_there_and_back(cluster, mongodb):
    first = mongodb.where
    if cluster.backend == "openstack":
        cluster.cloud().set_faults(FLAKY_CLOUD)
    try:
        mongodb.move(mongodb.other().name)
        mongodb.move(first)
        if cluster.backend == "openstack":
            left = cluster.cloud().faults()
    finally:
        if cluster.backend == "openstack":
            cluster.cloud().clear_faults()
    assert mongodb.where == first
    # The watcher saw the server each time it ran (or it proved nothing).
    assert len(cluster.watcher.seen) >= 3
    if cluster.backend == "openstack":
        # The faults fired: the moves went through them, not around them.
        assert left["over_limit"][0]["count"] == 0, left
        detach, volumes = left["errors"][:2]
        assert detach["count"] == 0 and volumes["count"] < MANY, left
        assert_no_secret_in_logs(cluster)


def assert_no_secret_in_logs(cluster):
    """
    Neither the emulator's password nor its admin token is in any log or
    output of the cluster's processes, nor in the tests' own log.
    """
    layout = cluster.layout
    secrets = cloud_secrets(layout)
    logs = [os.path.join(layout.logs_dir, name)
            for name in os.listdir(layout.logs_dir)] + [cluster.log_path]
    for path in logs:
        with open(path, "rb") as f:
            text = f.read()
        for secret in secrets:
            assert secret.encode() not in text, path


@pytest.mark.parametrize("victim", ["source agent", "target agent",
                                    "control service"])
def test_move_survives_a_kill(cluster, mongodb, victim):
    source = mongodb.where
    target = mongodb.other().name
    key = {"source agent": agent_key(cluster.layout.node(source)),
           "target agent": agent_key(cluster.layout.node(target)),
           "control service": CONTROL}[victim]
    record = recorded(cluster, key)

    mongodb.submit(target)
    wait_for_stop_on(cluster.watcher, source)
    proc.kill(record)
    # Killed in the middle: the server has stopped on the source and does
    # not run on the target yet.
    assert not cluster.watcher.running().get(target)
    assert not proc.is_running(record)

    cluster.up()
    assert recorded(cluster, key).pid != record.pid
    mongodb.deploy(target)
    mongodb.check_on(target, source)
