"""
The ``blockmover`` command itself: ``cluster up`` (twice), ``status``
(its tables and ``--json``) and ``cluster down`` of a cluster of its own,
on the session's backend, run as a user runs them. The cluster keeps its
CA when brought up again, and both commands say where the operator's TLS
files are. On openstack the emulator's secrets stay in files only root
can read and never appear in what the command prints.
"""

import json
import os
import subprocess
import sys
import tempfile
import uuid

from acceptance.cloudfiles import cloud_secrets, tls_key_lines
from blockmover.localcluster import state
from blockmover.localcluster.leftovers import leftovers
from blockmover.localcluster.namespaces import unused_subnet

BLOCKMOVER = os.path.join(os.path.dirname(sys.executable), "blockmover")


def blockmover(*args):
    result = subprocess.run([BLOCKMOVER] + list(args), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_up_twice_status_and_down(cluster):
    # ``cluster`` only so that this runs where the acceptance cluster can:
    # this test brings up a second, separate one.
    name = "c" + uuid.uuid4().hex[:6]
    subnet = unused_subnet("10.79")
    state_dir = os.path.join(tempfile.gettempdir(),
                             "blockmover-cli-" + name)
    where = ["--name", name, "--state-dir", state_dir]
    making = ["--nodes", "2", "--subnet", subnet, "--backend",
              cluster.backend, "--attach-latency", "0.5"]
    recorded = None
    secrets = []
    printed = []
    try:
        first = blockmover("cluster", "up", *(making + where))
        printed.append(first)
        assert "cluster %s is up" % (name,) in first
        recorded = state.load(os.path.join(state_dir, "cluster.json"))
        layout = recorded.layout
        operator_dir = os.path.join(state_dir, "tls", "operator")
        assert layout.operator_tls_dir == operator_dir
        hint = "--tls-dir %s" % (operator_dir,)
        assert "cluster CA made in %s" % (layout.ca_dir,) in first
        assert hint in first
        with open(os.path.join(layout.ca_dir, "ca.crt")) as f:
            ca_certificate = f.read()
        if cluster.backend == "openstack":
            secrets = cloud_secrets(layout)
        secrets += tls_key_lines(layout)
        again = blockmover("cluster", "up", *(making + where))
        printed.append(again)
        assert "already up" in again
        assert "started" not in again
        assert "cluster CA kept in %s" % (layout.ca_dir,) in again
        assert "certificates issued" not in again
        with open(os.path.join(layout.ca_dir, "ca.crt")) as f:
            assert f.read() == ca_certificate
        status = blockmover("status", *where)
        printed.append(status)
        assert "node1 %s.11: namespace present, agent running" % (subnet,) \
            in status
        assert "node2 %s.12: namespace present, agent running" % (subnet,) \
            in status
        assert "control https://%s.1:4523: running" % (subnet,) in status
        # The operator's certificate was believed: the service answered,
        # and its status follows the local cluster's lines.
        assert ("cluster %s at https://%s.1:4523: no configuration "
                "deployed yet" % (name, subnet)) in status
        assert hint in status
        local = json.loads(blockmover("status", "--json", *where))
        assert local["error"] is None and local["generation"] == 0
        assert local["local"]["operator_tls_dir"] == operator_dir
        assert local["local"]["nodes"]["node1"]["namespace_present"]
        assert local["local"]["nodes"]["node2"]["agent"]["running"]
        assert local["local"]["processes"]["control"]["running"]
        if cluster.backend == "openstack":
            # The emulator is not the control service: plain HTTP.
            assert "OpenStack emulator http://%s.1:4524: running" \
                % (subnet,) in status
    finally:
        down = blockmover("cluster", "down", *where)
        printed.append(down)
    assert "cluster %s is down" % (name,) in down
    assert all(secret not in text for secret in secrets
               for text in printed)
    assert recorded is not None
    assert leftovers(recorded.layout,
                     list(recorded.processes.values())) == []
    assert not os.path.exists(recorded.layout.tls_dir)
