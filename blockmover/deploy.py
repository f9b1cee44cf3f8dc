"""
``blockmover-deploy``: validate ``cluster.yml`` and ``app.yml`` locally,
send them to the control service, print what will change on each node, and
with ``--wait`` follow the convergence until every application serves where
it should.
"""

import argparse
import sys
import time

from eliot import log_message, start_action

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater, react

from blockmover import tls
from blockmover.client import (
    ControlClient, ControlError, ControlUnreachable, InsecureURL,
    control_argument, printable_url, require_https,
)
from blockmover.config import ConfigError, load_deployment
from blockmover.convergence import (
    ErrorWatch, application_line, pending, stuck_detach_line,
)
from blockmover.display import LiveLines
from blockmover.logs import start_logging
from blockmover.poll import Backoff
from blockmover.status import (
    PUSH_FAILED, PUSH_FINAL, PUSH_LIVE, push_summary, push_text,
)

EXIT_OK = 0
EXIT_NOT_CONVERGED = 1
EXIT_BAD_INPUT = 2
EXIT_CONTROL = 3

_EPILOG = """\
exit status:
  0  the configuration was accepted (and, with --wait, every application
     runs and serves where it should and every node converged)
  1  convergence failed: a node reports a persistent error, or --timeout
     passed first
  2  bad input: a configuration file is missing or malformed, or this
     operator's TLS files cannot be used (nothing was sent)
  3  the control service could not be reached or refused the configuration
"""

# Delays between two looks at the cluster's state while waiting.
_WAIT_BACKOFF = Backoff(initial=0.2, factor=1.5, maximum=2.0)


class Abort(Exception):
    """
    The deploy ends with ``code`` after printing ``message``.
    """
    def __init__(self, code, message):
        self.code = code
        Exception.__init__(self, message)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="blockmover-deploy",
        description="Send a cluster's configuration (cluster.yml: nodes and\n"
                    "which application runs where; app.yml: what the\n"
                    "applications are) to its control service, and show\n"
                    "what will change on each node. Both files are checked\n"
                    "here first; a mistake is reported with file and line.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cluster", metavar="cluster.yml",
                        help="the nodes and where each application runs")
    parser.add_argument("app", metavar="app.yml",
                        help="what the applications are")
    parser.add_argument("--control", metavar="URL[,URL...]",
                        type=control_argument,
                        help="the control service (default: cluster.control "
                             "in cluster.yml); the URLs of several of its "
                             "replicas may be given, separated by commas")
    parser.add_argument("--dry-run", action="store_true",
                        help="only show what would change; change nothing")
    parser.add_argument("--wait", action="store_true",
                        help="follow the convergence with a live progress "
                             "display until every application runs and "
                             "serves (is ready) where it should")
    parser.add_argument("--timeout", metavar="SECONDS", type=float,
                        default=600.0,
                        help="with --wait, give up after this long "
                             "(default: %(default)s)")
    parser.add_argument("--error-patience", metavar="SECONDS", type=float,
                        default=60.0,
                        help="with --wait, give up when a node reports the "
                             "same failing change for this long (default: "
                             "%(default)s)")
    parser.add_argument("--log", metavar="PATH",
                        help="append the deploy's structured log to PATH")
    tls.add_arguments(parser, "the operator")
    return parser.parse_args(argv)


def read_configuration(cluster_path, app_path):
    """
    The two files' text and the ``Deployment`` they describe.

    :raise ConfigError: a file is unreadable or wrong.
    """
    texts = []
    for path in (cluster_path, app_path):
        try:
            with open(path, "rb") as f:
                texts.append(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(path, None, None,
                              "cannot read it (%s); check the path"
                              % (getattr(e, "strerror", None) or e,))
    deployment = load_deployment(texts[0], texts[1], cluster_path, app_path)
    return deployment, texts[0], texts[1]


def format_plan(plan):
    """
    The lines that say, per node, what will change.
    """
    lines = []
    for node in sorted(plan):
        steps = plan[node]
        if steps:
            lines.append("%s:" % (node,))
            lines.extend("  " + step for step in steps)
        else:
            lines.append("%s: nothing to change" % (node,))
    return lines or ["nothing to change"]


@inlineCallbacks
def _send(client, args, cluster_yml, app_yml):
    try:
        answer = yield client.put_configuration(
            cluster_yml, app_yml, args.cluster, args.app,
            dry_run=args.dry_run)
    except ControlUnreachable as e:
        raise Abort(EXIT_CONTROL, str(e))
    except ControlError as e:
        raise Abort(EXIT_CONTROL, "the control service refused the "
                    "configuration:\n" + "\n".join(
                        "  " + m for m in e.messages))
    return answer


@inlineCallbacks
def _slice_generations(client, deployment):
    """
    The generation of each node's slice once this configuration was
    taken, from the state (an operator does not read the nodes' slices).
    """
    try:
        state = yield client.get_state()
    except (ControlUnreachable, ControlError):
        return {}
    nodes = state.get("nodes", {})
    return {node: nodes[node]["generation"] for node in deployment.nodes
            if node in nodes and nodes[node].get("generation") is not None}


@inlineCallbacks
def _follow(reactor, client, args, deployment, out):
    """
    Poll the cluster's state until it converged, a node reports a
    persistent error, or the timeout passes: quickly while the state
    changes, with growing pauses while it does not.
    """
    generations = yield _slice_generations(client, deployment)
    deadline = reactor.seconds() + args.timeout
    watch = ErrorWatch(args.error_patience)
    display = LiveLines(out)
    attempt = 0
    reasons = ["no state read yet"]
    previous = None
    while True:
        try:
            state = yield client.get_state()
        except (ControlUnreachable, ControlError) as e:
            log_message(message_type="blockmover:deploy:state-unavailable",
                        reason=str(e))
            reasons = [str(e)]
            state = None
        if state is not None:
            if _progress_of(state) != previous:
                previous = _progress_of(state)
                attempt = 0
            now = reactor.seconds()
            wall = time.time()
            pushes = _pushes(deployment, state)
            display.show(
                [_with_push(application_line(
                    app, deployment.placement.get(app), state,
                    deployment.cluster_name, wall), pushes.get(app))
                 for app in sorted(deployment.applications)]
                + [stuck_detach_line(stuck)
                   for stuck in state.get("stuck_detaches") or []])
            failed = [push for _, push in sorted(pushes.items())
                      if push["phase"] == PUSH_FAILED]
            if failed:
                raise Abort(EXIT_NOT_CONVERGED, "convergence failed: " +
                            "; ".join(_failed_push(p) for p in failed))
            reasons = pending(deployment, state, generations)
            if not reasons:
                return
            error = watch.persistent(state, now)
            if error is not None:
                raise Abort(EXIT_NOT_CONVERGED,
                            "convergence failed: " + error)
        remaining = deadline - reactor.seconds()
        if remaining <= 0:
            raise Abort(EXIT_NOT_CONVERGED,
                        "timed out after %g seconds: %s"
                        % (args.timeout, "; ".join(reasons)))
        yield deferLater(reactor, min(remaining,
                                      _WAIT_BACKOFF.delay(attempt)))
        attempt += 1


def _pushes(deployment, state):
    """
    ``{application: push}`` (each as ``status.push_summary`` makes it) of
    the pushes in ``state`` that carry an application of ``deployment`` to
    where it places it: those of this deploy. A push that failed is tried
    again when a configuration is deployed, so one still failed after the
    deploy is this deploy's.
    """
    return {app: push_summary(app, push)
            for app, push in (state.get("pushes") or {}).items()
            if app in deployment.applications
            and push["target_node"] == deployment.placement.get(app)}


def _with_push(line, push):
    """
    ``line`` (an application's) with how far its push is, while it is.
    """
    if push is None or \
            push["phase"] not in (PUSH_LIVE, PUSH_FINAL, PUSH_FAILED):
        return line
    return "%s  %s" % (line, push_text(push))


def _failed_push(push):
    return "the push of %s from %s (%s) to %s (%s) failed: %s" % (
        push["application"], push["from"]["node"], push["from"]["site"],
        push["to"]["node"], push["to"]["site"],
        push["error"] or "no reason given")


def _progress_of(state):
    # What moves while a deploy converges: the nodes' reports (not when
    # they were sent) and where the applications run.
    return ({node: (report or {}).get("progress")
             for node, report in state.get("nodes", {}).items()},
            state.get("applications"), state.get("pushes"))


@inlineCallbacks
def deploy(reactor, args, deployment, cluster_yml, app_yml, urls, out,
           credentials):
    """
    Send the configuration to the control service at ``urls`` (its
    replicas') and, with ``args.wait``, follow the convergence. The whole
    deploy is one eliot action whose task id travels with every request,
    made with ``credentials`` (``tls.Credentials``).

    :return: a Deferred firing with the exit status.
    """
    client = ControlClient(urls, reactor, credentials=credentials)
    try:
        with start_action(action_type="blockmover:deploy",
                          control=[printable_url(url) for url in urls],
                          cluster=deployment.cluster_name,
                          dry_run=args.dry_run, wait=args.wait):
            answer = yield _send(client, args, cluster_yml, app_yml)
            for line in format_plan(answer.get("plan", {})):
                out.write(line + "\n")
            if args.dry_run:
                out.write("dry run: nothing was changed\n")
                return EXIT_OK
            out.write("configuration accepted (generation %s)\n"
                      % (answer.get("generation"),))
            if args.wait:
                yield _follow(reactor, client, args, deployment, out)
                out.write("converged: every application serves where it "
                          "should\n")
            return EXIT_OK
    except Abort as e:
        sys.stderr.write("blockmover-deploy: %s\n" % (e,))
        return e.code
    finally:
        out.flush()
        yield client.close()


def main(argv=None):
    """
    The ``blockmover-deploy`` command; exits with the status its --help
    lists.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        deployment, cluster_yml, app_yml = read_configuration(
            args.cluster, args.app)
    except ConfigError as e:
        sys.stderr.write("%s\n" % (e,))
        sys.exit(EXIT_BAD_INPUT)
    urls = args.control or deployment.control_urls
    try:
        credentials = tls.user_credentials(args)
        require_https(urls)
    except (tls.TLSError, InsecureURL) as e:
        sys.stderr.write("blockmover-deploy: %s\n" % (e,))
        sys.exit(EXIT_BAD_INPUT)
    if args.log:
        start_logging(args.log)

    def run(reactor):
        d = deploy(reactor, args, deployment, cluster_yml, app_yml, urls,
                   sys.stdout, credentials)
        d.addCallback(_exit)
        return d
    react(run)


def _exit(code):
    if code != EXIT_OK:
        raise SystemExit(code)
