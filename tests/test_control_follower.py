"""
What a replica that follows serves (``blockmover.control.replica.Follower``):
the agents' long polls, from the slices the leader wrote; once it stops
following (elected, its service not serving yet), an answer to every poll
at once, none left waiting on slices that no longer change. The nodes
that polled it go to the leader, and to a new leader at once.
"""

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from blockmover.control.replica import Follower, ReplicaUnavailable, Served
from blockmover.control.slices import ENDED


def follower(leader_url=lambda: None, renew=lambda nodes: None):
    # Never started: no etcd to read.
    return Follower(client=None, cluster="c", reactor=Clock(), metrics=None,
                    leader_url=leader_url, renew=renew)


def test_a_poll_is_answered_by_a_newer_slice_of_the_leader():
    following = follower()
    following.slices.follow("n1", Served("n1", 3, b'{"generation": 3}'))
    held = following.wait_desired("n1", 3)
    assert not held.called
    following.slices.follow("n1", Served("n1", 4, b'{"generation": 4}'))
    assert held.result.generation == 4
    assert following.slices.serialized(held.result) == b'{"generation": 4}'


def test_a_follower_that_stops_answers_its_polls_and_waits_on_none():
    following = follower()
    following.slices.follow("n1", Served("n1", 3, b'{"generation": 3}'))
    held = following.wait_desired("n1", 3)
    following.stop()
    # Nothing new (204): its agent asks again at once.
    assert held.result is ENDED and following.slices.waiting() == 0
    # Asked again before the service serves: 503 naming no leader (the
    # API's), not a wait on slices that will not change until the poll's
    # timeout.
    with pytest.raises(ReplicaUnavailable) as refused:
        following.wait_desired("n1", 3)
    assert refused.value.leader is None
    assert following.slices.waiting() == 0


def test_renewals_stuck_on_a_replica_that_no_longer_leads_go_to_the_new():
    """
    The nodes that polled go to the leader one send at a time; a send
    that hangs on a leader that lost the lead (its host gone) is given up
    once another leads, and its nodes go to the new leader with the next
    ones, not after the send's timeout.
    """
    leader = ["https://a"]
    sends = []

    def renew(nodes):
        sends.append((leader[0], sorted(nodes), Deferred()))
        return sends[-1][2]
    following = follower(lambda: leader[0], renew)
    following.wait_desired("n1", None)
    following._send_renewals()
    following.wait_desired("n2", None)
    # Still waiting on a's answer: nothing more is sent to a.
    following._send_renewals()
    assert [(to, nodes) for to, nodes, _ in sends] == [("https://a", ["n1"])]
    leader[0] = "https://b"
    following._send_renewals()
    assert sends[0][2].called  # given up
    assert [(to, nodes) for to, nodes, _ in sends[1:]] == [
        ("https://b", ["n1", "n2"])]
    sends[1][2].callback({"renewed": 2})
    following.wait_desired("n3", None)
    following._send_renewals()
    assert [(to, nodes) for to, nodes, _ in sends[2:]] == [
        ("https://b", ["n3"])]
