"""
The local-cluster tools ask the control service through its one client,
from synchronous code: a reactor in a thread of its own, started on first
use, stopped cleanly, and answers or failures handed back as they are.
"""

import socket
import threading

import pytest
from twisted.internet.defer import fail, succeed

from blockmover.client import ControlError, ControlUnreachable
from blockmover.localcluster import blocking
from blockmover.localcluster.services import control_answers
from blockmover.localcluster.status import control_state


@pytest.fixture
def closed_url():
    """
    The URL of a port of 127.0.0.1 where nothing listens.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield "http://127.0.0.1:%d" % (s.getsockname()[1],)


def test_call_returns_the_answer_or_raises_the_failure():
    seen = []

    def answer(reactor, value):
        seen.append(threading.current_thread())
        return succeed(value)
    assert blocking.call(answer, 42) == 42
    assert seen[0] is not threading.current_thread()
    assert seen[0].daemon
    with pytest.raises(ZeroDivisionError):
        blocking.call(lambda reactor: fail(ZeroDivisionError()))


def test_stop_ends_the_thread_and_a_later_call_starts_again():
    threads = []

    def where(reactor):
        threads.append(threading.current_thread())
        return None
    blocking.call(where)
    blocking.stop()
    assert not threads[0].is_alive()
    blocking.stop()
    blocking.call(where)
    assert threads[1].is_alive() and threads[1] is not threads[0]


def test_state_of_a_running_control_service(control):
    state = control_state(control.url)
    assert state is not None and "nodes" in state
    assert control_answers(control.url)
    # A refusal is an answer.
    with pytest.raises(ControlError):
        blocking.ask_control(control.url,
                             lambda client: client.get_configuration(), 5)


def test_no_control_service(closed_url):
    assert control_state(closed_url, timeout=2.0) is None
    assert not control_answers(closed_url, timeout=2.0)
    with pytest.raises(ControlUnreachable):
        blocking.ask_control(closed_url, lambda client: client.get_state(),
                             2.0)
