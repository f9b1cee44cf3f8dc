"""
The local cluster's background processes: started (by
``blockmover.proc``, which also stops and watches them) and recorded, and
found again by what only this cluster's processes have: an agent's
application records, a node's network namespace, a state directory on the
command line.
"""

import json
import glob
import os

from blockmover import proc
from blockmover.localcluster import ClusterError
from blockmover.localcluster.state import ProcessRecord
from blockmover.poll import Backoff, Timeout, poll

# Seconds a service is given to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT = 20.0


def start(argv, output, env=None):
    """
    Start ``argv`` in the background, in its own session (it outlives the
    command that started it), with stdout and stderr appended to
    ``output``, and return its ``ProcessRecord``.
    """
    process = proc.start(argv, output, env=env)
    return ProcessRecord(pid=process.pid, start_time=process.start_time,
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
        found = proc.find(pid)
        if inside and found is not None:
            records.append(ProcessRecord(pid=pid,
                                         start_time=found.start_time))
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
        found = proc.find(int(entry))
        if wanted in cmdline and found is not None:
            records.append(ProcessRecord(pid=found.pid,
                                         start_time=found.start_time))
    return records
