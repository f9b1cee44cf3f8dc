"""
The one client of the control service's REST API (see
``blockmover.control``): the only place that knows its URLs. Shared by the
agents and the deploy CLI; every method returns a Deferred and never blocks
the reactor.
"""

import json
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import treq
from eliot import current_action
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.error import (
    ConnectError, ConnectingCancelledError, ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
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
    """
    def __init__(self, url, reason):
        url = printable_url(url)
        self.url = url
        Exception.__init__(
            self, "cannot reach the control service at %s: %s"
            % (url, reason))


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
    reactor, which a caller passing its own may not run).
    """

    def __init__(self, reactor, policy):
        self._reactor = reactor
        self._policy = policy

    def endpointForURI(self, uri):
        host = uri.host.decode("idna")
        return wrapClientTLS(
            self._policy.creatorForNetloc(uri.host, uri.port),
            HostnameEndpoint(self._reactor, host, uri.port),
            clock=self._reactor)


def _headers():
    headers = {"Content-Type": ["application/json"]}
    action = current_action()
    if action is not None:
        headers[TASK_HEADER] = [action.serialize_task_id().decode("ascii")]
    return headers


class ControlClient(object):
    """
    A client of one control service at ``base_url`` (e.g.
    ``https://10.77.0.1:4523``), presenting the certificate of
    ``credentials`` (``blockmover.tls.Credentials``) and believing only its
    cluster's control service.

    :param reactor: the reactor to use (the global one by default).
    :param agent: an ``IAgent`` to send requests with; by default one with
        its own persistent connection pool, closed by ``close()``.
    :param timeout: seconds a request other than a long poll may take.
    :param insecure_plain_http: allow an ``http://`` URL and no
        credentials: only for tests of the HTTP layer against a service run
        with ``--insecure-plain-http-for-tests``.

    :raise InsecureURL: for a URL other than ``https://`` (unless
        ``insecure_plain_http``), or an ``https://`` one without
        credentials.
    """

    def __init__(self, base_url, reactor=None, agent=None, timeout=30.0,
                 credentials=None, insecure_plain_http=False):
        if reactor is None:
            # Late: importing the global reactor installs it, and a caller
            # passing its own must be free to choose another.
            from twisted.internet import reactor
        self.base_url = base_url.rstrip("/")
        self._reactor = reactor
        self._pool = None
        if agent is None:
            scheme = urlsplit(self.base_url).scheme
            if scheme == "https" and credentials is not None:
                policy = ClientTLS(credentials)
            elif scheme == "http" and insecure_plain_http:
                policy = None
            elif scheme == "https":
                raise InsecureURL(
                    "no certificate to present to the control service at "
                    "%s; give this client's TLS files" % (
                        printable_url(base_url),))
            else:
                raise InsecureURL(
                    "the control service's URL %s is not https://; "
                    "blockmover speaks only mutual TLS with it"
                    % (printable_url(base_url),))
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            if policy is None:
                agent = Agent(reactor, pool=self._pool)
            else:
                agent = Agent.usingEndpointFactory(
                    reactor, _TLSEndpoints(reactor, policy), pool=self._pool)
        self._http = treq.client.HTTPClient(agent)
        self._timeout = timeout

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
                          timeout=timeout + _LONG_POLL_MARGIN)
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

    def _url(self, path, query):
        url = self.base_url + path
        if query:
            url += "?" + urlencode(sorted(query.items()))
        return url

    def _request(self, method, path, query=None, body=None, timeout=None):
        url = self._url(path, query)
        data = None if body is None else _Body(
            json.dumps(body).encode("utf-8"))
        d = self._http.request(
            method, url, data=data, headers=_headers(), reactor=self._reactor,
            timeout=self._timeout if timeout is None else timeout)
        d.addErrback(self._unreachable)
        d.addCallback(self._answer, method, path)
        return d

    def _unreachable(self, failure):
        failure.trap(ConnectError, DNSLookupError, CancelledError,
                     ConnectingCancelledError, ResponseFailed,
                     ResponseNeverReceived)
        error = failure.value
        tls_reason = _tls_reason(error)
        if tls_reason is not None:
            reason = tls_reason
        elif isinstance(error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(error, (CancelledError, ConnectingCancelledError)) \
                or (isinstance(error, (ResponseFailed, ResponseNeverReceived))
                    and any(r.check(CancelledError) for r in error.reasons)):
            reason = "no answer in time"
        elif isinstance(error, (ResponseFailed, ResponseNeverReceived)):
            reason = "the connection broke: " + "; ".join(
                r.getErrorMessage() for r in error.reasons)
        else:
            reason = failure.getErrorMessage()
        raise ControlUnreachable(self.base_url, reason)

    def _answer(self, response, method, path):
        if response.code == 204:
            d = response.content()
            d.addCallback(lambda _: None)
            return d
        d = response.content()
        d.addCallback(self._decode, response.code, method, path)
        return d

    def _decode(self, content, code, method, path):
        try:
            data = json.loads(content.decode("utf-8")) if content else {}
        except ValueError:
            data = None
        if 200 <= code < 300 and data is not None:
            return data
        if isinstance(data, dict) and data.get("errors"):
            raise ControlError(code, [str(e) for e in data["errors"]])
        raise ControlError(code, ["%s %s: the control service answered %d"
                                  % (method, path, code)])


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
