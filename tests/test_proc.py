"""
Starting, stopping and watching processes with ``blockmover.proc``, on real
processes: a stop returns when the process exits (woken by its exit, not by
a poll), a process we did not start is watched as well as our own, and a
reused pid is never taken for the process recorded.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from blockmover import proc
from blockmover.poll import poll

# A process that tells the test it has SIGTERM, then exits only when the
# test writes to its fifo (argv: marker file, fifo).
LINGERS_AFTER_SIGTERM = (
    "import signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
    "open(sys.argv[1] + '.ready', 'w').close()\n"
    "signal.sigwait([signal.SIGTERM])\n"
    "open(sys.argv[1], 'w').close()\n"
    "open(sys.argv[2]).read()\n")

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').close()\n"
    "time.sleep(120)\n")


@pytest.fixture
def started(workdir):
    """
    ``started(argv)`` starts a process with ``proc.start`` (output in
    ``workdir``); whatever a test left running is killed afterwards.
    """
    made = []

    def start(argv, **kwargs):
        process = proc.start(argv, os.path.join(workdir, "output"),
                             **kwargs)
        made.append(process)
        return process
    yield start
    for process in made:
        proc.kill(process)


def _exists(path):
    return poll(lambda: True if os.path.exists(path) else None, 10,
                "%s to exist" % (path,))


def _readable(fd, timeout):
    return select.select([fd], [], [], timeout)[0] == [fd]


def test_start_is_running_stop(started, workdir):
    process = started(["sleep", "120"])
    assert proc.is_running(process)
    assert proc.find(process.pid) == process
    # Its own session, so it outlives whoever started it.
    assert os.getsid(process.pid) == process.pid
    assert proc.stop(process, timeout=10) == signal.SIGTERM
    assert not proc.is_running(process)
    # Reaped: no zombie is left holding the pid.
    assert proc.process_start(process.pid) is None
    assert proc.stop(process, timeout=10) is None
    assert proc.kill(process) is None


def test_output_appended_and_environment(started, workdir):
    process = started(["sh", "-c", "echo $GREETING; pwd"],
                      env={"GREETING": "hello", "PATH": os.environ["PATH"]},
                      cwd=workdir)
    assert proc.wait(process, 10)
    process = started(["echo", "again"])
    assert proc.wait(process, 10)
    with open(os.path.join(workdir, "output")) as f:
        assert f.read().split() == ["hello", workdir, "again"]


def test_start_of_a_missing_command_raises(started):
    with pytest.raises(OSError):
        started(["no-such-command-for-blockmover-tests"])


def test_stop_is_woken_by_the_exit(started, workdir, monkeypatch):
    """
    A process that takes its time after SIGTERM (as a database flushing
    its files does): the stop returns once it exits, without sleeping in
    between (nothing polls), long before its timeout.
    """
    marker, fifo = os.path.join(workdir, "exiting"), \
        os.path.join(workdir, "fifo")
    os.mkfifo(fifo)
    process = started([sys.executable, "-c", LINGERS_AFTER_SIGTERM, marker,
                       fifo])
    _exists(marker + ".ready")
    events = []

    def forbidden(seconds):
        events.append("slept")
        raise AssertionError("a stop must wait for the exit, not poll")
    monkeypatch.setattr(time, "sleep", forbidden)

    def stop():
        events.append(("stopped", proc.stop(process, timeout=60)))
    stopping = threading.Thread(target=stop)
    stopping.start()
    _exists(marker)
    events.append("released")
    with open(fifo, "w") as f:
        f.write("go")
    stopping.join(30)
    assert not stopping.is_alive()
    assert events == ["released", ("stopped", signal.SIGTERM)]
    assert not proc.is_running(process)


def test_sigkill_after_the_timeout(started, workdir):
    ready = os.path.join(workdir, "ready")
    process = started([sys.executable, "-c", IGNORES_SIGTERM, ready])
    _exists(ready)
    began = time.monotonic()
    assert proc.stop(process, timeout=0.3) == signal.SIGKILL
    assert time.monotonic() - began >= 0.3
    assert not proc.is_running(process)


def test_kill(started):
    process = started(["sleep", "120"])
    assert proc.kill(process) == signal.SIGKILL
    assert not proc.is_running(process)


def test_group_stop_reaches_the_children(started, workdir):
    pid_file = os.path.join(workdir, "child")
    process = started(["sh", "-c", "sleep 120 & echo $! > %s; wait"
                       % (pid_file,)])
    _exists(pid_file)
    child = poll(lambda: open(pid_file).read().strip() or None, 10,
                 "the child's pid")
    grandchild = proc.find(int(child))
    assert grandchild is not None
    assert proc.stop(process, timeout=10, group=True) == signal.SIGTERM
    assert proc.wait(grandchild, 10)


def _orphan():
    # A process that is not our child: its parent exits at once, so the
    # kernel hands it to init.
    result = subprocess.run(
        ["sh", "-c", "setsid sleep 120 >/dev/null 2>&1 & echo $!"],
        stdout=subprocess.PIPE, check=True, text=True)
    found = proc.find(int(result.stdout))
    assert found is not None
    return found


def test_exit_of_a_process_we_did_not_start():
    orphan = _orphan()
    try:
        with pytest.raises(ChildProcessError):
            os.waitpid(orphan.pid, os.WNOHANG)
        fd = proc.exit_fd(orphan)
        try:
            assert not _readable(fd, 0)
            os.kill(orphan.pid, signal.SIGKILL)
            assert _readable(fd, 30)
        finally:
            os.close(fd)
        assert proc.wait(orphan, 30)
        assert not proc.is_running(orphan)
    finally:
        proc.kill(orphan)


def test_stop_of_a_process_we_did_not_start():
    orphan = _orphan()
    try:
        assert proc.stop(orphan, timeout=10) == signal.SIGTERM
        assert not proc.is_running(orphan)
    finally:
        proc.kill(orphan)


def test_reused_pid_is_not_the_process():
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        found = proc.find(stranger.pid)
        # The recorded process had this pid once, and started earlier.
        recorded = found.set(start_time=found.start_time - 1)
        assert not proc.is_running(recorded)
        assert proc.exit_fd(recorded) is None
        assert proc.wait(recorded, 10)
        assert proc.stop(recorded, timeout=10) is None
        assert proc.kill(recorded) is None
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_exit_fd_of_a_process_not_running(started):
    process = started(["true"])
    assert proc.wait(process, 10)
    assert proc.exit_fd(process) is None
