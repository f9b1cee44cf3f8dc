"""
``blockmover status``: what a cluster is doing, from its control service,
once or (``--watch``) until interrupted; as tables for a person or as JSON
(``--json``) for scripts. ``blockmover.status`` makes both from the
service's state; this module asks for it, shows it and ends.
"""

import json
import sys
import time

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread

from blockmover import status, tls
from blockmover.client import (
    ControlClient, ControlError, ControlUnreachable, InsecureURL,
    control_argument, control_urls, printable_url, require_https,
)
from blockmover.config import ConfigError, load_cluster_control
from blockmover.display import LiveLines
from blockmover.poll import Backoff

EXIT_CONVERGED = 0
EXIT_NOT_CONVERGED = 1
EXIT_BAD_INPUT = 2
EXIT_CONTROL = 3

DESCRIPTION = """\
Show what a cluster is doing, as its control service sees it: each node
(its address, converged or which change it runs or waits on, since when),
each application (where it is wanted, where it runs, whether it serves
there, since when), the moves in progress (their phase and how long they
are in it) and what is stuck, with the reason.

It asks the control service named by --control, or by cluster.control in
--cluster's cluster.yml, with this user's certificate (mutual TLS); of a
control service of several replicas, whichever answers. Without
either it shows the local cluster of `blockmover cluster up` (as root),
with what only the local cluster knows: its namespaces and processes.
"""

EPILOG = """\
--json prints one JSON object (its shape is in `pydoc blockmover.status`;
keys are only ever added). With --watch the display is redrawn as the
cluster changes (with --json: one JSON object per line, each time the
status changes) until Ctrl-C or SIGTERM ends it.

exit status:
  0  the cluster converged: every node converged on its slice, every
     application runs and serves where it should, nothing is stuck (also
     when no configuration was deployed yet)
  1  the cluster is still converging, or something is stuck; for the
     local cluster also when one of its processes does not run or a
     namespace is missing
  2  bad input: cluster.yml unreadable, no control service named, or this
     user's TLS files cannot be used (nothing was asked)
  3  the control service could not be reached, or refused this user's
     certificate or request
With --watch the exit status is that of the last look, when Ctrl-C ends
it; 3 at once when the first look fails. Later failures are shown and
the control service is asked again.

examples:
  blockmover status --cluster cluster.yml
  blockmover status --control https://10.0.0.1:4523 --tls-dir ~/demo-tls
  blockmover status --control https://10.0.0.1:4523,https://10.0.0.2:4523
  blockmover status --cluster cluster.yml --json | jq '.stuck'
  blockmover status --cluster cluster.yml --watch
"""

# Seconds a request for the state may take.
REQUEST_TIMEOUT = 15.0

# Pauses between looks while watching: quick while the cluster changes,
# at most two seconds apart, so the ages shown keep up.
_WATCH_BACKOFF = Backoff(initial=0.25, factor=1.5, maximum=2.0)


class BadInput(Exception):
    """
    The command line or the files it names cannot be used; the message
    says what to do. Nothing was asked.
    """


class Target(object):
    """
    Whose status to show: the control service at ``urls`` (one URL, or its
    replicas' as ``client.control_urls`` reads them), asked with
    ``credentials`` (``tls.Credentials``), and for a local cluster
    ``local``, a blocking callable returning its ``LocalFacts`` (run in a
    thread at every look).
    """

    def __init__(self, urls, credentials, local=None):
        self.urls = control_urls(urls)
        self.credentials = credentials
        self.local = local

    def client(self, reactor, timeout):
        """
        A ``ControlClient`` of this control service, on ``reactor``.
        """
        return ControlClient(self.urls, reactor, timeout=timeout,
                             credentials=self.credentials)


class LocalFacts(object):
    """
    What only a local cluster knows: ``lines`` for a person, ``data`` for
    ``--json`` (its ``local`` key), and whether all of it is ``healthy``
    (every process runs, every namespace is there).
    """

    def __init__(self, lines, data, healthy):
        self.lines = list(lines)
        self.data = data
        self.healthy = healthy


def add_cluster_arguments(parser):
    """
    ``--cluster`` and ``--control``, which name the control service to ask
    (``cluster_target``), and this user's TLS options: for every command
    that asks a cluster's control service as its operator.
    """
    where = parser.add_argument_group(
        "cluster", "the control service to ask (without these: the local "
        "cluster of `blockmover cluster up`)")
    where.add_argument("--cluster", metavar="cluster.yml",
                       help="the cluster's cluster.yml: its cluster.control "
                       "is asked")
    where.add_argument("--control", metavar="URL[,URL...]",
                       type=control_argument,
                       help="the control service to ask (overrides "
                       "--cluster's); the URLs of several of its replicas "
                       "may be given, separated by commas")
    tls.add_arguments(parser, "this user")


def add_arguments(parser):
    """
    The options of ``blockmover status`` for any cluster.
    """
    add_cluster_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print JSON for scripts (see below)")
    parser.add_argument("--watch", action="store_true",
                        help="keep showing the status as it changes, until "
                        "Ctrl-C")
    parser.add_argument("--stuck-after", metavar="SECONDS", type=float,
                        default=status.DEFAULT_STUCK_AFTER,
                        help="count a change running, or a move waiting, "
                        "this long as stuck (default %(default)s)")


def names_a_cluster(args):
    """
    Whether the options name a control service (else: the local cluster).
    """
    return bool(args.cluster or args.control)


def gives_tls_files(args):
    """
    Whether any of this user's TLS files is named on the command line.
    """
    return any((args.tls_dir, args.ca, args.certificate, args.key))


def cluster_target(args):
    """
    The ``Target`` the options name: ``--control``, or the control service
    of ``--cluster``'s cluster.yml, with this user's certificate.

    :raise BadInput: saying what is wrong.
    """
    cluster = None
    urls = args.control
    if args.cluster:
        try:
            cluster, named = load_cluster_control(args.cluster)
        except ConfigError as e:
            raise BadInput(str(e))
        urls = urls or named
    try:
        require_https(urls)
    except InsecureURL as e:
        raise BadInput(str(e))
    try:
        credentials = tls.user_credentials(args)
    except tls.TLSError as e:
        raise BadInput(str(e))
    if cluster is not None and credentials.cluster != cluster:
        raise BadInput(
            "%s names cluster %s, but the certificate %s is cluster %s's; "
            "give a certificate of cluster %s's CA (--tls-dir, or "
            "--certificate, --key and --ca)"
            % (args.cluster, cluster, credentials.files.certificate,
               credentials.cluster, cluster))
    return Target(urls, credentials)


class _Look(object):
    """
    One look at the cluster: the status ``summary`` (None when the
    control service could not be read, then ``error`` says why), the
    ``local`` facts, if any, and ``control``, the URL of the control
    service's replica that answered (when none did: the one that answered
    before, else the first).
    """

    def __init__(self, control, summary=None, error=None, local=None):
        self.control = control
        self.summary = summary
        self.error = error
        self.local = local

    @property
    def code(self):
        if self.summary is None:
            return EXIT_CONTROL
        if self.summary["converged"] and (self.local is None
                                          or self.local.healthy):
            return EXIT_CONVERGED
        return EXIT_NOT_CONVERGED

    def data(self):
        if self.summary is not None:
            data = dict(self.summary, error=None)
        else:
            data = {"version": status.JSON_VERSION, "control": self.control,
                    "error": self.error}
        if self.local is not None:
            data["local"] = self.local.data
        return data

    def lines(self):
        shown = []
        if self.local is not None:
            shown += self.local.lines + [""]
        if self.summary is not None:
            shown += status.lines(self.summary)
        return shown


def _without_clock(data):
    """
    ``data`` without what changes by itself as time passes, to tell
    whether the cluster changed between two looks.
    """
    data = dict(data)
    data.pop("now", None)
    data["moves"] = [dict(move, seconds=None)
                     for move in data.get("moves", [])]
    return data


class _Interruption(object):
    """
    Ends the looks when the reactor shuts down (Ctrl-C, SIGTERM): cancels
    the request or pause in progress, and holds the shutdown until the
    looks closed their connections (``ended``).
    """

    def __init__(self, reactor):
        self.requested = False
        self._pending = None
        self._ended = Deferred()
        reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)

    def watch(self, d):
        """
        ``d``, cancelled if an interruption comes before it fires.
        """
        self._pending = d
        return d

    def _shutdown(self):
        self.requested = True
        if self._pending is not None and not self._pending.called:
            self._pending.cancel()
        return self._ended

    def ended(self):
        if not self._ended.called:
            self._ended.callback(None)


class _Shown(object):
    """
    Where the looks go: printed once, redrawn (``LiveLines``), or as JSON
    (one indented object; with ``watch`` one object per line, each time
    the status changed).
    """

    def __init__(self, out, err, as_json, watch):
        self._out = out
        self._err = err
        self._json = as_json
        self._watch = watch
        self._live = LiveLines(out) if watch and not as_json else None
        self._last_lines = []
        self._last_data = None

    def look(self, look):
        if self._json:
            data = look.data()
            if not self._watch:
                self._out.write(json.dumps(data, indent=2, sort_keys=True)
                                + "\n")
            elif _without_clock(data) != self._last_data:
                self._last_data = _without_clock(data)
                self._out.write(json.dumps(data, sort_keys=True) + "\n")
        elif self._live is not None:
            if look.summary is not None:
                self._last_lines = look.lines()
                self._live.show(self._last_lines)
            else:
                self._live.show(self._last_lines + [
                    "%s; asking again" % (look.error,)])
        else:
            for line in look.lines():
                self._out.write(line + "\n")
        self._out.flush()
        if look.error is not None and not self._watch:
            self.error(look.error)

    def error(self, message):
        self._err.write("blockmover status: %s\n" % (message,))
        self._err.flush()


@inlineCallbacks
def _look(client, target, stuck_after, interruption):
    local = None
    if target.local is not None:
        local = yield interruption.watch(deferToThread(target.local))
    try:
        state = yield interruption.watch(client.get_state())
    except ControlUnreachable as e:
        return _Look(printable_url(client.url), error=str(e), local=local)
    except ControlError as e:
        control = printable_url(client.url)
        return _Look(control, error="the control service at %s refused: %s"
                     % (control, e), local=local)
    control = printable_url(client.url)
    replicas = None
    try:
        replicas = yield interruption.watch(client.get_replicas())
    except ControlError as e:
        # A service of one replica on files has none to show (404).
        if e.code != 404:
            replicas = {"error": str(e)}
    except ControlUnreachable as e:
        replicas = {"error": str(e)}
    return _Look(control, summary=status.summarize(
        state, control, time.time(), stuck_after, replicas=replicas),
        local=local)


@inlineCallbacks
def show(reactor, target, args, out, err):
    """
    Look at the cluster once, or with ``args.watch`` until the reactor
    shuts down, and show each look on ``out``.

    :return: a Deferred firing with the exit status.
    """
    interruption = _Interruption(reactor)
    shown = _Shown(out, err, args.json, args.watch)
    client = target.client(reactor, REQUEST_TIMEOUT)
    code = None
    attempt = 0
    previous = None
    try:
        while True:
            try:
                look = yield _look(client, target, args.stuck_after,
                                   interruption)
            except CancelledError:
                break
            if interruption.requested:
                break
            if code is None and look.summary is None and args.watch:
                # Nothing to follow: the service may not be there at all.
                shown.error(look.error)
                code = look.code
                break
            shown.look(look)
            code = look.code
            if not args.watch:
                break
            current = _without_clock(look.data())
            if current != previous:
                previous, attempt = current, 0
            try:
                yield interruption.watch(deferLater(
                    reactor, _WATCH_BACKOFF.delay(attempt)))
            except CancelledError:
                break
            attempt += 1
    finally:
        yield client.close()
        interruption.ended()
    if code is None:
        shown.error("interrupted before the control service at %s answered"
                    % (", ".join(printable_url(url) for url in target.urls),))
        return EXIT_CONTROL
    return code


def run(target, args, out=None, err=None):
    """
    Show the status of ``target`` as ``args`` say, then exit the process
    with the status the epilog lists.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def main(reactor):
        d = show(reactor, target, args, out, err)
        d.addCallback(_exit)
        return d
    react(main)


def _exit(code):
    if code != EXIT_CONVERGED:
        raise SystemExit(code)
