"""
cluster.yml, app.yml and agent.yml: what loads, and what each mistake says.
"""

import os
import textwrap
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockmover.config import (
    DEFAULT_VOLUME_SIZE, AgentConfig, ConfigError, load_agent_config,
    load_agent_file, load_deployment, load_files,
)
from blockmover.units import GiB, MiB
from tests.strategies import deployment_yaml, deployments

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "etc", "examples")

CLUSTER = """\
version: 1
cluster:
  name: demo
  control: https://10.77.0.1:4523
  backend:
    name: loopback
nodes:
  node1: {address: 10.77.0.11}
  node2: {address: 10.77.0.12}
deployment:
  node1: [mongodb]
  node2: []
"""

APP = """\
version: 1
applications:
  mongodb:
    command: [secantusd-py, --port, "27017"]
    ports: [{internal: 27017, external: 27017}]
    environment: {}
    volume:
      mountpoint: /data/db
      maximum_size: 1G
      filesystem: ext4
"""


def error(cluster=CLUSTER, app=APP):
    with pytest.raises(ConfigError) as info:
        load_deployment(cluster, app)
    return info.value


def edit(text, old, new):
    assert old in text
    return text.replace(old, new)


# --- what loads ------------------------------------------------------------

def test_examples_load():
    """
    Every example in etc/examples loads; the DESIGN examples mean what they
    say.
    """
    path = lambda name: os.path.join(EXAMPLES, name)
    demo = load_files(path("cluster.yml"), path("app.yml"))
    assert demo.cluster_name == "demo"
    assert demo.placement == {"mongodb": "node1"}
    assert demo.applications["mongodb"].volume.size == GiB
    assert demo.applications["mongodb"].command[:2] == ["secantusd-py",
                                                        "--host"]
    prod = load_files(path("openstack-cluster.yml"), path("flocker-app.yml"))
    assert prod.backend.name == "openstack"
    assert prod.backend.options["cloud"] == "mycloud"
    assert prod.backend.limits.max_size == 100 * GiB
    assert prod.backend.limits.volumes_per_node == 14
    assert prod.nodes["node1"].instance_id.startswith("6a0a3f4e")
    assert prod.applications["mongodb"].image == "clusterhq/mongodb"
    assert prod.applications["web"].environment["MONGO_PORT"] == "27017"
    agent = load_agent_file(path("agent.yml"))
    assert agent == AgentConfig(
        node="node1", cluster="demo", control="https://10.77.0.1:4523",
        backend={"name": "loopback",
                 "options": {"root": "/var/lib/blockmover/loopback"}})
    geo = load_files(path("sites-cluster.yml"), path("app.yml"))
    assert sorted(geo.sites) == ["dr", "east", "west"]
    assert geo.backend_of("node2").options["region"] == "RegionTwo"
    assert geo.sites["east"].limits.region_volumes == 50
    assert (geo.push.bandwidth, geo.push.port) == (100 * MiB, 4524)
    assert geo.site_of("node3") == "dr"
    # Other examples (clouds.yaml) may sit beside these.
    assert {"agent.yml", "app.yml", "cluster.yml", "flocker-app.yml",
            "openstack-cluster.yml", "sites-cluster.yml"} <= set(
                os.listdir(EXAMPLES))


def test_defaults_and_command_string():
    """
    A volume without a size gets the default size and ext4; a command may
    be one string; a node listing nothing (or null) runs nothing.
    """
    app = textwrap.dedent("""\
        version: 1
        applications:
          mongodb:
            command: secantusd-py --port 27017 --name 'a b'
            volume: {mountpoint: /data/db/}
        """)
    cluster = edit(CLUSTER, "node2: []", "node2:")
    d = load_deployment(cluster, app)
    spec = d.applications["mongodb"].volume
    assert (spec.size, spec.filesystem, spec.mountpoint) == (
        DEFAULT_VOLUME_SIZE, "ext4", "/data/db")
    assert list(d.applications["mongodb"].command) == [
        "secantusd-py", "--port", "27017", "--name", "a b"]


@pytest.mark.parametrize("text,size", [("512M", 512 * MiB), ("1.5T",
                                       1536 * GiB), ("1048576", MiB),
                                       ("2G", 2 * GiB)])
def test_sizes(text, size):
    d = load_deployment(CLUSTER, edit(APP, "maximum_size: 1G",
                                      "maximum_size: %s" % (text,)))
    assert d.applications["mongodb"].volume.size == size


def test_backend_options_and_limits():
    cluster = edit(CLUSTER, "    name: loopback\n", textwrap.indent(
        "name: openstack\ncloud: mycloud\nregion: 7\nlimits:\n"
        "  min_size: 1G\n  max_size: 2G\n  volumes_per_node: 3\n"
        "  region_volumes: 4\n  region_size: 8G\n", "    "))
    backend = load_deployment(cluster, APP).backend
    assert backend.options == {"cloud": "mycloud", "region": "7"}
    assert backend.limits.min_size == GiB
    assert backend.limits.region_size == 8 * GiB
    assert backend.limits.region_volumes == 4


@settings(max_examples=60, deadline=None)
@given(deployments())
def test_round_trip(deployment):
    """
    The YAML that describes a deployment loads as that deployment.
    """
    assert load_deployment(*deployment_yaml(deployment)) == deployment


# --- what is refused ---------------------------------------------------------

@pytest.mark.parametrize("cluster,app,file,line,key,words", [
    # YAML syntax
    (CLUSTER + "  node3: [\n", APP, "cluster.yml", 14, None,
     "not valid YAML"),
    # a duplicate key: the second one's line
    (edit(CLUSTER, "  node2: {address", "  node1: {address"), APP,
     "cluster.yml", 9, "nodes.node1", "appears twice (first on line 8)"),
    (CLUSTER, APP + "  mongodb: {image: x}\n", "app.yml", 11,
     "applications.mongodb", "appears twice"),
    # version
    (edit(CLUSTER, "version: 1", "version: 2"), APP, "cluster.yml", 1,
     "version", "write 'version: 1'"),
    (CLUSTER, edit(APP, "version: 1\n", ""), "app.yml", 1, None,
     "'version' is missing"),
    # unknown keys, with the known ones
    (edit(CLUSTER, "  name: demo", "  nmae: demo"), APP, "cluster.yml", 3,
     "cluster.nmae", "unknown key 'nmae'; the known keys are name, "
     "control, backend"),
    (CLUSTER, edit(APP, "    ports:", "    port:"), "app.yml", 5,
     "applications.mongodb.port", "the known keys are command, image"),
    # unknown node
    (edit(CLUSTER, "  node2: []", "  node3: []"), APP, "cluster.yml", 12,
     "deployment.node3", "unknown node 'node3'; the nodes are node1, node2"),
    # on two nodes
    (edit(CLUSTER, "  node2: []", "  node2:\n    - mongodb"), APP,
     "cluster.yml", 13, "deployment.node2",
     "mongodb is deployed on node1 and node2; an application runs on one "
     "node"),
    # not in app.yml
    (edit(CLUSTER, "  node2: []", "  node2: [redis]"), APP, "cluster.yml", 12,
     "deployment.node2", "unknown application 'redis'; app.yml defines "
     "mongodb"),
    # neither command nor image
    (CLUSTER, edit(APP, '    command: [secantusd-py, --port, "27017"]\n', ""),
     "app.yml", 3, "applications.mongodb",
     "has neither 'command' nor 'image'"),
    # bad sizes
    (CLUSTER, edit(APP, "maximum_size: 1G", "maximum_size: 1Q"), "app.yml",
     9, "applications.mongodb.volume.maximum_size", "'1Q' is not a size"),
    (CLUSTER, edit(APP, "maximum_size: 1G", "maximum_size: 0"), "app.yml",
     9, "applications.mongodb.volume.maximum_size", "must be positive"),
    # filesystem
    (CLUSTER, edit(APP, "filesystem: ext4", "filesystem: btrfs"), "app.yml",
     10, "applications.mongodb.volume.filesystem", "use one of ext4, xfs"),
    # mountpoint
    (CLUSTER, edit(APP, "mountpoint: /data/db", "mountpoint: data/db"),
     "app.yml", 8, "applications.mongodb.volume.mountpoint",
     "'data/db' is not an absolute path"),
    (CLUSTER, edit(APP, "mountpoint: /data/db", "mountpoint: /"),
     "app.yml", 8, "applications.mongodb.volume.mountpoint",
     "not an absolute path below /"),
    # ports
    (CLUSTER, edit(APP, "external: 27017", "external: '27017'"), "app.yml",
     5, "applications.mongodb.ports[0].external", "must be a whole number"),
    (CLUSTER, edit(APP, "external: 27017", "external: 70000"), "app.yml",
     5, "applications.mongodb.ports[0].external", "from 1 to 65535"),
    # environment values are strings
    (CLUSTER, edit(APP, "environment: {}", "environment: {DEBUG: 1}"),
     "app.yml", 6, "applications.mongodb.environment.DEBUG",
     "must be a string; write it in quotes"),
    # nodes need an address
    (edit(CLUSTER, "{address: 10.77.0.12}", "{instance_id: x}"), APP,
     "cluster.yml", 9, "nodes.node2", "'address' is missing"),
    # backend name and limits
    (edit(CLUSTER, "name: loopback", "name: ceph"), APP, "cluster.yml", 6,
     "cluster.backend.name", "unknown backend 'ceph'; use one of loopback, "
     "openstack"),
    (edit(CLUSTER, "name: loopback", "name: loopback\n    limits: "
          "{max_size: lots}"), APP, "cluster.yml", 7,
     "cluster.backend.limits.max_size", "'lots' is not a size"),
    (edit(CLUSTER, "name: loopback", "name: loopback\n    limits: "
          "{volumes_per_node: 0}"), APP, "cluster.yml", 7,
     "cluster.backend.limits.volumes_per_node", "at least 1"),
    # control URL, or the URLs of its replicas
    (edit(CLUSTER, "https://10.77.0.1:4523", "10.77.0.1"), APP,
     "cluster.yml", 4, "cluster.control", "not an https URL"),
    (edit(CLUSTER, "https://10.77.0.1:4523", "[]"), APP,
     "cluster.yml", 4, "cluster.control", "an empty list names no control "
     "service"),
    (edit(CLUSTER, "https://10.77.0.1:4523", "{url: x}"), APP,
     "cluster.yml", 4, "cluster.control", "or a list of the replicas' URLs"),
    (edit(CLUSTER, "https://10.77.0.1:4523",
          "[https://10.77.0.1:4523, 4523]"), APP,
     "cluster.yml", 4, "cluster.control[1]", "must be a URL such as"),
    (edit(CLUSTER, "https://10.77.0.1:4523",
          "\n    - https://10.77.0.1:4523\n    - http://10.77.0.2:4523"),
     APP, "cluster.yml", 6, "cluster.control[1]", "not an https URL"),
    (edit(CLUSTER, "https://10.77.0.1:4523",
          "[https://10.77.0.1:4523, https://10.77.0.1:4523]"), APP,
     "cluster.yml", 4, "cluster.control[1]", "names the same URL as item 0"),
    # two applications mounting one path on one node
    (edit(CLUSTER, "node1: [mongodb]", "node1: [mongodb, other]"),
     APP + "  other:\n    command: [x]\n"
     "    volume: {mountpoint: /data/db/x}\n",
     "app.yml", 13, "applications.other.volume.mountpoint",
     "mountpoints /data/db and /data/db/x overlap"),
    # two applications on one node sharing an external port
    (edit(CLUSTER, "node1: [mongodb]", "node1: [mongodb, other]"),
     APP + "  other:\n    command: [x]\n"
     "    ports: [{internal: 1, external: 27017}]\n",
     "app.yml", 13, "applications.other.ports[0]",
     "both use external port 27017"),
    # a bad command string
    (CLUSTER, edit(APP, 'command: [secantusd-py, --port, "27017"]',
                   "command: \"run 'x\""), "app.yml", 4,
     "applications.mongodb.command", "check its quotes"),
    (CLUSTER, edit(APP, '"27017"]', "27017]"), "app.yml", 4,
     "applications.mongodb.command[2]", "write it in quotes"),
    # keys must be names
    (CLUSTER, APP + "  [a]: {image: x}\n", "app.yml", 11, "applications",
     "a key must be a plain name"),
    # a name is plain to its end: a newline after it is not
    (edit(CLUSTER, "  name: demo", '  name: "demo\\n"'), APP, "cluster.yml",
     3, "cluster.name", "cluster 'demo\\n' is not a usable name"),
])
def test_errors(cluster, app, file, line, key, words):
    """
    Each mistake names its file, line and key and says what would be right.
    """
    e = error(cluster, app)
    assert (e.file, e.line, e.key) == (file, line, key)
    assert words in e.message
    rendered = str(e)
    assert "\n" not in rendered
    prefix = "%s:%d: " % (file, line) + ("%s: " % (key,) if key else "")
    assert rendered == prefix + e.message


def test_error_string_shape():
    e = error(edit(CLUSTER, "  node2: []", "  node3: []"))
    assert str(e) == ("cluster.yml:12: deployment.node3: unknown node "
                      "'node3'; the nodes are node1, node2")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_files(str(tmp_path / "nope.yml"), str(tmp_path / "app.yml"))
    assert info.value.file == str(tmp_path / "nope.yml")
    assert info.value.line is None
    assert "cannot read it" in str(info.value)


def test_recursive_alias_refused():
    e = error(app="version: 1\napplications: &a\n  x: *a\n")
    assert (e.file, e.line) == ("app.yml", 2)
    assert "anchor &a is not supported" in e.message


# Nine levels of nine aliases each: 9**9 strings once expanded, in 350 bytes.
BILLION_LAUGHS = "version: 1\napplications:\n  a: &a [\"lol\"]\n" + "".join(
    "  %s: &%s [%s]\n" % (name, name, ", ".join(["*" + previous] * 9))
    for previous, name in zip("abcdefgh", "bcdefghi")) + \
    "  x: {command: [*i]}\n"


def test_billion_laughs_refused_with_little_memory():
    """
    Aliases nested nine deep are refused at the first anchor, before any is
    expanded: the error names the file and line, and reading the file takes
    no more memory than a small file does.
    """
    tracemalloc.start()
    try:
        e = error(app=BILLION_LAUGHS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (e.file, e.line, e.key) == ("app.yml", 3, None)
    assert "anchor &a is not supported" in e.message
    assert "write the value out" in e.message
    assert peak < 2 * MiB


@pytest.mark.parametrize("cluster,app,file,line,words", [
    # an anchor alone is refused, though nothing refers to it
    (edit(CLUSTER, "  node1: {address", "  node1: &n {address"), APP,
     "cluster.yml", 8, "anchor &n"),
    # an alias of a scalar
    (CLUSTER, edit(APP, '[secantusd-py, --port, "27017"]',
                   '[&p secantusd-py, *p]'), "app.yml", 4, "anchor &p"),
    (CLUSTER, edit(APP, '    command: [secantusd-py, --port, "27017"]',
                   '    command: &cmd [secantusd-py]\n    image: *cmd'),
     "app.yml", 4, "anchor &cmd"),
])
def test_anchors_and_aliases_refused(cluster, app, file, line, words):
    e = error(cluster, app)
    assert (e.file, e.line) == (file, line)
    assert words in e.message


def test_alias_without_anchor_refused():
    e = error(app="version: 1\napplications: *nowhere\n")
    assert (e.file, e.line) == ("app.yml", 2)
    assert "alias *nowhere is not supported" in e.message


def test_deep_nesting_refused():
    e = error(app="version: 1\napplications: " + "[" * 5000 + "]" * 5000)
    assert e.file == "app.yml"
    assert "nested too deeply" in e.message


def test_secret_not_echoed():
    """
    A control URL carrying a password is refused without repeating it,
    alone or in a list.
    """
    e = error(edit(CLUSTER, "https://10.77.0.1:4523",
                   "ftp://admin:s3cretpw@10.77.0.1"))
    assert "s3cretpw" not in str(e)
    e = error(edit(CLUSTER, "https://10.77.0.1:4523",
                   "[https://a:s3cretpw@h:1, https://a:s3cretpw@h:1]"))
    assert "s3cretpw" not in str(e)


def test_control_replicas():
    """
    cluster.control may list the control service's replicas: the first is
    its control_url, as when it names one.
    """
    one = load_deployment(CLUSTER, APP)
    assert one.control_urls == ("https://10.77.0.1:4523",)
    several = load_deployment(edit(
        CLUSTER, "https://10.77.0.1:4523",
        "[https://10.77.0.1:4523, 'https://cp2.example:4523']"), APP)
    assert several.control_url == "https://10.77.0.1:4523"
    assert several.control_urls == ("https://10.77.0.1:4523",
                                    "https://cp2.example:4523")


# --- agent.yml -------------------------------------------------------------

AGENT = "version: 1\nnode: node1\ncontrol: https://10.77.0.1:4523\n"


def test_agent_defaults():
    agent = load_agent_config(AGENT)
    assert agent.state_dir == "/var/lib/blockmover/agent"
    assert agent.log == "-"
    assert agent.instance_id is None
    assert agent.backend.name == "loopback"
    assert agent.control_url == "https://10.77.0.1:4523"


def test_agent_control_replicas():
    """
    agent.yml's control may list the control service's replicas.
    """
    agent = load_agent_config(
        "version: 1\nnode: node1\ncontrol:\n  - https://10.77.0.1:4523\n"
        "  - https://10.77.0.2:4523\n")
    assert agent.control_url == "https://10.77.0.1:4523"
    assert agent.control_urls == ("https://10.77.0.1:4523",
                                  "https://10.77.0.2:4523")
    assert load_agent_config(AGENT).control_urls == (
        "https://10.77.0.1:4523",)


def test_agent_options():
    agent = load_agent_config(AGENT + "instance_id: abc\nlog: /var/log/a\n"
                              "backend: {name: openstack, cloud: c1}\n")
    assert agent.instance_id == "abc"
    assert agent.log == "/var/log/a"
    assert agent.backend.name == "openstack"
    assert agent.backend.options == {"cloud": "c1"}


def test_agent_tls_files():
    """
    agent.yml's tls: names the agent's TLS files; without it they are
    looked up in the standard places.
    """
    assert load_agent_config(AGENT).tls.directory is None
    agent = load_agent_config(
        AGENT + "tls: {directory: /etc/bm, key: /root/agent.key}\n")
    assert (agent.tls.directory, agent.tls.key, agent.tls.certificate) == (
        "/etc/bm", "/root/agent.key", None)


def test_agent_metrics():
    """
    agent.yml's metrics: says where the agent serves its metrics, and
    which revocation list refuses scrapers; without it, nowhere.
    """
    assert load_agent_config(AGENT).metrics is None
    agent = load_agent_config(
        AGENT + "metrics: {listen: 'tcp:9524:interface=10.77.0.11'}\n")
    assert (agent.metrics.listen, agent.metrics.crl) == (
        "tcp:9524:interface=10.77.0.11", None)
    agent = load_agent_config(
        AGENT + "metrics: {listen: 'tcp:9524', crl: /etc/bm/crl.pem}\n")
    assert agent.metrics.crl == "/etc/bm/crl.pem"


@pytest.mark.parametrize("text,line,key,words", [
    ("version: 1\ncontrol: http://h\n", 1, None, "'node' is missing"),
    (AGENT + "metrics: {listen: '10.0.0.1:9524'}\n", 4, "metrics.listen",
     "must be a tcp: endpoint"),
    (AGENT + "metrics: {crl: /x}\n", 4, "metrics", "'listen' is missing"),
    (AGENT + "metrics: {listen: 'tcp:1', crl: x}\n", 4, "metrics.crl",
     "not an absolute path"),
    (AGENT + "stat_dir: /x\n", 4, "stat_dir", "unknown key 'stat_dir'"),
    (AGENT + "state_dir: relative\n", 4, "state_dir",
     "not an absolute path"),
    (AGENT + "backend: {name: loopback, limits: {max_size: 1G}}\n", 4,
     "backend.limits", "must be a word or number"),
    (AGENT + "node: node2\n", 4, "node", "appears twice"),
    ("version: 1\nnode: n\ncontrol: http://10.77.0.1:4523\n", 3,
     "control", "not an https URL"),
    ("version: 1\nnode: n\ncontrol: []\n", 3, "control",
     "an empty list names no control service"),
    ("version: 1\nnode: n\ncontrol: [https://h:1, 7]\n", 3, "control[1]",
     "must be a URL such as"),
    ("version: 1\nnode: n\ncontrol: [https://h:1, 'http://h:2']\n", 3,
     "control[1]", "not an https URL"),
    (AGENT + "tls: {directory: relative}\n", 4, "tls.directory",
     "not an absolute path"),
    (AGENT + "tls: {cert: /x}\n", 4, "tls.cert", "unknown key 'cert'"),
])
def test_agent_errors(text, line, key, words):
    with pytest.raises(ConfigError) as info:
        load_agent_config(text, "/etc/blockmover/agent.yml")
    e = info.value
    assert (e.file, e.line, e.key) == ("/etc/blockmover/agent.yml", line, key)
    assert words in e.message


# --- nothing but ConfigError -------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000),
                     st.floats(allow_nan=False), st.text(max_size=8),
                     st.sampled_from(["1G", "512M", "/data/db", "ext4", "xfs",
                                      "mongodb", "node1", "loopback",
                                      "http://h:1"]))
_keys = st.one_of(st.text(max_size=6), st.sampled_from([
    "version", "cluster", "nodes", "deployment", "name", "control", "backend",
    "address", "instance_id", "applications", "command", "image", "ports",
    "volume", "mountpoint", "maximum_size", "filesystem", "environment",
    "internal", "external", "limits", "min_size", "max_size", "node1",
    "mongodb"]))
_values = st.recursive(
    _scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                      st.dictionaries(_keys, inner,
                                                      max_size=4)),
    max_leaves=12)
_documents = st.one_of(
    _values, st.fixed_dictionaries({"version": st.sampled_from([1, 2])},
                                   optional={"cluster": _values,
                                             "nodes": _values,
                                             "deployment": _values,
                                             "applications": _values}))


def _loads_or_config_error(cluster, app):
    try:
        result = load_deployment(cluster, app)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert result.cluster_name


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200), st.text(max_size=200))
def test_arbitrary_text(cluster, app):
    _loads_or_config_error(cluster, app)
    try:
        agent = load_agent_config(cluster)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert agent.node


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_documents, _documents)
def test_arbitrary_structures(cluster, app):
    _loads_or_config_error(yaml.safe_dump(cluster), yaml.safe_dump(app))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_documents, st.text(max_size=200))
def test_arbitrary_app_with_valid_cluster(app, text):
    """
    The application file is read in full once the cluster file is valid.
    """
    _loads_or_config_error(CLUSTER, yaml.safe_dump(app))
    _loads_or_config_error(CLUSTER, text)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(deployments(), st.data())
def test_mutated_valid_files(deployment, data):
    """
    Valid files with one value replaced anywhere load or raise ConfigError.
    """
    cluster, app = (yaml.safe_load(t) for t in deployment_yaml(deployment))
    target = data.draw(st.sampled_from([cluster, app]))
    node = target
    while isinstance(node, dict) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict) or data.draw(st.booleans()):
            node[key] = data.draw(_values)
            break
        node = node[key]
    _loads_or_config_error(yaml.safe_dump(cluster), yaml.safe_dump(app))


@pytest.mark.parametrize("text,line,words", [
    ("version: 1\ncluster:\n  <<: {name: x}\n", 3, "merge keys (<<)"),
    ("version: 1\nnodes: \x07\n", 2, "is not allowed in YAML"),
    ("version: !!python/object:os.system x\n", 1, "cannot read this value"),
    ("version: 1\n---\nversion: 1\n", 2, "not valid YAML"),
])
def test_unusual_yaml(text, line, words):
    e = error(cluster=text)
    assert (e.file, e.line) == ("cluster.yml", line)
    assert words in e.message


# --- where volumes may be mounted ------------------------------------------

def _mounted_at(mountpoint, cluster=CLUSTER):
    return load_deployment(cluster, edit(APP, "mountpoint: /data/db",
                                         "mountpoint: %s" % (mountpoint,)))


@pytest.mark.parametrize("mountpoint,why", [
    ("/etc", "/etc is a system directory"),
    ("/etc/", "/etc is a system directory"),
    ("/etc/mongodb", "/etc is a system directory"),
    ("/data/../etc", "/etc is a system directory"),
    ("/data/db/../../etc/ssl", "/etc is a system directory"),
    ("//etc", "/etc is a system directory"),
    ("/./usr/./lib", "/usr is a system directory"),
    ("/usr/local/data", "/usr is a system directory"),
    ("/boot", "/boot is a system directory"),
    ("/dev/shm/x", "/dev is a system directory"),
    ("/proc/1", "/proc is a system directory"),
    ("/sys/fs/cgroup", "/sys is a system directory"),
    ("/run/x", "/run is a system directory"),
    ("/var/run/x", "/var/run is a system directory"),
    ("/bin", "/bin is a system directory"),
    ("/sbin/x", "/sbin is a system directory"),
    ("/lib", "/lib is a system directory"),
    ("/lib64/x", "/lib64 is a system directory"),
    ("/libx32", "/libx32 is a system directory"),
    ("/var", "/var holds the system's or blockmover's state"),
    ("/var/lib", "/var/lib holds"),
    ("/var/lib/blockmover", "/var/lib/blockmover holds"),
    ("/var/lib/blockmover/agent", "/var/lib/blockmover/agent is "
     "blockmover's own state"),
    ("/var/lib/blockmover/agent/x", "/var/lib/blockmover/agent is"),
    ("/var/lib/blockmover/demo-data/../control/x",
     "/var/lib/blockmover/control is"),
    ("/var/lib/blockmover/loopback", "/var/lib/blockmover/loopback is"),
])
def test_system_and_state_mountpoints_refused(mountpoint, why):
    with pytest.raises(ConfigError) as info:
        _mounted_at(mountpoint)
    e = info.value
    assert (e.file, e.line, e.key) == (
        "app.yml", 8, "applications.mongodb.volume.mountpoint")
    assert e.message.startswith("mountpoint %r is refused: " % (mountpoint,))
    assert why in e.message
    assert "mount the volume in a directory of its own" in e.message


@pytest.mark.parametrize("mountpoint,loaded", [
    ("/data/db/", "/data/db"),
    ("/tmp/blockmover-test/data", "/tmp/blockmover-test/data"),
    ("/library/db", "/library/db"),
    ("/srv//data/./db", "/srv/data/db"),
    # the demo's and the local cluster's data directories
    ("/var/lib/blockmover/demo-data/mongodb",
     "/var/lib/blockmover/demo-data/mongodb"),
    ("/var/lib/blockmover/cluster/demo/data/mongodb",
     "/var/lib/blockmover/cluster/demo/data/mongodb"),
])
def test_other_mountpoints_load_normalized(mountpoint, loaded):
    deployment = _mounted_at(mountpoint)
    assert deployment.applications["mongodb"].volume.mountpoint == loaded


def test_loopback_root_is_no_mountpoint():
    cluster = edit(CLUSTER, "name: loopback", "name: loopback\n    root: "
                   "/srv/blockmover/loopback")
    for mountpoint in ("/srv/blockmover/loopback/x", "/srv/blockmover",
                       "/srv"):
        with pytest.raises(ConfigError) as info:
            _mounted_at(mountpoint, cluster)
        assert "/srv/blockmover/loopback is blockmover's own state" in \
            info.value.message
    assert _mounted_at("/srv/data", cluster)


def test_mountpoints_under_restricts_mountpoints():
    cluster = edit(CLUSTER, "  name: demo", "  name: demo\n"
                   "  mountpoints_under: /srv/data/")
    assert _mounted_at("/srv/data/db", cluster)
    for mountpoint in ("/srv/database", "/srv/data/../db", "/data/db"):
        with pytest.raises(ConfigError) as info:
            _mounted_at(mountpoint, cluster)
        e = info.value
        assert (e.file, e.line, e.key) == (
            "app.yml", 8, "applications.mongodb.volume.mountpoint")
        assert "is outside /srv/data, the directories cluster.yml's " \
            "cluster.mountpoints_under allows" in e.message
    listed = edit(CLUSTER, "  name: demo", "  name: demo\n"
                  "  mountpoints_under: [/srv/a, /srv/b]")
    assert _mounted_at("/srv/b/db", listed)
    with pytest.raises(ConfigError) as info:
        _mounted_at("/srv/c/db", listed)
    assert "outside /srv/a, /srv/b" in info.value.message


@pytest.mark.parametrize("value,words", [
    ("data", "is not an absolute path"),
    ("[]", "is an empty list"),
    ("[/srv, 3]", "must be an absolute path"),
])
def test_bad_mountpoints_under(value, words):
    e = error(edit(CLUSTER, "  name: demo", "  name: demo\n"
                   "  mountpoints_under: %s" % (value,)))
    assert (e.file, e.line) == ("cluster.yml", 4)
    assert e.key.startswith("cluster.mountpoints_under")
    assert words in e.message


# --- environment that changes what programs load ---------------------------

@pytest.mark.parametrize("variable", [
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_BIND_NOW",
    "GCONV_PATH", "PYTHONPATH", "PYTHONHOME"])
def test_loader_environment_refused_unless_allowed(variable):
    app = edit(APP, "environment: {}", "environment: {%s: /tmp/x}"
               % (variable,))
    e = error(app=app)
    assert (e.file, e.line, e.key) == (
        "app.yml", 6, "applications.mongodb.environment." + variable)
    assert e.message == (
        "%s changes which code the application's programs load, and is "
        "refused unless cluster.yml allows it; remove it, or set "
        "cluster.allow_loader_environment: true in cluster.yml if it is "
        "meant" % (variable,))
    allowed = edit(CLUSTER, "  name: demo", "  name: demo\n"
                   "  allow_loader_environment: true")
    deployment = load_deployment(allowed, app)
    assert deployment.applications["mongodb"].environment == {
        variable: "/tmp/x"}


def test_other_environment_loads():
    app = edit(APP, "environment: {}", "environment: {LDFLAGS: x, "
               "LANG: C.UTF-8, MY_LD_PRELOAD: x}")
    assert load_deployment(CLUSTER, app).applications[
        "mongodb"].environment["LANG"] == "C.UTF-8"


def test_allow_loader_environment_is_a_boolean():
    e = error(edit(CLUSTER, "  name: demo", "  name: demo\n"
                   "  allow_loader_environment: yes please"))
    assert (e.file, e.line, e.key) == (
        "cluster.yml", 4, "cluster.allow_loader_environment")
    assert "must be true or false" in e.message


def test_state_directories_are_blockmovers_defaults():
    from blockmover import mountpoints
    from blockmover.backends.loopback import DEFAULT_ROOT
    from blockmover.config import DEFAULT_STATE_DIR
    from blockmover.control.main import DEFAULT_STATE_DIR as CONTROL_STATE
    assert set(mountpoints.STATE_DIRECTORIES) == {
        DEFAULT_STATE_DIR, CONTROL_STATE, DEFAULT_ROOT}


# --- secrets ---------------------------------------------------------------

SECRET = "hunter2-Sekr1t"


def _with_secrets(text, app=APP):
    # On line 7, after the environment.
    return edit(app, "    volume:\n",
                textwrap.indent(text, "    ") + "    volume:\n")


def test_secrets_load_apart_from_the_environment():
    """
    An application's secrets load as variables of its own, apart from its
    environment, in block or flow style; a repr shows their names only.
    """
    app = _with_secrets("secrets:\n  DB_PASSWORD: %s\n  API_KEY: 'k y'\n"
                        % (SECRET,),
                        edit(APP, "environment: {}", "environment: {A: b}"))
    mongodb = load_deployment(CLUSTER, app).applications["mongodb"]
    assert mongodb.secrets == {"DB_PASSWORD": SECRET, "API_KEY": "k y"}
    assert mongodb.environment == {"A": "b"}
    assert "DB_PASSWORD" in repr(mongodb) and SECRET not in repr(mongodb)
    flow = _with_secrets("secrets: {DB_PASSWORD: %s}\n" % (SECRET,))
    assert load_deployment(CLUSTER, flow).applications[
        "mongodb"].secrets == {"DB_PASSWORD": SECRET}
    assert load_deployment(CLUSTER, APP).applications[
        "mongodb"].secrets == {}


@pytest.mark.parametrize("secrets,line,key,words", [
    # not a mapping
    ("secrets: %s\n" % (SECRET,), 7, "applications.mongodb.secrets",
     "must be a mapping of variable names to strings"),
    ("secrets:\n- DB_PASSWORD=%s\n" % (SECRET,), 7,
     "applications.mongodb.secrets", "must be a mapping"),
    # values are strings
    ("secrets: {DB_PASSWORD: [%s]}\n" % (SECRET,), 7,
     "applications.mongodb.secrets.DB_PASSWORD",
     "the value must be a string; write it in quotes"),
    ("secrets:\n  DB_PASSWORD: 12345\n", 8,
     "applications.mongodb.secrets.DB_PASSWORD", "must be a string"),
    # a value PyYAML cannot read under its tag: its type, never the value
    ("secrets: {DB_PASSWORD: !!int %s}\n" % (SECRET,), 7,
     "applications.mongodb.secrets.DB_PASSWORD",
     "cannot read this value as !!int; write it in quotes"),
    ("secrets: {DB_PASSWORD: !!float %s}\n" % (SECRET,), 7,
     "applications.mongodb.secrets.DB_PASSWORD", "as !!float"),
    ("secrets: {DB_PASSWORD: !!bool %s}\n" % (SECRET,), 7,
     "applications.mongodb.secrets.DB_PASSWORD", "as !!bool"),
    ("secrets: {DB_PASSWORD: !!timestamp %s}\n" % (SECRET,), 7,
     "applications.mongodb.secrets.DB_PASSWORD", "as !!timestamp"),
    # a name that is not a variable's is not quoted (nor put in the key):
    # it may be the value, written in the wrong place
    ("secrets:\n  DB_PASSWORD=%s: x\n" % (SECRET,), 8,
     "applications.mongodb.secrets",
     "a name on this line is not a variable name"),
    # a name is in the environment or the secrets, not both
    ("secrets:\n  DB_HOST: %s\n" % (SECRET,), 8,
     "applications.mongodb.secrets.DB_HOST",
     "DB_HOST is in both environment and secrets; keep it in one of them"),
    # loader variables, as in the environment
    ("secrets:\n  LD_PRELOAD: %s\n" % (SECRET,), 8,
     "applications.mongodb.secrets.LD_PRELOAD",
     "LD_PRELOAD changes which code the application's programs load"),
])
def test_secrets_errors_never_quote_a_secret(secrets, line, key, words):
    """
    Every mistake in ``secrets`` names its file, line and key, and says
    what would be right without repeating the secret.
    """
    app = _with_secrets(secrets, edit(APP, "environment: {}",
                                      "environment: {DB_HOST: db}"))
    e = error(app=app)
    assert (e.file, e.line, e.key) == ("app.yml", line, key)
    assert words in e.message
    assert SECRET not in str(e)


def test_loader_secrets_load_when_allowed():
    allowed = edit(CLUSTER, "  name: demo", "  name: demo\n"
                   "  allow_loader_environment: true")
    app = _with_secrets("secrets: {LD_LIBRARY_PATH: /opt/x}\n")
    assert load_deployment(allowed, app).applications[
        "mongodb"].secrets == {"LD_LIBRARY_PATH": "/opt/x"}


def test_a_variable_in_both_is_refused_by_the_record_too():
    """
    The model holds the rule as well, for an application that did not come
    from app.yml (a slice off the wire).
    """
    from pyrsistent import InvariantException
    from blockmover.model import Application
    with pytest.raises(InvariantException) as info:
        Application(name="a", command=["x"], environment={"P": "1"},
                    secrets={"P": SECRET})
    assert "P in both environment and secrets" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("value,key,words", [
    ("*" + SECRET, None, "alias *... is not supported"),
    ("&" + SECRET + " x", None, "anchor &... is not supported"),
    ("!" + SECRET, "applications.mongodb.secrets.DB_PASSWORD",
     "cannot read this value as a tag of its own (!...)"),
    ("!!" + SECRET, "applications.mongodb.secrets.DB_PASSWORD",
     "cannot read this value as a tag of its own (!...)"),
])
def test_a_secret_that_reads_as_yaml_syntax_is_not_repeated(value, key,
                                                            words):
    """
    A secret value starting with *, & or ! and written without quotes
    reads as an alias, an anchor or a tag: the error says so, and how to
    write it, without repeating it.
    """
    e = error(app=_with_secrets("secrets:\n  DB_PASSWORD: %s\n" % (value,)))
    assert (e.file, e.line, e.key) == ("app.yml", 8, key)
    assert words in e.message and "quotes" in e.message
    assert SECRET not in str(e)


@pytest.mark.parametrize("state_dir", ["/tmp", "/var/lib", "/etc/",
                                       "/var/lib/../tmp", "/lib64"])
def test_agent_state_dir_is_its_own(state_dir):
    """
    The agent makes its state directory readable by root only: a directory
    the system shares is refused as one.
    """
    with pytest.raises(ConfigError) as info:
        load_agent_config("version: 1\nnode: node1\ncontrol: "
                          "https://10.77.0.1:4523\nstate_dir: %s\n"
                          % (state_dir,))
    e = info.value
    assert (e.line, e.key) == (4, "state_dir")
    assert "is a directory the system shares" in e.message
    assert load_agent_config(
        "version: 1\nnode: node1\ncontrol: https://10.77.0.1:4523\n"
        "state_dir: /tmp/agent\n").state_dir == "/tmp/agent"


# --- the last app.yml read is kept -------------------------------------------

def test_the_same_applications_are_read_once(monkeypatch):
    from blockmover import config
    first = load_deployment(CLUSTER, APP)
    read = []
    real = config._read_applications
    monkeypatch.setattr(config, "_read_applications",
                        lambda src: read.append(src) or real(src))
    moved = load_deployment(edit(CLUSTER, "node1: [mongodb]\n  node2: []",
                                 "node1: []\n  node2: [mongodb]"), APP)
    assert read == []
    assert moved.applications["mongodb"] is first.applications["mongodb"]
    assert moved.placement["mongodb"] == "node2"
    # Another app.yml is read, and an error in it is still reported in
    # the order of old: the YAML of both files, then cluster.yml's keys.
    changed = edit(APP, "\"27017\"]", "\"27018\"]")
    assert load_deployment(CLUSTER, changed).applications["mongodb"] \
        .command[-1] == "27018"
    assert len(read) == 1
    bad_cluster = edit(CLUSTER, "name: demo", "name: 'no such'")
    assert error(bad_cluster, edit(APP, "version: 1", "version: [")) \
        .file == "app.yml"
    assert error(bad_cluster, edit(APP, "command:", "commands:")) \
        .file == "cluster.yml"
