"""
The authorization table, by hypothesis. For every identity, every route of
the API (any node's name in it: plain, percent-encoded, odd), what lies
just beside the routes (a trailing "/", a segment more or less) and every
method:

- ``access.decide`` refuses exactly what issue 8's table says, written out
  again below in its own words (``table``), apart from ``access.RULES``, so
  that the test is not the table checking itself;
- the real service, over mutual TLS, answers 403 exactly then, naming the
  identity and what it tried; and what is no route of the table is a 404
  or 405 for everyone: never served, never refused for a reason it could
  not have.
"""

import http.client
import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings, strategies as st

from blockmover.certificates import (
    CONTROL, ETCD, METRICS, NODE, USER, Identity,
)
from blockmover.control import access
from tests.control_process import ControlProcess

CLUSTER = "table"
USERS = ("operator", "eve")
NODES = ("node1", "a", "b-2", "n0")
# etcd's members, one named as a node is: a name opens nothing.
ETCD_MEMBERS = ("etcd1", "node1")
METHODS = ("GET", "PUT", "POST", "DELETE")
VOLUME_CALLS = ("create", "attach", "detach", "grow", "formatted",
                "seen")

ALLOWED, REFUSED, NO_ROUTE = "allowed", "refused", "no route"


def table(identity, method, parts):
    """
    Issue 8's table: a user puts and reads the configuration and reads the
    state and the volume listing; a node reads only its own slice and its
    own volumes, writes only its own state and asks for the cloud calls of
    only its own volumes; the metrics scraper and users read the metrics
    (issue 9), and the scraper nothing else; a user lists the volumes kept
    after pushes and removes any volume (the service refuses those it may
    not: that is no question of who asks); the control service and etcd's
    members do none of it. :return: ``ALLOWED``, ``REFUSED``, or
    ``NO_ROUTE`` for a method and path the table has no row of.
    """
    user = identity.kind == USER
    if parts == ("metrics",):
        rows = {"GET": identity.kind in (USER, METRICS)}
    elif parts == ("v1", "configuration"):
        rows = {"GET": user, "PUT": user}
    elif parts in (("v1", "state"), ("v1", "volumes")):
        rows = {"GET": user}
    elif len(parts) == 3 and parts[:2] == ("v1", "volumes"):
        # Whatever the id, "kept" too: a user may ask to remove it.
        rows = {"DELETE": user}
        if parts[2] == "kept":
            rows["GET"] = user
    elif len(parts) >= 4 and parts[:2] == ("v1", "nodes"):
        own = identity.kind == NODE and identity.name == parts[2]
        below = parts[3:]
        if below in (("desired",), ("volumes",)):
            rows = {"GET": own}
        elif below == ("state",):
            rows = {"PUT": own}
        elif len(below) == 2 and below[0] == "volumes" and \
                below[1] in VOLUME_CALLS:
            rows = {"POST": own}
        else:
            rows = {}
    else:
        rows = {}
    if method not in rows:
        return NO_ROUTE
    return ALLOWED if rows[method] else REFUSED


# --- what hypothesis draws --------------------------------------------------

def identities(kinds):
    choices = {
        USER: st.sampled_from(USERS).map(
            lambda name: Identity(cluster=CLUSTER, kind=USER, name=name)),
        NODE: st.sampled_from(NODES).map(
            lambda name: Identity(cluster=CLUSTER, kind=NODE, name=name)),
        METRICS: st.just(Identity(cluster=CLUSTER, kind=METRICS)),
        CONTROL: st.just(Identity(cluster=CLUSTER, kind=CONTROL)),
        ETCD: st.sampled_from(ETCD_MEMBERS).map(
            lambda name: Identity(cluster=CLUSTER, kind=ETCD, name=name)),
    }
    return st.one_of([choices[kind] for kind in kinds])


# Any text a URL can carry once percent-encoded (UTF-8, so no lone
# surrogates), and the names certificates are issued to.
node_names = st.one_of(
    st.sampled_from(NODES),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12))

ROUTES = (
    ("metrics",), ("v1", "configuration"), ("v1", "state"), ("v1", "volumes"),
    ("v1", "volumes", "kept"), ("v1", "volumes", None),
    ("v1", "nodes", None, "desired"), ("v1", "nodes", None, "state"),
    ("v1", "nodes", None, "volumes"),
) + tuple(("v1", "nodes", None, "volumes", call) for call in VOLUME_CALLS)


@st.composite
def paths(draw):
    """
    The segments of a path as the service decodes them: a route with a
    node's name drawn, or one beside a route.
    """
    node = draw(node_names)
    parts = [node if part is None else part for part in draw(
        st.sampled_from(ROUTES))]
    beside = draw(st.sampled_from(("route", "slash", "more", "less")))
    if beside == "slash":
        parts.append("")
    elif beside == "more":
        parts.append(draw(st.sampled_from(("x", "desired", "state", "..",
                                           "volumes"))))
    elif beside == "less":
        parts.pop()
    return tuple(parts)


def _unreserved(text):
    return all(c.isascii() and (c.isalnum() or c in "-._~") for c in text)


@st.composite
def encoded(draw, parts):
    """
    The path on the wire: each segment as it is (when it may be), with
    what must be percent-encoded encoded, or with every byte encoded.
    """
    segments = []
    for part in parts:
        ways = ["some", "every"] + (["none"] if _unreserved(part) else [])
        way = draw(st.sampled_from(ways))
        if way == "none":
            segments.append(part)
        elif way == "some":
            segments.append(quote(part, safe=""))
        else:
            segments.append("".join("%%%02X" % (byte,)
                                    for byte in part.encode("utf-8")))
    return "/" + "/".join(segments)


# --- access.decide against the table ----------------------------------------

@settings(max_examples=2000, deadline=None)
@given(identity=identities((USER, NODE, METRICS, CONTROL, ETCD)),
       parts=paths(), method=st.sampled_from(METHODS))
def test_decide_refuses_exactly_what_the_table_does(identity, parts,
                                                    method):
    reason = access.decide(identity, method, parts)
    assert (reason is not None) == (table(identity, method, parts)
                                    == REFUSED), reason
    if reason is not None:
        assert reason.startswith("%s may not %s /%s: " % (
            identity, method, "/".join(parts)))


# --- the real service against the table -------------------------------------

class Clients(object):
    """
    One persistent connection per identity to ``control``, made on first
    use and made again if the service closed it.
    """

    def __init__(self, control):
        self._control = control
        self._connections = {}

    def request(self, identity, method, path):
        body = b"{}" if method in ("PUT", "POST") else None
        for attempt in (1, 2):
            connection = self._connection(identity)
            try:
                connection.request(method, path, body=body)
                response = connection.getresponse()
                raw = response.read()
                if response.getheader("Content-Type", "").startswith(
                        "application/json"):
                    return response.status, json.loads(raw)
                # The metrics are text, not JSON; a 204 has no body.
                return response.status, raw or None
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                del self._connections[identity]
                if attempt == 2:
                    raise

    def _connection(self, identity):
        if identity not in self._connections:
            self._connections[identity] = http.client.HTTPSConnection(
                "127.0.0.1", self._control.port, timeout=30,
                context=self._control.ca.ssl_context(identity.kind,
                                                     identity.name))
        return self._connections[identity]

    def close(self):
        for connection in self._connections.values():
            connection.close()


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    directory = tmp_path_factory.mktemp("table")
    (directory / "control-state").mkdir()
    control = ControlProcess(str(directory / "control-state"),
                             str(directory / "control.log"),
                             cluster=CLUSTER).start()
    each = Clients(control)
    try:
        yield each
    finally:
        each.close()
        assert control.stop() in (0, None), "blockmover-control did not stop"


@settings(max_examples=250, deadline=None)
@given(identity=identities((USER, NODE, METRICS, CONTROL, ETCD)),
       parts=paths(), data=st.data())
def test_service_refuses_exactly_what_the_table_does(clients, identity,
                                                     parts, data):
    path = data.draw(encoded(parts))
    for method in METHODS:
        expected = table(identity, method, parts)
        # A slice is asked for without waiting for a newer one.
        status, answer = clients.request(identity, method,
                                         path + "?timeout=0")
        attempt = (identity, method, path, status, answer)
        if expected == REFUSED:
            assert status == 403, attempt
            assert answer["errors"][0].startswith("%s may not %s /%s: " % (
                identity, method, "/".join(parts))), attempt
        elif expected == NO_ROUTE:
            assert status in (404, 405), attempt
        else:
            assert status != 403 and status < 500, attempt
