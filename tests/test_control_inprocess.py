"""
The control service in this process, on a fresh reactor, so the test can
look inside while real HTTP clients come and go: a long poll whose client
disconnects leaves no waiter and no timer behind.
"""

import http.client
import json
import socket
import threading

from twisted.internet.endpoints import serverFromString
from twisted.internet.selectreactor import SelectReactor
from twisted.web.http import HTTPChannel

from blockmover.control.api import make_site
from blockmover.control.service import ControlService
from blockmover.control.store import FileStore
from blockmover.poll import Backoff, poll
from tests.test_control_api import APP, CLUSTER


def serve(state_dir, body, timeout=60.0, store=None):
    """
    Run a ControlService (keeping its configuration in ``store``, or a
    ``FileStore`` of ``state_dir``) and its API on a fresh reactor; call
    ``body(port, service, reactor)`` in another thread and stop when it
    returns. Re-raises what ``body`` raised.
    """
    reactor = SelectReactor()
    service = ControlService(store or FileStore(state_dir), reactor,
                             refresh_interval=3600)
    outcome = []

    def run_body(port):
        try:
            body(port, service, reactor)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)
        finally:
            reactor.callFromThread(reactor.stop)

    def started(listening):
        ports.append(listening)
        bodies.append(threading.Thread(target=run_body,
                                       args=(listening.getHost().port,)))
        bodies[-1].start()

    def start():
        service.start()
        d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            make_site(service, reactor, None))
        d.addCallback(started)
        d.addErrback(lambda f: (outcome.append(f.value), reactor.stop()))

    ports = []
    bodies = []
    reactor.callWhenRunning(start)
    deadline = reactor.callLater(timeout, reactor.stop)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        if deadline.active():
            deadline.cancel()
        for port in ports:
            port.stopListening()
        service.stop()
        # The body's thread may still be waking the reactor it stopped:
        # its waker is closed only once that thread is done with it.
        for thread in bodies:
            thread.join(timeout)
        for reader in list(reactor._internalReaders):
            reactor.removeReader(reader)
            reader.connectionLost(None)
    assert outcome, "the test body did not finish in %s seconds" % (timeout,)
    if outcome[0] is not None:
        raise outcome[0]


def timers(reactor):
    """
    The reactor's timers, less the idle timeouts of HTTP connections (a
    connection the client just closed may keep its own a moment longer).
    """
    return [call for call in reactor.getDelayedCalls()
            if not isinstance(getattr(call.func, "__self__", None),
                              HTTPChannel)]


def put_configuration(port, cluster):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("PUT", "/v1/configuration", json.dumps(
            {"cluster_yml": cluster, "app_yml": APP}))
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer["generation"]
    finally:
        connection.close()


def test_disconnected_long_poll_leaves_nothing_behind(tmp_path,
                                                      loopback_root):
    def body(port, service, reactor):
        generation = put_configuration(port,
                                       CLUSTER.format(root=loopback_root))
        before = len(timers(reactor))
        clients = []
        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET /v1/nodes/node1/desired?after=%d&timeout=100"
                           b" HTTP/1.1\r\nHost: x\r\n\r\n" % (generation,))
            clients.append(client)
        poll(lambda: service.slices.waiting() == 5 or None, 10,
             "five long polls to wait", Backoff(initial=0.01, maximum=0.1))
        assert len(timers(reactor)) == before + 5
        for client in clients:
            client.close()
        poll(lambda: service.slices.waiting() == 0 or None, 10,
             "the long polls to end", Backoff(initial=0.01, maximum=0.1))
        poll(lambda: len(timers(reactor)) <= before or None, 10,
             "their timers to go", Backoff(initial=0.01, maximum=0.1))
        assert service.listing.refreshes == 1

    serve(str(tmp_path / "state"), body)
