"""
The local-cluster tools ask the control service through its one client,
from synchronous code: a reactor in a thread of its own, started on first
use, stopped cleanly, and answers or failures handed back as they are,
over mutual TLS like every client.
"""

import socket
import threading

import pytest
from twisted.internet.defer import fail, succeed

from blockmover.certificates import NODE
from blockmover.client import ControlError, ControlUnreachable
from blockmover.localcluster import ClusterError, blocking
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.services import (
    control_answers, unanswered, wait_for_control,
)
from blockmover.localcluster.status import control_state
from tests.cluster_ca import cluster_ca


@pytest.fixture
def closed_url():
    """
    The URL of a port of 127.0.0.1 where nothing listens.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield "https://127.0.0.1:%d" % (s.getsockname()[1],)


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
    operator = control.credentials()
    state = control_state(control.url, operator)
    assert state is not None and "nodes" in state
    assert control_answers(control.url, operator)
    # A refusal is an answer: a 404 before any configuration, and a 403 for
    # a node asking what only a user may.
    with pytest.raises(ControlError):
        blocking.ask_control(control.url,
                             lambda client: client.get_configuration(), 5,
                             operator)
    with pytest.raises(ControlError) as refused:
        blocking.ask_control(control.url, lambda client: client.get_state(),
                             5, control.credentials(NODE, "node1"))
    assert refused.value.code == 403
    assert control_answers(control.url, control.credentials(NODE, "node1"))


def test_a_certificate_of_another_cluster_gets_no_answer(control):
    # The handshake fails, and says why: waiting would not help.
    stranger = cluster_ca("elsewhere").credentials()
    assert control_state(control.url, stranger, timeout=5.0) is None
    problem = unanswered(control.url, stranger, timeout=5.0)
    assert isinstance(problem, ControlUnreachable)
    assert "TLS refused" in str(problem)


def test_waiting_for_the_control_service_says_why_it_does_not_answer(
        control, tmp_path):
    # A layout whose bridge is 127.0.0.1, where the service listens.
    layout = make_layout("demo", 1, "127.0.0", str(tmp_path / "cluster"),
                         control_port=control.port)
    assert layout.control_url == control.url
    wait_for_control(layout, control.credentials(), lambda: True,
                     deadline=10)
    with pytest.raises(ClusterError) as e:
        wait_for_control(layout, cluster_ca("elsewhere").credentials(),
                         lambda: True, deadline=1)
    assert "TLS refused" in str(e.value)


def test_no_control_service(closed_url):
    operator = cluster_ca("demo").credentials()
    assert control_state(closed_url, operator, timeout=2.0) is None
    assert not control_answers(closed_url, operator, timeout=2.0)
    with pytest.raises(ControlUnreachable):
        blocking.ask_control(closed_url, lambda client: client.get_state(),
                             2.0, operator)
