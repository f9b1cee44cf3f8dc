"""
Whether an application serves: the checks of ``Application.ready_checks``
(a TCP port on this node that accepts connections, or a command that exits
0), tried with backoff under the check's deadline.

Blocking: call from a thread, never on the reactor.
"""

import socket

from blockmover.command import CommandFailed, run
from blockmover.poll import Backoff, Timeout, poll

# The checks are cheap (a local connect, or the operator's command): look
# often, so that "ready" is reported within a few tens of milliseconds of
# the application serving.
READY_BACKOFF = Backoff(initial=0.01, factor=1.5, maximum=0.05)
# An application serves inside its own node: connect there.
LOCAL_HOST = "127.0.0.1"


class NotReady(Exception):
    """
    The application did not pass its ready check in time, or exited first.
    """


def describe_check(check):
    """
    The check as a person reads it in an error.
    """
    if check.port is not None:
        return "TCP port %d on %s" % (check.port, LOCAL_HOST)
    return "command %s" % (" ".join(check.command),)


def passes(check, timeout=1.0):
    """
    Whether ``check`` (a ``model.ReadyCheck``) passes now.
    """
    if check.port is not None:
        try:
            with socket.create_connection((LOCAL_HOST, check.port),
                                          timeout=timeout):
                return True
        except OSError:
            return False
    try:
        result = run(list(check.command), check=False,
                     timeout=max(timeout, check.deadline))
    except CommandFailed:
        # Not found or timed out: not ready (yet).
        return False
    return result.returncode == 0


def check_ready(application, still_running, backoff=READY_BACKOFF):
    """
    Return once every ready check of ``application`` passes.

    :param still_running: ``still_running()`` says whether the application's
        process still runs; one that exits is never waited for.
    :raise NotReady: a check did not pass within its deadline, or the
        application exited.
    """
    checks = application.ready_checks()
    if not checks:
        return

    def ready():
        if not still_running():
            raise NotReady("%s exited before it served; see its log"
                           % (application.name,))
        return True if all(passes(check) for check in checks) else None

    deadline = max(check.deadline for check in checks)
    try:
        poll(ready, deadline, "%s to serve" % (application.name,), backoff)
    except Timeout:
        failing = [describe_check(c) for c in checks if not passes(c)]
        raise NotReady(
            "%s is not ready: %s did not pass within %g seconds; check that "
            "it serves there, or give app.yml a ready: check"
            % (application.name, " and ".join(failing) or "its check",
               deadline))
