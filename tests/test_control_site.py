"""
The API's site writes no access log line of its own: every request is an
eliot action already, and a line for Twisted's legacy log would be kept in
its memory when nothing reads it.
"""

import http.client

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool

from blockmover.control.api import make_site
from tests.reactors import run_reactor


def get(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_requests_write_no_access_log_line(tmp_path):
    access_log = tmp_path / "access.log"

    @inlineCallbacks
    def body(reactor, pool):
        site = make_site(None, reactor, None)
        # Where Twisted would write its lines, were it to write them.
        site.logPath = str(access_log)
        port = yield serverFromString(
            reactor, "tcp:0:interface=127.0.0.1").listen(site)
        try:
            status = yield deferToThreadPool(reactor, pool, get,
                                             port.getHost().port,
                                             "/v1/nowhere")
        finally:
            yield port.stopListening()
        return status

    assert run_reactor(body, threadpool=True) == 404
    assert access_log.read_text() == ""
