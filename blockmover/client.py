"""
The one client of the control service's REST API (see
``blockmover.control``): the only place that knows its URLs. Shared by the
agents and the deploy CLI; every method returns a Deferred and never blocks
the reactor.

The service may run as several replicas, one of them leading: a client
given their URLs asks the one that answered it last, and moves on to
another when that one cannot be reached (or falls silent: see
``_SILENCE``), has no leader, or names its leader (a follower answers 421
with the leader's URL).
"""

import argparse
import json
import socket
import zlib
from contextlib import nullcontext
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import treq
from eliot import current_action, log_message
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import (
    ConnectError, ConnectingCancelledError, ConnectionRefusedError,
    DNSLookupError, TimeoutError as ConnectTimeout,
)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer
from twisted.web.client import (
    Agent, HTTPConnectionPool, ResponseFailed, ResponseNeverReceived,
)

from blockmover.logs import TASK_HEADER
from blockmover.model import NodeDesired, to_data
from blockmover.tls import ClientTLS, ServiceNotTrusted

# How much longer than the server's long-poll timeout a request may take
# before the client gives up on it.
_LONG_POLL_MARGIN = 15.0

# A replica that stopped answering (its host gone, its link cut) takes no
# connection and acknowledges nothing it is sent, while a replica that is
# only busy still does at once (its kernel does): so a TCP connection
# not made within _CONNECT_TIMEOUT, or one on which the replica acknowledges
# nothing for _SILENCE (what was sent, or the keepalive probes sent after
# _KEEPALIVE_IDLE seconds quiet, every _KEEPALIVE_INTERVAL), is given up,
# and another replica asked, however long a poll may wait for its answer:
# well inside a node's lease, before it counts as unresponsive.
_CONNECT_TIMEOUT = 5.0
_SILENCE = 5.0
_KEEPALIVE_IDLE = 2
_KEEPALIVE_INTERVAL = 1

# Times one call may ask one replica: twice, so that a leader named by
# one follower and then, after an election, by another is asked again,
# but replicas that disagree about their leader cannot keep a call going.
_TRIES_PER_REPLICA = 2

# A follower's answer to a request only the leader serves (with the
# leader's URL), and any replica's while it knows no leader.
_NOT_LEADER = 421
_NO_LEADER = 503


class ControlError(Exception):
    """
    The control service answered but refused the request; ``messages`` are
    its reasons, ``code`` the HTTP status.
    """
    def __init__(self, code, messages):
        self.code = code
        self.messages = list(messages)
        Exception.__init__(self, "; ".join(self.messages) or
                           "control service answered %d" % (code,))


def printable_url(url):
    """
    ``url`` without any user name or password, fit for messages and logs.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc="***@" + host))


class InsecureURL(ValueError):
    """
    A control service URL that is not ``https://``: every client speaks
    mutual TLS with the control service.
    """


class ControlUnreachable(Exception):
    """
    The control service could not be reached (connection refused, no such
    host, timed out). Check that it runs and that the URL is right.

    ``url`` is the replica asked last and ``reason`` why it did not serve;
    ``tried`` the ``(url, reason)`` of the replicas asked before it in the
    same call, so ``urls`` names every replica asked.
    """
    def __init__(self, url, reason, tried=()):
        self.url = printable_url(url)
        self.reason = reason
        self.tried = tuple((printable_url(u), r) for u, r in tried) + (
            (self.url, reason),)
        self.urls = tuple(u for u, _ in self.tried)
        Exception.__init__(
            self, "cannot reach the control service " + "; ".join(
                "at %s: %s" % each for each in self.tried))


def control_urls(urls):
    """
    The control service's URLs as a tuple, from one URL, several separated
    by commas, or a list of them; each without a trailing ``/``, none
    twice. Whether each is usable is for ``ControlClient`` to say.

    :raise ValueError: no URL, or an empty one or one that is not a
        string, saying so.
    """
    if isinstance(urls, str):
        urls = urls.split(",")
    urls = list(urls)
    if not urls:
        raise ValueError("no control service URL given; give one, or "
                         "several separated by commas")
    found = []
    for url in urls:
        if not isinstance(url, str) or not url.strip():
            raise ValueError("a control service URL must be a non-empty "
                             "string such as https://10.0.0.1:4523, not %r"
                             % (url,))
        url = url.strip().rstrip("/")
        if url not in found:
            found.append(url)
    return tuple(found)


def require_https(urls):
    """
    :raise InsecureURL: one of ``urls`` is not ``https://``, naming it.
    """
    for url in urls:
        if urlsplit(url).scheme != "https":
            raise _not_https(url)


def _not_https(url):
    return InsecureURL("the control service's URL %s is not https://; "
                       "blockmover speaks only mutual TLS with it"
                       % (printable_url(url),))


def spread(urls, node):
    """
    ``urls`` (a control service's replicas) turned round to start at the
    one ``node`` asks first: the same for a node every time, the nodes of
    a cluster evenly over the replicas.
    """
    urls = list(urls)
    start = zlib.crc32(node.encode("utf-8")) % len(urls)
    return urls[start:] + urls[:start]


def control_argument(text):
    """
    The value of ``--control URL[,URL...]`` for argparse: ``control_urls``
    of it.
    """
    try:
        return control_urls(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


@implementer(IBodyProducer)
class _Body(object):
    """
    A request body written at once, so no cooperator (and no reactor other
    than the client's) is involved.
    """
    def __init__(self, data):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


@implementer(IAgentEndpointFactory)
class _TLSEndpoints(object):
    """
    The TLS endpoints of the control service, on ``reactor`` in all their
    parts: TLS's own timers included (by default they run on the global
    reactor, which a caller passing its own may not run). With
    ``plain_http`` an ``http`` URL is reached without TLS (only the
    insecure test mode lets one through).
    """

    def __init__(self, reactor, policy, plain_http=False):
        self._reactor = reactor
        self._policy = policy
        self._plain_http = plain_http

    def endpointForURI(self, uri):
        host = uri.host.decode("idna")
        endpoint = _GivingUpOnSilence(HostnameEndpoint(
            self._reactor, host, uri.port, timeout=_CONNECT_TIMEOUT))
        if self._plain_http and uri.scheme == b"http":
            return endpoint
        return wrapClientTLS(
            self._policy.creatorForNetloc(uri.host, uri.port), endpoint,
            clock=self._reactor)


@implementer(IStreamClientEndpoint)
class _GivingUpOnSilence(object):
    """
    A TCP endpoint whose connections the kernel ends once the peer has
    acknowledged nothing for ``_SILENCE`` seconds (``_keep_alert``).
    """

    def __init__(self, endpoint):
        self._endpoint = endpoint

    def connect(self, factory):
        d = self._endpoint.connect(factory)
        d.addCallback(self._connected)
        return d

    def _connected(self, protocol):
        _keep_alert(protocol.transport.getHandle())
        return protocol


def _keep_alert(sock):
    """
    Have the kernel end TCP socket ``sock``'s connection once its peer
    has acknowledged nothing for ``_SILENCE`` seconds: data sent, or the
    keepalive probes it sends while the connection is quiet (a long poll
    waiting).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE,
                    _KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL,
                    _KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                    int(_SILENCE * 1000))


def _headers():
    headers = {"Content-Type": ["application/json"]}
    action = current_action()
    if action is not None:
        headers[TASK_HEADER] = [action.serialize_task_id().decode("ascii")]
    return headers


class ControlClient(object):
    """
    A client of the control service at ``urls`` (one URL such as
    ``https://10.77.0.1:4523``, or the URLs of its replicas, as a list or
    separated by commas), presenting the certificate of ``credentials``
    (``blockmover.tls.Credentials``) and believing only its cluster's
    control service.

    Each call asks the replica that answered last (at first, the first
    URL). When that replica cannot be reached, or answers that it knows no
    leader (503), the same request goes to the next replica; when it names
    its leader (421), to the leader, which the client asks first from then
    on. A call asks each replica at most twice and one that could not be
    reached once, then fails with the last error: ``ControlUnreachable``
    naming every replica asked, or the ``ControlError`` of the last answer.
    A leader's URL is held to the same rules as those given, and its
    server to the same certificate check.

    :param reactor: the reactor to use (the global one by default).
    :param agent: an ``IAgent`` to send requests with; by default one with
        its own persistent connection pool, closed by ``close()``.
    :param timeout: seconds a request other than a long poll may take, at
        each replica asked.
    :param insecure_plain_http: allow ``http://`` URLs and no
        credentials: only for tests of the HTTP layer against a service run
        with ``--insecure-plain-http-for-tests``.

    :raise InsecureURL: for a URL other than ``https://`` (unless
        ``insecure_plain_http``), or an ``https://`` one without
        credentials.
    :raise ValueError: no URL given.
    """

    def __init__(self, urls, reactor=None, agent=None, timeout=30.0,
                 credentials=None, insecure_plain_http=False):
        if reactor is None:
            # Late: importing the global reactor installs it, and a caller
            # passing its own must be free to choose another.
            from twisted.internet import reactor
        self.urls = control_urls(urls)
        self._reactor = reactor
        self._insecure_plain_http = insecure_plain_http
        self._pool = None
        self._policy = None
        if agent is None and credentials is not None:
            self._policy = ClientTLS(credentials)
        self._own_agent = agent is None
        for url in self.urls:
            self._check(url)
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            agent = Agent.usingEndpointFactory(
                reactor, _TLSEndpoints(reactor, self._policy,
                                       plain_http=insecure_plain_http),
                pool=self._pool)
        self._http = treq.client.HTTPClient(agent)
        self._timeout = timeout
        # The replica that answered last. A long poll is asked first of
        # the one that served the last long poll (any replica serves
        # them), any other call of the one that served the last such call
        # (the leader, when there are several): both that one until then.
        self.url = self.urls[0]
        self._poll_url = None
        self._leader_url = None

    def _check(self, url):
        """
        :raise InsecureURL: ``url`` is not one this client may ask.
        """
        try:
            parts = urlsplit(url)
            parts.port
        except ValueError:
            parts = None
        if parts is None or not parts.hostname:
            raise InsecureURL(
                "%s is not a URL with a host; write one such as "
                "https://10.0.0.1:4523" % (printable_url(url),))
        if parts.scheme == "http" and self._insecure_plain_http:
            return
        if parts.scheme != "https":
            raise _not_https(url)
        if self._own_agent and self._policy is None:
            raise InsecureURL(
                "no certificate to present to the control service at "
                "%s; give this client's TLS files" % (printable_url(url),))

    def close(self):
        """
        Close the pooled connections; a Deferred firing when they are.
        """
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    # --- the API ---------------------------------------------------------

    def put_configuration(self, cluster_yml, app_yml, cluster_path,
                          app_path, dry_run=False):
        """
        Send a new configuration (the two files' text and names).

        :return: Deferred firing with ``{"generation": N, "plan": {NODE:
            [LINE, ...]}}``; fails with ``ControlError`` listing the
            problems when the service refuses it.
        """
        body = {"cluster_yml": cluster_yml, "app_yml": app_yml,
                "cluster_path": cluster_path, "app_path": app_path}
        query = {"dry_run": "1"} if dry_run else {}
        return self._request("PUT", "/v1/configuration", query, body)

    def get_configuration(self):
        """
        :return: Deferred firing with ``{"generation": N, "cluster_yml":
            TEXT, "app_yml": TEXT}``; ``ControlError`` (code 404) before the
            first configuration.
        """
        return self._request("GET", "/v1/configuration")

    def get_state(self):
        """
        :return: Deferred firing with the cluster's state as plain data
            (``generation``, ``listed_at``, ``nodes``, ``applications``).
        """
        return self._request("GET", "/v1/state")

    def fence_node(self, node):
        """
        Ask the control service to fence ``node`` (an operator's ``blockmover
        node fence``): it starts a fence unless one runs or the node is
        fenced already.

        :return: Deferred firing with ``{"node": NODE, "failure": {...}}``
            (the node's failure state, as ``GET /v1/state`` shows it).
        """
        return self._request("POST", "/v1/nodes/%s/fence" % (node,),
                             body={})

    def confirm_node_down(self, node):
        """
        Tell the control service that ``node`` is down (an operator's
        ``blockmover node confirm-down``): its volumes may then move.

        :return: Deferred firing like ``fence_node``'s; ``ControlError``
            (code 409) while the node's lease holds.
        """
        return self._request("POST", "/v1/nodes/%s/confirm-down"
                             % (node,), body={})

    def get_desired(self, node, after=None, timeout=30.0):
        """
        Long-poll ``node``'s desired slice.

        :param after: the last generation seen; the answer comes when the
            slice's generation is greater, or after ``timeout`` seconds.
        :return: Deferred firing with a ``NodeDesired``, or None when the
            slice did not change within ``timeout``; ``ControlError`` (code
            404) for a node the configuration does not name.
        """
        query = {"timeout": "%g" % (timeout,)}
        if after is not None:
            query["after"] = str(after)
        d = self._request("GET", "/v1/nodes/%s/desired" % (node,), query,
                          timeout=timeout + _LONG_POLL_MARGIN, poll=True)
        d.addCallback(
            lambda data: None if data is None
            else NodeDesired.create(data))
        return d

    def put_state(self, node, report):
        """
        Send ``node``'s ``NodeReport``. :return: Deferred firing with None.
        """
        d = self._request("PUT", "/v1/nodes/%s/state" % (node,),
                          body=to_data(report))
        d.addCallback(lambda _: None)
        return d

    # --- cloud calls for a node without cloud credentials --------------

    def node_volume_call(self, node, call, timeout, **body):
        """
        Ask the service to make cloud call ``call`` (``create``, ``attach``,
        ``detach``, ``grow``, ``formatted``) for ``node``, with ``body``'s
        fields (``dataset_id``, ``volume_id``, ``size``), waiting up to
        ``timeout`` seconds (an attach waits for the cloud).

        :return: Deferred firing with the volume as plain data.
        """
        d = self._request("POST", "/v1/nodes/%s/volumes/%s" % (node, call),
                          body=body, timeout=timeout)
        d.addCallback(lambda answer: answer["volume"])
        return d

    def node_seen(self, node, volume_id):
        """
        Tell the service that ``node`` saw the device of ``volume_id`` come
        or go, so its wait for the cloud on that node's call looks again.

        :return: Deferred firing with how many waits were woken.
        """
        d = self._request("POST", "/v1/nodes/%s/volumes/seen" % (node,),
                          body={"volume_id": volume_id})
        d.addCallback(lambda answer: answer["woken"])
        return d

    def node_volume(self, node, volume_id):
        """
        :return: Deferred firing with the volume ``volume_id`` as the
            backend says now, as plain data, for ``node``.
        """
        d = self._request("GET", "/v1/nodes/%s/volumes" % (node,),
                          {"volume_id": volume_id})
        d.addCallback(lambda answer: answer["volume"])
        return d

    def get_volumes(self):
        """
        :return: Deferred firing with ``{"listed_at": T, "volumes":
            [VOLUME_DATA, ...]}``, the service's cached listing.
        """
        return self._request("GET", "/v1/volumes")

    def get_kept_volumes(self):
        """
        :return: Deferred firing with ``{"listed_at": T, "volumes":
            [KEPT, ...]}``: the volumes an operator may remove, each as
            ``blockmover.control.kept.KeptVolume``'s data.
        """
        return self._request("GET", "/v1/volumes/kept")

    def remove_volume(self, volume_id):
        """
        Remove the kept volume ``volume_id`` (an operator's ``blockmover
        volume remove``).

        :return: Deferred firing with ``{"removed": KEPT}``;
            ``ControlError`` with code 409 (saying why) for a volume that
            is not to be removed, 404 for an unknown one.
        """
        return self._request("DELETE", "/v1/volumes/%s"
                             % (quote(volume_id, safe=""),))

    def get_replicas(self):
        """
        :return: Deferred firing with the control service's replicas, which
            leads, and how etcd's members are (``GET /v1/replicas``).
        """
        return self._request("GET", "/v1/replicas")

    def renew_leases(self, nodes):
        """
        Tell the leading replica that ``nodes`` (names) polled this one
        (a replica's own call, with the control service's certificate).

        :return: Deferred firing with ``{"renewed": N}``.
        """
        return self._request("POST", "/v1/replicas/renewals",
                             body={"nodes": sorted(nodes)})

    # --- plumbing --------------------------------------------------------

    def _request(self, method, path, query=None, body=None, timeout=None,
                 poll=False):
        """
        The data of the answer to ``method`` ``path`` (with ``query`` and
        the JSON of ``body``), from the first replica that serves it: a
        long poll (``poll``) asked first of the replica that served the
        last one, any other call of the one that served the last such.
        """
        call = _Call(self, method, path, query, body,
                     self._timeout if timeout is None else timeout, poll)
        first = self._poll_url if poll else self._leader_url
        call.ask(first or self.url)
        return call.result

    def _served(self, url, poll):
        self.url = url
        if poll:
            self._poll_url = url
        else:
            self._leader_url = url

    def _after(self, url, asked):
        """
        The replica to ask after ``url``: the next given URL not in
        ``asked`` (the first, after a leader not given), or None.
        """
        start = self.urls.index(url) + 1 if url in self.urls else 0
        for each in self.urls[start:] + self.urls[:start]:
            if each not in asked:
                return each
        return None

    def _send(self, replica, method, path, query, data, headers, timeout):
        """
        The request to the replica at URL ``replica``: a Deferred firing
        with its response, or failing with ``ControlUnreachable``.
        """
        url = replica + path
        if query:
            url += "?" + urlencode(sorted(query.items()))
        d = self._http.request(
            method, url, data=None if data is None else _Body(data),
            headers={k: list(v) for k, v in headers.items()},
            reactor=self._reactor, timeout=timeout)
        d.addErrback(_unreachable, replica)
        return d


class _Call(object):
    """
    One call of a ``ControlClient``: the same request (method, path, query,
    body and task header) sent to one replica after another, as the
    client's docstring says, until one answers. ``result`` fires with the
    answer's data, or fails with the last error.
    """

    def __init__(self, client, method, path, query, body, timeout,
                 poll=False):
        self._client = client
        self._poll = poll
        self._method = method
        self._path = path
        self._query = query
        self._data = None if body is None else json.dumps(body).encode(
            "utf-8")
        # Read once: every replica continues the caller's task.
        self._headers = _headers()
        self._action = current_action()
        self._timeout = timeout
        self._asked = {}           # url -> times asked
        self._failed = []          # (url, reason) of replicas that did not
        self._unreachable = {}     # url -> its ControlUnreachable
        self._pending = None
        self._cancelled = False
        self.result = Deferred(self._cancel)

    def ask(self, url):
        self._asked[url] = self._asked.get(url, 0) + 1
        self._pending = self._client._send(
            url, self._method, self._path, self._query, self._data,
            self._headers, self._timeout)
        self._pending.addCallbacks(self._answered, self._not_reached,
                                   callbackArgs=(url,), errbackArgs=(url,))

    def _cancel(self, _):
        # The request's cancellation looks like no answer in time: ask no
        # other replica after it (``result`` fails with CancelledError).
        self._cancelled = True
        if self._pending is not None:
            self._pending.cancel()

    def _over(self):
        return self._cancelled or self.result.called

    def _not_reached(self, failure, url):
        if self._over():
            return
        if not failure.check(ControlUnreachable):
            self.result.errback(failure)
            return
        self._unreachable[url] = failure.value
        self._move(url, failure.value.reason, failure.value)

    def _answered(self, response, url):
        if self._over():
            return
        self._pending = response.content()
        self._pending.addCallback(_decode, response.code, self._method,
                                  self._path)
        self._pending.addCallbacks(self._done, self._refused,
                                   callbackArgs=(url,), errbackArgs=(url,))

    def _done(self, data, url):
        if not self._over():
            self._client._served(url, self._poll)
            self.result.callback(data)

    def _refused(self, failure, url):
        if self._over():
            return
        error = failure.value
        if not isinstance(error, _ReplicaAnswer):
            if failure.check(ControlError):
                self._client._served(url, self._poll)
            self.result.errback(failure)
            return
        if error.code == _NO_LEADER:
            self._move(url, "it knows no leader (%s)" % (error,),
                       error.refusal)
            return
        leader = error.leader.rstrip("/")
        try:
            self._client._check(leader)
        except InsecureURL as e:
            self._move(url, "it names as its leader a URL this client may "
                       "not use (%s); check the replicas' --advertise" % (e,),
                       None)
            return
        if leader in self._unreachable:
            self._move(url, "it names as its leader %s, not reached"
                       % (printable_url(leader),), self._unreachable[leader])
        elif self._asked.get(leader, 0) >= _TRIES_PER_REPLICA:
            self._move(url, "it names as its leader %s, asked already"
                       % (printable_url(leader),), error.refusal)
        else:
            self._moved(url, leader, "it is not the leader")
            self.ask(leader)

    def _move(self, url, reason, error):
        """
        ``url`` did not serve for ``reason``: ask the next replica, or fail
        with ``error`` (None: unreachable for ``reason``) when every one
        was asked.
        """
        self._failed.append((url, reason))
        after = self._client._after(url, self._asked)
        if after is not None:
            self._moved(url, after, reason)
            self.ask(after)
            return
        if error is None or isinstance(error, ControlUnreachable):
            error = ControlUnreachable(url, reason, self._failed[:-1])
        self.result.errback(error)

    def _moved(self, url, to, reason):
        context = self._action.context() if self._action is not None \
            else nullcontext()
        with context:
            log_message(message_type="blockmover:control-client:replica",
                        method=self._method, path=self._path,
                        replica=printable_url(url), to=printable_url(to),
                        reason=reason)


class _ReplicaAnswer(Exception):
    """
    A replica's answer that another replica should be asked: it is not the
    leader and names it (421, ``leader``), or it knows no leader (503);
    ``refusal`` is the answer as a ``ControlError``.
    """
    def __init__(self, code, leader, refusal):
        self.code = code
        self.leader = leader
        self.refusal = refusal
        Exception.__init__(self, str(refusal))


def _unreachable(failure, url):
    """
    ``failure`` to connect to ``url`` or get its answer as a
    ``ControlUnreachable`` saying why.
    """
    failure.trap(ConnectError, DNSLookupError, CancelledError,
                 ConnectingCancelledError, ResponseFailed,
                 ResponseNeverReceived)
    error = failure.value
    tls_reason = _tls_reason(error)
    if tls_reason is not None:
        reason = tls_reason
    elif isinstance(error, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(error, ConnectTimeout):
        reason = "no connection within %g seconds (its host down or cut " \
            "off?)" % (_CONNECT_TIMEOUT,)
    elif isinstance(error, (CancelledError, ConnectingCancelledError)) \
            or (isinstance(error, (ResponseFailed, ResponseNeverReceived))
                and any(r.check(CancelledError) for r in error.reasons)):
        reason = "no answer in time"
    elif isinstance(error, (ResponseFailed, ResponseNeverReceived)):
        reason = "the connection broke: " + "; ".join(
            r.getErrorMessage() for r in error.reasons)
    else:
        reason = failure.getErrorMessage()
    raise ControlUnreachable(url, reason)


def _decode(content, code, method, path):
    """
    The data of an answer with status ``code`` and body ``content``.

    :raise _ReplicaAnswer: another replica should be asked.
    :raise ControlError: the service refused.
    """
    if code == 204:
        return None
    try:
        data = json.loads(content.decode("utf-8")) if content else {}
    except ValueError:
        data = None
    if 200 <= code < 300 and data is not None:
        return data
    if isinstance(data, dict) and data.get("errors"):
        refusal = ControlError(code, [str(e) for e in data["errors"]])
    else:
        refusal = ControlError(code, ["%s %s: the control service answered "
                                      "%d" % (method, path, code)])
    if isinstance(data, dict):
        leader = data.get("leader", False)
        if code == _NOT_LEADER and isinstance(leader, str):
            raise _ReplicaAnswer(code, leader, refusal)
        if code == _NO_LEADER and leader is None:
            raise _ReplicaAnswer(code, None, refusal)
    raise refusal


def _tls_reason(error):
    """
    What went wrong with TLS, said for a person, if that is why ``error``
    (a failure to connect or to get an answer) happened; else None.
    """
    reasons = getattr(error, "reasons", None) or []
    for reason in reasons:
        if reason.check(ServiceNotTrusted):
            return "TLS refused: %s" % (reason.value,)
        if reason.check(SSL.Error):
            alerts = [str(part) for args in reason.value.args
                      for entry in (args if isinstance(args, list) else [args])
                      for part in (entry if isinstance(entry, tuple)
                                   else (entry,))
                      if "alert" in str(part) or "certificate" in str(part)]
            text = "; ".join(alerts) or str(reason.value)
            return ("TLS refused: the control service did not accept this "
                    "client's certificate (%s); check that it was issued by "
                    "the cluster's CA, is valid now and is not revoked"
                    % (text,))
    return None
