"""
``blockmover node fence NODE`` and ``blockmover node confirm-down NODE``:
an operator's word on a failed node, sent to the control service with
this user's certificate, which records it with who and when.
"""

import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

from blockmover.client import (
    ControlError, ControlUnreachable, printable_url,
)
from blockmover.status_command import add_cluster_arguments

EXIT_DONE = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_CONTROL = 3

# Seconds the control service may take to record the request.
REQUEST_TIMEOUT = 30.0

DESCRIPTION = """\
Tell the control service about a node that failed.

Nothing moves off a node that stopped renewing its lease (it may be cut off
from the control service and still write to its volumes) until it is
proven unable to write: fenced, or confirmed down by an operator. Then the
control service detaches its volumes and fails its applications over
(those whose app.yml says failover: {to: [...], automatic: true}); the
others can be deployed on another node.

  fence NODE          power NODE off by cluster.yml's cluster.fencing
                      method (backend: its server is stopped and waited
                      for; command: your fence command). Started at once;
                      follow it with blockmover status.
  confirm-down NODE   you know NODE is off (you powered it off, its host is
                      gone): it is treated as fenced from now on. Refused
                      while NODE still renews its lease. Only confirm a
                      node down that is really off: if it still runs, two
                      nodes may write to one volume.

Both are recorded in the control service's state directory with who (this
user's certificate) and when, and show in blockmover status.
"""

EPILOG = """\
exit status:
  0  recorded (for fence: the fence started, or the node was fenced
     already)
  1  the control service refused: the node is unknown, or still renews its
     lease (confirm-down)
  2  bad input: cluster.yml unreadable, no control service named, or this
     user's TLS files cannot be used
  3  the control service could not be reached, or refused this user

examples:
  blockmover node fence node3 --cluster cluster.yml
  blockmover node confirm-down node3 --control https://10.0.0.1:4523 \\
      --tls-dir ~/demo-tls
  blockmover node fence node3 --tls-dir ~/demo-tls \\
      --control https://10.0.0.1:4523,https://10.0.0.2:4523
"""


def add_arguments(parser):
    """
    The actions and options of ``blockmover node``.
    """
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, help in (
            ("fence", "power the node off by the cluster's fencing method"),
            ("confirm-down", "record that you know the node is off")):
        sub = actions.add_parser(action, help=help, description=DESCRIPTION,
                                 epilog=EPILOG,
                                 formatter_class=parser.formatter_class)
        sub.add_argument("node", metavar="NODE",
                         help="the node's name in cluster.yml")
        add_cluster_arguments(sub)


def said(action, node, failure):
    """
    What was done, for a person: the node's failure state after the
    request (``GET /v1/state``'s ``failure`` of a node).
    """
    state = failure["state"]
    if action == "confirm-down":
        confirmed = failure["confirmed_down"] or {}
        return ("%s is confirmed down by %s; its volumes are detached and "
                "its applications with automatic failover move; follow it "
                "with blockmover status" % (node, confirmed.get("by", "?")))
    fence = failure.get("fence") or {}
    if state == "fenced":
        return "%s is fenced (%s by %s)" % (node, fence.get("method"),
                                            fence.get("requested_by"))
    return ("%s: fence by %s started by %s; follow it with blockmover status"
            % (node, fence.get("method", "?"),
               fence.get("requested_by", "?")))


@inlineCallbacks
def send(reactor, target, action, node, out, err):
    """
    Send ``action`` on ``node`` to ``target``'s control service and say
    what came of it.

    :return: a Deferred firing with the exit status.
    """
    client = target.client(reactor, REQUEST_TIMEOUT)
    try:
        if action == "fence":
            answer = yield client.fence_node(node)
        else:
            answer = yield client.confirm_node_down(node)
    except ControlUnreachable as e:
        err.write("blockmover node %s: %s\n" % (action, e))
        return EXIT_CONTROL
    except ControlError as e:
        err.write("blockmover node %s: the control service at %s refused: "
                  "%s\n" % (action, printable_url(client.url), e))
        return EXIT_CONTROL if e.code in (401, 403) else EXIT_REFUSED
    finally:
        yield client.close()
    out.write(said(action, node, answer["failure"]) + "\n")
    return EXIT_DONE


def run(target, args, out=None, err=None):
    """
    Send ``args.action`` on ``args.node`` to ``target`` (a
    ``status_command.Target``) and exit with the status the epilog lists.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def main(reactor):
        d = send(reactor, target, args.action, args.node, out, err)
        d.addCallback(_exit)
        return d
    react(main)


def _exit(code):
    if code != EXIT_DONE:
        raise SystemExit(code)

