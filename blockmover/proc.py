"""
The one way blockmover starts, signals, stops and watches a process.

A process is known as the kernel names it: its pid together with its start
time (``Process``), so a recorded process is never confused with a later
one given the same pid. Its exit is noticed the moment it happens, from a
pidfd (``exit_fd``), which works for any process, ours or one we adopted
after a restart; nothing polls. The processes ``start`` made are reaped
here, so none lingers as a zombie.

Waiting blocks: call ``wait``, ``stop`` and ``kill`` from a thread, never
on the reactor; a reactor watches ``exit_fd`` instead.
"""

import math
import os
import select
import signal
import subprocess
import threading
import time
from contextlib import suppress

from pyrsistent import PClass, field

# How long a process is given to go once SIGKILL was sent: only a process
# stuck in the kernel (a hung device) outlives it.
KILL_TIMEOUT = 10.0


class Process(PClass):
    """
    A process: its ``pid`` and the ``start_time`` the kernel gives it
    (clock ticks since boot, field 22 of ``/proc/<pid>/stat``).
    """
    pid = field(type=int, mandatory=True)
    start_time = field(type=int, mandatory=True)


class StillRunning(Exception):
    """
    A process outlived SIGKILL: it is stuck in the kernel, usually on a
    device that does not answer.
    """
    def __init__(self, process, seconds):
        self.process = process
        Exception.__init__(
            self, "process %d still runs %.0f seconds after SIGKILL; it is "
            "stuck in the kernel (look for a device that does not answer)"
            % (process.pid, seconds))


def process_start(pid):
    """
    The start time of process ``pid`` in clock ticks since boot (field 22
    of ``/proc/<pid>/stat``) and its state letter ("Z" for a zombie), or
    None when no such process exists.
    """
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after the last ")".
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[19]), rest[0]


# The processes ``start`` made and nobody reaped yet, by pid. Only this
# module reaps them, so while one is listed its pid cannot be reused.
_children = {}
_children_lock = threading.Lock()


def _reap(pid):
    # A child of ours that exited is a zombie until waited for; anyone
    # else's is reaped by its own parent.
    with _children_lock:
        child = _children.get(pid)
        if child is not None and child.poll() is not None:
            del _children[pid]


def find(pid):
    """
    The ``Process`` running now with ``pid``, or None (none, or only a
    zombie).
    """
    _reap(pid)
    found = process_start(pid)
    if found is None or found[1] in "ZX":
        return None
    return Process(pid=pid, start_time=found[0])


def is_running(process):
    """
    Whether ``process`` (a ``Process``, or any record with ``pid`` and
    ``start_time``) still runs: the same process, not a reuse of its pid.
    """
    found = find(process.pid)
    return found is not None and found.start_time == process.start_time


def start(argv, output, env=None, cwd=None, session=True):
    """
    Start ``argv`` with stdin from /dev/null and stdout and stderr appended
    to the file ``output`` (its directory made if missing).

    :param session: in a session of its own, leading its own process group,
        so it outlives whoever started it (and ``group=True`` signals reach
        its children); False to keep it in ours, so it goes with us on ^C.
    :return: its ``Process``.
    :raise OSError: it cannot be started (no such command, ...).
    """
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "ab") as out:
        with _children_lock:
            child = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, close_fds=True,
                start_new_session=session)
            _children[child.pid] = child
    # Unreaped, a process that died at once is a zombie still holding its
    # pid and start time.
    return Process(pid=child.pid, start_time=process_start(child.pid)[0])


def exit_fd(process):
    """
    A pidfd of ``process``: a file descriptor that becomes readable the
    moment the process exits, for ``select``/``poll`` or a reactor's
    reader. The caller closes it. None when the process is not running.
    """
    try:
        fd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        _reap(process.pid)
        return None
    # Checked after opening: a process running now with the recorded start
    # time held the pid since before the pidfd was opened, so the pidfd is
    # that process's and no later one's.
    if not is_running(process):
        os.close(fd)
        return None
    return fd


def _exited(fd, pid, timeout):
    # Whether the pidfd ``fd`` becomes readable (its process exited)
    # within ``timeout`` seconds.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if poller.poll(math.ceil(max(0.0, remaining) * 1000)):
            _reap(pid)
            return True
        if remaining <= 0:
            return False


def wait(process, timeout):
    """
    Wait until ``process`` exits, at most ``timeout`` seconds; return the
    moment it does. A process not running is gone already.

    :return: True once it is gone, False when it still runs.
    """
    fd = exit_fd(process)
    if fd is None:
        return True
    try:
        return _exited(fd, process.pid, timeout)
    finally:
        os.close(fd)


def _send(fd, process, signum, group):
    # One that exited meanwhile needs no signal.
    with suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signum)
        else:
            signal.pidfd_send_signal(fd, signum)


def _end(process, steps, group):
    fd = exit_fd(process)
    if fd is None:
        return None
    try:
        for signum, patience in steps:
            _send(fd, process, signum, group)
            if _exited(fd, process.pid, patience):
                return signum
    finally:
        os.close(fd)
    raise StillRunning(process, steps[-1][1])


def stop(process, timeout, kill_timeout=KILL_TIMEOUT, group=False):
    """
    Stop ``process``: SIGTERM, then SIGKILL if it still runs after
    ``timeout`` seconds; return the moment it exits. Idempotent: a process
    not running is left as it is.

    :param group: signal its whole process group (a process started in its
        own session leads one), its children included.
    :return: the signal that ended it (``signal.SIGTERM`` or
        ``signal.SIGKILL``), or None when it was not running.
    :raise StillRunning: it outlived SIGKILL by ``kill_timeout`` seconds.
    """
    return _end(process, [(signal.SIGTERM, timeout),
                          (signal.SIGKILL, kill_timeout)], group)


def kill(process, timeout=KILL_TIMEOUT, group=False):
    """
    SIGKILL ``process`` at once, as a crash would, and return the moment it
    is gone. Idempotent like ``stop``.

    :return: ``signal.SIGKILL``, or None when it was not running.
    :raise StillRunning: it outlived SIGKILL by ``timeout`` seconds.
    """
    return _end(process, [(signal.SIGKILL, timeout)], group)
