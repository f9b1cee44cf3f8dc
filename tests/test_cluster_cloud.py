"""
The files a local cluster on the openstack backend writes: cluster.yml and
agent.yml that blockmover loads, naming each node's own server of the
emulator, the control service's https URL and each node's own TLS files,
and the emulator's secrets in files only their owner can read, made once
and kept. The emulator's URL is not the control service's and stays
plain HTTP.
"""

import os
import stat

import pytest
import yaml

from blockmover.config import load_agent_config, load_deployment
from blockmover.emulator.config import load_config
from blockmover.localcluster import ClusterError, cloud
from blockmover.localcluster.configs import agent_config, cluster_config
from blockmover.localcluster.layout import make_layout


@pytest.fixture
def layout(tmp_path):
    return make_layout("files", 3, "10.99.0", str(tmp_path / "state"),
                       backend="openstack", attach_latency=1.5,
                       detach_latency=0.5, volume_quota=25)


def test_configs_name_each_nodes_server(layout):
    deployment = load_deployment(
        yaml.safe_dump(cluster_config(layout)),
        yaml.safe_dump({"version": 1, "applications": {}}))
    assert deployment.backend.name == "openstack"
    assert deployment.control_url == "https://10.99.0.1:4523"
    assert dict(deployment.backend.options) == {
        "cloud": cloud.cloud_name(layout)}
    ids = {name: node.instance_id
           for name, node in deployment.nodes.items()}
    assert sorted(ids) == ["node1", "node2", "node3"]
    assert len(set(ids.values())) == 3
    for node in layout.nodes:
        agent = load_agent_config(yaml.safe_dump(agent_config(layout,
                                                              node)))
        assert agent.instance_id == ids[node.name]
        assert agent.cluster == layout.name
        assert agent.control == deployment.control_url
        assert agent.tls.directory == node.tls_dir
        assert node.tls_dir.startswith(layout.state_dir + "/nodes/")
        # The cluster's backend without its credentials: the node's cloud
        # calls go through the control service, and it sees devices where
        # the emulator links this node's server's.
        assert agent.backend.name == deployment.backend.name
        assert dict(agent.backend.options) == {
            "calls": "control", "device_root": os.path.join(
                layout.backend_root, "by-id", ids[node.name])}


def test_agents_get_no_cloud_credentials(layout, monkeypatch):
    """
    The agents' environment names no clouds.yaml and no OS_* variable,
    even when the shell that ran ``cluster up`` had some; the control
    service's has the cluster's clouds.yaml.
    """
    from blockmover.localcluster.services import service_env
    monkeypatch.setenv("OS_CLOUD", "elsewhere")
    monkeypatch.setenv("OS_PASSWORD", "not-for-nodes")
    agents = service_env(layout, cloud_credentials=False)
    assert not [name for name in agents if name.startswith("OS_")]
    control = service_env(layout)
    assert control["OS_CLIENT_CONFIG_FILE"] == layout.clouds_yaml


def test_emulator_files_private_and_kept(layout):
    cloud.write_files(layout)
    paths = [layout.clouds_yaml, cloud.admin_token_path(layout),
             cloud.config_path(layout)]
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = [open(path).read() for path in paths]
    cloud.write_files(layout)
    assert [open(path).read() for path in paths] == before

    config = load_config(cloud.config_path(layout))
    assert config.servers == {cloud.server_id(layout, node): node.name
                              for node in layout.nodes}
    assert config.latency["attach"] == 1.5
    assert config.latency["detach"] == 0.5
    assert config.quotas["volumes"] == 25
    with open(layout.clouds_yaml) as f:
        entry = yaml.safe_load(f)["clouds"][cloud.cloud_name(layout)]
    assert entry["auth"]["auth_url"] == layout.cloud_url + "/identity"
    assert layout.cloud_url == "http://10.99.0.1:4524"
    (user,) = config.users.values()
    assert entry["auth"]["password"] == user["password"]
    assert len(user["password"]) >= 24
    assert config.admin_token == before[1].strip()


def test_server_ids_differ_between_clusters(layout, tmp_path):
    other = make_layout("other", 3, "10.99.1", str(tmp_path / "other"),
                        backend="openstack")
    assert cloud.server_id(layout, layout.nodes[0]) != \
        cloud.server_id(other, other.nodes[0])


@pytest.mark.parametrize("arguments", [
    {"backend": "gce"}, {"attach_latency": -1}, {"refresh_interval": 0},
    {"volume_quota": 0}])
def test_unusable_layouts_refused(tmp_path, arguments):
    with pytest.raises(ClusterError):
        make_layout("bad", 2, "10.99.2", str(tmp_path), **arguments)
