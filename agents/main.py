"""
``blockmover-agent --config agent.yml``: the convergence agent of one node.
"""

import argparse
import datetime
import sys
import threading

from eliot import log_message
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

from agents.changes import NodeContext
from agents.identity import NodeIdentity, check_slice
from agents.loop import AgentThreadPool, ConvergenceLoop
from agents.metrics import AgentMetrics, serve as serve_metrics
from agents.pushing import PushRegistry, Receiving
from agents.runtime import ProcessRuntime
from blockmover import tls
from blockmover.backends import make_backend
from blockmover.certificates import NODE, CertificateError
from blockmover.client import ControlClient, printable_url, spread
from blockmover.backends.devices import BY_ID
from blockmover.backends.relayed import RelayedBlockDeviceAPI
from blockmover.config import (
    CALLS_OPTION, CALLS_THROUGH_CONTROL, ConfigError, load_agent_file,
)
from blockmover.logs import start_logging
from blockmover.metrics import MeasuredBlockDeviceAPI

_DESCRIPTION = """\
Converge this node towards the desired state the control service hands out:
stop, unmount and detach what should go elsewhere; attach, mount and start
what should run here. agent.yml names the node, the control service (its
URL, or a list of its replicas' URLs: the agent asks whichever serves),
the state directory (application records and logs), the log file and the
backend. Each dataset (a volume and the application using it) converges
on its own, side by side. SIGTERM stops the agent within seconds: changes
still running are cut short and resumed when the agent starts again; the
applications keep running, and a restarted agent finds them.

The agent talks to the control service with mutual TLS only. Its
certificate (from 'blockmover ca node NAME') says which node of which
cluster it is; agent.yml's tls: names the files (directory, or ca,
certificate and key), else they are looked up in /etc/blockmover as
ca.crt, agent.crt and agent.key (or node-NAME.crt and node-NAME.key).

With metrics: {listen: ENDPOINT} in agent.yml, the agent serves its
Prometheus metrics at /metrics on that tcp: endpoint, over TLS with its
node's certificate, to clients showing the cluster's metrics certificate
('blockmover ca metrics') or an operator's; metrics: {crl: PATH} names
the CA's revocation list to refuse revoked ones.
"""

# One blocking change per dataset may run at once (a slow attach holds its
# thread while others go on), plus the looks at the node.
MAX_THREADS = 64


class ContextFactory(object):
    """
    Makes the ``NodeContext`` of each desired slice, building the backend
    for the slice's cluster on first use and again only when the cluster's
    name changes. Blocking (a backend may talk to its cloud): call it in a
    thread. With ``backend_calls`` (``blockmover.metrics``'s histogram) every
    call of the backend is timed into it.
    """

    def __init__(self, config, runtime, backend_factory=make_backend,
                 backend_calls=None, pushes=None, push_files=None):
        self._config = config
        self._runtime = runtime
        self._pushes = pushes
        self._push_files = push_files
        self._backend_factory = backend_factory
        self._backend_calls = backend_calls
        self._lock = threading.Lock()
        self._cluster_name = None
        self._backend = None

    def instance_id(self):
        if self._config.instance_id is not None:
            return self._config.instance_id
        if self._config.backend.name == "loopback":
            return self._config.node
        return None

    def __call__(self, desired):
        """
        :raise SliceRefused: ``desired`` is not this node's.
        """
        # Before anything is made for it: the slice must be this node's.
        check_slice(self.identity(), desired)
        with self._lock:
            if desired.cluster_name != self._cluster_name:
                log_message(message_type="blockmover:agent:backend",
                            backend=self._config.backend.name,
                            cluster=desired.cluster_name)
                self._backend = self._backend_factory(
                    self._config.backend.name,
                    dict(self._config.backend.options),
                    desired.cluster_name, self.instance_id())
                if self._backend_calls is not None:
                    self._backend = MeasuredBlockDeviceAPI(
                        self._backend, self._backend_calls,
                        self._config.backend.name)
                self._cluster_name = desired.cluster_name
            # And its instance as the backend knows this node (an openstack
            # node may learn its server id from the metadata service).
            check_slice(self.identity().set(
                instance_id=self._backend.compute_instance_id()), desired)
            return NodeContext(node=self._config.node,
                               backend_id=desired.backend_id,
                               cluster_name=desired.cluster_name,
                               backend=self._backend, runtime=self._runtime,
                               pushes=self._pushes,
                               push_files=self._push_files)

    def identity(self):
        """
        This node as its own configuration says: ``agents.identity``.
        """
        return NodeIdentity(node=self._config.node,
                            cluster=self._config.cluster,
                            instance_id=self.instance_id())


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="blockmover-agent", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="agent.yml", required=True,
                        help="this node's agent configuration")
    return parser.parse_args(argv)


def load_credentials(config, now):
    """
    The agent's ``tls.Credentials``, and ``config`` with the cluster its
    certificate names: the certificate must be node ``config.node``'s, of
    ``config.cluster`` if agent.yml names one.

    :raise tls.TLSError: if the files cannot be used or name another
        holder.
    """
    settings = config.tls
    files = tls.find_files(tls.agent_stems(config.node),
                           directory=settings.directory, ca=settings.ca,
                           certificate=settings.certificate,
                           key=settings.key)
    credentials = tls.Credentials.load(files, now)
    holder = credentials.identity
    if holder.kind != NODE or holder.name != config.node:
        raise tls.TLSError(
            "%s is the certificate of %s, but agent.yml says this is node "
            "%s; issue this node's with 'blockmover ca node %s'"
            % (files.certificate, holder, config.node, config.node))
    if config.cluster is not None and holder.cluster != config.cluster:
        raise tls.TLSError(
            "%s is a certificate of cluster %s, but agent.yml says this "
            "node is of cluster %s" % (files.certificate, holder.cluster,
                                       config.cluster))
    return credentials, config.set(cluster=holder.cluster)


def backend_factory(config, client, reactor):
    """
    How this node makes its backend: ``make_backend``, or, for a node whose
    cloud calls go through the control service (``calls: control``), a
    ``RelayedBlockDeviceAPI`` asking ``client``.
    """
    options = config.backend.options
    if options.get(CALLS_OPTION) != CALLS_THROUGH_CONTROL:
        return make_backend

    def relayed(name, options, cluster_name, instance_id):
        return RelayedBlockDeviceAPI(
            client, reactor, config.node, instance_id,
            device_root=options.get("device_root") or BY_ID)
    return relayed


@inlineCallbacks
def _serve_metrics(reactor, config, credentials, metrics):
    """
    Serve ``metrics`` where agent.yml says (nowhere without ``metrics:``);
    exit with a message saying what to change if that cannot be.
    """
    if config.metrics is None:
        return None
    try:
        port = yield serve_metrics(reactor, config.metrics, credentials,
                                   metrics.registry)
    except CertificateError as e:
        sys.stderr.write("blockmover-agent: %s\n" % (e,))
        raise SystemExit(2)
    except Exception as e:
        sys.stderr.write("blockmover-agent: cannot serve metrics on %s: %s; "
                         "choose another metrics.listen in agent.yml\n"
                         % (config.metrics.listen, e))
        raise SystemExit(1)
    address = port.getHost()
    log_message(message_type="blockmover:agent:metrics-listening",
                host=address.host, port=address.port,
                revocations=config.metrics.crl)
    sys.stderr.write("blockmover-agent metrics listening on %s:%d\n"
                     % (address.host, address.port))
    sys.stderr.flush()
    reactor.addSystemEventTrigger("before", "shutdown", port.stopListening)
    return port


@inlineCallbacks
def run_agent(reactor, config, credentials):
    """
    Run the agent described by ``config`` (an ``AgentConfig``) until the
    reactor shuts down, talking to the control service with
    ``credentials`` (``tls.Credentials``), and serving its metrics where
    ``config.metrics`` says. :return: a Deferred firing once the loop
    stopped.
    """
    metrics = AgentMetrics()
    yield _serve_metrics(reactor, config, credentials, metrics)
    threadpool = AgentThreadPool(minthreads=1, maxthreads=MAX_THREADS,
                                 name="blockmover-agent")
    threadpool.start()
    runtime = ProcessRuntime(config.state_dir)
    # One client for the agent's life: its long polls and reports go to
    # whichever replica serves, each with the generation and task it
    # carries. Each node starts at a replica of its own, so that the
    # agents' long polls spread over the replicas.
    client = ControlClient(spread(config.control_urls, config.node), reactor,
                           credentials=credentials)
    pushes = PushRegistry()
    loop = None

    def current():
        return loop.current()
    receiving = Receiving(credentials.files, credentials.cluster, current,
                          pushes)
    loop = ConvergenceLoop(
        reactor, client,
        ContextFactory(config, runtime,
                       backend_factory(config, client, reactor),
                       backend_calls=metrics.backend_calls, pushes=pushes,
                       push_files=credentials.files),
        threadpool, node=config.node, metrics=metrics,
        on_slice=receiving.slice_changed)
    pushes.on_progress = lambda: reactor.callFromThread(
        lambda: loop.pushes_progressed(pushes.snapshot()))
    reactor.addSystemEventTrigger("before", "shutdown", receiving.stop)
    log_message(message_type="blockmover:agent:start", node=config.node,
                cluster=config.cluster,
                control=[printable_url(url) for url in config.control_urls],
                certificate=credentials.files.certificate)
    # SIGTERM stops the reactor; stop the loop before it does.
    reactor.addSystemEventTrigger("before", "shutdown", loop.stop)
    done = loop.start()
    done.addBoth(lambda result: client.close().addCallback(lambda _: result))

    def finish(result):
        # Threads of changes cut short by the stop are not waited for.
        if not loop.changes_in_flight:
            threadpool.stop()
        log_message(message_type="blockmover:agent:stop", node=config.node)
        return result
    done.addBoth(finish)
    result = yield done
    return result


def main(argv=None):
    """
    The ``blockmover-agent`` command.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_agent_file(args.config)
    except ConfigError as e:
        sys.stderr.write("%s\n" % (e,))
        sys.exit(2)
    try:
        credentials, config = load_credentials(
            config, datetime.datetime.now(datetime.timezone.utc))
    except tls.TLSError as e:
        sys.stderr.write("blockmover-agent: %s\n" % (e,))
        sys.exit(2)
    start_logging(config.log)
    react(run_agent, (config, credentials))
