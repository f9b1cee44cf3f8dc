"""
``blockmover-control``: the control service's command line.
"""

import argparse
import datetime
import gc
import os
import socket
import sys

from eliot import log_message
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory

from blockmover import tls
from blockmover.certificates import CertificateError, RevocationFile
from blockmover.client import ControlClient
from blockmover.config import ConfigError, election_of
from blockmover.control import DEFAULT_PORT
from blockmover.control.access import Authority
from blockmover.control.api import make_replica_root, make_site
from blockmover.control import limits
from blockmover.control.errors import StoreError
from blockmover.control.etcd import EtcdClient, EtcdError, EtcdTLS
from blockmover.control.etcdstore import EtcdStore
from blockmover.control.leases import STARTUP_GRACE
from blockmover.control.metrics import ControlMetrics
from blockmover.control.revocations import Revocations, SharedRevocations
from blockmover.control.replica import (
    Replica, SlicePublisher, describe_timing,
)
from blockmover.control.service import (
    ControlService, DEFAULT_REFRESH_INTERVAL,
)
from blockmover.control.store import FileStore
from blockmover.logs import start_logging
from blockmover.model import ElectionTiming
from blockmover.poll import Backoff

DEFAULT_STATE_DIR = "/var/lib/blockmover/control"
# Thousands of agents reconnect at once when the service restarts: a
# backlog of 4096 (the kernel caps it at net.core.somaxconn) keeps their
# connections queued instead of refused while the service takes them.
DEFAULT_BACKLOG = 4096
DEFAULT_LISTEN = "tcp:%d:backlog=%d" % (DEFAULT_PORT, DEFAULT_BACKLOG)
# The reactor's thread shares the interpreter with threads that compute (a
# configuration's reading, the plan people read, a whole listing's
# comparison). By default it waits up to 5 ms for them each time it takes
# the interpreter back after a send, a TLS record or a read of a file:
# with thousands of agents answered at once, seconds. At 0.5 ms it stays
# responsive, at a cost to those threads too small to measure.
SWITCH_INTERVAL = 0.0005
# What the service holds is mostly many small records that never form
# cycles (the listing, the configuration, the slices: at 10,000 nodes over
# a million objects). With Python's default thresholds its collector
# passed over all of them, stopping everything for about a second, every
# few hundred thousand objects made: several times while a configuration
# is read. Young objects are collected after 50,000 allocations instead of
# 700, old ones ten times less often than by default.
GC_THRESHOLDS = (50000, 20, 10)

_DESCRIPTION = """\
Run the blockmover control service: it keeps the cluster's configuration
(sent by blockmover-deploy), ONE cached listing of the block-storage
backend's volumes, and hands every node's agent its slice of the desired
state over a REST API (see the blockmover.control module).
"""

_EPILOG = """\
examples:
  blockmover-control --state-dir /var/lib/blockmover/control
  blockmover-control --listen tcp:4523:interface=10.77.0.1:backlog=4096 --log -
  blockmover-control --tls-dir /etc/blockmover/control-tls

TLS: the service always speaks TLS and asks every client for a certificate
issued by the cluster's CA (see 'blockmover ca --help'). It reads, from
--tls-dir (default /etc/blockmover): ca.crt (the CA's certificate),
control.crt and control.key (its own, from 'blockmover ca control'), and
crl.pem (the CA's revocation list, read again whenever it is replaced, so
that 'blockmover ca revoke' counts without a restart). --ca,
--certificate, --key and --crl name the files one by one instead.

Prometheus metrics are served at /metrics on the same port, to the
cluster's metrics certificate ('blockmover ca metrics') and to operators.

Add backlog=4096 (or more) to your own --listen endpoint when thousands of
agents may reconnect at once; the kernel caps it at net.core.somaxconn.
--max-connections must stay below the open files the service may have
(systemd's LimitNOFILE).

SIGTERM or SIGINT stops the service cleanly; the configuration survives in
the state directory and the service picks it up when started again.
"""


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % (text,))
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % (text,))
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be 0 to 3600 seconds")
    return value


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % (text,))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser():
    p = argparse.ArgumentParser(
        prog="blockmover-control", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="ENDPOINT",
        help="where to listen, as a Twisted tcp: server endpoint string; "
             "the service adds its TLS (default: %(default)s)")
    p.add_argument(
        "--tls-dir", default=None, metavar="DIR",
        help="directory holding ca.crt, control.crt, control.key and "
             "crl.pem (default: $%s, else %s)"
             % (tls.ENVIRONMENT, tls.SYSTEM_DIRECTORY))
    p.add_argument("--ca", metavar="PATH",
                   help="the cluster CA's certificate")
    p.add_argument("--certificate", metavar="PATH",
                   help="the control service's certificate")
    p.add_argument("--key", metavar="PATH",
                   help="the control service's key")
    p.add_argument("--crl", metavar="PATH",
                   help="the CA's revocation list (default: crl.pem beside "
                        "the CA's certificate)")
    p.add_argument(
        "--insecure-plain-http-for-tests", action="store_true",
        help="DANGEROUS: no TLS and no authentication at all; anyone who "
             "reaches the port may deploy commands that run as root on "
             "every node. Only for tests of the HTTP layer itself")
    p.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
        help="directory keeping the configuration between runs (default: "
             "%(default)s)")
    p.add_argument(
        "--log", default=None, metavar="PATH|-",
        help="append eliot JSON logs to PATH, or write them to stdout with "
             "- (default: stdout)")
    p.add_argument(
        "--refresh-interval", default=DEFAULT_REFRESH_INTERVAL,
        type=_positive, metavar="S",
        help="seconds between listings of the backend's volumes when "
             "nothing asks for one sooner (default: %(default)s)")
    p.add_argument(
        "--startup-grace", default=STARTUP_GRACE, type=_seconds, metavar="S",
        help="seconds after the service starts before a node it has not "
             "heard from yet counts as unresponsive (and may be fenced), "
             "when that is longer than cluster.yml's lease: time for every "
             "agent to reconnect after a restart (default: %(default)s)")
    p.add_argument(
        "--max-connections", default=limits.DEFAULT_MAX_CONNECTIONS,
        type=_count, metavar="N",
        help="connections open at once; one more is answered 503 and closed "
             "(default: %(default)s)")
    p.add_argument(
        "--max-polls-per-client", default=limits.DEFAULT_POLLS_PER_CLIENT,
        type=_count, metavar="N",
        help="long polls one client address may hold at once; one more is "
             "answered 429 (default: %(default)s)")
    replicas = p.add_argument_group(
        "replicas on etcd",
        "Run the service as one of several replicas that keep their records"
        " in etcd instead of --state-dir: one leads, the others serve the "
        "agents' long polls and send every other request to it. See "
        "README.rst, 'High availability'.")
    replicas.add_argument(
        "--etcd", metavar="URL[,URL...]", type=_urls,
        help="the client URLs of etcd's members (https://HOST:2379,...); "
             "the service presents its own certificate (control.crt, "
             "issued with clientAuth) to them")
    replicas.add_argument(
        "--replica-name", metavar="NAME", default=None,
        help="this replica's name among the others (default: the host's "
             "name)")
    replicas.add_argument(
        "--advertise", metavar="URL", default=None,
        help="the https URL the agents, the operators' tools and the other"
             " replicas reach this replica at (required with --etcd)")
    return p


def _urls(text):
    urls = [url.strip().rstrip("/") for url in text.split(",")
            if url.strip()]
    if not urls:
        raise argparse.ArgumentTypeError("give at least one URL")
    for url in urls:
        if not url.startswith("https://"):
            raise argparse.ArgumentTypeError(
                "%r is not an https:// URL; etcd is spoken to with mutual "
                "TLS only" % (url,))
    return urls


_INSECURE_WARNING = """\
blockmover-control: WARNING: --insecure-plain-http-for-tests: no TLS, no
authentication. Anyone who reaches this port may deploy a configuration,
and a configuration runs commands as root on every node. Never use this
outside a test of the HTTP layer.
"""


class Security(object):
    """
    What the options say of TLS: the ``authority`` (who clients are, None
    without TLS), ``wrap`` (the site's factory in TLS), and the service's
    own ``files`` and ``credentials`` (None without TLS).
    """

    def __init__(self, authority, wrap, files=None, credentials=None,
                 revocations=None, crl=None):
        self.authority = authority
        self.wrap = wrap
        self.files = files
        self.credentials = credentials
        # The ``revocations.Revocations`` the authority refuses, read from
        # ``crl`` (and, for a replica, from etcd).
        self.revocations = revocations
        self.crl = crl


def _security(options, reactor):
    """
    The ``Security`` the options ask for.

    :raise tls.TLSError: if the TLS files cannot be used.
    """
    if options.insecure_plain_http_for_tests:
        return Security(None, lambda factory: factory)
    files = tls.find_files(tls.CONTROL_STEMS, directory=options.tls_dir,
                           ca=options.ca, certificate=options.certificate,
                           key=options.key)
    now = datetime.datetime.now(datetime.timezone.utc)
    credentials = tls.Credentials.load(files, now)
    if credentials.identity.kind != "control":
        raise tls.TLSError("%s is the certificate of %s, not of the control "
                           "service; issue one with 'blockmover ca control'"
                           % (files.certificate, credentials.identity))
    crl = options.crl or tls.revocation_path(os.path.dirname(files.ca))
    revocations = Revocations(RevocationFile(crl,
                                             credentials.ca_certificate))
    # Read once now: a service that cannot read it would refuse everyone.
    revocations.revoked()
    server = tls.ServerTLS(credentials)
    return Security(Authority(credentials.ca_certificate, revocations),
                    lambda factory: TLSMemoryBIOFactory(server, False,
                                                        factory,
                                                        clock=reactor),
                    files, credentials, revocations, crl)


def tune_interpreter():
    """
    Let the reactor's thread take the interpreter back from computing
    threads within ``SWITCH_INTERVAL``, and collect cycles as
    ``GC_THRESHOLDS`` says.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(*GC_THRESHOLDS)


@inlineCallbacks
def run(reactor, options, make_backend=None):
    """
    The control service as ``options`` (this module's ``parser``) say,
    until the reactor stops. ``make_backend`` replaces how the service
    makes its backend (``ControlService``'s), for a benchmark's in-memory
    cloud.
    """
    start_logging(options.log)
    tune_interpreter()
    if options.listen.split(":", 1)[0] != "tcp":
        sys.stderr.write("blockmover-control: --listen must be a tcp: "
                         "endpoint; the service adds TLS itself (see "
                         "--tls-dir)\n")
        raise SystemExit(2)
    try:
        security = _security(options, reactor)
    except CertificateError as e:
        sys.stderr.write("blockmover-control: %s\n" % (e,))
        raise SystemExit(2)
    except tls.TLSError as e:
        sys.stderr.write("blockmover-control: %s\n" % (e,))
        raise SystemExit(2)
    authority = security.authority
    if authority is None:
        sys.stderr.write(_INSECURE_WARNING)
        log_message(message_type="blockmover:control:insecure-plain-http")
    if options.etcd:
        yield run_replica(reactor, options, security, make_backend)
        return
    service = ControlService(
        FileStore(options.state_dir), reactor,
        refresh_interval=options.refresh_interval,
        cluster=authority.cluster if authority is not None else None,
        startup_grace=options.startup_grace, make_backend=make_backend)
    try:
        service.start()
    except StoreError as e:
        service.stop()
        sys.stderr.write("blockmover-control: %s\n" % (e,))
        raise SystemExit(1)
    try:
        port = yield _listen(reactor, options, security, make_site(
            service, reactor, authority,
            max_connections=options.max_connections,
            polls_per_client=options.max_polls_per_client))
    except SystemExit:
        service.stop()
        raise

    def shutdown():
        d = port.stopListening()
        service.stop()
        return d
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    # Runs until SIGTERM or SIGINT stops the reactor.
    yield Deferred()


@inlineCallbacks
def _listen(reactor, options, security, site):
    """
    Listen as ``options`` say, serving ``site`` (in TLS unless told
    otherwise); say where on standard error.

    :return: Deferred firing with the listening port.
    :raise SystemExit: it cannot listen there.
    """
    try:
        port = yield serverFromString(reactor, options.listen).listen(
            security.wrap(site))
    except Exception as e:
        sys.stderr.write("blockmover-control: cannot listen on %s: %s; "
                         "choose another --listen\n" % (options.listen, e))
        raise SystemExit(1)
    address = port.getHost()
    log_message(message_type="blockmover:control:listening",
                host=address.host, port=address.port)
    authority = security.authority
    sys.stderr.write("blockmover-control serving %s\n" % (
        "cluster %s with mutual TLS" % (authority.cluster,)
        if authority is not None else "INSECURE plain HTTP"))
    sys.stderr.write("blockmover-control listening on %s:%d\n"
                     % (address.host, address.port))
    sys.stderr.flush()
    return port


# While etcd cannot be reached at the start, the next try.
ETCD_WAIT = Backoff(initial=0.5, factor=2.0, maximum=5.0)


@inlineCallbacks
def _election_timing(reactor, store):
    """
    The election's times, from the configuration in etcd (its defaults
    before the first), once etcd answers.
    """
    attempt = 0
    while True:
        try:
            stored = yield store.configuration.load()
            break
        except StoreError as e:
            delay = ETCD_WAIT.delay(attempt)
            attempt += 1
            log_message(message_type="blockmover:control:etcd-waiting",
                        reason=str(e), retry_in=delay)
            sys.stderr.write("blockmover-control: waiting for etcd: %s\n"
                             % (e,))
            yield deferLater(reactor, delay, lambda: None)
    if stored is None:
        return ElectionTiming()
    try:
        return (yield deferToThread(election_of, stored.cluster_yml,
                                    stored.cluster_path))
    except ConfigError as e:
        log_message(message_type="blockmover:control:election-default",
                    reason=str(e))
        return ElectionTiming()


def restart(reason):
    """
    Start this process afresh, as it was started (a replica that lost the
    lead): nothing it was doing goes on.
    """
    sys.stderr.write("blockmover-control: %s; starting again as a "
                     "follower\n" % (reason,))
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])


@inlineCallbacks
def run_replica(reactor, options, security, make_backend=None,
                restart=restart):
    """
    One replica of the control service on etcd (``replica``), as
    ``options`` say, until the reactor stops.
    """
    if security.authority is None:
        sys.stderr.write("blockmover-control: --etcd needs TLS: etcd is "
                         "spoken to with the service's certificate\n")
        raise SystemExit(2)
    if not options.advertise or not options.advertise.startswith(
            "https://"):
        sys.stderr.write("blockmover-control: --etcd needs --advertise "
                         "https://HOST:PORT, where the others reach this "
                         "replica\n")
        raise SystemExit(2)
    cluster = security.authority.cluster
    name = options.replica_name or socket.gethostname()
    client = EtcdClient(options.etcd, EtcdTLS(security.files), reactor)
    metrics = ControlMetrics()
    metrics.leader.set(0)
    leaders = {}

    def renew(nodes):
        url = replica.leader_url()
        if url not in leaders:
            leaders[url] = ControlClient(url, reactor, timeout=5.0,
                                         credentials=security.credentials)
        return leaders[url].renew_leases(nodes)

    @inlineCallbacks
    def lead(replica):
        leadership = lambda: replica.election.leadership  # noqa: E731
        # A save whose outcome is unknown ends the term: what etcd holds
        # is for the next leader to read.
        configuration, failures, pushes = yield EtcdStore(
            client, cluster, leadership).load(replica.lost)
        publisher = SlicePublisher(client, cluster, leadership, reactor,
                                   replica.lost)
        yield publisher.start()
        service = ControlService(
            configuration, reactor,
            refresh_interval=options.refresh_interval, cluster=cluster,
            startup_grace=options.startup_grace, make_backend=make_backend,
            metrics=metrics, failure_store=failures, push_store=pushes,
            published=publisher, configured=replica.configured)
        publisher.serve(service)
        # The reactor goes on meanwhile: the lease is renewed, polls and
        # requests answered.
        yield service.start_reading()
        return service

    replica = Replica(client, cluster, name, options.advertise.rstrip("/"),
                      reactor, ElectionTiming(), lead, restart, renew,
                      metrics)
    # Listening first: until etcd answers, the replica says nobody leads.
    port = yield _listen(reactor, options, security, make_site(
        None, reactor, security.authority,
        max_connections=options.max_connections,
        polls_per_client=options.max_polls_per_client,
        root=make_replica_root(replica, reactor)))
    timing = yield _election_timing(reactor, EtcdStore(client, cluster,
                                                       lambda: None))
    replica.election.timing = timing
    sys.stderr.write("blockmover-control: replica %s of cluster %s on etcd "
                     "%s (%s)\n" % (name, cluster, ",".join(options.etcd),
                                     describe_timing(timing)))
    sys.stderr.flush()
    shared = SharedRevocations(client, cluster, security.crl,
                               security.authority.ca_certificate,
                               security.revocations, reactor)
    try:
        yield replica.start()
        yield shared.start()
    except EtcdError as e:
        restart("etcd could not be read to follow the leader (%s)" % (e,))

    def shutdown():
        shared.stop()
        d = port.stopListening()
        d.addBoth(lambda _: replica.stop())
        d.addBoth(lambda _: client.close())
        return d
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    yield Deferred()


def main(argv=None):
    options = parser().parse_args(argv)
    react(run, (options,))


if __name__ == "__main__":
    main()
