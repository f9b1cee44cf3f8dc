"""
How applications run on a node. ``ProcessRuntime`` runs each application's
``command`` as a process in its own session, so it outlives the agent, and
keeps a record of it on disk, so a restarted agent finds what it started
and neither orphans nor duplicates it. Processes are started, stopped and
watched by ``blockmover.proc``: a stop returns the moment the application
exits, and ``exit_fd`` tells the loop of an exit as it happens.

Blocking: call from a thread, never on the reactor.
"""

import json
import os
import threading
import time
import uuid
from contextlib import suppress

from eliot import log_message
from zope.interface import Interface, implementer

from blockmover import mountpoints, proc
from blockmover.files import (
    PRIVATE_FILE, private_directory, private_file, restrict_files,
    write_atomically,
)
from blockmover.model import RunningApplication


class ApplicationRuntimeError(Exception):
    """
    Base of the errors of application runtimes a person may meet.
    """


class CommandRequired(ApplicationRuntimeError):
    """
    The process runtime runs commands; an application with only a
    container image cannot run on it.
    """
    def __init__(self, name):
        ApplicationRuntimeError.__init__(
            self, "application %r has no command, only an image; the "
            "process runtime runs commands: give it a command in app.yml"
            % (name,))


class StartFailed(ApplicationRuntimeError):
    """
    The application's command could not be started.
    """


class StopFailed(ApplicationRuntimeError):
    """
    The application's process outlived SIGKILL.
    """


class IApplicationRuntime(Interface):
    """
    Starts, stops and lists the applications of this node. Every method
    blocks and is called in a thread.
    """

    def start(application):
        """
        Start ``application`` (a ``model.Application``) with its
        ``environment`` and ``secrets`` in its process's environment.
        Idempotent: an application already running is left as it is, even
        if its command, environment or secrets differ now.

        :return: its ``model.RunningApplication``.
        """

    def stop(name):
        """
        Stop the application ``name``, gracefully then by force, and return
        once it is gone. Idempotent: one not running is left as it is.
        """

    def running():
        """
        :return: a dict of application name to ``model.RunningApplication``
            for every application of this runtime running now.
        """

    def mark_ready(name):
        """
        Record that the running application ``name`` passed its ready
        checks, so that ``running()`` says so until it stops or restarts.
        Idempotent; one not running is left as it is.
        """


class IApplicationExits(Interface):
    """
    An optional ability of a runtime: it tells the moment an application
    exits, so the agent's loop learns of a crash by event, not by polling.
    """

    def exit_fd(name):
        """
        A file descriptor that becomes readable the moment the application
        ``name`` exits, for the reactor to watch (``addReader``); the
        caller closes it. Blocks briefly: call it in a thread.

        :return: the descriptor, or None when ``name`` is not running.
        """


# Every process started carries its start's token in this variable, so a
# start interrupted before its record was complete still finds its process.
TOKEN_VARIABLE = "BLOCKMOVER_START_TOKEN"


def find_session_leader(variable, value):
    """
    The pid of a live session leader whose environment has ``variable`` set
    to ``value``, or None.
    """
    wanted = ("%s=%s" % (variable, value)).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % (entry,), "rb") as f:
                environ = f.read().split(b"\0")
            leader = os.getsid(int(entry)) == int(entry)
        except (OSError, ProcessLookupError):
            continue
        if leader and wanted in environ and \
                proc.find(int(entry)) is not None:
            return int(entry)
    return None


@implementer(IApplicationRuntime, IApplicationExits)
class ProcessRuntime(object):
    """
    Applications as processes. ``state_dir`` holds ``apps/<name>.json``
    (pid, start time, command) and ``logs/<name>.log`` (stdout and stderr).
    ``stop_timeout`` is how long a SIGTERM is given before SIGKILL.

    All of it is readable by root only (directories 0700, files 0600, made
    so at start where an older release left them looser): an application's
    command may hold a password, and its log whatever it prints.
    """

    def __init__(self, state_dir, stop_timeout=10.0, kill_timeout=30.0):
        if mountpoints.shared(state_dir):
            raise ValueError("%s is a directory the system shares; the "
                             "runtime's state needs one of its own"
                             % (state_dir,))
        self.state_dir = state_dir
        self.stop_timeout = stop_timeout
        self.kill_timeout = kill_timeout
        self._apps = os.path.join(state_dir, "apps")
        self._logs = os.path.join(state_dir, "logs")
        for directory in (state_dir, self._apps, self._logs):
            private_directory(directory)
        for directory in (self._apps, self._logs):
            restrict_files(directory)
        self._lock = threading.RLock()

    def _record_path(self, name):
        return os.path.join(self._apps, name + ".json")

    def _read_record(self, name):
        try:
            with open(self._record_path(name)) as f:
                record = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError:
            # A torn record cannot name a process: treat it as none.
            return None
        return record if isinstance(record, dict) else None

    def _write_record(self, name, record):
        write_atomically(self._record_path(name), json.dumps(record),
                         mode=PRIVATE_FILE)

    def _remove_record(self, name):
        # Removed already (a stop repeated after a crash) is removed.
        with suppress(FileNotFoundError):
            os.unlink(self._record_path(name))

    def _live_record(self, name):
        record = self._read_record(name)
        if record is None:
            return None
        if "pid" not in record:
            record = self._finish_interrupted_start(name, record)
            if record is None:
                return None
        if not proc.is_running(_process(record)):
            self._remove_record(name)
            return None
        return record

    def _finish_interrupted_start(self, name, intent):
        # A start was interrupted between its intent and its record: adopt
        # the process it made, if it made one.
        pid = None
        if intent.get("token"):
            pid = find_session_leader(TOKEN_VARIABLE, intent["token"])
        found = proc.find(pid) if pid is not None else None
        if found is None:
            self._remove_record(name)
            return None
        record = dict(intent, pid=pid, start_time=found.start_time)
        self._write_record(name, record)
        return record

    def running(self):
        with self._lock:
            found = {}
            for entry in sorted(os.listdir(self._apps)):
                if not entry.endswith(".json"):
                    continue
                name = entry[:-len(".json")]
                record = self._live_record(name)
                if record is not None:
                    found[name] = RunningApplication(
                        name=name, pid=record["pid"],
                        ready=bool(record.get("ready")))
            return found

    def mark_ready(self, name):
        with self._lock:
            record = self._live_record(name)
            if record is not None and not record.get("ready"):
                self._write_record(name, dict(record, ready=True))

    def start(self, application):
        if not application.command:
            raise CommandRequired(application.name)
        with self._lock:
            record = self._live_record(application.name)
            if record is not None:
                return RunningApplication(name=application.name,
                                          pid=record["pid"])
            cwd = (application.volume.mountpoint
                   if application.volume is not None else self.state_dir)
            token = uuid.uuid4().hex
            # The agent's cloud credentials are not the application's.
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("OS_")}
            env.update(application.environment)
            env.update(application.secrets)
            env[TOKEN_VARIABLE] = token
            record = {"token": token, "command": list(application.command)}
            # The intent first: a crash after the process starts and before
            # its pid is recorded must not make a duplicate on restart.
            self._write_record(application.name, record)
            log_path = os.path.join(self._logs, application.name + ".log")
            try:
                private_file(log_path)
                process = proc.start(application.command, log_path, env=env,
                                     cwd=cwd)
            except OSError as e:
                self._remove_record(application.name)
                raise StartFailed(
                    "cannot start %r: %s; check its command in app.yml"
                    % (application.name, e))
            self._write_record(application.name, dict(
                record, pid=process.pid, start_time=process.start_time))
            return RunningApplication(name=application.name, pid=process.pid)

    def stop(self, name):
        with self._lock:
            record = self._live_record(name)
            if record is None:
                return
            # The application leads its own session and process group, so
            # the whole group gets the signals, its children included.
            signalled = time.monotonic()
            try:
                proc.stop(_process(record), self.stop_timeout,
                          self.kill_timeout, group=True)
            except proc.StillRunning as e:
                raise StopFailed("%s: %s" % (name, e))
            # The application's own time to stop, apart from ours.
            log_message(message_type="blockmover:agent:application-stopped",
                        application=name,
                        seconds=round(time.monotonic() - signalled, 4))
            self._remove_record(name)

    def exit_fd(self, name):
        """
        See ``IApplicationExits``: a pidfd of the application's recorded
        process, whether started here or adopted after a restart.
        """
        with self._lock:
            record = self._live_record(name)
            if record is None:
                return None
            return proc.exit_fd(_process(record))


def _process(record):
    # The process an application record names.
    return proc.Process(pid=record["pid"], start_time=record["start_time"])
