"""
A local cluster of a test module's own, watched the whole time: brought up
with a safety watcher looking (MongoDB mounted and running on at most one
node at every moment), taken down after, and nothing of it may be left.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile

from acceptance.watcher import SafetyWatcher
from blockmover.status_command import EXIT_CONTROL
from blockmover.localcluster.down import down
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.up import up
from blockmover.poll import Backoff, poll

APP = "mongodb"
BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")


class WatchedCluster(object):
    """
    A cluster for the tests: its ``layout``, the ``watcher``, and
    ``log_path`` (where the fixtures' progress lines and deploy output
    go).
    """

    def __init__(self, layout, log_path):
        self.layout = layout
        self.log_path = log_path
        self.watcher = None

    def echo(self, line):
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def node(self, name):
        return self.layout.node(name)

    def status(self, unanswered_ok=False):
        """
        ``blockmover status --json`` of the cluster, as an operator reads
        it; with ``unanswered_ok``, None while the control service does
        not answer (no replica leads, say).
        """
        result = subprocess.run(
            [BLOCKMOVER, "status", "--name", self.layout.name,
             "--state-dir", self.layout.state_dir, "--json"],
            capture_output=True, text=True, timeout=120)
        if unanswered_ok and result.returncode == EXIT_CONTROL:
            return None
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return json.loads(result.stdout)

    def wait_status(self, check, what, deadline):
        """
        The status once ``check(status)`` holds, within ``deadline``
        seconds; a control service that does not answer meanwhile is
        waited for too.
        """
        def looked():
            status = self.status(unanswered_ok=True)
            return status if status is not None and check(status) else None
        return poll(looked, deadline, what, Backoff(initial=0.2, maximum=1.0))


@contextlib.contextmanager
def watched(kind, layout, prefix):
    """
    ``kind(layout, log_path)`` (a ``WatchedCluster``) with its cluster up
    and watched, for the ``with``; then down, and nothing of it left.
    """
    log = tempfile.NamedTemporaryFile(
        prefix="blockmover-%s-%s-" % (prefix, layout.name), suffix=".log",
        delete=False)
    log.close()
    cluster = kind(layout, log.name)
    watcher = SafetyWatcher(layout, "secantusd-py",
                            os.path.join(layout.state_dir, "data", APP))
    try:
        up(layout, echo=cluster.echo)
        watcher.start()
        cluster.watcher = watcher
        yield cluster
    finally:
        watcher.stop()
        down(layout.state_file, echo=cluster.echo)
    left = leftovers(layout, list(watcher.seen.values()))
    assert left == [], "left behind by the cluster: %s (log %s)" % (
        left, log.name)
    assert watcher.violations == [], watcher.violations
    os.unlink(log.name)
