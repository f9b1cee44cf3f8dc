"""
A local cluster's own CA and certificates (no namespaces, no services):
made in its state directory, readable by root only, one certificate per
part of the cluster saying which part it is, kept when the cluster is
brought up again and issued again only where one is missing or no longer
good; each node's agent.yml names its node's files and the agent accepts
them.
"""

import datetime
import ipaddress
import os
import stat

import pytest
import yaml
from cryptography import x509

from agents.main import load_credentials
from blockmover import ca, tls
from blockmover.certificates import CONTROL, ETCD, NODE, USER, identity
from blockmover.config import load_agent_config
from blockmover.localcluster import ClusterError, trust
from blockmover.localcluster.configs import agent_config
from blockmover.localcluster.layout import make_layout


@pytest.fixture
def layout(tmp_path):
    return make_layout("trusted", 2, "10.98.0", str(tmp_path / "state"))


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _all_files(layout):
    return [trust.operator_files(layout)] + [
        tls.files_in(layout.control_tls_dir, "control")] + [
        trust.node_files(layout, node) for node in layout.nodes]


def _contents(layout):
    return {path: open(path, "rb").read()
            for files in _all_files(layout)
            for path in (files.certificate, files.key, files.ca)}


def test_the_cluster_makes_its_ca_and_a_certificate_per_part(layout):
    made, issued = trust.ensure(layout)
    assert made
    assert sorted(map(str, issued)) == [
        "control", "node node1", "node node2", "user operator"]
    assert layout.tls_dir.startswith(layout.state_dir + "/")
    for directory in [layout.tls_dir, layout.ca_dir, layout.control_tls_dir,
                      layout.operator_tls_dir] + [n.tls_dir
                                                  for n in layout.nodes]:
        assert _mode(directory) == 0o700, directory
    assert _mode(os.path.join(layout.ca_dir, ca.CA_KEY)) == 0o600
    authority = ca.load(layout.ca_dir)
    assert authority.cluster == layout.name
    for files in _all_files(layout):
        assert _mode(files.key) == 0o600, files.key
        credentials = tls.Credentials.load(files, _now())
        assert credentials.ca_certificate == authority.certificate
    assert tls.Credentials.load(trust.operator_files(layout), _now()) \
        .identity == identity(layout.name, USER, trust.OPERATOR)
    for node in layout.nodes:
        assert tls.Credentials.load(trust.node_files(layout, node),
                                    _now()).identity == \
            identity(layout.name, NODE, node.name)


def test_the_control_service_is_certified_for_the_bridge_address(layout):
    trust.ensure(layout)
    control = tls.Credentials.load(
        tls.files_in(layout.control_tls_dir, "control"), _now())
    assert control.identity == identity(layout.name, CONTROL)
    names = control.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(layout.bridge_address)]
    assert layout.control_url == "https://%s:4523" % (layout.bridge_address,)
    assert trust.revocation_list(layout) == os.path.join(layout.ca_dir,
                                                         ca.CRL)


def test_replicas_and_etcd_members_are_certified_for_their_addresses(
        tmp_path):
    layout = make_layout("trusted", 2, "10.98.0", str(tmp_path / "ha"),
                         control_replicas=3)
    made, issued = trust.ensure(layout)
    assert sorted(map(str, issued)) == [
        "control", "etcd etcd1", "etcd etcd2", "etcd etcd3", "node node1",
        "node node2", "user operator"]
    control = tls.Credentials.load(trust.control_files(layout), _now())
    assert control.identity == identity(layout.name, CONTROL)
    names = control.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(address) for address in (
            "10.98.0.1", "10.98.0.254", "10.98.0.253", "10.98.0.252")]
    for member in layout.etcd_members:
        assert _mode(member.tls_dir) == 0o700
        files = trust.etcd_files(layout, member)
        assert _mode(files.key) == 0o600
        credentials = tls.Credentials.load(files, _now())
        assert credentials.identity == identity(layout.name, ETCD,
                                                member.name)
        names = credentials.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.IPAddress) == [
            ipaddress.ip_address(layout.bridge_address)]
    assert trust.ensure(layout) == (False, [])


def test_up_again_keeps_the_ca_and_every_good_certificate(layout):
    trust.ensure(layout)
    before = _contents(layout)
    ca_before = open(os.path.join(layout.ca_dir, ca.CA_KEY), "rb").read()
    assert trust.ensure(layout) == (False, [])
    assert _contents(layout) == before
    assert open(os.path.join(layout.ca_dir, ca.CA_KEY), "rb").read() == \
        ca_before


def test_what_is_missing_or_revoked_is_issued_again(layout):
    trust.ensure(layout)
    node1, node2 = layout.nodes
    os.unlink(trust.node_files(layout, node1).key)
    made, issued = trust.ensure(layout)
    assert not made
    assert issued == [identity(layout.name, NODE, node1.name)]
    tls.Credentials.load(trust.node_files(layout, node1), _now())

    ca.load(layout.ca_dir).revoke(identity(layout.name, NODE, node2.name))
    revoked = open(trust.node_files(layout, node2).certificate).read()
    assert trust.ensure(layout)[1] == [identity(layout.name, NODE,
                                                node2.name)]
    assert open(trust.node_files(layout, node2).certificate).read() != \
        revoked


def test_a_half_made_ca_is_made_again_with_every_certificate(layout):
    # As an ``up`` that crashed between the CA's key and its certificate.
    trust.ensure(layout)
    os.unlink(os.path.join(layout.ca_dir, ca.CA_CERTIFICATE))
    made, issued = trust.ensure(layout)
    assert made and len(issued) == 2 + len(layout.nodes)
    authority = ca.load(layout.ca_dir)
    for files in _all_files(layout):
        assert tls.Credentials.load(files, _now()).ca_certificate == \
            authority.certificate


def test_each_agent_accepts_its_nodes_files(layout):
    trust.ensure(layout)
    for node in layout.nodes:
        config = load_agent_config(yaml.safe_dump(agent_config(layout,
                                                               node)))
        assert config.tls.directory == node.tls_dir
        assert config.control == layout.control_url
        credentials, checked = load_credentials(config, _now())
        assert credentials.identity == identity(layout.name, NODE,
                                                node.name)
        assert checked.cluster == layout.name


def test_operator_credentials_or_a_message_saying_what_to_do(layout):
    trust.ensure(layout)
    assert trust.operator_credentials(layout).identity.kind == USER
    hint = trust.operator_hint(layout)
    assert "--tls-dir %s" % (layout.operator_tls_dir,) in hint
    assert "BLOCKMOVER_TLS_DIR=%s" % (layout.operator_tls_dir,) in hint
    os.unlink(trust.operator_files(layout).key)
    with pytest.raises(ClusterError) as e:
        trust.operator_credentials(layout)
    assert "blockmover cluster up --name trusted" in str(e.value)
