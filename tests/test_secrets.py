"""
Application secrets: only the slice of the node that runs an application
carries them; the configuration shown back, every other answer of the API,
every error and every log leave them out; what holds them on disk is
root's alone.
"""

import json
import os
import signal
import stat

import pytest
from hypothesis import assume, given, settings, strategies as st

from agents.runtime import ProcessRuntime
from blockmover import proc
from blockmover.certificates import NODE, USER
from blockmover.config import load_deployment
from blockmover.control.errors import StoreError
from blockmover.control.scrub import REDACTED, looks_secret, scrub_app_yml
from blockmover.control.store import FileStore, StoredConfiguration
from blockmover.model import Application, to_data
from blockmover.placement import desired_slices
from blockmover.poll import poll
from blockmover.units import MiB
from blockmover.yamlsource import Source
from tests import test_agent_loop
from tests.cluster_ca import OPERATOR
from tests.control_process import started_control
from tests.scratch_devices import scratch_directory
from tests.strategies import deployment_yaml, deployments, listings
from tests.test_agent_loop import AgentProcess, deploy as wait_for_deploy
from tests.test_client import CLUSTER_YML
from tests.test_control_api import CLUSTER as API_CLUSTER, report
from tests.test_deploy import deploy as dry_run_deploy

# Node mount namespaces, as the agent's own tests make them (a fixture).
namespaces = test_agent_loop.namespaces

# Distinctive: no name, path, size or generated value holds it by chance.
SECRET = "Zq7-hunter2-S3CR3T"


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _with_marked_secrets(deployment):
    """
    ``deployment`` with every secret's value saying whose it is:
    ``S3CR3T:<application>:<name>:``, then what was drawn.
    """
    return deployment.set(applications={
        name: app.set(secrets={
            variable: "S3CR3T:%s:%s:%s" % (name, variable, value)
            for variable, value in app.secrets.items()})
        for name, app in deployment.applications.items()})


# --- slices ------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(deployments(), st.data())
def test_a_slice_carries_the_secrets_of_its_nodes_applications_only(
        deployment, data):
    """
    Each node's slice holds the secrets of exactly the applications placed
    on it, whole; as it goes on the wire it holds no other application's.
    """
    deployment = _with_marked_secrets(deployment)
    slices = desired_slices(deployment, data.draw(listings(deployment)), MiB)
    for node, desired in slices.items():
        mine = deployment.applications_on(node)
        assert {app: application.secrets for app, application
                in desired.applications.items()} == {
            app: deployment.applications[app].secrets for app in mine}
        wire = json.dumps(to_data(desired))
        for app in deployment.applications:
            if app not in mine:
                assert "S3CR3T:%s:" % (app,) not in wire


# --- the configuration shown back ----------------------------------------------

SHOWN_APP = """\
version: 1
applications:
  web:
    command: [web, --port, "8080"]
    environment: {LANG: C.UTF-8}
    secrets:   # rotated: Zq7-hunter2-S3CR3T-old
      # was Zq7-hunter2-S3CR3T-older
      DB_PASSWORD: Zq7-hunter2-S3CR3T  # Zq7-hunter2-S3CR3T again
      "API,KEY": 'Zq7-hunter2-S3CR3T-2'
      CERTIFICATE: |
        Zq7-hunter2-S3CR3T-3
        Zq7-hunter2-S3CR3T-4

      # Zq7-hunter2-S3CR3T-5
    volume: {mountpoint: /data/web}
  db: {command: [db], secrets: {A: "Zq7-hunter2-S3CR3T-6"}, ports: []}
  cache:
    command: [cache]
    secrets:
      B: Zq7-hunter2-S3CR3T-7"""


def test_shown_app_yml_redacts_every_secret_and_keeps_the_rest():
    """
    Every secret's value is the marker, in block or flow style, quoted or
    not, on one line or several; comments inside the secrets and after
    them on their line go; the names and everything else stay as written,
    and the text still loads as the same applications.
    """
    shown = scrub_app_yml(SHOWN_APP)
    assert SECRET not in shown
    data = Source(shown, "app.yml").data["applications"]
    assert data["web"]["secrets"] == {"DB_PASSWORD": REDACTED,
                                      "API,KEY": REDACTED,
                                      "CERTIFICATE": REDACTED}
    assert data["db"] == {"command": ["db"], "secrets": {"A": REDACTED},
                          "ports": []}
    assert data["cache"]["secrets"] == {"B": REDACTED}
    lines = shown.splitlines()
    assert lines[:5] == SHOWN_APP.splitlines()[:5]
    assert "    volume: {mountpoint: /data/web}" in lines
    cluster = API_CLUSTER.format(root="/srv/loopback").replace(
        "node1: [mongodb]", "node1: [web, db, cache]")
    assert load_deployment(cluster, shown) == load_deployment(
        cluster, SHOWN_APP).transform(
            ["applications", "web", "secrets"], lambda s: {
                k: REDACTED for k in s},
            ["applications", "db", "secrets", "A"], REDACTED,
            ["applications", "cache", "secrets", "B"], REDACTED)


def test_shown_app_yml_keeps_line_ends_and_plain_texts():
    """
    A text without secrets is shown as written; one with Windows line ends
    keeps them.
    """
    plain = SHOWN_APP.split("    secrets:")[0] + "    volume: {mountpoint: " \
        "/data/web}\n"
    assert scrub_app_yml(plain) == plain
    windows = ("version: 1\r\napplications:\r\n  w:\r\n    secrets:\r\n"
               "      A: %s\r\n    command: [x]\r\n" % (SECRET,))
    assert scrub_app_yml(windows) == (
        "version: 1\r\napplications:\r\n  w:\r\n    secrets: {A: '%s'}\r\n"
        "    command: [x]\r\n" % (REDACTED,))


@settings(max_examples=60, deadline=None)
@given(deployments())
def test_shown_app_yml_loads_as_the_deployment_without_its_secrets(
        deployment):
    """
    For any deployment, the app.yml shown back holds no secret and loads
    as the same deployment with every secret's value the marker.
    """
    # A name that looks secret hides its whole entry, by design.
    assume(not any(looks_secret((name,)) for name in deployment.applications))
    deployment = _with_marked_secrets(deployment)
    cluster_yml, app_yml = deployment_yaml(deployment)
    shown = scrub_app_yml(app_yml)
    assert "S3CR3T" not in shown
    assert load_deployment(cluster_yml, shown) == deployment.set(
        applications={name: app.set(secrets={k: REDACTED
                                             for k in app.secrets})
                      for name, app in deployment.applications.items()})


def test_a_repr_names_secrets_without_their_values():
    app = Application(name="web", command=["web"], secrets={"P": SECRET})
    assert "'P'" in repr(app) and SECRET not in repr(app)
    assert SECRET not in str([app])


# --- the control service, through its API --------------------------------------

APP = """\
version: 1
applications:
  mongodb:
    command: [secantusd-py, --port, "27017"]
    environment: {LANG: C.UTF-8}
    secrets:
      DB_PASSWORD: "%s"   # the old one was %s-old
    volume:
      mountpoint: /data/db
      maximum_size: 1G
""" % (SECRET, SECRET)


def test_only_the_nodes_slice_carries_the_secret(control, loopback_root):
    """
    With a configuration holding a secret: node1's slice carries it, no
    other identity may read that slice, and no other answer of the API
    carries it (the configuration shown back, node2's slice, the state,
    the volumes, a dry run's plan, a refused configuration's errors), nor
    does the service's log. Its stored configuration is root's alone.
    """
    cluster = API_CLUSTER.format(root=loopback_root)
    moved = cluster.replace("node1: [mongodb]\n  node2: []",
                            "node1: []\n  node2: [mongodb]")
    answers = []

    def answer(status, data, expected=200):
        assert status == expected, data
        answers.append(data)
        return data

    def configure(cluster_yml, app_yml, query="", expected=200):
        return answer(*control.request(
            "PUT", "/v1/configuration" + query,
            {"cluster_yml": cluster_yml, "app_yml": app_yml,
             "cluster_path": "cluster.yml", "app_path": "app.yml"}),
            expected=expected)

    def slice_of(node):
        status, desired = control.request("GET",
                                          "/v1/nodes/%s/desired" % (node,))
        assert status == 200, desired
        return desired

    configure(cluster, APP)
    shown = answer(*control.request("GET", "/v1/configuration"))
    mongodb = Source(shown["app_yml"], "app.yml").data["applications"][
        "mongodb"]
    assert mongodb["secrets"] == {"DB_PASSWORD": REDACTED}
    assert mongodb["environment"] == {"LANG": "C.UTF-8"}
    assert slice_of("node1")["applications"]["mongodb"]["secrets"] == {
        "DB_PASSWORD": SECRET}
    answers.append(slice_of("node2"))
    # node1's slice is node1's alone.
    for kind, name in ((NODE, "node2"), (USER, OPERATOR)):
        answer(*control.request("GET", "/v1/nodes/node1/desired", kind=kind,
                                name=name), expected=403)
    answer(*control.request("GET", "/v1/configuration", kind=NODE,
                            name="node1"), expected=403)

    answer(*control.request("PUT", "/v1/nodes/node1/state",
                            report("node1", running=["mongodb"])))
    answer(*control.request("GET", "/v1/state"))
    answer(*control.request("GET", "/v1/volumes"))
    plan = configure(moved, APP, "?dry_run=1")
    assert plan["plan"]["node1"] and plan["plan"]["node2"]
    for refused in (
            APP.replace('"%s"' % (SECRET,), "!!int %s" % (SECRET,)),
            APP.replace('"%s"' % (SECRET,), "[%s]" % (SECRET,)),
            APP.replace("{LANG: C.UTF-8}", "{DB_PASSWORD: x}"),
            APP.replace("DB_PASSWORD:", "LD_PRELOAD:"),
            APP.replace("maximum_size: 1G", "maximum_size: 0"),
            APP.replace("mountpoint: /data/db", "mountpoint: /etc")):
        errors = configure(cluster, refused, expected=400)["errors"]
        assert errors and errors[0].startswith("app.yml:")
    configure(cluster.replace("node2: []", "node3: []"), APP, expected=400)

    # Moved: node2's slice carries it now, node1's no longer.
    configure(moved, APP)
    assert slice_of("node2")["applications"]["mongodb"]["secrets"] == {
        "DB_PASSWORD": SECRET}
    answers.append(slice_of("node1"))
    answers.append(control.request("GET", "/v1/configuration")[1])

    for data in answers:
        assert SECRET not in json.dumps(data), data
    with open(control.log) as f:
        log = f.read()
    assert "blockmover:control:configured" in log
    with open(control.stderr_path) as f:
        log += f.read()
    assert SECRET not in log

    stored = os.path.join(control.state_dir, "configuration.json")
    with open(stored) as f:
        assert SECRET in f.read()
    assert (_mode(control.state_dir), _mode(stored)) == (0o700, 0o600)


# --- on disk -------------------------------------------------------------------

def test_stored_configuration_is_made_roots_alone(tmp_path):
    """
    A configuration stored with looser modes (by an older release, or by
    hand) is made 0600 in a 0700 directory when it is loaded; a new one is
    saved so from the start.
    """
    directory = str(tmp_path / "state")
    store = FileStore(directory)
    store.save(StoredConfiguration(generation=1, counter=1, cluster_yml="",
                                   app_yml=""))
    assert (_mode(directory), _mode(store.path)) == (0o700, 0o600)
    os.chmod(directory, 0o755)
    os.chmod(store.path, 0o644)
    assert store.load().generation == 1
    assert (_mode(directory), _mode(store.path)) == (0o700, 0o600)


def test_a_directory_the_system_shares_is_never_made_private():
    """
    Neither the control service's store nor the agent's runtime takes
    /tmp or /var/lib for its own (and makes it root's alone): each is
    refused, saying why, and left as it was.
    """
    before = _mode("/tmp")
    for directory in ("/tmp", "/var/lib/"):
        with pytest.raises(StoreError) as info:
            FileStore(directory).load()
        assert "is a directory the system shares" in str(info.value)
        with pytest.raises(ValueError):
            ProcessRuntime(directory)
    assert _mode("/tmp") == before


def test_runtime_passes_secrets_and_keeps_its_records_roots_alone():
    """
    An application's secrets are variables of its process like its
    environment. The runtime's directories are 0700 and its records and
    application logs 0600, also those an older release left looser; a
    record holds no secret.
    """
    with scratch_directory() as directory:
        started = []
        try:
            _start_with_secrets(directory, started)
        finally:
            # Whatever a failed test left running is ended, by its pid.
            for pid in started:
                if proc.find(pid) is not None:
                    os.kill(pid, signal.SIGKILL)


def _start_with_secrets(directory, started):
    apps, logs = (os.path.join(directory, d) for d in ("apps", "logs"))
    for path in (apps, logs):
        os.makedirs(path, mode=0o755)
        os.chmod(path, 0o755)
    os.chmod(directory, 0o755)
    old_log = os.path.join(logs, "old.log")
    old_record = os.path.join(apps, "old.json")
    for path in (old_log, old_record):
        with open(path, "w") as f:
            f.write("{}")
        os.chmod(path, 0o644)
    runtime = ProcessRuntime(directory)
    assert [_mode(p) for p in (directory, apps, logs, old_log, old_record)] \
        == [0o700, 0o700, 0o700, 0o600, 0o600]

    app = Application(name="web", command=[
        "sh", "-c", 'echo "$GREETING $DB_PASSWORD"; sleep 120'],
        environment={"GREETING": "hello"}, secrets={"DB_PASSWORD": SECRET})
    started.append(runtime.start(app).pid)
    log = os.path.join(logs, "web.log")
    record = os.path.join(apps, "web.json")

    def printed():
        with open(log) as f:
            return f.read() or None
    assert poll(printed, 10, "the application to print") == \
        "hello %s\n" % (SECRET,)
    assert (_mode(log), _mode(record)) == (0o600, 0o600)
    with open(record) as f:
        assert SECRET not in f.read()
    runtime.stop("web")


# --- the whole path ----------------------------------------------------------

SHELL_APP = """\
version: 1
applications:
  web:
    command: [sh, -c, 'echo "$GREETING $DB_PASSWORD"; exec sleep 3600']
    environment: {GREETING: hello}
    secrets: {DB_PASSWORD: %s}
"""


def test_the_secret_reaches_the_application_and_no_log(workdir,
                                                       loopback_root,
                                                       namespaces):
    """
    blockmover-deploy --wait with a secret, to a real agent: the
    application's process has it in its environment (it prints it to its
    own log, which is root's alone, as are the agent's records), and
    neither the deploy's output and log, nor a dry run's, nor the control
    service's log, nor the agent's, holds it.
    """
    ns1 = namespaces("node1")
    control = started_control(workdir)
    agent = AgentProcess(workdir, control.url, loopback_root, ns1, "demo")
    cluster = os.path.join(workdir, "cluster.yml")
    apps = os.path.join(workdir, "app.yml")
    outputs = []

    def write(placed):
        with open(cluster, "w") as f:
            f.write(CLUSTER_YML.format(name="demo", url=control.url,
                                       root=loopback_root, on1=placed,
                                       on2=""))
        with open(apps, "w") as f:
            f.write(SHELL_APP % (SECRET,))
    try:
        write("web")
        agent.start()
        deploy_log = os.path.join(workdir, "deploy.log")
        result = wait_for_deploy(cluster, apps, "--log", deploy_log)
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode == 0, result.stdout + result.stderr
        app_log = os.path.join(agent.state_dir, "logs", "web.log")

        def printed():
            with open(app_log) as f:
                return f.read() or None
        assert poll(printed, 10, "the application to print") == \
            "hello %s\n" % (SECRET,)
        state_dir = agent.state_dir
        assert [_mode(os.path.join(state_dir, *p)) for p in (
            (), ("apps",), ("logs",), ("apps", "web.json"),
            ("logs", "web.log"))] == [0o700, 0o700, 0o700, 0o600, 0o600]

        write("")
        result = dry_run_deploy("--dry-run", cluster, apps)
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode == 0 and "web: stop" in result.stdout, \
            result.stdout + result.stderr
        result = wait_for_deploy(cluster, apps)
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode == 0, result.stdout + result.stderr
        assert agent.app_pid("web") is None
    finally:
        pid = agent.app_pid("web")
        agent.terminate()
        if pid is not None and proc.find(pid) is not None:
            os.kill(pid, signal.SIGKILL)
        control.stop()
    logs = [control.log, control.stderr_path, agent.log,
            os.path.join(workdir, "node1.err"), deploy_log]
    for path in logs:
        with open(path) as f:
            outputs.append(f.read())
    assert "StartApplication" in outputs[-3]
    for output in outputs:
        assert SECRET not in output
