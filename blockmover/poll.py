"""
The one way blockmover waits for something slow: poll with exponential
backoff under a deadline, woken early by an event where the machine gives
one. Never a fixed sleep.
"""

import time

from pyrsistent import PClass, field


class Backoff(PClass):
    """
    Delays that start at ``initial`` seconds and grow by ``factor`` up to
    ``maximum``. A value: ``delay(n)`` is the wait before try ``n + 1``.
    """
    initial = field(type=float, mandatory=True, initial=0.1)
    factor = field(type=float, mandatory=True, initial=1.5)
    maximum = field(type=float, mandatory=True, initial=5.0)

    def delay(self, attempt):
        return min(self.maximum, self.initial * self.factor ** attempt)


class Timeout(Exception):
    """
    What was waited for did not happen before the deadline.
    """


class Sleep(object):
    """
    A wake source with no events: ``wait`` sleeps the whole time.
    """

    def __init__(self, sleep=time.sleep):
        self._sleep = sleep

    def wait(self, timeout):
        self._sleep(timeout)
        return False


# After an event, what it announced usually follows within milliseconds (a
# cloud's status catching up with the device it just plugged): look again
# soon, then back off as before.
AFTER_EVENT = Backoff(initial=0.01, factor=2.0, maximum=5.0)


def poll(check, deadline, what, backoff=Backoff(), clock=time.monotonic,
         sleep=time.sleep, wake=None, after_event=AFTER_EVENT):
    """
    Call ``check()`` until it returns something other than None, pausing
    with ``backoff`` in between, and return that. Blocks: call it in a
    thread, never on the reactor.

    :param deadline: seconds to wait at most.
    :param what: says, for the ``Timeout`` message, what was waited for.
    :param wake: None to pause with ``sleep``; else an object whose
        ``wait(timeout)`` pauses at most ``timeout`` seconds and returns
        True when an event that may have made ``check`` true ended it
        early: then ``check`` runs at once and the pauses start again from
        ``after_event``'s first step (growing to ``backoff``'s), so a wait
        ends soon after its event however long it has waited.
    :raise Timeout: ``check`` still returned None after ``deadline`` seconds.
    """
    pause = wake.wait if wake is not None else Sleep(sleep).wait
    end = clock() + deadline
    attempt = 0
    since_event = None
    while True:
        result = check()
        if result is not None:
            return result
        remaining = end - clock()
        if remaining <= 0:
            raise Timeout("gave up waiting for %s after %.1f seconds"
                          % (what, deadline))
        delay = backoff.delay(attempt)
        if since_event is not None:
            delay = min(delay, after_event.delay(since_event))
        if pause(min(delay, remaining)):
            attempt, since_event = 0, 0
        else:
            attempt += 1
            if since_event is not None:
                since_event += 1
