"""
The REST API of ``blockmover.control`` over twisted.web: parses requests,
calls the ``ControlService``, answers JSON. Each request is an eliot action,
continuing the caller's task when it sent ``TASK_HEADER``.
"""

import json

from eliot import Action, log_message, start_action, write_failure
from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from blockmover.certificates import CertificateError
from blockmover.control import access, kept, limits
from blockmover.control.errors import BackendError, StoreError
from blockmover.control.failures import NotDown, NotFenceable
from blockmover.control.replica import ReplicaUnavailable
from blockmover.control.slices import ENDED
from blockmover.control.service import (
    BadReport, Busy, ConfigurationRejected, NoConfiguration, UnknownNode,
)
from blockmover import metrics
from blockmover.logs import TASK_HEADER
from blockmover.model import NodeReport, to_data

DEFAULT_POLL_TIMEOUT = 30.0
MAX_POLL_TIMEOUT = 120.0


class BadRequest(Exception):
    """
    The request itself is malformed; the message says how.
    """


class TooLarge(Exception):
    """
    The request body is larger than its bound (413).
    """


class TooManyPolls(Exception):
    """
    The client holds as many long polls as it may (429).
    """


class _TimedOut(object):
    pass


_TIMED_OUT = _TimedOut()

# Exceptions a client can cause, and the status each answers with.
_CLIENT_ERRORS = [
    (BadRequest, 400), (BadReport, 400), (BackendError, 400),
    (access.Refused, 403),
    (NoConfiguration, 404), (UnknownNode, 404),
    (kept.UnknownKeptVolume, 404), (NotDown, 409),
    (NotFenceable, 409), (kept.NotRemovable, 409),
    (TooLarge, 413),
    (TooManyPolls, 429), (Busy, 503), (kept.NotListed, 503),
    # The service's own failure, with a message that says what to check.
    (StoreError, 500),
]


def _request_action(request, client):
    fields = dict(action_type="blockmover:control:request",
                  method=request.method.decode("ascii", "replace"),
                  path=request.path.decode("utf-8", "replace"),
                  client=client)
    task = request.getHeader(TASK_HEADER)
    if task:
        try:
            return Action.continue_task(task_id=task, **fields)
        except (ValueError, TypeError):
            fields["bad_task_header"] = True
    return start_action(**fields)


def _query(request, name):
    values = request.args.get(name.encode("ascii"))
    return values[0].decode("utf-8", "replace") if values else None


def _body(request):
    if request.too_large:
        raise TooLarge(limits.too_large_message(request.body_limit))
    try:
        data = json.loads(request.content.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest("the request body is not JSON: %s" % (e,))
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _identify(request, method):
    """
    The ``Identity`` of the client making ``request``, once it is known to
    be allowed to; None when the site serves without TLS (tests of the HTTP
    layer alone).

    :raise access.Refused: if the client is not to be believed or may not.
    """
    authority = request.site.authority
    if authority is None:
        return None
    try:
        identity = authority.identify(request.transport)
    except CertificateError as e:
        # The service's own revocation list is unreadable: everyone is
        # refused until it is mended, and the log says so.
        log_message(message_type="blockmover:control:revocations-unreadable",
                    reason=str(e))
        raise access.Refused("the control service cannot read its "
                             "revocation list, so it refuses every "
                             "request; its log says why")
    # The whole path: one with a segment left over below a leaf is no
    # route of the table, and the leaf answers it 404 (``render``).
    parts = [part.decode("utf-8", "replace")
             for part in request.prepath + request.postpath]
    access.check(identity, method, parts)
    return identity


def _who(request):
    """
    Who makes ``request``, for the records and logs of what an operator
    did: their certificate's identity.
    """
    return (str(request.identity) if request.identity is not None
            else "an unauthenticated client")


def _raise(error):
    raise error


class _Endpoint(Resource):
    """
    A leaf answering JSON, at its own path only (a path below it is a
    404). Subclasses define ``GET``/``PUT``/``POST``/``DELETE`` methods
    taking the request and returning ``(code, data)`` or a Deferred of
    it; ``data`` None means no body, bytes a body serialized already.
    """
    isLeaf = True
    # Whether it answers the paths below its own too.
    serves_below = False

    def __init__(self, service, reactor):
        Resource.__init__(self)
        self.service = service
        self.reactor = reactor

    def render(self, request):
        method = request.method.decode("ascii", "replace")
        refusal = None
        try:
            request.identity = _identify(request, method)
        except access.Refused as e:
            request.identity = None
            refusal = e
        action = _request_action(
            request, str(request.identity) if request.identity else None)
        handler = getattr(self, method, None) if method.isupper() else None
        with action.context():
            if refusal is not None:
                result = maybeDeferred(_raise, refusal)
            elif request.postpath and not self.serves_below:
                # A leaf serves its one path, not those below it
                # ("/v1/configuration/", ".../desired/x"): the access table
                # lets a path it has no rule for through to its 404, so
                # those must be 404s.
                result = maybeDeferred(_not_found, request)
            elif handler is None:
                allowed = [m for m in ("GET", "PUT", "POST", "DELETE")
                           if hasattr(self, m)]
                request.setHeader(b"Allow", ", ".join(allowed).encode())
                result = maybeDeferred(lambda: (405, {"errors": [
                    "%s is not allowed here; use %s"
                    % (method, " or ".join(allowed))]}))
            elif request.too_large:
                # A body that grew past its bound while it came (chunked);
                # one announced too large was answered by the channel.
                result = maybeDeferred(_body, request)
            else:
                result = maybeDeferred(handler, request)
        gone = []

        def disconnected(failure):
            # A client that goes away cancels whatever it waited for.
            gone.append(True)
            result.cancel()
        request.notifyFinish().addErrback(disconnected)
        result.addErrback(self._error, action, request)
        result.addCallback(self._write, request, action, gone)
        result.addErrback(write_failure)
        return NOT_DONE_YET

    def _error(self, failure, action, request):
        if failure.check(CancelledError):
            return None
        if failure.check(ConfigurationRejected):
            return (400, {"errors": failure.value.errors})
        if failure.check(ReplicaUnavailable):
            leader = failure.value.leader
            if leader is None:
                request.setHeader(b"Retry-After", b"1")
            return (421 if leader is not None else 503,
                    {"errors": [str(failure.value)], "leader": leader})
        for kind, code in _CLIENT_ERRORS:
            if failure.check(kind):
                if code in (429, 503):
                    request.setHeader(b"Retry-After",
                                      b"%d" % (limits.RETRY_AFTER,))
                if code == 413:
                    # What is left of the body is not worth reading.
                    request.setHeader(b"Connection", b"close")
                return (code, {"errors": [str(failure.value)]})
        with action.context():
            write_failure(failure)
        return (500, {"errors": ["the control service failed; its log says "
                                 "why"]})

    def _write(self, result, request, action, gone):
        if result is None or gone:
            action.finish()
            return
        code, data = result
        request.setResponseCode(code)
        if data is None:
            request.finish()
        elif isinstance(data, _Text):
            request.setHeader(b"Content-Type",
                              data.content_type.encode("ascii"))
            request.setHeader(b"Content-Length", b"%d" % (len(data.body),))
            request.write(data.body)
            request.finish()
        else:
            body = data if isinstance(data, bytes) else json.dumps(
                data, sort_keys=True).encode("utf-8")
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            request.write(body)
            request.finish()
        action.add_success_fields(code=code)
        if code >= 400 and isinstance(data, dict):
            action.add_success_fields(errors=data.get("errors"))
        action.finish()


class _Text(object):
    """
    An answer that is no JSON: ``body`` (bytes) of ``content_type``.
    """

    def __init__(self, body, content_type):
        self.body = body
        self.content_type = content_type


class _Metrics(_Endpoint):
    """
    ``GET /metrics``: the service's Prometheus metrics
    (``blockmover.control.metrics``), in the text format, or OpenMetrics
    when the Accept header asks for it.
    """
    def GET(self, request):
        body, content_type = metrics.render(self.service.metrics.registry,
                                            request.getHeader(b"Accept"))
        return (200, _Text(body, content_type))


class _Configuration(_Endpoint):
    def GET(self, request):
        d = self.service.configuration()
        d.addCallback(lambda configuration: (200, configuration))
        return d

    def PUT(self, request):
        body = _body(request)
        texts = {}
        for key in ("cluster_yml", "app_yml"):
            if not isinstance(body.get(key), str):
                raise BadRequest("the body needs %r: the text of the file"
                                 % (key,))
            texts[key] = body[key]
        dry_run = _query(request, "dry_run") not in (None, "", "0", "false")
        d = self.service.configure(
            texts["cluster_yml"], texts["app_yml"],
            str(body.get("cluster_path") or "cluster.yml"),
            str(body.get("app_path") or "app.yml"), dry_run=dry_run)
        d.addCallback(lambda answer: (200, answer))
        return d


class _State(_Endpoint):
    def GET(self, request):
        return (200, self.service.state())


class _Volumes(_Endpoint):
    def GET(self, request):
        return (200, self.service.volumes())


class _KeptVolumes(_Endpoint):
    """
    ``GET /v1/volumes/kept``: the volumes an operator may remove
    (``blockmover.control.kept``).
    """
    def GET(self, request):
        return (200, self.service.kept_volumes())


class _Volume(_Endpoint):
    """
    ``DELETE /v1/volumes/VOLUME``: an operator removes a kept volume;
    logged with who (their certificate's identity). Answers ``{"removed":
    KEPT}``.
    """
    def __init__(self, service, reactor, volume_id):
        _Endpoint.__init__(self, service, reactor)
        self.volume_id = volume_id

    def DELETE(self, request):
        if self.service.deployment is None:
            raise NoConfiguration()
        d = self.service.remove_volume(self.volume_id, _who(request))
        d.addCallback(lambda answer: (200, answer))
        return d


class _VolumesDirectory(Resource):
    """
    ``/v1/volumes``: the listing itself, ``kept`` below it, and each
    volume by its id.
    """
    def __init__(self, service, reactor):
        Resource.__init__(self)
        self.service = service
        self.reactor = reactor

    def getChild(self, name, request):
        if name == b"kept":
            return _KeptVolumes(self.service, self.reactor)
        # Twisted unquoted the segment already, as the access check saw it.
        return _Volume(self.service, self.reactor,
                       name.decode("utf-8", "replace"))

    def render(self, request):
        return _Volumes(self.service, self.reactor).render(request)


class _Desired(_Endpoint):
    def __init__(self, service, reactor, node):
        _Endpoint.__init__(self, service, reactor)
        self.node = node

    def GET(self, request):
        after = _query(request, "after")
        timeout = _query(request, "timeout")
        try:
            after = int(after) if after not in (None, "") else None
        except ValueError:
            raise BadRequest("after must be a generation (an integer), not "
                             "%r" % (after,))
        try:
            timeout = (float(timeout) if timeout not in (None, "")
                       else DEFAULT_POLL_TIMEOUT)
        except ValueError:
            raise BadRequest("timeout must be a number of seconds, not %r"
                             % (timeout,))
        if not 0 <= timeout < float("inf"):
            raise BadRequest("timeout must be zero or more seconds")
        # A poll ends within a part of the lease: the next renews it.
        timeout = min(timeout, MAX_POLL_TIMEOUT, self.service.poll_limit())
        polls = request.site.polls
        client = limits.client_of(request.getClientAddress())
        if not polls.take(client):
            raise TooManyPolls(
                "%s holds %d long polls already, the most one client may "
                "hold; end one before starting another (an agent needs only "
                "one)" % (client, polls.limit))
        try:
            d = self.service.wait_desired(self.node, after)
        except BaseException:
            polls.give_back(client)
            raise

        def given_back(result):
            polls.give_back(client)
            return result
        d.addBoth(given_back)
        d.addTimeout(timeout, self.reactor,
                     onTimeoutCancel=lambda result, seconds: _TIMED_OUT)
        d.addCallback(self._answer)
        return d

    def _answer(self, desired):
        if desired is _TIMED_OUT or desired is ENDED:
            return (204, None)
        if desired is None:
            raise UnknownNode(self.node)
        # Serialized once per generation, not once per agent's request.
        return (200, self.service.slices.serialized(desired))


class _Report(_Endpoint):
    def __init__(self, service, reactor, node):
        _Endpoint.__init__(self, service, reactor)
        self.node = node

    def PUT(self, request):
        body = _body(request)
        try:
            report = NodeReport.create(body)
        except Exception as e:
            raise BadRequest("the body is not a node report: %s" % (e,))
        self.service.report(self.node, report)
        return (200, {})


class _NodeVolumes(_Endpoint):
    """
    ``GET /v1/nodes/NODE/volumes?volume_id=ID``: one volume, as the
    backend says now, for a node without cloud credentials.
    """
    def __init__(self, service, reactor, node):
        _Endpoint.__init__(self, service, reactor)
        self.node = node

    def GET(self, request):
        volume_id = _query(request, "volume_id")
        if not volume_id:
            raise BadRequest("give the volume with ?volume_id=ID")
        d = self.service.node_calls.volume(self.node, volume_id)
        d.addCallback(lambda volume: (200, {"volume": to_data(volume)}))
        return d


class _NodeVolumeCall(_Endpoint):
    """
    ``POST /v1/nodes/NODE/volumes/CALL``: a cloud call node NODE asks the
    service to make for it (``blockmover.control.nodecalls``).
    """
    # The call, and the body's fields it takes (name, type).
    CALLS = {
        "create": (("dataset_id", str),),
        "attach": (("volume_id", str),),
        "detach": (("volume_id", str),),
        "grow": (("volume_id", str), ("size", int)),
        "formatted": (("volume_id", str),),
    }

    def __init__(self, service, reactor, node, call):
        _Endpoint.__init__(self, service, reactor)
        self.node = node
        self.call = call

    def POST(self, request):
        body = _body(request)
        arguments = []
        for name, kind in self.CALLS[self.call]:
            value = body.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise BadRequest("the body needs %r (%s)"
                                 % (name, "an integer" if kind is int
                                    else "a string"))
            arguments.append(value)
        call = getattr(self.service.node_calls, self.call)
        d = call(self.node, *arguments)
        d.addCallback(lambda volume: (200, {"volume": to_data(volume)}))
        return d


def _not_found(request):
    return (404, {"errors": ["no such resource %s; see the API in "
                             "blockmover.control"
                             % (request.path.decode("utf-8", "replace"),)]})


class _NodeSeen(_Endpoint):
    """
    ``POST /v1/nodes/NODE/volumes/seen``: node NODE saw the device of a
    volume it asked to attach or detach come or go.
    """
    def __init__(self, service, reactor, node):
        _Endpoint.__init__(self, service, reactor)
        self.node = node

    def POST(self, request):
        volume_id = _body(request).get("volume_id")
        if not isinstance(volume_id, str):
            raise BadRequest("the body needs 'volume_id' (a string)")
        return (200, {"woken": self.service.node_calls.seen(self.node,
                                                           volume_id)})


class _NodeFailure(_Endpoint):
    """
    ``POST /v1/nodes/NODE/fence`` and ``POST /v1/nodes/NODE/confirm-down``:
    an operator fences node NODE, or confirms it is down; recorded with
    who (their certificate's identity) and when. Answers the node's state
    (``GET /v1/state``'s fields of a node's lease and failure).
    """
    def __init__(self, service, reactor, node, action):
        _Endpoint.__init__(self, service, reactor)
        self.node = node
        self.action = action

    def POST(self, request):
        service = self.service
        if service.deployment is None:
            raise NoConfiguration()
        if self.node not in service.deployment.nodes and \
                not service.failures.is_removed(self.node):
            raise UnknownNode(self.node)
        who = _who(request)
        if self.action == "fence":
            d = service.failures.request_fence(self.node, who)
        else:
            d = service.failures.confirm_down(self.node, who)
        d.addCallback(lambda state: (200, {"node": self.node,
                                           "failure": state}))
        return d


class _NotFound(_Endpoint):
    def GET(self, request):
        return _not_found(request)
    PUT = GET
    POST = GET


class _Nodes(Resource):
    def __init__(self, service, reactor):
        Resource.__init__(self)
        self.service = service
        self.reactor = reactor

    def getChild(self, name, request):
        # Twisted unquoted each segment already: the name is the one the
        # request's authorization saw.
        return _Node(self.service, self.reactor,
                     name.decode("utf-8", "replace"))


class _Node(Resource):
    """
    ``/v1/nodes/NODE/...``: each resource of the node made when a request
    reaches it, not all of them for every request (every agent's long poll
    passes here).
    """

    def __init__(self, service, reactor, node, under=()):
        Resource.__init__(self)
        self.service = service
        self.reactor = reactor
        self.node = node
        # The segments below the node's name so far: () or ("volumes",).
        self._under = under

    def getChild(self, name, request):
        service, reactor, node = self.service, self.reactor, self.node
        if self._under == ():
            if name == b"desired":
                return _Desired(service, reactor, node)
            if name == b"state":
                return _Report(service, reactor, node)
            if name == b"volumes":
                return _Node(service, reactor, node, ("volumes",))
            if name in (b"fence", b"confirm-down"):
                return _NodeFailure(service, reactor, node,
                                    name.decode("ascii"))
        else:
            call = name.decode("ascii", "replace")
            if call in _NodeVolumeCall.CALLS:
                return _NodeVolumeCall(service, reactor, node, call)
            if name == b"seen":
                return _NodeSeen(service, reactor, node)
        return _NotFound(service, reactor)

    def render(self, request):
        if self._under == ("volumes",):
            index = _NodeVolumes(self.service, self.reactor, self.node)
        else:
            index = _NotFound(self.service, self.reactor)
        return index.render(request)


class _Tree(Resource):
    """
    A directory answering ``index`` itself and whose unknown children
    answer ``missing``, a JSON 404 (by default ``index`` too).
    """
    def __init__(self, index, missing=None):
        Resource.__init__(self)
        self._index = index
        self._missing = index if missing is None else missing

    def getChild(self, name, request):
        return self._missing

    def render(self, request):
        return self._index.render(request)


class _Replicas(_Endpoint):
    """
    ``GET /v1/replicas``: the replicas of the control service, which
    leads, and etcd's members (``replica.Replica.describe``); any replica
    answers.
    """
    def GET(self, request):
        d = self.service.describe()
        d.addCallback(lambda answer: (200, answer))
        return d


class _Renewals(_Endpoint):
    """
    ``POST /v1/replicas/renewals``: another replica says which nodes
    polled it (``{"nodes": [NODE, ...]}``), renewing their leases here,
    at the leader.
    """
    def POST(self, request):
        nodes = _body(request).get("nodes")
        if not isinstance(nodes, list) or not all(
                isinstance(node, str) for node in nodes):
            raise BadRequest("the body needs 'nodes' (a list of names)")
        return (200, {"renewed": self.service.renewed_elsewhere(nodes)})


class _Misdirected(_Endpoint):
    """
    Whatever a replica that does not lead does not serve: answered 421
    with the leader's address, for the client to ask it; 503 while
    nobody leads (or this replica was just elected and is starting).
    """
    serves_below = True

    def GET(self, request):
        replica = self.service
        leader = replica.leader_url()
        if leader is not None:
            raise ReplicaUnavailable(
                "this replica (%s) does not lead the control service; the "
                "leader at %s does" % (replica.name, leader), leader)
        raise ReplicaUnavailable(
            "no replica of the control service leads yet (%s); try again "
            "in a second" % ("this one was just elected and is starting"
                             if replica.leading else "an election is under "
                             "way"), None)
    PUT = POST = DELETE = GET


class _FollowerNode(Resource):
    """
    ``/v1/nodes/NODE/...`` at a replica that does not lead: the node's
    long poll, and nothing else.
    """
    def __init__(self, follower, reactor, node, misdirected):
        Resource.__init__(self)
        self._follower = follower
        self._reactor = reactor
        self._node = node
        self._misdirected = misdirected

    def getChild(self, name, request):
        if name == b"desired":
            return _Desired(self._follower, self._reactor, self._node)
        return self._misdirected

    def render(self, request):
        return self._misdirected.render(request)


class _FollowerNodes(Resource):
    def __init__(self, follower, reactor, misdirected):
        Resource.__init__(self)
        self._follower = follower
        self._reactor = reactor
        self._misdirected = misdirected

    def getChild(self, name, request):
        return _FollowerNode(self._follower, self._reactor,
                             name.decode("utf-8", "replace"),
                             self._misdirected)

    def render(self, request):
        return self._misdirected.render(request)


class _ReplicaRoot(Resource):
    """
    The API of one replica of several: the whole API while it leads (and
    its service runs), else what a follower serves (``replica``).
    """
    def __init__(self, replica, reactor):
        Resource.__init__(self)
        self._replica = replica
        self._reactor = reactor
        misdirected = _Misdirected(replica, reactor)
        v1 = _Tree(misdirected)
        v1.putChild(b"nodes", _FollowerNodes(replica.follower, reactor,
                                             misdirected))
        v1.putChild(b"replicas", _Tree(_Replicas(replica, reactor),
                                       misdirected))
        self._following = _Tree(misdirected)
        self._following.putChild(b"v1", v1)
        self._following.putChild(b"metrics",
                                 _Metrics(replica.follower, reactor))
        self._leading = None

    def _root(self):
        service = self._replica.service
        if service is None:
            return self._following
        if self._leading is None or self._leading[0] is not service:
            self._leading = (service, make_root(service, self._reactor,
                                                self._replica))
        return self._leading[1]

    def getChildWithDefault(self, name, request):
        return self._root().getChildWithDefault(name, request)

    def render(self, request):
        return self._root().render(request)


def make_root(service, reactor, replica=None):
    """
    The root ``IResource`` of the API for ``service``; with ``replica``
    (a ``replica.Replica``), the API of the replica leading.
    """
    missing = _NotFound(service, reactor)
    v1 = _Tree(missing)
    v1.putChild(b"configuration", _Configuration(service, reactor))
    v1.putChild(b"state", _State(service, reactor))
    v1.putChild(b"volumes", _VolumesDirectory(service, reactor))
    v1.putChild(b"nodes", _Nodes(service, reactor))
    if replica is not None:
        replicas = _Tree(_Replicas(replica, reactor), missing)
        replicas.putChild(b"renewals", _Renewals(service, reactor))
        v1.putChild(b"replicas", replicas)
    root = _Tree(missing)
    root.putChild(b"v1", v1)
    root.putChild(b"metrics", _Metrics(service, reactor))
    return root


def make_replica_root(replica, reactor):
    """
    The root ``IResource`` of the API of ``replica``, one of several on
    etcd.
    """
    return _ReplicaRoot(replica, reactor)


def make_site(service, reactor, authority,
              max_connections=limits.DEFAULT_MAX_CONNECTIONS,
              polls_per_client=limits.DEFAULT_POLLS_PER_CLIENT, root=None):
    """
    A quiet ``Site`` serving the API within ``blockmover.control.limits``,
    to the clients ``authority`` (``access.Authority``) identifies and
    allows. ``authority`` None serves everyone, unauthenticated: only for
    tests of the HTTP layer itself, over plain HTTP. ``root`` serves in
    place of ``service``'s API (a replica's, ``make_replica_root``).
    """
    if root is None:
        root = make_root(service, reactor)
    site = limits.LimitedSite(root, reactor,
                              max_connections=max_connections,
                              polls_per_client=polls_per_client)
    site.authority = authority
    site.displayTracebacks = False
    site.noisy = False
    return site
