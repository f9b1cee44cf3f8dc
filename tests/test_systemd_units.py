"""
The systemd units in etc/systemd: their contract (restart on failure,
after the network, the agent's applications survive its stop, mutual TLS
with the files in /etc/blockmover) and ``systemd-analyze verify`` where
systemd is installed.

verify insists that ExecStart's binary exists, and the units name the
installed paths (/usr/local/bin); the verify test therefore copies each
unit into a temporary directory with ExecStart's binary rewritten to the
script of the same name in this Python's environment, changing nothing
else.
"""

import configparser
import os
import shutil
import subprocess
import sys

import pytest

from blockmover import tls
from blockmover.config import TLSConfig, load_agent_config

ETC = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "etc")
UNITS = os.path.join(ETC, "systemd")
CONTROL = os.path.join(UNITS, "blockmover-control.service")
AGENT = os.path.join(UNITS, "blockmover-agent.service")
REPLICA = os.path.join(UNITS, "blockmover-control-replica.service")
AGENT_YML = os.path.join(ETC, "examples", "agent.yml")
ANALYZE = shutil.which("systemd-analyze")


def parse(path):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(path)
    return unit


def test_each_restarts_on_failure_after_the_network():
    for path in (CONTROL, AGENT, REPLICA):
        unit = parse(path)
        assert unit["Service"]["Restart"] == "on-failure", path
        assert "network-online.target" in unit["Unit"]["After"], path
        assert "network-online.target" in unit["Unit"]["Wants"], path
        assert unit["Install"]["WantedBy"] == "multi-user.target", path


def test_agent_stop_leaves_applications_running():
    assert parse(AGENT)["Service"]["KillMode"] == "process"


def test_exec_start_names_the_configuration():
    agent = parse(AGENT)["Service"]["ExecStart"].split()
    assert agent[0].endswith("/blockmover-agent")
    assert agent[agent.index("--config") + 1] == "/etc/blockmover/agent.yml"
    control = parse(CONTROL)["Service"]["ExecStart"].split()
    assert control[0].endswith("/blockmover-control")
    assert control[control.index("--state-dir") + 1] == \
        "/var/lib/blockmover/control"


def test_control_speaks_mutual_tls_with_the_files_in_etc():
    control = parse(CONTROL)["Service"]["ExecStart"].split()
    assert control[control.index("--tls-dir") + 1] == tls.SYSTEM_DIRECTORY
    assert not [a for a in control if a.startswith("--insecure")]
    assert control[control.index("--listen") + 1].startswith("tcp:")


def _uncommented_tls(text):
    """
    ``text`` (the example agent.yml) with its commented ``tls:`` block
    uncommented.
    """
    lines = []
    inside = False
    for line in text.splitlines():
        if line == "# tls:":
            inside = True
        elif inside and not line.startswith("#  "):
            inside = False
        lines.append(line[2:] if inside else line)
    return "\n".join(lines) + "\n"


def test_the_agents_configuration_documents_its_tls_files():
    """
    The unit's agent.yml, as etc/examples/agent.yml shows it, names the
    control service by https and documents ``tls:``: commented, its
    defaults, which are what the agent looks up without it.
    """
    with open(AGENT_YML) as f:
        text = f.read()
    assert "# tls:" in text
    example = load_agent_config(text)
    assert example.control.startswith("https://")
    assert example.tls == TLSConfig()
    documented = load_agent_config(_uncommented_tls(text)).tls
    default = tls.files_in(tls.SYSTEM_DIRECTORY,
                           tls.agent_stems(example.node)[0])
    assert documented == TLSConfig(directory=tls.SYSTEM_DIRECTORY,
                                   ca=default.ca,
                                   certificate=default.certificate,
                                   key=default.key)
    agent = parse(AGENT)["Service"]["ExecStart"].split()
    assert os.path.dirname(agent[agent.index("--config") + 1]) == \
        tls.SYSTEM_DIRECTORY


def runnable_copy(path, directory):
    """
    A copy of the unit at ``path`` in ``directory`` whose ExecStart binary
    is this environment's script of the same name.
    """
    lines = []
    with open(path) as f:
        for line in f:
            if line.startswith("ExecStart="):
                argv = line[len("ExecStart="):].split(" ")
                script = os.path.join(os.path.dirname(sys.executable),
                                      os.path.basename(argv[0]))
                assert os.access(script, os.X_OK), script
                line = "ExecStart=" + " ".join([script] + argv[1:])
            lines.append(line)
    copy = os.path.join(directory, os.path.basename(path))
    with open(copy, "w") as f:
        f.writelines(lines)
    return copy


def verify(path):
    return subprocess.run([ANALYZE, "verify", path], capture_output=True,
                          text=True, timeout=120)


needs_systemd = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed here")


@needs_systemd
@pytest.mark.parametrize("path", [CONTROL, AGENT, REPLICA])
def test_systemd_analyze_verify_accepts_the_unit(path, tmp_path):
    result = verify(runnable_copy(path, str(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    # verify warns, without failing, about unknown keys and bad values.
    assert result.stderr.strip() == "", result.stderr


@needs_systemd
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    copy = runnable_copy(AGENT, str(tmp_path))
    with open(copy, "a") as f:
        f.write("[Service]\nKilMode=process\n")
    result = verify(copy)
    assert "KilMode" in result.stderr


def test_room_for_thousands_of_agents():
    """
    The control service queues thousands of agents reconnecting at once and
    may hold a connection for each; both units may open that many files.
    """
    for path in (CONTROL, AGENT, REPLICA):
        assert int(parse(path)["Service"]["LimitNOFILE"]) >= 65536, path
    control = parse(CONTROL)["Service"]["ExecStart"].split()
    listen = control[control.index("--listen") + 1]
    assert "backlog=4096" in listen.split(":")


def test_a_replica_runs_on_etcd_with_its_own_name_and_address():
    """
    The replica's unit takes etcd's members, its name and its address
    from its environment file, and its command line reads them as the
    options of a replica.
    """
    from blockmover.control.main import parser
    service = parse(REPLICA)["Service"]
    assert service["EnvironmentFile"] == \
        "/etc/default/blockmover-control-replica"
    argv = service["ExecStart"].split()[1:]
    values = {"${ETCD}": "https://10.0.0.1:2379,https://10.0.0.2:2379",
              "${REPLICA}": "control1",
              "${ADVERTISE}": "https://10.0.0.1:4523"}
    options = parser().parse_args([values.get(a, a) for a in argv])
    assert options.etcd == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert (options.replica_name, options.advertise) == (
        "control1", "https://10.0.0.1:4523")
    assert options.tls_dir == tls.SYSTEM_DIRECTORY
