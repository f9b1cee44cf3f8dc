"""
A long computation in a thread gives way to the reactor while the reactor
has work: the plan of a change waits for that change's answers.
"""

import threading
import time

from twisted.internet.task import Clock

from blockmover.control.service import GiveWay


def test_a_pause_waits_for_the_reactor_to_have_had_a_turn():
    clock = Clock()
    way = GiveWay(clock)
    try:
        # Just beaten: no wait.
        started = time.monotonic()
        way.pause()
        assert time.monotonic() - started < GiveWay.LAG
        # The reactor has not had a turn for longer than LAG: the thread
        # waits until it has one.
        time.sleep(2 * GiveWay.LAG)
        pausing = threading.Thread(target=way.pause)
        pausing.start()
        pausing.join(0.1)
        assert pausing.is_alive()
        clock.advance(GiveWay.BEAT)
        pausing.join(1)
        assert not pausing.is_alive()
    finally:
        way.stop()
    assert not clock.getDelayedCalls()


def test_a_pause_waits_no_longer_than_its_bound():
    clock = Clock()
    way = GiveWay(clock)
    way.stop()
    time.sleep(2 * GiveWay.LAG)
    started = time.monotonic()
    way.pause()
    waited = time.monotonic() - started
    assert GiveWay.LONGEST * 0.9 <= waited < GiveWay.LONGEST * 3
