"""
Moves between sites on local clusters of two sites, node1 in site east and
node2 in site west: two loopback sites, two regions of the emulated cloud,
and a loopback site beside an emulated cloud's region. A move between
sites pushes MongoDB's volume agent to agent while it runs, stops it for a
last round checked by both sides' digests, and starts it on the target.

- MongoDB moved there and back with a writer running: every acknowledged
  write is there, no two nodes acknowledged at once, the old node refuses
  connections, and the volume left behind is kept and listed.
- (loopback sites) The source agent, the target agent and the control
  service each killed while the push runs its rounds and while it is in
  its last round: restarted, the move completes, decided once.
- A push into a site whose quota is spent is refused before MongoDB
  stops, with the reason.

The safety watcher looks the whole time: the volume mounted, and the
server running, on at most one node at every moment.
"""

import itertools
import json
import os
import subprocess
import sys
import tempfile
import uuid

import pytest
import yaml

from acceptance.clusters import WatchedCluster, watched
from blockmover import proc
from blockmover.identity import dataset_id, is_incoming
from blockmover.localcluster import state, trust
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.database import (
    application, checksum, read_documents, refuses_connections,
    wait_for_server, write_documents,
)
from blockmover.localcluster.deploying import (
    app_yml_path, deploy, deploy_argv, write_configuration,
)
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.namespaces import unused_subnet
from blockmover.localcluster.services import CONTROL, agent_key, service_env
from blockmover.localcluster.status import control_state
from blockmover.localcluster.up import up
from blockmover.localcluster.writer import (
    Writer, lost, overlapping, read_writes,
)
from blockmover.model import Volume
from blockmover.poll import Backoff, poll

APP = "mongodb"
# Random data written into the volume, so that a push has blocks to send
# while something can happen to it.
FILL_MB = 48
# cluster.yml's cap on a push, for the tests that kill something while a
# push runs: its first round then takes a few seconds.
SLOW_PUSH = "12M"
MOVE_WITHIN = 240.0
_WRITERS = itertools.count(1)
BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")

SITES = {
    "loopback": [("east", "loopback"), ("west", "loopback")],
    "openstack": [("east", "openstack"), ("west", "openstack")],
    "loopback-to-openstack": [("east", "loopback"), ("west", "openstack")],
}


class SiteCluster(WatchedCluster):
    def __init__(self, layout, log_path):
        WatchedCluster.__init__(self, layout, log_path)
        self.app = application(os.path.join(layout.state_dir, "data", APP))

    @property
    def kind(self):
        return ",".join("%s=%s" % s for s in sorted(self.layout.sites
                                                     .items()))

    def configure(self, node, push=None, limits=None, others=None):
        """
        Place MongoDB on ``node``; ``push`` is cluster.yml's
        ``cluster.push``, ``limits`` site -> that site's backend limits,
        ``others`` name -> (app.yml entry, node) of more applications.
        """
        others = others or {}
        applications = {APP: self.app}
        applications.update({n: a for n, (a, _) in others.items()})
        placement = {APP: node}
        placement.update({n: where for n, (_, where) in others.items()})
        write_configuration(self.layout, applications, placement)
        if push is None and limits is None:
            return
        with open(self.layout.cluster_yml) as f:
            config = yaml.safe_load(f)
        if push is not None:
            config["cluster"]["push"] = push
        for site, site_limits in (limits or {}).items():
            config["cluster"]["sites"][site]["backend"]["limits"] = \
                site_limits
        with open(self.layout.cluster_yml, "w") as f:
            yaml.safe_dump(config, f)

    def place(self, node, wait=True, **configuration):
        self.configure(node, **configuration)
        with open(self.log_path, "a") as output:
            deploy(self.layout, wait=wait, timeout=MOVE_WITHIN,
                   output=output)

    def deploy_result(self):
        """
        ``blockmover-deploy`` of the files as they are, not waiting: its
        exit code and output.
        """
        return subprocess.run(
            deploy_argv(self.layout) + [self.layout.cluster_yml,
                                        app_yml_path(self.layout)],
            capture_output=True, text=True, env=service_env(self.layout),
            timeout=120)

    def state(self):
        answer = control_state(self.layout.control_url,
                               trust.operator_credentials(self.layout))
        assert answer is not None, "the control service does not answer"
        return answer

    def wait(self, check, what, deadline=MOVE_WITHIN):
        return poll(lambda: (lambda s: s if check(s) else None)(
            self.state()), deadline, what, Backoff(initial=0.1,
                                                   maximum=0.5))

    def push(self, answer):
        return (answer.get("pushes") or {}).get(APP)

    def fill(self, node):
        """
        Write ``FILL_MB`` of random data into MongoDB's volume on ``node``.
        """
        path = os.path.join(self.app["volume"]["mountpoint"], "filler")
        subprocess.run(
            ["nsenter", "--mount=" + self.node(node).mount_ns, "--",
             "dd", "if=/dev/urandom", "of=" + path, "bs=1M",
             "count=%d" % (FILL_MB,), "conv=fsync", "status=none"],
            check=True, timeout=120)

    def kill(self, key):
        record = state.load(self.layout.state_file).processes[key]
        proc.kill(record)
        self.echo("killed %s (pid %d)" % (key, record.pid))

    def restart(self):
        up(self.layout, echo=self.echo)

    def volume_command(self, *args):
        return subprocess.run(
            [BLOCKMOVER, "volume"] + list(args) + [
                "--control", self.layout.control_url, "--tls-dir",
                self.layout.operator_tls_dir],
            capture_output=True, text=True, timeout=120)

    def pushes_logged(self):
        """
        What the control service logged of pushes, a line each.
        """
        lines = []
        with open(self.layout.control_log) as f:
            for line in f:
                if '"blockmover:control:push' in line:
                    entry = json.loads(line)
                    lines.append("%.1f %s %s" % (
                        entry["timestamp"], entry.get("push_id"),
                        entry.get("phase") or entry["message_type"]))
        return "\n".join(lines)

    def listed(self):
        """
        The control service's listing of every site's volumes.
        """
        answer = ask_control(self.layout.control_url,
                             lambda client: client.get_volumes(), 10.0,
                             trust.operator_credentials(self.layout))
        return [Volume.create(v) for v in answer["volumes"]]


@pytest.fixture(scope="module", params=sorted(SITES))
def sites(request):
    if os.geteuid() != 0:
        pytest.skip("the acceptance tests need root: namespaces, loop "
                    "devices and mounts")
    name = "s" + uuid.uuid4().hex[:6]
    layout = make_layout(name, 2, unused_subnet("10.84"),
                         os.path.join(tempfile.gettempdir(),
                                      "blockmover-sites-" + name),
                         backend="openstack", attach_latency=1.0,
                         detach_latency=1.0, sites=SITES[request.param])
    with watched(SiteCluster, layout, "sites") as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def safe_throughout(sites):
    yield
    assert sites.watcher.violations == [], sites.watcher.violations


def _serving_on(node):
    def check(answer):
        app = answer["applications"].get(APP) or {}
        return app.get("running_on") == [node] and node in app.get(
            "ready_on", [])
    return check


def _mongodb_in(listing, cluster_name, site):
    """
    The volumes of MongoDB's dataset in ``site``.
    """
    dataset = dataset_id(cluster_name, APP)
    return [v for v in listing if v.dataset_id == dataset and v.site == site]


def _move_with_writers(sites, source, target):
    """
    Move MongoDB from ``source`` to ``target`` with a writer on each
    address; return both writers' acknowledgements.
    """
    # Each writer's ids are its own: the documents of earlier writers
    # travel with the volume.
    old = Writer(sites.node(source).address,
                 first_id=next(_WRITERS) * 10 ** 6).start()
    new = Writer(sites.node(target).address,
                 first_id=next(_WRITERS) * 10 ** 6).start()
    try:
        poll(lambda: True if len(old.acknowledged) >= 20 else None, 60,
             "the writer's first acknowledged writes on %s" % (source,))
        sites.place(target)
        poll(lambda: True if new.acknowledged else None, 60,
             "a write acknowledged on %s" % (target,))
    finally:
        old.stop()
        new.stop()
    return old.acknowledged, new.acknowledged


def test_there_and_back_with_a_writer(sites):
    sites.place("node1")
    node1, node2 = sites.node("node1"), sites.node("node2")
    wait_for_server(node1.address)
    write_documents(node1.address, 200)
    documents = checksum(read_documents(node1.address))

    old, new = _move_with_writers(sites, "node1", "node2")
    assert lost(old + new, read_writes(node2.address)) == []
    assert overlapping(old, new) == []
    assert checksum(read_documents(node2.address)) == documents
    assert refuses_connections(node1.address)
    answer = sites.wait(_serving_on("node2"), "MongoDB ready on node2")
    push = sites.push(answer)
    assert (push["phase"], push["source_site"], push["target_site"]) == (
        "committed", "east", "west")
    # The volume it left in site east is kept, detached, never data.
    listing = sites.listed()
    [kept] = _mongodb_in(listing, sites.layout.name, "east")
    [data] = _mongodb_in(listing, sites.layout.name, "west")
    assert kept.attached_to is None and not is_incoming(kept)
    assert int(data.metadata["blockmover-generation"]) == 1
    # blockmover volume list shows it to the operator.
    listed = sites.volume_command("list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [shown] = [v for v in json.loads(listed.stdout)["volumes"]
               if v["volume_id"] == kept.volume_id]
    assert (shown["site"], shown["application"], shown["reason"]) == (
        "east", APP, "left")

    # And back: into the volume site east kept.
    old, new = _move_with_writers(sites, "node2", "node1")
    assert lost(old + new, read_writes(node1.address)) == []
    assert overlapping(old, new) == []
    assert checksum(read_documents(node1.address)) == documents
    assert refuses_connections(node2.address)
    listing = sites.listed()
    [back] = _mongodb_in(listing, sites.layout.name, "east")
    assert back.volume_id == kept.volume_id
    assert int(back.metadata["blockmover-generation"]) == 2
    [left] = _mongodb_in(listing, sites.layout.name, "west")
    assert left.attached_to is None


def _kill_during(sites, killed, phase):
    """
    Move MongoDB from where it is to the other node, slowly, kill the
    process ``key_of(source, target)`` names once the push is in ``phase``
    (with bytes sent, while live), restart it, and check the move
    completes with every document, decided once.
    """
    answer = sites.state()
    source = answer["applications"][APP]["running_on"][0]
    target = "node2" if source == "node1" else "node1"
    sites.fill(source)
    write_documents(sites.node(source).address, 50)
    documents = checksum(read_documents(sites.node(source).address))
    sites.place(target, wait=False, push={"bandwidth": SLOW_PUSH})

    def reached(answer):
        push = sites.push(answer)
        if push is None or push["target_node"] != target:
            return False
        progress = push.get("source_progress") or {}
        if phase == "live":
            return push["phase"] == "live" and progress.get("bytes_sent")
        return push["phase"] == "final"
    answer = sites.wait(reached, "the push to reach its %s phase" % (phase,))
    push_id = sites.push(answer)["push_id"]
    sites.kill({"source-agent": agent_key(sites.node(source)),
                "target-agent": agent_key(sites.node(target)),
                "control": CONTROL}[killed])
    sites.restart()
    answer = sites.wait(_serving_on(target), "MongoDB ready on %s"
                        % (target,))
    push = sites.push(answer)
    assert (push["push_id"], push["phase"]) == (push_id, "committed"), \
        sites.pushes_logged()
    assert checksum(read_documents(sites.node(target).address)) == documents
    assert refuses_connections(sites.node(source).address)
    # Leave the cluster as quick to move as it was.
    sites.place(target)


@pytest.mark.parametrize("sites", ["loopback"], indirect=True)
@pytest.mark.parametrize("phase", ["live", "final"])
@pytest.mark.parametrize("killed", ["source-agent", "target-agent",
                                    "control"])
def test_killed_mid_push(sites, killed, phase):
    answer = sites.state()
    if not answer["applications"].get(APP, {}).get("running_on"):
        sites.place("node1")
    _kill_during(sites, killed, phase)


def _sleeper(sites, name):
    # An application of its own (not the watched MongoDB) with a volume.
    return {"command": ["sleep", "100000"],
            "volume": {"mountpoint": os.path.join(
                sites.layout.state_dir, "data", name),
                "maximum_size": "64M"}}


def test_a_push_into_a_full_site_is_refused_before_anything_stops(sites):
    where = (sites.state()["applications"].get(APP) or {}).get(
        "running_on") or ["node1"]
    # keeper holds a volume in site west; mover runs in site east.
    others = {"keeper": (_sleeper(sites, "keeper"), "node2"),
              "mover": (_sleeper(sites, "mover"), "node1")}
    sites.place(where[0], others=others)
    held = sites.state()["sites"]["west"]["volumes"]
    assert held >= 1
    # Site west may hold no more volumes than it does: mover's push would
    # make one more.
    others["mover"] = (others["mover"][0], "node2")
    sites.configure(where[0], others=others,
                    limits={"west": {"region_volumes": held}})
    result = sites.deploy_result()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "site west" in output and "region_volumes" in output, output
    answer = sites.state()
    assert answer["applications"]["mover"]["running_on"] == ["node1"]
    assert "mover" not in (answer.get("pushes") or {})
    # Back as it was: the sleepers stop, their volumes stay until down.
    sites.place(where[0])
