"""
The running cluster is the secure one: its control service speaks only
mutual TLS with certificates of the cluster's own CA. A client without a
certificate, with plain HTTP or with a certificate of another CA (even one
of the same cluster name) gets no answer at all; a node's certificate
reads that node's slice and no other's, and opens nothing of the
operators'. No private key of the cluster is in any of its logs.
"""

import http.client
import json
import os
import socket
import ssl

import pytest
import yaml

from acceptance.cloudfiles import tls_key_lines
from blockmover.client import ControlError, ControlUnreachable
from blockmover.identity import dataset_id
from blockmover.localcluster import state, trust
from blockmover.localcluster.services import agent_key
from blockmover.localcluster.blocking import ask_control
from blockmover.localcluster.deploying import deploy, write_configuration
from blockmover.model import NodeReport, NodeState, Progress
from tests.cluster_ca import cluster_ca

# What a client sees when the service ends a handshake or a connection
# without an HTTP answer.
NO_ANSWER = (ssl.SSLError, ConnectionError, http.client.HTTPException)


def _get_state(layout, context):
    """
    ``GET /v1/state`` over TLS with ``context``: (status, body).
    """
    connection = http.client.HTTPSConnection(
        layout.bridge_address, layout.control_port, timeout=30,
        context=context)
    try:
        connection.request("GET", "/v1/state")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _context(ca_file, certificate=None):
    """
    A client context believing only ``ca_file``, presenting
    ``certificate`` (``tls.TLSFiles``) if given.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if certificate is not None:
        context.load_cert_chain(certificate.certificate, certificate.key)
    return context


def test_no_answer_without_a_certificate_of_the_clusters_ca(cluster):
    layout = cluster.layout
    operator = trust.operator_files(layout)
    # The operator's certificate is answered: the refusals below are for
    # want of one, not a service that answers nobody.
    status, _ = _get_state(layout, _context(operator.ca, operator))
    assert status == 200
    with pytest.raises(NO_ANSWER):
        _get_state(layout, _context(operator.ca))
    # Another CA's certificate, although it names this cluster's operator.
    stranger = cluster_ca(layout.name).files("user", trust.OPERATOR)
    with pytest.raises(NO_ANSWER):
        _get_state(layout, _context(operator.ca, stranger))
    # Plain HTTP is not spoken at all.
    with socket.create_connection((layout.bridge_address,
                                   layout.control_port), timeout=30) as s:
        s.sendall(b"GET /v1/state HTTP/1.0\r\n\r\n")
        answer = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    assert b"HTTP/" not in answer


def test_a_node_reads_only_its_own_slice(cluster):
    layout = cluster.layout
    node1, node2 = layout.nodes
    with open(cluster.log_path, "a") as output:
        # A configuration, so that every node has a slice to read.
        write_configuration(layout, {}, {})
        deploy(layout, timeout=240, output=output)
    as_node1 = trust.credentials(trust.node_files(layout, node1), layout)
    assert as_node1.identity.name == node1.name

    def ask(question):
        return ask_control(layout.control_url, question, 30, as_node1)
    own = ask(lambda client: client.get_desired(node1.name, timeout=0))
    assert own.node == node1.name and own.cluster_name == layout.name
    for question in (
            lambda client: client.get_desired(node2.name, timeout=0),
            # A forged report: node2 converged on nothing.
            lambda client: client.put_state(node2.name, NodeReport(
                state=NodeState(node=node2.name, backend_id=node2.name),
                progress=Progress(converged=True))),
            lambda client: client.get_state(),
            lambda client: client.get_configuration()):
        with pytest.raises(ControlError) as refused:
            ask(question)
        assert refused.value.code == 403
        assert "node %s may not" % (node1.name,) in str(refused.value)
    # The agent of node2 never sees node1's slice either: its certificate
    # opens only its own.
    as_node2 = trust.credentials(trust.node_files(layout, node2), layout)
    with pytest.raises(ControlError) as refused:
        ask_control(layout.control_url,
                    lambda client: client.get_desired(node1.name, timeout=0),
                    30, as_node2)
    assert refused.value.code == 403


def test_a_client_believes_only_the_clusters_control_service(cluster):
    # An operator of another CA of the same name does not believe this
    # cluster's service (nor is believed by it): nothing is asked.
    layout = cluster.layout
    stranger = cluster_ca(layout.name).credentials()
    with pytest.raises(ControlUnreachable) as refused:
        ask_control(layout.control_url, lambda client: client.get_state(),
                    30, stranger)
    assert "TLS refused" in str(refused.value)


def test_no_private_key_in_any_log(cluster):
    layout = cluster.layout
    lines = tls_key_lines(layout)
    logs = [os.path.join(layout.logs_dir, name)
            for name in os.listdir(layout.logs_dir)] + [cluster.log_path]
    for path in logs:
        with open(path, "rb") as f:
            text = f.read()
        for line in lines:
            assert line.encode() not in text, path


def _agent_environment(layout, node):
    """
    The environment the running agent of ``node`` was started with.
    """
    current = state.load(layout.state_file)
    record = current.processes[agent_key(node)]
    with open("/proc/%d/environ" % (record.pid,), "rb") as f:
        return dict(entry.decode("utf-8", "replace").partition("=")[::2]
                    for entry in f.read().split(b"\0") if entry)


def _control_messages(layout, message_type):
    messages = []
    with open(layout.control_log) as f:
        for line in f:
            entry = json.loads(line)
            if message_type in (entry.get("action_type"),
                                entry.get("message_type")):
                messages.append(entry)
    return messages


def test_agents_hold_no_cloud_credentials(cluster):
    """
    No agent is given cloud credentials: not in its environment, not in
    its agent.yml. On openstack a move still creates, attaches and
    detaches through the control service, each call made for the node
    whose certificate asked; on loopback the agents attach locally, as
    that backend does.
    """
    layout = cluster.layout
    name = "nocreds"
    mountpoint = os.path.join(layout.state_dir, "data", name)

    def place(node):
        write_configuration(layout, {name: {
            "command": ["sleep", "100000"],
            "volume": {"mountpoint": mountpoint, "maximum_size": "64M"}}},
            {name: node} if node else {})
        with open(cluster.log_path, "a") as output:
            deploy(layout, timeout=240, output=output)

    place("node1")
    place("node2")
    place(None)
    for node in layout.nodes:
        environment = _agent_environment(layout, node)
        assert not [key for key in environment if key.startswith("OS_")]
        with open(node.agent_config) as f:
            agent = yaml.safe_load(f)
        assert "cloud" not in agent["backend"]
        assert layout.clouds_yaml not in json.dumps(environment)
        if cluster.backend == "openstack":
            assert agent["backend"]["calls"] == "control"
        else:
            assert agent["backend"] == {"name": "loopback",
                                        "root": layout.backend_root}
    if cluster.backend != "openstack":
        return
    dataset = dataset_id(layout.name, name)
    calls = {(entry["action_type"], entry["node"])
             for kind in ("create", "attach", "detach")
             for entry in _control_messages(
                 layout, "blockmover:control:node-" + kind)
             if entry.get("action_status") == "started"
             and entry.get("dataset_id", dataset) == dataset}
    assert {("blockmover:control:node-create", "node1"),
            ("blockmover:control:node-attach", "node1"),
            ("blockmover:control:node-detach", "node1"),
            ("blockmover:control:node-attach", "node2"),
            ("blockmover:control:node-detach", "node2")} <= calls, calls
