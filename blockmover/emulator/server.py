"""
The emulator's web server: one Twisted resource that routes every request,
counts it, applies injected faults, checks the token and the microversion,
runs the handler (which may return a Deferred) and writes the JSON reply.
Request logs carry method, endpoint and status, never tokens or bodies.
"""

import json
import uuid

from eliot import log_message
from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from blockmover.emulator import keystone as keystone_api
from blockmover.emulator import microversion
from blockmover.emulator.errors import ApiError, KeystoneError
from blockmover.emulator.region import Region
from blockmover.emulator.routing import Call, Reply, Router
from blockmover.emulator.store import Store

STATUS_MESSAGES = {
    500: "The server has either erred or is incapable of performing the "
         "requested operation.",
    503: "The service is unavailable at the moment; try again later.",
}


class Emulator(object):
    """
    The whole emulated cloud: ``config`` (an ``EmulatorConfig``), state
    under ``state_dir``, one Keystone and a ``Region`` per configured
    region (``regions``: {name: Region}; ``first``, the default one).
    ``start()`` loads the state and resumes unfinished transitions;
    ``site()`` is what to listen with.
    """

    def __init__(self, reactor, config, state_dir):
        self.reactor = reactor
        self.config = config
        self.store = Store(reactor, state_dir, config.regions)
        self.keystone = keystone_api.Keystone(config, self.store, reactor)
        self.regions = {name: Region(reactor, config, self.store, name)
                        for name in config.regions}
        self.first = self.regions[config.regions[0]]
        self.router = Router()
        keystone_api.add_routes(self.router, self.keystone)
        self.router.add("GET", "/admin/regions", self._list_regions, "admin",
                        auth=False)
        for region in self.regions.values():
            region.add_routes(self.router, region is self.first)

    def _list_regions(self, call):
        return Reply(200, {"regions": list(self.config.regions)})

    def start(self):
        self.store.prepare_by_id(self.config.servers)
        self.store.start()
        for region in self.regions.values():
            region.start()

    def stop(self):
        # Let queued writes land first so none overwrites the final state.
        self.store.stop()
        self.store.save_now()

    def site(self):
        return Site(EmulatorResource(self))

    def _keys(self, method, path, route):
        keys = ["%s %s" % (method, path)]
        if route is not None:
            keys.insert(0, route.key)
        return keys

    def handle(self, request):
        """
        Answer one request; returns a Deferred firing with (code, body,
        headers).
        """
        method = request.method.decode("ascii")
        path = request.path.decode("utf-8")
        try:
            route, params = self.router.find(method, path)
        except ApiError as e:
            self.first.counters.count("%s %s" % (method, path))
            return succeed(_failure(e, None))
        region = route.region or self.first
        if route.service != "admin":
            region.counters.count(route.key)
        call = self._call(request, method, path, params)
        keys = self._keys(method, path, route)
        delay = 0.0
        if route.service != "admin":
            delay = region.faults.latency(keys)
        d = deferLater(self.reactor, delay, self._answer, route, region,
                       call, keys)
        d.addErrback(lambda f: _failure(f.value, route)
                     if f.check(ApiError) else f)
        d.addErrback(self._crashed, route)
        return d

    def _crashed(self, failure, route):
        log_message(message_type="blockmover:emulator:handler-error",
                    error=failure.getErrorMessage(),
                    traceback=failure.getTraceback())
        return _failure(ApiError(500, STATUS_MESSAGES[500]), route)

    def _call(self, request, method, path, params):
        query = {k.decode("utf-8"): [v.decode("utf-8") for v in values]
                 for k, values in request.args.items()}
        headers = {name.decode("latin-1").lower(): values[-1].decode("latin-1")
                   for name, values
                   in request.requestHeaders.getAllRawHeaders()}
        host = headers.get("host")
        if not host:
            address = request.getHost()
            host = "%s:%d" % (address.host, address.port)
        client = request.getClientAddress()
        request.content.seek(0)
        call = Call(method, path, params, query, None, headers,
                    "http://" + host, getattr(client, "host", ""))
        call.raw_body = request.content.read()
        return call

    def _answer(self, route, region, call, keys):
        extra = {}
        if route.service == "admin":
            self.first.admin.authorize(call)
        else:
            status = region.faults.error(keys)
            if status is not None:
                raise ApiError(status, STATUS_MESSAGES.get(
                    status, "Injected fault."))
            retry_after = region.faults.over_limit(keys)
            if retry_after is not None:
                raise ApiError(413, "This request was rate-limited.",
                               retry_after=int(retry_after))
        if route.auth:
            call.auth = self.keystone.check(call.headers.get("x-auth-token"))
            if call.auth is None:
                raise ApiError(401, "The request you have made requires "
                                    "authentication.", headers={
                                        "WWW-Authenticate":
                                        'Keystone uri="%s%s"' % (
                                            call.base_url,
                                            keystone_api.PREFIX)})
        if route.service in microversion.RANGES:
            call.microversion = microversion.requested(call.headers,
                                                       route.service)
            extra = microversion.echo_headers(route.service,
                                              call.microversion)
        call.body = _parse_body(call.raw_body)
        d = maybeDeferred(route.handler, call)

        def done(reply):
            headers = dict(extra)
            headers.update(reply.headers)
            return reply.code, reply.body, headers

        def refused(failure):
            failure.trap(ApiError)
            failure.value.headers = dict(extra, **failure.value.headers)
            return failure
        return d.addCallbacks(done, refused)


def _parse_body(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "Malformed request body: not JSON.")


def _failure(error, route):
    if route is not None and route.service == "identity" and not isinstance(
            error, KeystoneError):
        error = KeystoneError(error.code, error.message,
                              headers=error.headers)
    return error.code, error.body(), error.headers


class EmulatorResource(Resource):
    """
    Every path of the emulator, answered by ``Emulator.handle``.
    """

    isLeaf = True

    def __init__(self, emulator):
        Resource.__init__(self)
        self.emulator = emulator

    def render(self, request):
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self.emulator.handle(request)

        def write(result):
            code, body, headers = result
            if finished:
                return
            request.setResponseCode(code)
            request.setHeader("X-Openstack-Request-Id",
                              "req-" + str(uuid.uuid4()))
            for name, value in headers.items():
                request.setHeader(name, value)
            log_message(message_type="blockmover:emulator:request",
                        method=request.method.decode("ascii"),
                        path=request.path.decode("utf-8"), code=code)
            # Cinder and Nova name the type of an empty answer too.
            request.setHeader("Content-Type", "application/json")
            if body is None:
                request.setHeader("Content-Length", "0")
            else:
                request.write(json.dumps(body).encode("utf-8"))
            request.finish()
        d.addCallback(write)
        d.addErrback(lambda f: log_message(
            message_type="blockmover:emulator:write-error",
            error=f.getErrorMessage()))
        return NOT_DONE_YET
