"""
The one place that starts and stops the local cluster's background
processes. A process is known by its pid AND its start time, so a pid the
kernel reused for something else is never signalled.
"""

import json
import glob
import os
import signal
import subprocess

from blockmover.localcluster import ClusterError
from blockmover.localcluster.state import ProcessRecord
from blockmover.poll import Backoff, Timeout, poll
from blockmover.proc import process_start

STOP_TIMEOUT = 20.0


def start_time(pid):
    """
    The start time (clock ticks since boot) of process ``pid``, or None
    when no such process runs (a zombie counts as gone).
    """
    found = process_start(pid)
    if found is None or found[1] == "Z":
        return None
    return found[0]


def is_running(record):
    """
    Whether the process ``record`` describes still runs (the same process,
    not a reuse of its pid).
    """
    return start_time(record.pid) == record.start_time


def start(argv, output, env=None):
    """
    Start ``argv`` in the background, in its own session (it outlives the
    command that started it), with stdout and stderr appended to
    ``output``, and return its ``ProcessRecord``.
    """
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env=env)
    started = start_time(process.pid)
    # A process that died at once keeps its pid until reaped: record the
    # pid with a start time that matches nothing.
    return ProcessRecord(pid=process.pid, start_time=started or -1,
                         argv=list(argv), output=output)


def wait_until_ready(ready, still_running, deadline, what, output):
    """
    Wait, with backoff under ``deadline`` seconds, until ``ready()`` is
    true for a service just started; fail at once if its process is gone
    (``still_running()`` false). ``output`` is the service's output file,
    named in the error.

    :raise ClusterError: the service exited or was not ready in time.
    """
    def check():
        if ready():
            return True
        if not still_running():
            raise ClusterError("%s exited at once; see %s" % (what, output))
        return None
    try:
        poll(check, deadline, what, backoff=Backoff(initial=0.1,
                                                    maximum=1.0))
    except Timeout as e:
        raise ClusterError("%s; see %s" % (e, output))


def _reap(pid):
    # Our own child turns into a zombie until waited for; anyone else's
    # is reaped by its parent.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return


def stop(record, timeout=STOP_TIMEOUT):
    """
    Stop the process ``record`` describes: SIGTERM, then SIGKILL after
    ``timeout`` seconds. A process already gone is fine. Returns True when
    it had to be signalled.
    """
    if not is_running(record):
        _reap(record.pid)
        return False
    os.kill(record.pid, signal.SIGTERM)

    def gone():
        _reap(record.pid)
        return True if not is_running(record) else None
    try:
        poll(gone, timeout, "process %d to exit" % (record.pid,),
             backoff=Backoff(initial=0.05, maximum=0.5))
    except Timeout:
        if is_running(record):
            os.kill(record.pid, signal.SIGKILL)
        poll(gone, 10.0, "process %d to die" % (record.pid,),
             backoff=Backoff(initial=0.05, maximum=0.5))
    return True


def kill(record):
    """
    SIGKILL the process ``record`` describes at once, as a crash would;
    return when it is gone.
    """
    if is_running(record):
        os.kill(record.pid, signal.SIGKILL)

    def gone():
        _reap(record.pid)
        return True if not is_running(record) else None
    poll(gone, 10.0, "process %d to die" % (record.pid,),
         backoff=Backoff(initial=0.02, maximum=0.2))


def application_records(agent_state_dir):
    """
    The applications an agent started, from its runtime state
    (``apps/<name>.json`` holding the pid and the start time), as
    ``{name: ProcessRecord}``. Files that cannot be read are skipped: an
    agent killed while writing one left no running application behind it.
    """
    records = {}
    for path in glob.glob(os.path.join(agent_state_dir, "apps", "*.json")):
        name = os.path.basename(path)[:-len(".json")]
        try:
            with open(path) as f:
                data = json.load(f)
            records[name] = ProcessRecord(
                pid=int(data["pid"]), start_time=int(data["start_time"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def _namespace_id(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def records_in_netns(netns_path):
    """
    Every process that runs inside the network namespace bound at
    ``netns_path``, as ``ProcessRecord`` values; none when it is gone.
    """
    try:
        wanted = _namespace_id(netns_path)
    except FileNotFoundError:
        return []
    records = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            inside = _namespace_id("/proc/%d/ns/net" % (pid,)) == wanted
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            # The process ended while we looked.
            continue
        started = start_time(pid)
        if inside and started is not None:
            records.append(ProcessRecord(pid=pid, start_time=started))
    return records


def records_with_arguments(*arguments):
    """
    Every process whose command line holds ``arguments`` one after the
    other (e.g. ``--state-dir``, a directory only one cluster uses), as
    ``ProcessRecord`` values: how a process started but never recorded,
    because the command that started it crashed, is still found.
    """
    wanted = b"\0" + b"\0".join(a.encode() for a in arguments) + b"\0"
    records = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % (entry,), "rb") as f:
                cmdline = b"\0" + f.read()
        except (FileNotFoundError, ProcessLookupError):
            # The process ended while we looked.
            continue
        started = start_time(int(entry))
        if wanted in cmdline and started is not None:
            records.append(ProcessRecord(pid=int(entry),
                                         start_time=started))
    return records
