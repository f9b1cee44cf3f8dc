"""
How a request finds its handler: routes are (method, path template,
handler), a template such as ``/v3/{project}/volumes/{volume}`` names its
variable segments, and ``METHOD template`` is the endpoint's key in the
counters and fault patterns.
"""

from blockmover.emulator.errors import ApiError


class Reply(object):
    """
    What a handler answers: HTTP ``code``, a JSON-able ``body`` (None for
    an empty reply) and extra ``headers``.
    """

    def __init__(self, code, body=None, headers=None):
        self.code = code
        self.body = body
        self.headers = dict(headers or {})


class Route(object):
    """
    ``handler(call)`` answers ``method`` on paths matching ``template``.
    ``service`` (identity, volume, compute, admin) says whose rules apply:
    microversions, authentication, error shape; ``region`` is the region
    that answers (None: the first, or Keystone, which every region
    shares), whose faults and counters the request meets.
    """

    def __init__(self, method, template, handler, service, auth=True,
                 region=None):
        self.method = method
        self.region = region
        self.template = template
        self.segments = [s for s in template.split("/") if s]
        self.handler = handler
        self.service = service
        self.auth = auth

    @property
    def key(self):
        return "%s %s" % (self.method, self.template)

    def match(self, segments):
        """
        The template's variables for ``segments``, or None.
        """
        if len(segments) != len(self.segments):
            return None
        params = {}
        for mine, theirs in zip(self.segments, segments):
            if mine.startswith("{") and mine.endswith("}"):
                params[mine[1:-1]] = theirs
            elif mine != theirs:
                return None
        return params


class Router(object):
    """
    Routes in the order added; the first match wins, so literal paths go
    before templated ones.
    """

    def __init__(self):
        self.routes = []

    def add(self, method, template, handler, service, auth=True,
            region=None):
        self.routes.append(Route(method, template, handler, service, auth,
                                 region))

    def find(self, method, path):
        """
        ``(route, params)`` for ``method`` on ``path``.

        :raise ApiError: 404 for an unknown path, 405 for a known path with
            another method.
        """
        segments = [s for s in path.split("/") if s]
        allowed = False
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed = True
        if allowed:
            raise ApiError(405, "The method %s is not allowed for this "
                                "resource." % (method,))
        raise ApiError(404, "The resource could not be found.")


class Call(object):
    """
    One request as handlers see it: ``params`` (path variables), ``query``
    ({name: [values]}), ``body`` (parsed JSON or None), ``headers``
    (lower-cased names), ``base_url`` (``http://host:port`` as the client
    addressed us), ``auth`` (the token's {user, project} or None) and
    ``microversion`` ((major, minor) or None).
    """

    def __init__(self, method, path, params, query, body, headers, base_url,
                 client_address):
        self.method = method
        self.path = path
        self.params = params
        self.query = query
        self.body = body
        self.headers = headers
        self.base_url = base_url
        self.client_address = client_address
        self.auth = None
        self.microversion = None
        self.raw_body = b""

    def arg(self, name, default=None):
        values = self.query.get(name)
        return values[-1] if values else default

    def project(self):
        """
        The project of the request's token.
        """
        return self.auth["project"]
