"""
A local cluster whose control service runs as replicas on etcd, on paper:
where each replica and etcd member lives (addresses, namespaces, ports,
directories), what the files and command lines the cluster writes say of
them, the state file that records them and the local status that lists
them. Nothing here makes a namespace or starts a process.
"""

import ipaddress
import json
import os

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from blockmover.cli import parser
from blockmover.config import load_agent_config, load_deployment
from blockmover.localcluster import ClusterError, state
from blockmover.localcluster.configs import (
    agent_config, cluster_config, fencing_config,
)
from blockmover.localcluster.deploying import deploy_argv
from blockmover.localcluster.layout import (
    CONTROL_REPLICAS, IFNAMSIZ, MAX_NODES, make_layout,
)
from blockmover.localcluster.services import (
    CONTROL, etcd_argv, output_path, replica_argv,
)
from blockmover.localcluster.status import local_facts
from blockmover.localcluster.trust import etcd_files, revocation_list
from blockmover.localcluster.up import wanted_services
from blockmover.model import to_data

SUBNET = "10.91.4"


def replicated(tmp_path, name="ha", nodes=2, replicas=3, **kwargs):
    return make_layout(name, nodes, SUBNET, str(tmp_path / "state"),
                       control_replicas=replicas, **kwargs)


def _option(argv, name):
    return argv[argv.index(name) + 1]


# --- the layout -------------------------------------------------------------

def test_each_replica_has_its_namespace_address_url_and_files(tmp_path):
    layout = replicated(tmp_path)
    assert layout.replicated and layout.control_replicas == 3
    assert [(r.name, r.address, r.url, r.netns) for r in layout.replicas] \
        == [("control%d" % k, "10.91.4.%d" % (255 - k),
             "https://10.91.4.%d:4523" % (255 - k), "bm-ha-control%d" % k)
            for k in (1, 2, 3)]
    for replica in layout.replicas:
        assert replica.netns_path == "/run/netns/" + replica.netns
        assert len(replica.veth) <= IFNAMSIZ
        assert replica.output == output_path(layout, replica.name)
        for path in (replica.state_dir, replica.log, replica.output):
            assert path.startswith(layout.state_dir + "/")
    for what in ("veth", "state_dir", "log", "output", "address", "netns"):
        values = [getattr(r, what) for r in layout.replicas]
        assert len(set(values)) == 3, what
    assert layout.replica("control2") == layout.replicas[1]
    with pytest.raises(ClusterError) as raised:
        layout.replica("control9")
    assert "has no control replica 'control9'" in str(raised.value)


def test_each_etcd_member_listens_on_the_bridge_at_ports_of_its_own(
        tmp_path):
    layout = replicated(tmp_path, replicas=5)
    members = layout.etcd_members
    assert [m.name for m in members] == ["etcd%d" % k for k in range(1, 6)]
    ports = [layout.control_port, layout.cloud_port]
    for member in members:
        for url in (member.client_url, member.peer_url):
            assert url.startswith("https://%s:" % (layout.bridge_address,))
            ports.append(int(url.rsplit(":", 1)[1]))
        assert member.data_dir.startswith(layout.state_dir + "/")
        assert member.tls_dir.startswith(layout.tls_dir + "/")
        assert member.output == output_path(layout, member.name)
    assert len(set(ports)) == len(ports)
    assert layout.etcd_endpoints == [m.client_url for m in members]
    assert layout.etcd_initial_cluster == ",".join(
        "%s=%s" % (m.name, m.peer_url) for m in members)


@settings(max_examples=30, deadline=None)
@given(nodes=st.integers(1, MAX_NODES),
       replicas=st.sampled_from(CONTROL_REPLICAS))
def test_no_address_is_used_twice(tmp_path_factory, nodes, replicas):
    layout = make_layout("ha", nodes, SUBNET,
                         str(tmp_path_factory.mktemp("state")),
                         control_replicas=replicas)
    addresses = [layout.bridge_address] + [n.address for n in layout.nodes] \
        + [r.address for r in layout.replicas]
    assert len(set(addresses)) == len(addresses)
    network = ipaddress.ip_network(SUBNET + ".0/24")
    for address in addresses:
        address = ipaddress.ip_address(address)
        assert address in network and address not in (
            network.network_address, network.broadcast_address)
    interfaces = [layout.bridge] + [n.veth for n in layout.nodes] + [
        r.veth for r in layout.replicas]
    assert len(set(interfaces)) == len(interfaces)
    netns = [n.netns for n in layout.nodes] + [
        r.netns for r in layout.replicas] + [layout.host_netns]
    assert len(set(netns)) == len(netns)


def test_one_replica_is_the_control_service_of_before(tmp_path):
    layout = make_layout("one", 2, SUBNET, str(tmp_path / "state"))
    assert layout == make_layout("one", 2, SUBNET, str(tmp_path / "state"),
                                 control_replicas=1)
    assert not layout.replicated and layout.control_replicas == 1
    assert list(layout.replicas) == [] and list(layout.etcd_members) == []
    url = "https://%s.1:4523" % (SUBNET,)
    assert (layout.control_url, layout.control, layout.control_urls,
            layout.control_option) == (url, url, [url], url)
    assert layout.control_addresses == [layout.bridge_address]
    assert [key for key, _ in wanted_services(
        state.ClusterState(layout=layout))] == [
            CONTROL, "agent-node1", "agent-node2"]


@pytest.mark.parametrize("count", [0, 2, 4, 6, -1])
def test_only_an_odd_number_of_replicas_is_taken(tmp_path, count):
    with pytest.raises(ClusterError) as raised:
        replicated(tmp_path, replicas=count)
    assert str(raised.value).startswith(
        "a local cluster runs 1, 3 or 5 control replicas, not %d" % (count,))


def test_cluster_up_takes_1_3_or_5_replicas(capsys):
    assert parser().parse_args(["cluster", "up"]).control_replicas == 1
    assert parser().parse_args(
        ["cluster", "up", "--control-replicas", "3"]).control_replicas == 3
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(["cluster", "up", "--control-replicas", "2"])
    assert raised.value.code == 2
    assert "--control-replicas: invalid choice: 2 (choose from 1, 3, 5)" \
        in capsys.readouterr().err


def test_a_port_that_leaves_etcd_no_room_is_refused(tmp_path):
    with pytest.raises(ClusterError) as raised:
        replicated(tmp_path, control_port=65530)
    assert "give a --port up to 65512" in str(raised.value)


def test_replicas_have_urls_the_one_service_has_none(tmp_path):
    layout = replicated(tmp_path)
    urls = ["https://10.91.4.254:4523", "https://10.91.4.253:4523",
            "https://10.91.4.252:4523"]
    assert layout.control_urls == urls == layout.control
    assert layout.control_option == ",".join(urls)
    assert layout.control_addresses == ["10.91.4.1", "10.91.4.254",
                                        "10.91.4.253", "10.91.4.252"]
    with pytest.raises(ClusterError) as raised:
        layout.control_url
    assert str(raised.value) == (
        "cluster ha runs 3 control replicas, each at its own URL (%s): use "
        "them all" % (", ".join(urls),))


# --- what the cluster writes and runs ---------------------------------------

def test_cluster_yml_and_agent_yml_name_every_replica(tmp_path):
    layout = replicated(tmp_path)
    assert cluster_config(layout)["cluster"]["control"] == \
        layout.control_urls
    for node in layout.nodes:
        assert agent_config(layout, node)["control"] == layout.control_urls
    one = make_layout("one", 2, SUBNET, str(tmp_path / "one"))
    assert cluster_config(one)["cluster"]["control"] == one.control_url
    assert agent_config(one, one.nodes[0])["control"] == one.control_url


def test_the_files_read_as_naming_every_replica(tmp_path):
    layout = replicated(tmp_path)
    deployment = load_deployment(
        yaml.safe_dump(cluster_config(layout)),
        "version: 1\napplications: {}\n")
    assert list(deployment.control_urls) == layout.control_urls
    for node in layout.nodes:
        config = load_agent_config(yaml.safe_dump(agent_config(layout,
                                                               node)))
        assert list(config.control_urls) == layout.control_urls


def test_the_operators_commands_name_every_replica(tmp_path):
    layout = replicated(tmp_path)
    assert _option(deploy_argv(layout), "--control") == \
        ",".join(layout.control_urls)


def test_a_replicas_fence_runs_where_the_nodes_links_are(tmp_path):
    layout = replicated(tmp_path)
    command = fencing_config(layout)["command"]
    assert command[:3] == ["nsenter", "--net=" + layout.host_netns_path,
                           "--"]
    assert layout.host_netns_path == "/run/netns/bm-ha-host"
    assert command[4:] == ["cluster", "power", "--name", "ha",
                           "--state-dir", layout.state_dir, "off"]
    # One control service runs on the host already.
    one = make_layout("one", 2, SUBNET, str(tmp_path / "one"))
    assert fencing_config(one)["command"] == [command[3]] + [
        "cluster", "power", "--name", "one", "--state-dir", one.state_dir,
        "off"]


def test_a_replica_runs_in_its_namespace_on_every_etcd_member(tmp_path):
    layout = replicated(tmp_path)
    replica = layout.replicas[1]
    argv = replica_argv(layout, replica)
    assert argv[:3] == ["nsenter", "--net=" + replica.netns_path, "--"]
    assert os.path.basename(argv[3]) == "blockmover-control"
    assert _option(argv, "--listen") == "tcp:4523:interface=10.91.4.253"
    assert _option(argv, "--etcd") == ",".join(layout.etcd_endpoints)
    assert _option(argv, "--replica-name") == "control2"
    assert _option(argv, "--advertise") == "https://10.91.4.253:4523"
    assert _option(argv, "--state-dir") == replica.state_dir
    assert _option(argv, "--log") == replica.log
    assert _option(argv, "--tls-dir") == layout.control_tls_dir
    assert _option(argv, "--crl") == revocation_list(layout)


def test_an_etcd_member_runs_on_its_certificate(tmp_path):
    layout = replicated(tmp_path)
    member = layout.etcd_members[2]
    argv = etcd_argv(layout, member)
    files = etcd_files(layout, member)
    assert argv[0] == "/usr/bin/etcd"
    assert _option(argv, "--name") == "etcd3"
    assert _option(argv, "--data-dir") == member.data_dir
    assert _option(argv, "--listen-client-urls") == member.client_url
    assert _option(argv, "--advertise-client-urls") == member.client_url
    assert _option(argv, "--listen-peer-urls") == member.peer_url
    assert _option(argv, "--initial-cluster") == layout.etcd_initial_cluster
    for option in ("--cert-file", "--peer-cert-file"):
        assert _option(argv, option) == files.certificate
    for option in ("--key-file", "--peer-key-file"):
        assert _option(argv, option) == files.key
    for option in ("--trusted-ca-file", "--peer-trusted-ca-file"):
        assert _option(argv, option) == files.ca
    for option in ("--client-crl-file", "--peer-crl-file"):
        assert _option(argv, option) == revocation_list(layout)
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    assert files.certificate.startswith(member.tls_dir + "/")


def test_etcd_starts_before_the_replicas_and_they_before_the_agents(
        tmp_path):
    layout = replicated(tmp_path)
    current = state.ClusterState(layout=layout)
    assert [key for key, _ in wanted_services(current)] == [
        "etcd1", "etcd2", "etcd3", "control1", "control2", "control3",
        "agent-node1", "agent-node2"]
    cloud = replicated(tmp_path, backend="openstack")
    assert [key for key, _ in wanted_services(
        state.ClusterState(layout=cloud))][:2] == ["cloud", "etcd1"]


# --- the state file and the local status ------------------------------------

def test_the_state_file_keeps_the_replicas(tmp_path):
    layout = replicated(tmp_path)
    state.save(state.ClusterState(layout=layout))
    assert state.load(layout.state_file).layout == layout


def test_a_state_file_of_before_is_one_control_service(tmp_path):
    layout = make_layout("old", 2, SUBNET, str(tmp_path / "state"))
    data = to_data(state.ClusterState(layout=layout))
    del data["layout"]["replicas"], data["layout"]["etcd_members"]
    os.makedirs(layout.state_dir)
    with open(layout.state_file, "w") as f:
        json.dump(data, f)
    loaded = state.load(layout.state_file).layout
    assert loaded == layout and not loaded.replicated


def test_local_status_lists_each_replica_and_etcd_member(tmp_path):
    layout = replicated(tmp_path)
    state.save(state.ClusterState(layout=layout))
    facts = local_facts(layout.state_file)
    assert not facts.healthy
    for replica in layout.replicas:
        assert "  %s %s: namespace MISSING, not started" % (
            replica.name, replica.url) in facts.lines
        assert facts.data["replicas"][replica.name] == {
            "url": replica.url, "address": replica.address,
            "namespace": replica.netns, "namespace_present": False,
            "pid": None, "running": False}
    for member in layout.etcd_members:
        assert "  %s %s: not started" % (member.name, member.client_url) \
            in facts.lines
        assert facts.data["etcd"][member.name] == {
            "url": member.client_url, "pid": None, "running": False}
    assert "control" not in facts.data["processes"]
    assert not any(line.startswith("  control https://")
                   for line in facts.lines)
