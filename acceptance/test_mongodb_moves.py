"""
MongoDB (secantusd-py) and its volume moved between the nodes of a local
cluster with every document intact, also when the source agent or the
control service is killed in the middle of a move. The session's watcher
checks throughout that the volume is never mounted, and the server never
runs, on two nodes at once.
"""

import pytest

from acceptance.moving import MongoDB, wait_for_stop_on
from blockmover.cluster import processes, state
from blockmover.cluster.services import CONTROL, agent_key


@pytest.fixture(scope="module")
def mongodb(cluster):
    mongodb = MongoDB(cluster)
    mongodb.start("node1")
    return mongodb


def recorded(cluster, key):
    return state.load(cluster.layout.state_file).processes[key]


def test_moves_there_and_back(cluster, mongodb):
    first = mongodb.where
    mongodb.move(mongodb.other().name)
    mongodb.move(first)
    assert mongodb.where == first
    # The watcher saw the server each time it ran (or it proved nothing).
    assert len(cluster.watcher.seen) >= 3


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
    processes.kill(record)
    # Killed in the middle: the server has stopped on the source and does
    # not run on the target yet.
    assert not cluster.watcher.running().get(target)
    assert not processes.is_running(record)

    cluster.up()
    assert recorded(cluster, key).pid != record.pid
    mongodb.deploy(target)
    mongodb.check_on(target, source)
