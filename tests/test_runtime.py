"""
The process runtime with real processes.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid

import pytest

from blockmover.model import Application, RunningApplication
from blockmover.poll import Backoff, poll
from blockmover.proc import process_start

from agents.runtime import (
    TOKEN_VARIABLE, CommandRequired, IApplicationExits, IApplicationRuntime,
    ProcessRuntime, StartFailed,
)
from tests.scratch_devices import scratch_directory


def alive(pid):
    found = process_start(pid)
    return found is not None and found[1] not in "ZX"


@pytest.fixture
def state_dir():
    with scratch_directory() as directory:
        started = []
        yield directory, started
        # Whatever a failed test left running is ended here, by its pid.
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def sleeper(name, seconds=120, **kwargs):
    return Application(name=name, command=["sleep", str(seconds)], **kwargs)


def test_provides_interface(state_dir):
    assert IApplicationRuntime.providedBy(ProcessRuntime(state_dir[0]))


def test_start_stop_running(state_dir):
    directory, started = state_dir
    runtime = ProcessRuntime(directory)
    assert runtime.running() == {}
    first = runtime.start(sleeper("app"))
    started.append(first.pid)
    assert alive(first.pid)
    assert runtime.running() == {"app": first}
    assert runtime.start(sleeper("app")) == first
    # Its own session, so it outlives the agent's.
    assert os.getsid(first.pid) == first.pid
    runtime.stop("app")
    assert not alive(first.pid)
    assert runtime.running() == {}
    assert os.listdir(os.path.join(directory, "apps")) == []
    runtime.stop("app")


def test_environment_working_directory_and_log(state_dir, monkeypatch):
    directory, started = state_dir
    monkeypatch.setenv("OS_PASSWORD", "agent-secret")
    runtime = ProcessRuntime(directory)
    app = Application(name="env", command=[
        "sh", "-c", "echo $GREETING; pwd; echo ${OS_PASSWORD:-none}"],
        environment={"GREETING": "hello"})
    started.append(runtime.start(app).pid)
    log = os.path.join(directory, "logs", "env.log")
    poll(lambda: True if runtime.running() == {} else None, 10,
         "the application to finish")
    with open(log) as f:
        assert f.read().split() == ["hello", directory, "none"]


def test_image_only_application_refused(state_dir):
    runtime = ProcessRuntime(state_dir[0])
    with pytest.raises(CommandRequired) as caught:
        runtime.start(Application(name="db", image="mongo:7"))
    assert "command" in str(caught.value)
    assert runtime.running() == {}


def test_restarted_agent_finds_its_application(state_dir):
    directory, started = state_dir
    before = ProcessRuntime(directory)
    first = before.start(sleeper("app"))
    started.append(first.pid)
    after = ProcessRuntime(directory)
    assert after.running() == {"app": first}
    assert after.start(sleeper("app")) == first
    assert _children() == [first.pid]
    after.stop("app")
    assert not alive(first.pid)
    assert after.running() == {} and before.running() == {}


def _children():
    """
    The pids of this test process's live children: a duplicate start would
    show up here.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % (entry,)) as f:
                    stat = f.read()
            except OSError:
                continue
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            if int(ppid) == os.getpid() and state not in "ZX":
                pids.append(int(entry))
    return pids


def test_sigkill_after_stop_timeout(state_dir):
    directory, started = state_dir
    ready = os.path.join(directory, "ready")
    runtime = ProcessRuntime(directory, stop_timeout=0.5)
    running = runtime.start(Application(name="stubborn", command=[
        sys.executable, "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1], 'w').close()\ntime.sleep(120)", ready]))
    started.append(running.pid)
    poll(lambda: True if os.path.exists(ready) else None, 10,
         "the application to ignore SIGTERM")
    began = time.monotonic()
    runtime.stop("stubborn")
    assert time.monotonic() - began >= 0.5
    assert not alive(running.pid)
    assert runtime.running() == {}


def _readable(fd, timeout):
    return select.select([fd], [], [], timeout)[0] == [fd]


def test_exit_fd_tells_of_an_exit(state_dir):
    directory, started = state_dir
    runtime = ProcessRuntime(directory)
    assert IApplicationExits.providedBy(runtime)
    assert runtime.exit_fd("app") is None
    running = runtime.start(sleeper("app"))
    started.append(running.pid)
    fd = runtime.exit_fd("app")
    try:
        assert not _readable(fd, 0)
        # A crash, not a stop.
        os.kill(running.pid, signal.SIGKILL)
        assert _readable(fd, 30)
    finally:
        os.close(fd)
    assert runtime.running() == {}
    assert runtime.exit_fd("app") is None


def _orphan_session(token):
    # A session leader that is not our child (its parent exits at once),
    # as an application started by an agent before its restart is.
    result = subprocess.run(
        ["sh", "-c", "setsid sleep 120 >/dev/null 2>&1 & echo $!"],
        stdout=subprocess.PIPE, check=True, text=True,
        env=dict(os.environ, **{TOKEN_VARIABLE: token}))
    pid = int(result.stdout)
    # The shell answers once the job is forked, which may be before the job
    # made its session: as an agent's restart finds it, it has.
    poll(lambda: os.getsid(pid) == pid or None, 10,
         "process %d to lead its session" % (pid,), Backoff(initial=0.01))
    return pid


def test_adopted_application_is_watched_and_stopped(state_dir):
    """
    An application the runtime did not start itself (recorded by an agent
    before its restart; not a child of this process): its exit is told by
    ``exit_fd`` and ``stop`` ends it.
    """
    directory, started = state_dir
    token = uuid.uuid4().hex
    pid = _orphan_session(token)
    started.append(pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    os.makedirs(os.path.join(directory, "apps"))
    with open(os.path.join(directory, "apps", "app.json"), "w") as f:
        json.dump({"token": token, "command": ["sleep", "120"]}, f)
    runtime = ProcessRuntime(directory)
    assert runtime.running() == {
        "app": RunningApplication(name="app", pid=pid)}
    fd = runtime.exit_fd("app")
    try:
        assert not _readable(fd, 0)
        runtime.stop("app")
        assert _readable(fd, 0)
    finally:
        os.close(fd)
    assert not alive(pid)
    assert runtime.running() == {}


def test_reused_pid_is_not_the_application(state_dir):
    directory, started = state_dir
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        start_time, _ = process_start(stranger.pid)
        record = os.path.join(directory, "apps", "app.json")
        os.makedirs(os.path.dirname(record))
        with open(record, "w") as f:
            json.dump({"pid": stranger.pid, "start_time": start_time - 1,
                       "command": ["sleep", "120"]}, f)
        runtime = ProcessRuntime(directory)
        assert runtime.exit_fd("app") is None
        assert runtime.running() == {}
        assert not os.path.exists(record)
        runtime.stop("app")
        assert stranger.poll() is None
        fresh = runtime.start(sleeper("app"))
        started.append(fresh.pid)
        assert fresh.pid != stranger.pid
        runtime.stop("app")
    finally:
        stranger.kill()
        stranger.wait()


def test_interrupted_start_is_adopted_not_duplicated(state_dir):
    """
    An agent killed after starting a process but before recording its pid
    finds that process on restart, by the start's token.
    """
    directory, started = state_dir
    token = uuid.uuid4().hex
    os.makedirs(os.path.join(directory, "apps"))
    with open(os.path.join(directory, "apps", "app.json"), "w") as f:
        json.dump({"token": token, "command": ["sleep", "120"]}, f)
    orphan = subprocess.Popen(
        ["sleep", "120"], start_new_session=True,
        env=dict(os.environ, **{TOKEN_VARIABLE: token}))
    started.append(orphan.pid)
    try:
        runtime = ProcessRuntime(directory)
        assert runtime.running() == {
            "app": RunningApplication(name="app", pid=orphan.pid)}
        assert runtime.start(sleeper("app")).pid == orphan.pid
        assert _children() == [orphan.pid]
        runtime.stop("app")
        assert orphan.wait(10) == -signal.SIGTERM
    finally:
        orphan.kill()
        orphan.wait()


def test_interrupted_start_without_a_process_starts_afresh(state_dir):
    directory, started = state_dir
    os.makedirs(os.path.join(directory, "apps"))
    with open(os.path.join(directory, "apps", "app.json"), "w") as f:
        json.dump({"token": uuid.uuid4().hex, "command": ["sleep"]}, f)
    runtime = ProcessRuntime(directory)
    assert runtime.running() == {}
    fresh = runtime.start(sleeper("app"))
    started.append(fresh.pid)
    assert runtime.running() == {"app": fresh}
    runtime.stop("app")


def test_command_that_cannot_start(state_dir):
    runtime = ProcessRuntime(state_dir[0])
    with pytest.raises(StartFailed) as caught:
        runtime.start(Application(
            name="typo", command=["no-such-command-" + uuid.uuid4().hex]))
    assert "typo" in str(caught.value)
    assert runtime.running() == {}
    assert os.listdir(os.path.join(state_dir[0], "apps")) == []
