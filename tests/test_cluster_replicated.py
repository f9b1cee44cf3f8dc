"""
``blockmover cluster up --control-replicas 3`` for real: three etcd members
on the host, healthy to the control service's certificate; three
replicas, each in its own network namespace, electing one leader on them;
the operator's deploy and status reach them through every replica's URL;
one replica's link cut partitions it from etcd and from everyone, and
``up`` mends it; a replica's fence command powers a node off; ``down``
leaves nothing behind.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from blockmover import proc
from blockmover.command import run
from blockmover.localcluster import etcd, processes, state, trust
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.configs import fencing_config
from blockmover.localcluster.deploying import deploy, write_configuration
from blockmover.localcluster.down import down
from blockmover.localcluster.layout import make_layout
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.namespaces import netns_argv, unused_subnet
from blockmover.localcluster.services import (
    control_answers, script, service_env,
)
from blockmover.localcluster.status import local_facts
from blockmover.localcluster.up import up
from blockmover.poll import Backoff, poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="namespaces need root")

# A leader is elected within seconds of the replicas starting; its lease is
# 15 s by default, so this is room for one lost election and more.
ELECTION_TIMEOUT = 60.0


@pytest.fixture
def layout(tmp_path):
    # A unique name and subnet so concurrent runs and a demo never collide.
    layout = make_layout("r" + uuid.uuid4().hex[:6], 1,
                         unused_subnet("10.78"), str(tmp_path / "cluster"),
                         control_replicas=3)
    seen = []
    yield layout, seen
    current = state.load(layout.state_file)
    if current is not None:
        seen += list(current.processes.values())
        down(layout.state_file, echo=lambda line: None)
    assert leftovers(layout, seen) == []


def _replicas_answer(layout, operator, replica):
    return ask_control(replica.url, lambda client: client.get_replicas(),
                       10.0, operator)


def _reaches(netns_path, address, port):
    """
    Whether a TCP connection from inside the network namespace at
    ``netns_path`` to ``address``:``port`` is made within two seconds.
    """
    result = subprocess.run(
        ["nsenter", "--net=" + netns_path, "--", sys.executable, "-c",
         "import socket; socket.create_connection((%r, %d), 2).close()"
         % (address, port)], capture_output=True, timeout=30)
    return result.returncode == 0


def test_three_replicas_on_three_etcd_members(layout):
    layout, seen = layout
    up(layout, echo=lambda line: None)
    current = state.load(layout.state_file)
    seen += list(current.processes.values())
    operator = trust.operator_credentials(layout)

    context = etcd.client_context(trust.control_files(layout))
    for member in layout.etcd_members:
        assert proc.is_running(current.processes[member.name])
        assert etcd.healthy(member.client_url, context), member.name
    for replica in layout.replicas:
        record = current.processes[replica.name]
        assert proc.is_running(record), replica.name
        assert record.pid in [r.pid for r in processes.records_in_netns(
            replica.netns_path)]
        assert control_answers(replica.url, operator)

    # The replicas find each other through etcd: one leads, every one
    # knows which, and each is known at the URL it advertises.
    def elected():
        answer = _replicas_answer(layout, operator, layout.replicas[0])
        return answer if answer["leader"] is not None else None
    answer = poll(elected, ELECTION_TIMEOUT, "a leader",
                  backoff=Backoff(initial=0.2, maximum=2.0))
    assert sorted((r["name"], r["address"]) for r in answer["replicas"]) \
        == [(r.name, r.url) for r in layout.replicas]
    assert answer["leader"]["name"] in [r.name for r in layout.replicas]
    assert sorted(e["endpoint"] for e in answer["etcd"]) == \
        layout.etcd_endpoints
    assert all(e["healthy"] for e in answer["etcd"]), answer["etcd"]
    for replica in layout.replicas[1:]:
        assert _replicas_answer(layout, operator, replica)["leader"][
            "name"] == answer["leader"]["name"]

    facts = local_facts(layout.state_file)
    for replica in layout.replicas:
        assert facts.data["replicas"][replica.name]["running"]
        assert facts.data["replicas"][replica.name]["namespace_present"]
    for member in layout.etcd_members:
        assert facts.data["etcd"][member.name]["running"]

    # The operator's tools are given every replica: a deploy converges
    # (the agent, given them all in agent.yml, polls one), and the local
    # status shows the cluster converged and every process running.
    write_configuration(layout, {}, {})
    with open(os.path.join(layout.logs_dir, "deploy.out"), "w") as output:
        deploy(layout, wait=True, timeout=120, output=output)
    result = subprocess.run(
        [script("blockmover"), "status", "--name", layout.name,
         "--state-dir", layout.state_dir, "--json"], capture_output=True,
        timeout=120, env=service_env(layout))
    assert result.returncode == 0, (result.stdout, result.stderr)
    shown = json.loads(result.stdout)
    assert shown["control"] in layout.control_urls
    assert sorted(shown["local"]["replicas"]) == [
        r.name for r in layout.replicas]
    assert sorted(shown["local"]["etcd"]) == [
        m.name for m in layout.etcd_members]

    # Cut a follower's link: it reaches neither etcd nor its peers, and no
    # client reaches it; the leader leads on and answers. (The acceptance
    # tests cut a leader's.)
    leader = layout.replica(answer["leader"]["name"])
    cut = [r for r in layout.replicas if r != leader][-1]
    member = layout.etcd_members[0]
    etcd_port = int(member.client_url.rsplit(":", 1)[1])
    assert _reaches(cut.netns_path, layout.bridge_address, etcd_port)
    assert _reaches(cut.netns_path, leader.address, layout.control_port)
    run(["ip", "link", "set", "dev", cut.veth, "down"])
    assert not _reaches(cut.netns_path, layout.bridge_address, etcd_port)
    assert not _reaches(cut.netns_path, leader.address, layout.control_port)
    assert not control_answers(cut.url, operator)
    assert proc.is_running(current.processes[cut.name])
    assert _replicas_answer(layout, operator, leader)["leader"]["name"] == \
        leader.name
    assert control_answers(leader.url, operator)

    # up mends the link, and keeps every etcd member and replica running.
    up(layout, echo=lambda line: None)
    again = state.load(layout.state_file).processes
    seen += list(again.values())
    for name in [m.name for m in layout.etcd_members] + [
            r.name for r in layout.replicas]:
        assert again[name] == current.processes[name]
    assert _reaches(cut.netns_path, layout.bridge_address, etcd_port)
    poll(lambda: control_answers(cut.url, operator) or None,
         ELECTION_TIMEOUT, "%s to answer again" % (cut.name,),
         backoff=Backoff(initial=0.2, maximum=2.0))

    # A replica fences a node by the command cluster.yml names, run in its
    # own namespace as the leader runs it: the node's link, the host's,
    # goes down.
    node = layout.nodes[0]
    result = subprocess.run(
        netns_argv(leader.netns_path) + fencing_config(layout)["command"]
        + [node.name, node.address], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ",UP" not in run(["ip", "-o", "link", "show", "dev", node.veth])
    assert node.name in state.load(layout.state_file).powered_off
