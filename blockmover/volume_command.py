"""
``blockmover volume list`` and ``blockmover volume remove VOLUME_ID``: the
volumes pushes between sites keep (``blockmover.control.kept``), shown to
an operator and removed at their word, with this user's certificate.
"""

import json
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

from blockmover.client import (
    ControlError, ControlUnreachable, printable_url,
)
from blockmover.status import size_text, table
from blockmover.status_command import add_cluster_arguments

EXIT_DONE = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_CONTROL = 3

# Seconds the control service may take: a removal waits for the backend.
REQUEST_TIMEOUT = 120.0

DESCRIPTION = """\
The volumes a cluster keeps that hold no application's data now, and
removing them.

When an application moves to a node of another site, its volume's blocks
are pushed there and the volume it leaves is kept, detached, until you
remove it: a later push back into that site reuses it, so only what
changed since travels. A push that failed or was cancelled leaves the
volume it pushed into kept as well (marked incoming: it holds nothing
anyone may use, and the next push into that site reuses it too).

  list                the kept volumes: each one's application, site, size,
                      the node it is attached to, its generation (one more
                      with every push) and why it is kept
  remove VOLUME_ID    destroy a kept volume in its site's backend. The
                      control service checks it again as the backend says
                      now, and refuses a volume that holds an
                      application's data, that a push under way uses, or
                      that is attached to a node

A removal is logged by the control service with who (this user's
certificate) asked.
"""

EPILOG = """\
--json (list) prints {"listed_at": T, "volumes": [{"volume_id": ID,
"dataset_id": ID, "application": APP | null, "site": SITE, "size": BYTES,
"attached_to": BACKEND_ID | null, "generation": N, "incoming": BOOL,
"reason": "left" | "failed-push" | "cancelled-push" | "older",
"why": TEXT, "push_id": ID | null}]}.

exit status:
  0  listed, or removed
  1  the control service refused to remove it (the message says why), or
     knows no such volume
  2  bad input: cluster.yml unreadable, no control service named, or this
     user's TLS files cannot be used
  3  the control service could not be reached, or refused this user

examples:
  blockmover volume list --cluster cluster.yml
  blockmover volume remove 3f2c9a1e-... --cluster cluster.yml
"""


def add_arguments(parser):
    """
    The actions and options of ``blockmover volume``.
    """
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list", help="show the kept volumes", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=parser.formatter_class)
    listing.add_argument("--json", action="store_true",
                         help="print JSON for scripts (see below)")
    add_cluster_arguments(listing)
    remove = actions.add_parser(
        "remove", help="remove a kept volume", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=parser.formatter_class)
    remove.add_argument("volume_id", metavar="VOLUME_ID",
                        help="the volume's id, as blockmover volume list "
                        "shows it")
    add_cluster_arguments(remove)


def _attached(volume):
    return volume["attached_to"] or ""


def volume_lines(volumes):
    """
    The kept volumes (``GET /v1/volumes/kept``'s) as a table for a person.
    """
    if not volumes:
        return ["no kept volumes"]
    return table(["VOLUME", "APPLICATION", "SITE", "SIZE", "ATTACHED",
                  "GENERATION", "WHY"], [
        [v["volume_id"], v["application"] or v["dataset_id"], v["site"],
         size_text(v["size"]), _attached(v), str(v["generation"]),
         v["why"]]
        for v in volumes])


def removed_line(volume):
    """
    What was removed, for a person.
    """
    return "removed volume %s of %s in site %s (%s, %s)" % (
        volume["volume_id"], volume["application"] or volume["dataset_id"],
        volume["site"], size_text(volume["size"]), volume["why"])


@inlineCallbacks
def send(reactor, target, args, out, err):
    """
    Ask ``target``'s control service for ``args.action`` and say what came
    of it.

    :return: a Deferred firing with the exit status.
    """
    client = target.client(reactor, REQUEST_TIMEOUT)
    command = "blockmover volume %s" % (args.action,)
    try:
        if args.action == "list":
            answer = yield client.get_kept_volumes()
        else:
            answer = yield client.remove_volume(args.volume_id)
    except ControlUnreachable as e:
        err.write("%s: %s\n" % (command, e))
        return EXIT_CONTROL
    except ControlError as e:
        err.write("%s: the control service at %s refused: %s\n"
                  % (command, printable_url(client.url), e))
        return EXIT_CONTROL if e.code in (401, 403) else EXIT_REFUSED
    finally:
        yield client.close()
    if args.action == "remove":
        out.write(removed_line(answer["removed"]) + "\n")
    elif args.json:
        out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
    else:
        for line in volume_lines(answer["volumes"]):
            out.write(line + "\n")
    return EXIT_DONE


def run(target, args, out=None, err=None):
    """
    Do ``args.action`` with ``target`` (a ``status_command.Target``) and
    exit with the status the epilog lists.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def main(reactor):
        d = send(reactor, target, args, out, err)
        d.addCallback(_exit)
        return d
    react(main)


def _exit(code):
    if code != EXIT_DONE:
        raise SystemExit(code)
