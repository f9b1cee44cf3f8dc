"""
The backends of a cluster of several sites, seen as one by the control
service: one whole listing of each site makes the cluster's listing, each
volume tagged with its site; a site out of reach holds up no other.
"""

from twisted.internet.defer import inlineCallbacks

from blockmover.config import load_deployment
from blockmover.control.backend import SiteBackends, backend_key
from tests.reactors import run_reactor
from tests.test_control_incremental import ChangesBackend, volume

CLUSTER = """\
version: 1
cluster:
  name: demo
  control: https://127.0.0.1:4523
  sites:
    east: {backend: {name: loopback, root: /nonexistent/east}}
    west: {backend: {name: loopback, root: /nonexistent/west}}
nodes:
  node1: {address: 10.0.0.1, site: east}
  node2: {address: 10.0.0.2, site: west}
deployment: {}
"""

APP = "version: 1\napplications: {}\n"


class Unreachable(ChangesBackend):
    """
    A site whose listing fails once ``down`` is set.
    """
    down = False

    def list_volumes(self):
        if self.down:
            raise OSError("no route to host")
        return ChangesBackend.list_volumes(self)


def test_each_site_is_listed_whole_and_tagged_and_a_lost_site_stands_as_it_was():
    deployment = load_deployment(CLUSTER, APP)
    raw = {"/nonexistent/east": ChangesBackend(),
           "/nonexistent/west": Unreachable()}
    raw["/nonexistent/east"].volumes = [volume("a")]
    raw["/nonexistent/west"].volumes = [volume("b")]

    @inlineCallbacks
    def body(reactor, pool):
        backends = SiteBackends(
            deployment, reactor, pool,
            make=lambda name, options, cluster: raw[options["root"]])
        seen = {}
        first = yield backends.list_volumes()
        seen["first"] = sorted((v.volume_id, v.site) for v in first)
        raw["/nonexistent/east"].volumes = [volume("a"), volume("c")]
        raw["/nonexistent/west"].down = True
        second = yield backends.list_volumes()
        seen["second"] = sorted((v.volume_id, v.site) for v in second)
        seen["unit"] = backends.allocation_unit
        return seen

    seen = run_reactor(body, threadpool=True)
    assert seen["first"] == [("a", "east"), ("b", "west")]
    # West could not be listed: its last listing stands; east's is new.
    assert seen["second"] == [("a", "east"), ("b", "west"), ("c", "east")]
    # Several sites are listed whole every time, even a backend that lists
    # changes.
    assert raw["/nonexistent/east"].calls == [None, None]
    assert seen["unit"] == 1


def test_a_site_never_listed_fails_the_listing():
    deployment = load_deployment(CLUSTER, APP)
    west = Unreachable()
    west.down = True
    raw = {"/nonexistent/east": ChangesBackend(), "/nonexistent/west": west}

    @inlineCallbacks
    def body(reactor, pool):
        backends = SiteBackends(
            deployment, reactor, pool,
            make=lambda name, options, cluster: raw[options["root"]])
        try:
            yield backends.list_volumes()
        except OSError as e:
            return str(e)
        return None

    assert run_reactor(body, threadpool=True) == "no route to host"


def test_the_backends_are_the_same_while_every_site_is():
    one = load_deployment(CLUSTER, APP)
    other = load_deployment(CLUSTER.replace("/nonexistent/west",
                                            "/nonexistent/elsewhere"), APP)
    assert backend_key(one) == backend_key(load_deployment(CLUSTER, APP))
    assert backend_key(one) != backend_key(other)
