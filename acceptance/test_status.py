"""
``blockmover status`` of the acceptance cluster, run as a user runs it:
``--watch --json`` follows MongoDB through the phases of a real move from
one node to the other until it converged, and ends on Ctrl-C; the tables
show the nodes, where it runs and the local cluster's processes after.
On the OpenStack emulator, an attach the cloud holds up shows as a move in
its attach phase and, once it lasts, as stuck.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from acceptance.moving import APP, MongoDB
from blockmover import status
from blockmover.localcluster.deploying import deploy, write_configuration
from blockmover.poll import Backoff, poll

BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")
# Every phase a move may show.
PHASES = {"stop", "unmount", "detach", "create", "attach", "mkfs", "mount",
          "grow", "growfs", "start", "ready", status.WAITING, status.PENDING}
# How long the cloud holds the attach in the stuck test: long enough to
# look at it, well within a deploy's patience.
HANG = 20.0


def local(layout):
    return ["--name", layout.name, "--state-dir", layout.state_dir]


def blockmover_status(*args):
    return subprocess.run([BLOCKMOVER, "status"] + list(args),
                          capture_output=True, text=True, timeout=120)


class Watch(object):
    """
    ``blockmover status ARGS --watch --json`` running, each JSON object it
    prints decoded as it comes.
    """

    def __init__(self, args):
        self.looks = []
        self.errors = None
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [BLOCKMOVER, "status", "--watch", "--json"] + list(args),
            stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.looks.append(json.loads(line))

    def wait_for(self, seen, what, deadline=240):
        return poll(lambda: next((look for look in list(self.looks)
                                  if seen(look)), None),
                    deadline, what, Backoff(initial=0.05, maximum=0.5))

    def interrupt(self):
        """
        Ctrl-C (SIGINT, by its pid); its exit status.
        """
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(30)
        self._reader.join(10)
        return code

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.seek(0)
        self.errors = self._stderr.read()
        self._stderr.close()


def rows(shown, header):
    start = [line.split()[:1] for line in shown].index([header])
    found = {}
    for line in shown[start + 1:]:
        if not line:
            break
        first, *rest = line.split()
        found[first] = rest
    return found


def _placed_on(node):
    def placed(look):
        app = (look.get("applications") or {}).get(APP)
        return (look.get("converged") and app is not None
                and app["running_on"] == [node] and app["ready"])
    return placed


def _settled(result):
    """
    ``result`` of a ``blockmover status`` once it says converged (exit 0) or
    failed outright (exit 2 and up); None while it says converging.
    """
    return None if result.returncode == 1 else result


def test_status_follows_a_move(cluster):
    layout = cluster.layout
    mongodb = MongoDB(cluster)
    mongodb.start("node1")
    source, target = "node1", mongodb.other().name
    watch = Watch(local(layout))
    try:
        first = watch.wait_for(lambda look: True, "a first look")
        assert first["local"]["nodes"]["node1"]["namespace_present"]
        mongodb.submit(target)
        watch.wait_for(_placed_on(target), "the move to show converged")
        assert watch.interrupt() == 0
    finally:
        watch.stop()
    assert watch.errors == ""
    moves = [move for look in watch.looks for move in look["moves"]
             if move["application"] == APP]
    assert moves, "no look showed the move"
    assert {move["phase"] for move in moves} <= PHASES, moves
    assert all(move["to"] == target for move in moves), moves
    assert any(move["from"] == [source] for move in moves), moves
    mongodb.check_on(target, source)

    # Once moved: the tables, with the local cluster's lines first. The
    # listing catching up with the move may hand the target a new slice to
    # look at for a moment, when the status says "converging" (exit 1).
    result = poll(lambda: _settled(blockmover_status(*local(layout))), 30,
                  "status to say converged", Backoff(initial=0.2,
                                                     maximum=1.0))
    assert result.returncode == 0, result.stdout + result.stderr
    shown = result.stdout.splitlines()
    assert "  %s %s: namespace present, agent running (pid" % (
        target, layout.node(target).address) in result.stdout
    assert rows(shown, "NODE")[target][:2] == [
        layout.node(target).address, "converged"]
    assert rows(shown, "APPLICATION")[APP][:3] == [target, target, "yes"]
    assert "no moves in progress" in shown and "nothing stuck" in shown
    # Any cluster's status, asked as its operator from anywhere.
    result = blockmover_status("--control", layout.control_url,
                               "--tls-dir", layout.operator_tls_dir,
                               "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "local" not in data
    assert data["applications"][APP]["running_on"] == [target]
    assert data["nodes"][target]["address"] == layout.node(target).address


@pytest.mark.parametrize("cluster", ["openstack"], indirect=True)
def test_a_held_up_attach_is_stuck(cluster):
    layout = cluster.layout
    name = "held"
    apps = {name: {"command": ["sleep", "100000"],
                   "volume": {"mountpoint": os.path.join(
                       layout.state_dir, "data", name),
                       "maximum_size": "1G"}}}
    write_configuration(layout, apps, {name: "node1"})
    with open(cluster.log_path, "a") as output:
        deploy(layout, timeout=240, output=output)
    cloud = cluster.cloud()
    cloud.set_faults({"stuck": [{
        "operation": "attach", "seconds": HANG, "count": 1,
        "name": "blockmover-%s-%s" % (layout.name, name),
        "server": "node2"}]})
    try:
        write_configuration(layout, apps, {name: "node2"})
        with open(cluster.log_path, "a") as output:
            deploy(layout, wait=False, output=output)

        def stuck():
            result = blockmover_status(*local(layout), "--json",
                                       "--stuck-after", "3")
            data = json.loads(result.stdout)
            found = [s for s in data["stuck"] if s["application"] == name]
            return (result, data, found) if found else None
        result, data, found = poll(stuck, HANG, "the attach to be stuck",
                                   Backoff(initial=0.5, maximum=1.0))
        assert result.returncode == 1
        [move] = data["moves"]
        assert (move["application"], move["phase"], move["node"]) == (
            name, "attach", "node2")
        assert move["seconds"] >= 3
        assert [(s["reason"], s["node"]) for s in found] == [
            (status.SLOW, "node2")]
        assert found[0]["detail"].startswith("attach running for ")
        assert "waiting for the backend to attach the volume" in \
            found[0]["detail"]
        shown = blockmover_status(*local(layout), "--stuck-after",
                                  "3").stdout.splitlines()
        [headline] = [line for line in shown
                      if line.startswith("cluster %s at " % (layout.name,))]
        assert ", 1 stuck" in headline
        assert rows(shown, "STUCK")[name][:2] == ["node2", "slow"]
        # The hold was the cloud's own, and the move ends after it.
        with open(cluster.log_path, "a") as output:
            deploy(layout, timeout=240, output=output)
        assert cloud.faults()["stuck"][0]["count"] == 0
    finally:
        cloud.clear_faults()
    result = blockmover_status(*local(layout), "--json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["stuck"] == []
