"""
The pure parts of ``benchmarks/ha.py`` and of its simulated agents: the
election's times it asks for are ones ``cluster.yml`` takes, its medians
leave out what did not finish, and an agent tells a replica that knows no
leader from one that is busy.
"""

import pytest

from benchmarks.ha import election_times, median, ratio
from benchmarks.scale import configuration
from benchmarks.scale_agents import no_leader
from blockmover.config import election_of


@pytest.mark.parametrize("lease", [1, 3, 6, 15, 60])
def test_the_election_asked_for_is_the_one_the_replicas_read(lease):
    cluster_yml, _ = configuration(3, [0, 1, 2], 90, election_times(lease))
    timing = election_of(cluster_yml)
    assert (timing.lease, timing.renew_deadline, timing.retry) == \
        pytest.approx(election_times(lease), rel=1e-5)
    assert election_times(15) == (15, 10, 2)


def test_medians_and_ratios_leave_out_what_did_not_finish():
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None, None]) is None
    assert ratio(None, 2.0) is None and ratio(1.0, 0) is None
    assert ratio(3.0, 2.0) == 1.5


def test_an_agent_asks_the_next_replica_only_when_no_leader_is_known():
    assert no_leader(503, b'{"errors": ["..."], "leader": null}')
    # The service's own limits: busy, wait and ask the same one.
    assert not no_leader(503, b'{"errors": ["too many connections"]}')
    assert not no_leader(503, b"")
    assert not no_leader(421, b'{"leader": "https://127.0.0.1:1"}')
