"""
``blockmover.poll.poll`` on a fake clock: how many looks a long wait costs
and how late it ends after what it waited for, with and without an event
that wakes it (the openstack backend's status waits, ``STATUS_BACKOFF``).
No real time passes.
"""

import pytest

from blockmover.backends.openstack import STATUS_BACKOFF
from blockmover.poll import Backoff, Timeout, poll

# Seconds that attaches and detaches take, up to ten minutes.
DURATIONS = [0.05, 0.3, 1, 2, 5, 8, 10, 30, 60, 120, 300, 450, 600]


class FakeClock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class FakeEvents(object):
    """
    A wake source on ``clock`` that fires at each of ``times``.
    """
    def __init__(self, clock, times):
        self.clock = clock
        self.times = sorted(times)
        self.waits = []

    def wait(self, timeout):
        self.waits.append((self.clock.now, timeout))
        for moment in self.times:
            if self.clock.now < moment <= self.clock.now + timeout:
                self.clock.now = moment
                return True
        self.clock.now += timeout
        return False


def wait_for_status(done_at, event_at=None, backoff=STATUS_BACKOFF,
                    deadline=3600.0):
    """
    Wait, as a backend does, for a status that turns true at ``done_at``;
    the device's event (if any) comes at ``event_at``. :return: (looks at
    the status, overshoot in seconds).
    """
    clock = FakeClock()
    looks = []

    def check():
        looks.append(clock.now)
        return True if clock.now >= done_at else None
    wake = None if event_at is None else FakeEvents(clock, [event_at])
    poll(check, deadline, "the status", backoff=backoff, clock=clock,
         sleep=clock.sleep, wake=wake)
    return len(looks), clock.now - done_at


def test_ten_minutes_cost_about_twenty_looks():
    looks, _ = wait_for_status(600.0)
    assert looks <= 20
    with_event, _ = wait_for_status(600.0, event_at=600.0)
    assert with_event <= 20


@pytest.mark.parametrize("lag", [0.0, 0.01, 0.05, 0.1])
@pytest.mark.parametrize("duration", DURATIONS)
def test_an_event_ends_the_wait_within_a_tenth(duration, lag):
    # The device comes or goes at ``duration``; the cloud's status follows
    # ``lag`` seconds later.
    looks, overshoot = wait_for_status(duration + lag, event_at=duration)
    assert 0.0 <= overshoot <= max(0.1, 0.1 * (duration + lag)) + 1e-9
    # A few quick looks after the event, while the status catches up.
    assert looks <= 25


def test_without_events_the_overshoot_is_bounded_by_the_backoff():
    # Pure polling: at most one step late, which grows with the wait (this
    # is why waits on the node concerned use events).
    worst = 0.0
    for duration in DURATIONS:
        _, overshoot = wait_for_status(duration)
        assert overshoot <= STATUS_BACKOFF.initial + (
            STATUS_BACKOFF.factor - 1) * duration + 1e-9
        worst = max(worst, overshoot / duration)
    assert worst > 0.1


def test_after_an_event_the_looks_come_quickly_then_back_off():
    clock = FakeClock()
    wake = FakeEvents(clock, [10.0])
    backoff = Backoff(initial=0.1, factor=2.0, maximum=100.0)
    with pytest.raises(Timeout):
        poll(lambda: None, 20.0, "never", backoff=backoff, clock=clock,
             wake=wake)
    before = [timeout for began, timeout in wake.waits if began < 10.0]
    after = [timeout for began, timeout in wake.waits if began >= 10.0]
    assert before == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    # The last wait before was cut short at 10 s; then quick looks, growing
    # again (never slower than the backoff's own steps).
    assert after[:6] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]


def test_without_a_wake_source_it_sleeps():
    clock = FakeClock()
    backoff = Backoff(initial=1.0, factor=2.0, maximum=3.0)
    with pytest.raises(Timeout) as raised:
        poll(lambda: None, 7.0, "the thing", backoff=backoff, clock=clock,
             sleep=clock.sleep)
    assert clock.sleeps == [1.0, 2.0, 3.0, 1.0]
    assert "the thing" in str(raised.value)
