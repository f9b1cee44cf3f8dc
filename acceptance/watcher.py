"""
A thread that watches a running cluster for breaches of the safety
invariants: a volume mounted on two nodes at once, an application running
on two nodes at once, or running on a node where its volume is not
mounted. It looks at the kernel directly, every few tens of milliseconds:
each node's mount table through a sentinel process inside the node, and
which application processes run in which node's network namespace.
"""

import os
import threading
import time

from blockmover import proc
from blockmover.localcluster import processes
from blockmover.localcluster.state import ProcessRecord
from blockmover.mountinfo import process_mounts

INTERVAL = 0.05


def _netns_id(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


class SafetyWatcher(object):
    """
    Watches the nodes of ``layout`` for the application whose command line
    contains ``marker`` and whose volume is mounted at ``mountpoint``.
    ``violations`` lists what it saw go wrong; ``seen`` every application
    process it saw (as ``ProcessRecord``), so a test can check none is
    left.
    """
    def __init__(self, layout, marker, mountpoint):
        self.layout = layout
        self.marker = marker
        self.mountpoint = mountpoint
        self.violations = []
        self.seen = {}
        self.checks = 0
        self._stop = threading.Event()
        self._sentinels = {}
        self._thread = None

    def start(self):
        for node in self.layout.nodes:
            # In the node's mount namespace only: a node powered off (every
            # process in its network namespace killed) is still watched.
            self._sentinels[node.name] = processes.start(
                ["nsenter", "--mount=" + node.mount_ns, "--", "sleep",
                 "86400"],
                os.path.join(self.layout.logs_dir,
                             "sentinel-%s.out" % (node.name,)))
        self._netns = {_netns_id(node.netns_path): node.name
                       for node in self.layout.nodes}
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="safety-watcher")
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for record in self._sentinels.values():
            proc.stop(record, processes.STOP_TIMEOUT)

    # --- what is where -----------------------------------------------

    def mounted_on(self, node):
        """
        Whether the watched mountpoint is mounted in ``node``'s namespace.
        """
        sentinel = self._sentinels[node]
        if not proc.is_running(sentinel):
            raise RuntimeError("the sentinel of %s died" % (node,))
        return any(m.mountpoint == self.mountpoint
                   for m in process_mounts(sentinel.pid))

    def running(self):
        """
        ``{node: [ProcessRecord]}`` of the application processes in each
        node.
        """
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open("/proc/%d/cmdline" % (pid,), "rb") as f:
                    if self.marker.encode() not in f.read():
                        continue
                node = self._netns.get(_netns_id("/proc/%d/ns/net" % (pid,)))
            except (FileNotFoundError, ProcessLookupError):
                continue
            process = proc.find(pid)
            if node is None or process is None:
                continue
            record = ProcessRecord(pid=pid, start_time=process.start_time)
            found.setdefault(node, []).append(record)
            self.seen[(pid, process.start_time)] = record
        return found

    # --- the checks --------------------------------------------------------

    def _breach(self, text):
        self.violations.append("%.3f %s" % (time.time(), text))

    def check_once(self):
        running = self.running()
        mounted = [n for n in self._sentinels if self.mounted_on(n)]
        if len(mounted) > 1:
            # Confirm: the first node still holds it after the others were
            # read, so the mounts overlapped in time.
            if self.mounted_on(mounted[0]):
                self._breach("%s mounted on %s at once"
                             % (self.mountpoint, ", ".join(mounted)))
        live = {node: [r for r in records if proc.is_running(r)]
                for node, records in running.items()}
        live = {node: records for node, records in live.items() if records}
        if len(live) > 1:
            self._breach("%s runs on %s at once"
                         % (self.marker, ", ".join(sorted(live))))
        for node, records in live.items():
            if node not in mounted:
                # Read the mounts before asking again whether it still runs:
                # running before and after an unmounted look means it ran
                # without its volume.
                if not self.mounted_on(node) and any(
                        proc.is_running(r) for r in records):
                    self._breach("%s runs on %s where %s is not mounted"
                                 % (self.marker, node, self.mountpoint))
        self.checks += 1

    def _run(self):
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception as e:
                # Any failure to look is a failure of the test, never
                # silently a pass.
                self._breach("watcher could not look: %r" % (e,))
            self._stop.wait(INTERVAL)
