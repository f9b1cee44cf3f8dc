"""
The safety watcher itself, on the acceptance cluster: it must see a
filesystem mounted in two nodes, a process running in two nodes, and a
process running where its volume is not mounted. (Its own mountpoint and
process name, so the session's watcher is not disturbed.)
"""

import os
import sys
import uuid

from acceptance.watcher import SafetyWatcher
from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import processes
from blockmover.localcluster.namespaces import nsenter_argv


def probe_argv(marker):
    # A process whose command line carries the marker, as the server's
    # carries its name.
    return [sys.executable, "-c", "import time; time.sleep(300)", marker]


def test_watcher_sees_every_kind_of_breach(cluster):
    layout = cluster.layout
    marker = "bm-probe-" + uuid.uuid4().hex[:8]
    target = os.path.join(layout.state_dir, "probe-" + marker)
    os.makedirs(target)
    watcher = SafetyWatcher(layout, marker, target)
    node1, node2 = layout.nodes
    started = []
    mounted = []
    try:
        watcher.start()
        watcher.check_once()
        assert watcher.violations == []

        probe = processes.start(
            nsenter_argv(node1) + probe_argv(marker),
            os.path.join(layout.logs_dir, marker + ".out"))
        started.append(probe)
        watcher.violations = []
        for _ in range(50):
            watcher.check_once()
            if watcher.violations:
                break
        assert any("where %s is not mounted" % (target,) in v
                   for v in watcher.violations), watcher.violations

        for node in (node1, node2):
            run(["nsenter", "--mount=" + node.mount_ns, "--",
                 "mount", "-t", "tmpfs", marker, target])
            mounted.append(node)
        started.append(processes.start(
            nsenter_argv(node2) + probe_argv(marker),
            os.path.join(layout.logs_dir, marker + ".out")))
        watcher.violations = []
        for _ in range(50):
            watcher.check_once()
            if any("runs on" in v for v in watcher.violations):
                break
        text = " ".join(watcher.violations)
        assert "mounted on node1, node2 at once" in text, text
        assert "runs on node1, node2 at once" in text, text
    finally:
        watcher.stop()
        for record in started:
            proc.stop(record, processes.STOP_TIMEOUT)
        for node in mounted:
            run(["nsenter", "--mount=" + node.mount_ns, "--",
                 "umount", target])
        os.rmdir(target)
