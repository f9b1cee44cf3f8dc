"""
``ControlClient`` and a replica that stopped answering: its host gone or
its link cut, it takes no connection and acknowledges nothing, and the
client gives up on it within seconds and asks the next replica, however
long the call itself may wait (a long poll, a node's lease counting).

The silent replica is a real listener in a network namespace of its own
(a local cluster's node, without services) whose link is taken down.
"""

import json
import os
import sys
import time
import uuid

import pytest
from eliot import add_destinations, remove_destination
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.web.server import Site

from blockmover import proc
from blockmover.client import ControlClient, _CONNECT_TIMEOUT, _SILENCE
from blockmover.command import run
from blockmover.localcluster import processes, state
from blockmover.localcluster.down import down
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.namespaces import nsenter_argv, unused_subnet
from blockmover.localcluster.up import up
from blockmover.poll import poll
from tests.reactors import run_reactor
from tests.test_client import Recorder

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="network namespaces need root")

PORT = 4523
# What a call may take at most: the client's own timeout, far longer
# than giving up on silence takes.
CALL_TIMEOUT = 60.0

# Takes connections and what they send, and never answers.
SILENT = """
import socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", %d))
listener.listen(8)
held = []
while True:
    connection, _ = listener.accept()
    held.append(connection)
""" % (PORT,)


@pytest.fixture
def silent(tmp_path):
    """
    A one-node local cluster (no services) and its node, with a listener
    that never answers at ``node.address:PORT``.
    """
    name = "s" + uuid.uuid4().hex[:6]
    layout = make_layout(name, 1, unused_subnet("10.79"),
                         str(tmp_path / "cluster"))
    up(layout, echo=lambda line: None, services=False)
    node = layout.nodes[0]
    listener = processes.start(
        nsenter_argv(node) + [sys.executable, "-c", SILENT],
        os.path.join(layout.logs_dir, "silent.out"))
    try:
        poll(lambda: True if ":%d " % (PORT,) in run(
            ["ip", "netns", "exec", node.netns, "ss", "-ltnH"]) else None,
            10, "the silent listener")
        yield layout, node
    finally:
        proc.stop(listener, timeout=10)
        if state.load(layout.state_file) is not None:
            down(layout.state_file, echo=lambda line: None)
        assert leftovers(layout) == []


def _mac(node):
    [link] = [link for link in json.loads(run(
        ["ip", "-n", node.netns, "-j", "addr", "show"]))
        if any(a.get("local") == node.address
               for a in link.get("addr_info", []))]
    return link["address"]


def _ask(layout, node, cut_after=None):
    """
    ``get_state`` of a client given the silent replica first and a live
    one second; with ``cut_after``, the silent one's link goes down that
    many seconds after the call started (its connection made and the
    request sent), else before. :return: the answer, the seconds it
    took, what the live replica was asked, and why the client moved on.
    """
    live = Recorder([(200, {"generation": 1})])

    @inlineCallbacks
    def use(reactor):
        port = reactor.listenTCP(0, Site(live), interface="127.0.0.1")
        client = ControlClient(
            ["http://%s:%d" % (node.address, PORT),
             "http://127.0.0.1:%d" % (port.getHost().port,)],
            reactor, timeout=CALL_TIMEOUT, insecure_plain_http=True)
        cut = ["ip", "link", "set", "dev", node.veth, "down"]
        try:
            if cut_after is None:
                # Its address still resolves (a host gone behind a switch
                # that remembers it): what it is sent is lost, so no
                # connection is made, nor refused.
                run(["ip", "neigh", "replace", node.address, "lladdr",
                     _mac(node), "dev", layout.bridge, "nud", "permanent"])
                run(cut)
            started = time.monotonic()
            d = client.get_state()
            if cut_after is not None:
                yield deferLater(reactor, cut_after, run, cut)
            answer = yield d
            return answer, time.monotonic() - started
        finally:
            yield client.close()
            yield port.stopListening()
    moves = []

    def moved(message):
        if message.get("message_type") == \
                "blockmover:control-client:replica":
            moves.append(message["reason"])
    add_destinations(moved)
    try:
        answer, took = run_reactor(use, timeout=CALL_TIMEOUT * 2)
    finally:
        remove_destination(moved)
    return answer, took, live.requests, moves


def test_a_replica_that_takes_no_connection_is_given_up(silent):
    answer, took, asked, moves = _ask(*silent)
    assert answer == {"generation": 1}
    assert [r["path"] for r in asked] == ["/v1/state"]
    assert moves == ["no connection within 5 seconds (its host down or "
                     "cut off?)"]
    # Its connection timed out: not the call's timeout.
    assert _CONNECT_TIMEOUT <= took < _CONNECT_TIMEOUT + 10, took


def test_a_replica_that_falls_silent_under_a_call_is_given_up(silent):
    answer, took, asked, moves = _ask(*silent, cut_after=1.0)
    assert answer == {"generation": 1}
    assert [r["path"] for r in asked] == ["/v1/state"]
    assert [m.split(":")[0] for m in moves] == ["the connection broke"]
    # Its connection, made and the request sent, was ended by the kernel
    # once the replica had acknowledged nothing for _SILENCE seconds (its
    # last acknowledgement: of the request).
    assert _SILENCE <= took < _SILENCE + 10, took
