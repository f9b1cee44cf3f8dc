"""
What a replica that follows serves (``blockmover.control.replica.Follower``):
the agents' long polls, from the slices the leader wrote; once it stops
following (elected, its service not serving yet), an answer to every poll
at once, none left waiting on slices that no longer change.
"""

import pytest
from twisted.internet.task import Clock

from blockmover.control.replica import Follower, ReplicaUnavailable, Served
from blockmover.control.slices import ENDED


def follower():
    # Never started: no etcd to read, no leader to renew leases with.
    return Follower(client=None, cluster="c", reactor=Clock(), metrics=None,
                    leader_url=lambda: None, renew=lambda nodes: None)


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
