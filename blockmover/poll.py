"""
The one way blockmover waits for something slow: poll with exponential
backoff under a deadline. Never a fixed sleep.
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


def poll(check, deadline, what, backoff=Backoff(), clock=time.monotonic,
         sleep=time.sleep):
    """
    Call ``check()`` until it returns something other than None, sleeping
    with ``backoff`` in between, and return that. Blocks: call it in a
    thread, never on the reactor.

    :param deadline: seconds to wait at most.
    :param what: says, for the ``Timeout`` message, what was waited for.
    :raise Timeout: ``check`` still returned None after ``deadline`` seconds.
    """
    end = clock() + deadline
    attempt = 0
    while True:
        result = check()
        if result is not None:
            return result
        remaining = end - clock()
        if remaining <= 0:
            raise Timeout("gave up waiting for %s after %.1f seconds"
                          % (what, deadline))
        sleep(min(backoff.delay(attempt), remaining))
        attempt += 1
