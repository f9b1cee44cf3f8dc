"""
How much the control service takes from one request, one client and all
clients together, so that a careless or hostile client cannot take its
memory, its file descriptors or every agent's long poll:

- a request body over ``body_limit`` is refused with 413: at once, from its
  ``Content-Length``, before any of it is read (and what follows is read
  and dropped, never kept); a body that turns out larger than its bound
  (chunked) stops being kept at the bound and is refused with 413 too;
- at most ``polls_per_client`` long polls wait at once per client address
  (429 beyond, see ``ClientPolls``);
- at most ``max_connections`` connections are open at once; one more is
  answered 503 and closed.
"""

import json

from eliot import log_message
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Protocol
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from blockmover.units import MiB

KiB = 1024

# A configuration is two YAML files; 4 MiB holds thousands of applications.
CONFIGURATION_BODY = 4 * MiB
# Every other body is one node's report: small.
OTHER_BODY = 256 * KiB
CONFIGURATION_PATH = b"/v1/configuration"

# Enough for every agent of a large cluster (each holds one long poll and
# sends a report now and then), below the unit's LimitNOFILE.
DEFAULT_MAX_CONNECTIONS = 16384
# One address is one node (or one operator): an agent holds one long poll.
DEFAULT_POLLS_PER_CLIENT = 64
# How long a refused request's remaining body is read and dropped, so that
# the client reads the answer before the connection closes.
LINGER_SECONDS = 5.0
# Seconds a client told 429 or 503 is asked to wait before it asks again.
RETRY_AFTER = 5


def client_of(address):
    """
    The client an address belongs to, as the limits count it: its host.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return str(address)


def body_limit(path):
    """
    The largest request body (bytes) taken for ``path`` (bytes, with its
    query).
    """
    if path.split(b"?", 1)[0].rstrip(b"/") == CONFIGURATION_PATH:
        return CONFIGURATION_BODY
    return OTHER_BODY


def too_large_message(limit):
    return ("the request body is larger than %d KiB, the most this request "
            "takes; send a smaller one (a configuration is at most %d MiB, "
            "every other request body %d KiB)"
            % (limit // KiB, CONFIGURATION_BODY // MiB, OTHER_BODY // KiB))


def _raw_answer(code, reason, message, headers=()):
    body = json.dumps({"errors": [message]}, sort_keys=True).encode("utf-8")
    lines = [b"HTTP/1.1 %d %s" % (code, reason),
             b"Content-Type: application/json",
             b"Content-Length: %d" % (len(body),),
             b"Connection: close"] + list(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class LimitedRequest(Request):
    """
    A request that keeps at most ``body_limit`` bytes of its body:
    ``too_large`` says it had more (and kept none).
    """
    body_limit = OTHER_BODY
    too_large = False
    _received = 0

    def handleContentChunk(self, data):
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self.body_limit:
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        Request.handleContentChunk(self, data)


class LimitedChannel(HTTPChannel):
    """
    An ``HTTPChannel`` that refuses a body larger than its bound as soon as
    the headers announce it, and counts itself among the site's open
    connections.
    """
    _refused = None
    _dropped = 0
    _linger = None

    def connectionMade(self):
        HTTPChannel.connectionMade(self)
        self.site.opened()

    def connectionLost(self, reason):
        self.site.closed()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        HTTPChannel.connectionLost(self, reason)

    def allHeadersReceived(self):
        # The request line's path, as HTTPChannel keeps it until the body
        # is in: the bound depends on it.
        limit = body_limit(self._path)
        self.requests[-1].body_limit = limit
        if self.length is not None and self.length > limit:
            self._refuse(limit)
            return
        HTTPChannel.allHeadersReceived(self)

    def _refuse(self, limit):
        """
        Answer 413 now, then read and drop the rest of the body (at most
        ``LINGER_SECONDS``) and close: closing at once would reset the
        connection before the client read the answer.
        """
        self._refused = self.length
        log_message(message_type="blockmover:control:refused",
                    reason="body too large", length=self.length, limit=limit,
                    client=client_of(self.transport.getPeer()))
        self.transport.write(_raw_answer(
            413, b"Content Too Large", too_large_message(limit)))
        self.setTimeout(None)
        self._linger = self.callLater(LINGER_SECONDS,
                                      self.transport.loseConnection)

    def rawDataReceived(self, data):
        if self._refused is None:
            return HTTPChannel.rawDataReceived(self, data)
        self._dropped += len(data)
        if self._dropped >= self._refused:
            self.transport.loseConnection()


class TooManyConnections(Protocol):
    """
    A connection beyond the site's bound: read the request's head (or
    ``OTHER_BODY`` bytes, or for ``LINGER_SECONDS``), answer 503 and close.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._answered = False
        self._timer = None
        self._tail = b""
        self._received = 0

    def connectionMade(self):
        self._timer = self._reactor.callLater(LINGER_SECONDS, self._answer)

    def dataReceived(self, data):
        self._received += len(data)
        seen, self._tail = self._tail + data, (self._tail + data)[-3:]
        if b"\r\n\r\n" in seen or self._received >= OTHER_BODY:
            self._answer()

    def _answer(self):
        if self._answered:
            return
        self._answered = True
        self.transport.write(_raw_answer(
            503, b"Service Unavailable",
            "the control service has as many connections open as it takes;"
            " try again in %d seconds, or raise blockmover-control's "
            "--max-connections" % (RETRY_AFTER,),
            [b"Retry-After: %d" % (RETRY_AFTER,)]))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()


class ClientPolls(object):
    """
    How many long polls each client address holds, bounded by ``limit``.
    """

    def __init__(self, limit=DEFAULT_POLLS_PER_CLIENT):
        self.limit = limit
        self._polls = {}

    def take(self, client):
        """
        Count one more long poll of ``client``. :return: False (and count
        nothing) when it holds ``limit`` already.
        """
        held = self._polls.get(client, 0)
        if held >= self.limit:
            return False
        self._polls[client] = held + 1
        return True

    def give_back(self, client):
        held = self._polls[client] - 1
        if held:
            self._polls[client] = held
        else:
            del self._polls[client]

    def held(self, client):
        return self._polls.get(client, 0)


class LimitedSite(Site):
    """
    A ``Site`` of ``LimitedChannel``s and ``LimitedRequest``s that takes at
    most ``max_connections`` connections at once.

    :ivar open: the connections open now.
    :ivar polls: the ``ClientPolls`` of the API's long polls.
    """
    protocol = LimitedChannel
    requestFactory = LimitedRequest

    def __init__(self, resource, reactor,
                 max_connections=DEFAULT_MAX_CONNECTIONS,
                 polls_per_client=DEFAULT_POLLS_PER_CLIENT):
        Site.__init__(self, resource, reactor=reactor)
        self.max_connections = max_connections
        self.polls = ClientPolls(polls_per_client)
        self.open = 0

    def log(self, request):
        """
        Write no access log line: the API logs every request as an eliot
        action already, and Twisted's line would go to its legacy log,
        which keeps the last 65,536 lines in memory when nothing reads it:
        tens of megabytes, and a formatting per request, at 10,000 agents.
        """

    def buildProtocol(self, addr):
        if self.open >= self.max_connections:
            log_message(message_type="blockmover:control:refused",
                        reason="too many connections", open=self.open,
                        client=client_of(addr))
            return TooManyConnections(self.reactor)
        return Site.buildProtocol(self, addr)

    def opened(self):
        self.open += 1

    def closed(self):
        self.open -= 1
