"""
The convergence agent end to end: the real ``blockmover-control``, a real
``blockmover-agent`` process on the real loopback backend, a real
application process writing into its mounted volume, and
``blockmover-deploy --wait`` following along. Then the loop's own
behaviour (waking at once, per-dataset retry backoff, an unreachable
control service) on a fresh reactor with a real thread pool.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import deferLater

from agents.changes import NodeContext
from agents.loop import STOP_GRACE, AgentThreadPool, ConvergenceLoop
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.localcluster.mounts import (
    is_mountpoint, namespace_mounts, unmount_in_namespace,
)
from blockmover.localcluster.namespaces import (
    make_mount_ns_dir, make_node_mount_ns, remove_mount_ns_dir,
    remove_node_mount_ns,
)
from blockmover.client import ControlUnreachable
from blockmover.identity import dataset_id
from blockmover.poll import Backoff, poll
from blockmover.model import (
    Application, NodeDesired, NodeState, RunningApplication,
    Step as ModelStep,
)
from blockmover.certificates import METRICS, USER
from tests.cluster_ca import OPERATOR, cluster_ca, node_tls
from tests.control_process import started_control
from tests.metrics_text import scrape, value
from tests.reactors import run_reactor
from tests.test_client import (
    VENV_BIN, write_configuration,
)

APP = "demo"
# Writes a file into its working directory (the volume's mountpoint) and
# stays up.
APP_COMMAND = ('%s, -c, "import time; open(\'alive\', \'w\').write(\'ok\'); '
               'time.sleep(3600)"' % (sys.executable,))


class NodeNamespace(object):
    """
    A node's own persistent mount namespace (as a local cluster's nodes
    have), so that two agents on this machine do not see each other's
    mounts. ``remove()`` unmounts what is left in it and removes it.
    """

    def __init__(self, ns_dir, name):
        self.name = name
        self.mount_ns = os.path.join(ns_dir, name)
        make_node_mount_ns(self)

    def run(self, argv, **kwargs):
        return subprocess.run(["nsenter", "--mount=" + self.mount_ns, "--"]
                              + list(argv), **kwargs)

    def mounted(self, path):
        return any(m.mountpoint == path
                   for m in namespace_mounts(self.mount_ns))

    def read(self, path):
        result = self.run(["cat", path], capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else None

    def remove(self, mountpoint):
        if self.mounted(mountpoint):
            unmount_in_namespace(self.mount_ns, mountpoint)
        remove_node_mount_ns(self)


class _NamespaceDir(object):
    def __init__(self, path):
        self.mount_ns_dir = path


class AgentProcess(object):
    """
    ``blockmover-agent`` as a child process with its own agent.yml, run
    inside ``namespace`` (a ``NodeNamespace``).
    """

    def __init__(self, directory, control_url, loopback_root, namespace,
                 cluster, extra=""):
        self.directory = directory
        self.node = namespace.name
        self.namespace = namespace
        self.state_dir = os.path.join(directory, self.node + "-state")
        self.log = os.path.join(directory, self.node + ".log")
        self.config = os.path.join(directory, self.node + ".yml")
        with open(self.config, "w") as f:
            f.write("version: 1\nnode: %s\ncontrol: %s\nstate_dir: %s\n"
                    "log: %s\nbackend:\n  name: loopback\n  root: %s\n"
                    "tls: %s\n%s"
                    % (self.node, control_url, self.state_dir, self.log,
                       loopback_root,
                       json.dumps(node_tls(cluster, self.node)), extra))
        self.process = None

    def start(self):
        # nsenter enters the namespace and execs the agent: one pid.
        self.process = subprocess.Popen(
            ["nsenter", "--mount=" + self.namespace.mount_ns, "--",
             os.path.join(VENV_BIN, "blockmover-agent"), "--config",
             self.config],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.directory, self.node + ".err"),
                        "ab"))

    def terminate(self, timeout=60):
        """
        SIGTERM the agent and return its exit status.
        """
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError("the agent ignored SIGTERM for %ss"
                                 % (timeout,))

    def metrics_port(self):
        """
        The port the agent serves its metrics on, as it said on stderr.
        """
        with open(os.path.join(self.directory, self.node + ".err")) as f:
            lines = [line for line in f if "metrics listening on" in line]
        return int(lines[-1].rsplit(":", 1)[1]) if lines else None

    def app_pid(self, name=APP):
        """
        The pid the agent recorded for ``name``'s process, or None: no
        record, or only the intent of a start not (yet) made (a record
        without a pid, written before each attempt).
        """
        try:
            with open(os.path.join(self.state_dir, "apps",
                                   name + ".json")) as f:
                return json.load(f).get("pid")
        except FileNotFoundError:
            return None


def alive(pid):
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def _started_in(pid, directory):
    """
    Whether ``pid`` runs in ``directory`` (so it is this test's application
    and not a process that reused the pid).
    """
    try:
        return os.readlink("/proc/%d/cwd" % (pid,)).startswith(directory)
    except OSError:
        return False


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def deploy(cluster, apps, *extra, timeout=120):
    """
    ``blockmover-deploy --wait`` as the operator of the cluster
    ``cluster`` (a cluster.yml) names.
    """
    with open(cluster) as f:
        name = yaml.safe_load(f)["cluster"]["name"]
    operator = cluster_ca(name).files(USER, OPERATOR)
    return subprocess.run(
        [os.path.join(VENV_BIN, "blockmover-deploy"), "--wait",
         "--timeout", "90", "--tls-dir", os.path.dirname(operator.certificate),
         *extra, cluster, apps],
        capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def namespaces(workdir):
    """
    A factory of node mount namespaces under ``workdir``; all removed
    afterwards (each after unmounting the test's mountpoint in it).
    """
    ns_dir = _NamespaceDir(os.path.join(workdir, "ns", "mounts"))
    made = []
    mountpoint = os.path.join(workdir, "mnt", APP)

    def make(name):
        if not made:
            make_mount_ns_dir(ns_dir)
        made.append(NodeNamespace(ns_dir.mount_ns_dir, name))
        return made[-1]
    try:
        yield make
    finally:
        for namespace in made:
            namespace.remove(mountpoint)
        if made:
            remove_mount_ns_dir(ns_dir)


def test_agent_moves_application_between_nodes(workdir, loopback_root,
                                               namespaces):
    """
    Deploying an application to node1 creates, attaches, formats and mounts
    its volume and starts it there (its file lands on the volume); SIGTERM
    stops the agent but not the application, and a restarted agent adopts
    it; moving it to node2 stops, unmounts and detaches it on node1 and
    attaches, mounts and starts it on node2 with its data; deploying it to
    no node stops it, unmounts and detaches the volume and keeps it.
    """
    cluster_name = "a%d" % (os.getpid(),)
    ns1, ns2 = namespaces("node1"), namespaces("node2")
    control = started_control(workdir, cluster=cluster_name)
    agent = AgentProcess(workdir, control.url, loopback_root, ns1,
                         cluster_name)
    agent2 = AgentProcess(workdir, control.url, loopback_root, ns2,
                          cluster_name)
    mountpoint = os.path.join(workdir, "mnt", APP)
    alive_file = os.path.join(mountpoint, "alive")
    marker = os.path.join(mountpoint, "marker")
    pids = []
    try:
        cluster, apps = write_configuration(
            workdir, control.url, cluster_name, placed=APP,
            command=APP_COMMAND, root=loopback_root)
        agent.start()
        agent2.start()
        deploy_log = os.path.join(workdir, "deploy.log")
        result = deploy(cluster, apps, "--log", deploy_log)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "converged" in result.stdout
        # The changes node1 made for this deploy are in the deploy's task.
        [task] = {m["task_uuid"] for m in read_log(deploy_log)}
        changes = {m["change"] for m in read_log(agent.log)
                   if m["task_uuid"] == task
                   and m.get("action_type") == "blockmover:agent:change"
                   and m.get("action_status") == "started"}
        assert {"AttachVolume", "MountFilesystem", "StartApplication"} <= {
            change.split()[0] for change in changes}, changes
        # One line per application: where it goes, its steps and times.
        assert "%s -> node1 [running on node1]" % (APP,) in result.stdout
        assert "attach" in result.stdout and "mount" in result.stdout

        assert ns1.mounted(mountpoint) and not ns2.mounted(mountpoint)
        assert not is_mountpoint(mountpoint), "a node's mount leaked"
        pid = agent.app_pid()
        pids.append(pid)
        assert pid is not None and alive(pid)
        deadline = time.monotonic() + 10
        while ns1.read(alive_file) != "ok":
            assert time.monotonic() < deadline, "the application wrote nothing"
            time.sleep(0.1)
        backend = LoopbackBlockDeviceAPI(loopback_root, cluster_name, "node1")
        [volume] = backend.list_volumes()
        assert volume.attached_to == "node1"

        # SIGTERM: the agent stops cleanly, the application keeps running.
        started = time.monotonic()
        assert agent.terminate() == 0
        assert time.monotonic() - started < 10, "SIGTERM took too long"
        assert alive(pid) and ns1.mounted(mountpoint)

        # A restarted agent adopts it: converged without restarting it.
        agent.start()
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
        assert agent.app_pid() == pid and alive(pid)

        # Moved to node2: stopped here, started there, with its data.
        ns1.run(["sh", "-c", "echo kept > " + marker], check=True)
        write_configuration(workdir, control.url, cluster_name, placed=APP,
                            command=APP_COMMAND, root=loopback_root,
                            node="node2")
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "%s -> node2 [running on node2]" % (APP,) in result.stdout
        assert not alive(pid)
        assert not ns1.mounted(mountpoint) and ns2.mounted(mountpoint)
        pid2 = agent2.app_pid()
        pids.append(pid2)
        assert pid2 is not None and alive(pid2)
        assert ns2.read(marker) == "kept\n"
        [volume] = backend.list_volumes()
        assert volume.attached_to == "node2"

        # Moved to no node, it stops and its volume is let go.
        write_configuration(workdir, control.url, cluster_name, placed="",
                            command=APP_COMMAND, root=loopback_root)
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "%s -> no node [stopped]" % (APP,) in result.stdout
        assert not alive(pid2)
        assert not ns2.mounted(mountpoint)
        [volume] = backend.list_volumes()
        assert volume.attached_to is None
        assert LoopbackBlockDeviceAPI(
            loopback_root, cluster_name, "node2").get_device_path(
                volume.volume_id) is None
    finally:
        agent.terminate()
        agent2.terminate()
        # Whatever the test got to: every application either node started.
        pids.extend([agent.app_pid(), agent2.app_pid()])
        for pid in pids:
            if pid is not None and alive(pid) and _started_in(pid, workdir):
                os.kill(pid, signal.SIGKILL)
        control.stop()


def test_scraped_metrics_show_a_real_move(workdir, loopback_root,
                                         namespaces):
    """
    After a real move from node1 to node2, the control service's /metrics
    and each agent's (over TLS, with the cluster's metrics certificate),
    parsed as Prometheus parses them, show that move: its phases and its
    whole time on the control service, node1's stop, unmount and detach
    and node2's attach, mount, start and ready with their backend calls,
    both nodes converged. Placed on no node, the application's removal is
    measured too.
    """
    cluster_name = "m%d" % (os.getpid(),)
    ns1, ns2 = namespaces("node1"), namespaces("node2")
    control = started_control(workdir, cluster=cluster_name)
    listen = "metrics:\n  listen: tcp:0:interface=127.0.0.1\n"
    agents = [AgentProcess(workdir, control.url, loopback_root, ns,
                           cluster_name, extra=listen) for ns in (ns1, ns2)]
    scraper = cluster_ca(cluster_name).ssl_context(METRICS, None)
    try:
        cluster, apps = write_configuration(
            workdir, control.url, cluster_name, placed=APP,
            command=APP_COMMAND, root=loopback_root)
        for agent in agents:
            agent.start()
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
        write_configuration(workdir, control.url, cluster_name, placed=APP,
                            command=APP_COMMAND, root=loopback_root,
                            node="node2")
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "%s -> node2 [running on node2]" % (APP,) in result.stdout

        status, text = scrape(control.port, scraper, "127.0.0.1")
        assert status == 200, text
        phases = "blockmover_move_phase_duration_seconds_count"
        for phase in ("stop", "unmount", "detach", "attach", "mount",
                      "start", "ready"):
            assert value(text, phases, kind="move", phase=phase) == 1, phase
        for phase in ("create", "attach", "mkfs", "mount", "start", "ready"):
            assert value(text, phases, kind="deploy", phase=phase) == 1, phase
        assert value(text, "blockmover_move_duration_seconds_count",
                     kind="move") == 1
        assert value(text, "blockmover_move_duration_seconds_count",
                     kind="deploy") == 1
        assert value(text, "blockmover_moves_in_progress") is None
        status, configuration = control.request("GET", "/v1/configuration")
        assert value(text, "blockmover_configuration_generation") == \
            configuration["generation"]
        assert value(text, "blockmover_listing_volumes") == 1
        assert value(text, "blockmover_listing_refreshes_total",
                     cause="node_request") >= 1

        def settled():
            # A node is converging a moment after each new slice (the
            # listing's), and polls again right after it took it.
            text = scrape(control.port, scraper, "127.0.0.1")[1]
            return (value(text, "blockmover_nodes", state="converged") == 2
                    and value(text, "blockmover_long_polls") == 2) or None
        poll(settled, 30, "both nodes converged and polling",
             Backoff(initial=0.05, maximum=1.0))

        node1, node2 = [scrape(agent.metrics_port(), scraper, agent.node)
                        for agent in agents]
        assert node1[0] == node2[0] == 200
        changes = "blockmover_storage_operation_duration_seconds_count"
        for text, kinds in ((node1[1], ("stop", "unmount", "detach")),
                            (node2[1], ("attach", "mount", "start",
                                        "ready"))):
            # At least once: a change is run again while the control
            # service's listing lags behind it (it is idempotent).
            for kind in kinds:
                assert value(text, changes, operation_name=kind,
                             status="success") >= 1, (kind, text)
            assert value(text, changes, status="fail") is None
            assert value(text, "blockmover_agent_converged") == 1
        calls = "blockmover_backend_call_duration_seconds_count"
        assert value(node1[1], calls, backend="loopback",
                     operation_name="detach_volume", status="success") >= 1
        assert value(node2[1], calls, backend="loopback",
                     operation_name="attach_volume", status="success") >= 1

        # On no node: node2 lets the volume go, and the removal ends.
        write_configuration(workdir, control.url, cluster_name, placed="",
                            command=APP_COMMAND, root=loopback_root)
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
        status, text = scrape(control.port, scraper, "127.0.0.1")
        assert value(text, "blockmover_move_duration_seconds_count",
                     kind="remove") == 1
        for phase in ("stop", "unmount", "detach"):
            assert value(text, phases, kind="remove", phase=phase) == 1, phase
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            pid = agent.app_pid()
            if pid is not None and alive(pid) and _started_in(pid, workdir):
                os.kill(pid, signal.SIGKILL)
        control.stop()


# --- the loop on a fresh reactor ------------------------------------------

class FakeClient(object):
    """
    Stands in for the control service in these loop tests: hands out
    slices the test pushes, records reports, can be unreachable.
    """

    def __init__(self):
        self.slices = []
        self.reports = []
        self.polls = 0
        self.unreachable = 0
        self._waiting = None

    def push(self, desired):
        self.slices.append(desired)
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.callback(desired)

    def get_desired(self, node, after=None, timeout=30.0):
        self.polls += 1
        if self.unreachable:
            self.unreachable -= 1
            from twisted.internet.defer import fail
            return fail(ControlUnreachable("http://x", "connection refused"))
        for desired in self.slices:
            if after is None or desired.generation > after:
                return succeed(desired)
        self._waiting = Deferred()
        self._waiting.addErrback(lambda f: None)
        return self._waiting

    def put_state(self, node, report):
        self.reports.append(report)
        return succeed(None)


class FakeStep(object):
    """
    A change of ``dataset_id`` that fails ``failures`` times, recording
    when each attempt ran; with ``gate`` (a ``threading.Event``) it blocks
    until the gate opens, as a slow attach would.
    """
    kind = "step"
    touches_backend = False
    waits_for = None
    application_name = None

    def __init__(self, dataset_id, failures=0, gate=None):
        self.dataset_id = dataset_id
        self.failures = failures
        self.gate = gate
        self.attempts = []
        self.done = False

    @property
    def step(self):
        return ModelStep(kind=self.kind, dataset_id=self.dataset_id)

    def describe(self):
        return "step " + self.dataset_id

    def run(self, context):
        self.attempts.append(time.monotonic())
        if self.gate is not None:
            self.gate.wait(30)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("%s is not ready" % (self.dataset_id,))
        self.done = True


def slice_(generation):
    return NodeDesired(node="n1", backend_id="n1", cluster_name="c",
                       generation=generation)


def run_loop(client, steps, scenario, timeout=30, observe_fails=(),
             runtime=None, running=lambda: {}, observed=None):
    """
    Run a ConvergenceLoop whose datasets and plans come from ``steps``
    (generation -> {dataset: [FakeStep, ...]}): a dataset's plan is its
    unfinished steps, in order, until ``scenario(reactor, loop)`` fires.
    ``running()`` says which applications run (for the look at the node).
    """
    context = NodeContext(node="n1", backend_id="n1", cluster_name="c",
                          backend=None, runtime=runtime)
    observed = [] if observed is None else observed

    def observe(context, desired, datasets=None, known=()):
        observed.append((desired.generation, datasets))
        if len(observed) - 1 in observe_fails:
            raise OSError("lsblk is missing")
        return NodeState(node="n1", backend_id="n1", running=running())

    def dataset_plan(desired, state, dataset):
        return [s for s in steps.get(desired.generation, {}).get(dataset, [])
                if not s.done]

    def datasets(desired, state):
        return sorted(steps.get(desired.generation, {}))

    def start(reactor):
        pool = AgentThreadPool(minthreads=1, maxthreads=8, name="loop-test")
        pool.start()
        loop = ConvergenceLoop(
            reactor, client, context, pool, observe=observe,
            dataset_plan=dataset_plan, datasets=datasets,
            dataset_waiting=lambda d, s, dataset: [])
        loop.start()
        d = scenario(reactor, loop)

        def finish(result):
            stopped = loop.stop()
            stopped.addCallback(lambda _: pool.stop())
            stopped.addCallback(lambda _: result)
            return stopped
        return d.addBoth(finish)
    return run_reactor(start, timeout), observed


@inlineCallbacks
def _until(reactor, condition, what, timeout=10.0):
    end = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < end, "gave up waiting for " + what
        yield deferLater(reactor, 0.02)


def _converged(client):
    return bool(client.reports) and client.reports[-1].progress.converged


def test_failing_dataset_does_not_stall_others():
    """
    A change that fails is retried with growing gaps, while the other
    dataset's change runs meanwhile; the reports carry the error with its
    kind and step, and, at the end, convergence.
    """
    client = FakeClient()
    bad, good = FakeStep("bad", failures=3), FakeStep("good")
    client.push(slice_(1))

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: bad.done and good.done, "both steps")
        yield _until(reactor, lambda: _converged(client), "convergence")
    run_loop(client, {1: {"bad": [bad], "good": [good]}}, scenario)
    assert good.attempts[0] < bad.attempts[1], \
        "the good dataset waited for the failing one"
    gaps = [b - a for a, b in zip(bad.attempts, bad.attempts[1:])]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0], gaps
    errors = [e for r in client.reports for e in r.progress.errors]
    assert errors and all(e.step.dataset_id == "bad" for e in errors)
    assert errors[-1].kind == "RuntimeError"
    assert "bad is not ready" in errors[-1].message
    assert [e.attempts for e in errors] == sorted(e.attempts for e in errors)
    final = client.reports[-1].progress
    assert final.generation == 1 and not final.errors
    assert [f.step.dataset_id for f in final.finished] == ["good", "bad"]


def test_slow_change_of_one_dataset_never_delays_another():
    """
    While one dataset's change hangs (a slow attach), another dataset's
    changes run to their end; the report shows the hanging one running.
    SIGTERM (``stop()``) then ends the loop within its grace time, the
    hanging change cut short.
    """
    client = FakeClient()
    gate = threading.Event()
    slow = FakeStep("slow", gate=gate)
    quick = [FakeStep("quick"), FakeStep("quick")]
    client.push(slice_(1))
    result = {}

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: all(s.done for s in quick),
                     "the quick dataset")
        assert slow.attempts and not slow.done
        progress = client.reports[-1].progress
        assert [r.step.dataset_id for r in progress.running] == ["slow"]
        assert not progress.converged
        started = reactor.seconds()
        yield loop.stop()
        result["stopped_in"] = reactor.seconds() - started
        result["in_flight"] = loop.changes_in_flight
        gate.set()
    try:
        run_loop(client, {1: {"slow": [slow], "quick": quick}}, scenario)
    finally:
        gate.set()
    assert result["in_flight"] == 1
    assert result["stopped_in"] < STOP_GRACE + 2


def test_new_slice_wakes_loop_at_once():
    """
    Converged and idle, the loop acts on a new slice at once, not after
    its re-check backoff.
    """
    client = FakeClient()
    step = FakeStep("d")
    client.push(slice_(1))

    @inlineCallbacks
    def scenario(reactor, loop):
        # Let the idle backoff grow past a second.
        yield deferLater(reactor, 3.0)
        pushed = time.monotonic()
        client.push(slice_(2))
        yield _until(reactor, lambda: step.done, "the new slice's change")
        return step.attempts[0] - pushed
    delay, observed = run_loop(client, {1: {"d": []}, 2: {"d": [step]}},
                               scenario)
    assert delay < 0.5, delay
    # Idle re-checks backed off: far fewer than one per 100 ms.
    assert len([o for o in observed if o[0] == 1]) < 15, observed


class LaggingStep(FakeStep):
    """
    A change that succeeds and is planned again from the same look: the
    control service's listing lags behind it.
    """

    def run(self, context):
        self.attempts.append(time.monotonic())


def test_changes_planned_again_while_the_listing_lags_back_off():
    """
    Changes that all ran and come back from the same look (the listing
    lags, and no slice comes while a leader is elected) run again after
    growing waits, not ten times a second; a new slice that plans nothing
    settles the worker at once.
    """
    client = FakeClient()
    step = LaggingStep("d")
    client.push(slice_(1))

    @inlineCallbacks
    def scenario(reactor, loop):
        yield deferLater(reactor, 4.0)
        pushed = time.monotonic()
        client.push(slice_(2))
        yield _until(reactor, lambda: _converged(client)
                     and client.reports[-1].progress.generation == 2,
                     "the new slice settled")
        return time.monotonic() - pushed
    settled, _ = run_loop(client, {1: {"d": [step]}, 2: {"d": []}},
                          scenario)
    gaps = [b - a for a, b in zip(step.attempts, step.attempts[1:])]
    # Spinning, it ran about 35 times in those 4 s.
    assert 4 <= len(step.attempts) < 15, gaps
    assert gaps[-1] > 3 * gaps[0], gaps
    assert settled < 1.0, settled


def test_application_exit_wakes_its_worker_at_once():
    """
    Converged and idle, a worker hears of its application's exit from the
    process itself (a pidfd the reactor watches), not from a later re-check.
    """
    client = FakeClient()
    child = subprocess.Popen(["sleep", "60"])
    exited = []

    class Runtime(object):
        def exit_fd(self, name):
            return os.pidfd_open(child.pid)

    def running():
        return {} if child.poll() is not None else {
            "app": RunningApplication(name="app", pid=child.pid, ready=True)}

    desired = slice_(1).set(applications={"app": Application(
        name="app", command=["sleep", "60"])})
    client.push(desired)
    dataset = dataset_id("c", "app")
    observed = []

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: _converged(client), "convergence")
        # Let the idle re-checks back off well past the exit's notice.
        yield deferLater(reactor, 2.0)
        looks = len(observed)
        child.kill()
        killed = reactor.seconds()
        yield _until(reactor, lambda: len(observed) > looks, "a new look")
        exited.append(reactor.seconds() - killed)
    try:
        run_loop(client, {1: {dataset: []}}, scenario, runtime=Runtime(),
                 running=running, observed=observed)
    finally:
        child.kill()
        child.wait()
    assert exited[0] < 0.5, exited


def test_unreachable_control_is_retried():
    """
    The control service failing to answer is logged and retried with
    backoff; the loop converges once it answers.
    """
    client = FakeClient()
    client.unreachable = 3
    step = FakeStep("d")
    client.push(slice_(1))

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: step.done, "the change")
    run_loop(client, {1: {"d": [step]}}, scenario)
    assert client.polls >= 4


def test_failing_observe_is_reported_and_retried():
    """
    Looking at the node failing is reported as trouble and retried; the
    loop converges once it works.
    """
    client = FakeClient()
    step = FakeStep("d")
    client.push(slice_(1))

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: _converged(client), "convergence")
    _, observed = run_loop(client, {1: {"d": [step]}}, scenario,
                           observe_fails={1, 2})
    assert step.done
    assert len(observed) >= 4
    assert any("lsblk is missing" in (r.progress.trouble or "")
               for r in client.reports)
    assert client.reports[-1].progress.trouble is None


# --- the entry point ---------------------------------------------------------

def test_agent_help_and_bad_config(workdir):
    agent = os.path.join(VENV_BIN, "blockmover-agent")
    result = subprocess.run([agent, "--help"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0
    assert "--config agent.yml" in result.stdout
    assert "applications keep running" in result.stdout
    config = os.path.join(workdir, "agent.yml")
    with open(config, "w") as f:
        f.write("version: 1\nnode: node1\n")
    result = subprocess.run([agent, "--config", config],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(config) and "control" in line


class FakeBackend(object):
    def __init__(self, instance_id):
        self.instance_id = instance_id

    def compute_instance_id(self):
        return self.instance_id


def _agent_config(extra=""):
    from blockmover.config import load_agent_config
    return load_agent_config(
        "version: 1\nnode: node1\ncontrol: https://127.0.0.1:1\n"
        "backend: {name: loopback, root: /nonexistent}\n" + extra)


def _node1_slice(generation):
    return slice_(generation).set(node="node1", backend_id="node1")


def test_context_factory_makes_backend_per_cluster():
    """
    The backend is made once per cluster name, with the node's name as
    the loopback instance id, and made again when the cluster changes.
    """
    from agents.main import ContextFactory
    made = []

    def backend_factory(name, options, cluster_name, instance_id):
        made.append((name, options, cluster_name, instance_id))
        return FakeBackend(instance_id)
    contexts = ContextFactory(_agent_config(), runtime=None,
                              backend_factory=backend_factory)
    first = contexts(_node1_slice(1))
    assert contexts(_node1_slice(2)).backend is first.backend
    other = contexts(_node1_slice(3).set(cluster_name="other"))
    assert other.backend is not first.backend
    assert made == [("loopback", {"root": "/nonexistent"}, "c", "node1"),
                    ("loopback", {"root": "/nonexistent"}, "other", "node1")]
    assert first.node == "node1" and first.backend_id == "node1"


@pytest.mark.parametrize("field, value, named", [
    ("node", "node2", "node 'node2', not this node 'node1'"),
    ("backend_id", "i-other", "backend instance 'i-other', not this "
     "node's 'node1'"),
    ("cluster_name", "other", "cluster 'other', not this node's cluster "
     "'c'"),
])
def test_context_factory_refuses_another_nodes_slice(field, value, named):
    """
    A slice naming another node, another backend instance or (when
    agent.yml names its cluster) another cluster is refused before any
    backend is made for it.
    """
    from agents.identity import SliceRefused
    from agents.main import ContextFactory
    made = []

    def backend_factory(name, options, cluster_name, instance_id):
        made.append(cluster_name)
        return FakeBackend(instance_id)
    contexts = ContextFactory(_agent_config("cluster: c\n"), runtime=None,
                              backend_factory=backend_factory)
    with pytest.raises(SliceRefused) as refused:
        contexts(_node1_slice(7).set(**{field: value}))
    assert named in str(refused.value)
    assert "generation 7" in str(refused.value)
    assert made == []


def test_loop_acts_on_no_slice_of_another_node():
    """
    The loop refuses a slice that names another node: none of its changes
    run, the refusal is reported as the node's trouble; the next slice that
    is its own is acted on.
    """
    client = FakeClient()
    hostile, own = FakeStep("d"), FakeStep("d")
    client.push(slice_(1).set(node="n2"))

    @inlineCallbacks
    def scenario(reactor, loop):
        yield _until(reactor, lambda: any(
            "node 'n2', not this node 'n1'" in (r.progress.trouble or "")
            for r in client.reports), "the refusal reported")
        assert hostile.attempts == []
        client.push(slice_(2))
        yield _until(reactor, lambda: own.done, "its own slice acted on")
    run_loop(client, {1: {"d": [hostile]}, 2: {"d": [own]}}, scenario)
    assert hostile.attempts == []


def test_agent_refuses_a_slice_of_another_instance(workdir, loopback_root,
                                                   namespaces):
    """
    A real agent whose node cluster.yml gives another backend instance id
    than its own: it refuses the slice, makes no volume and starts
    nothing, and blockmover-deploy --wait ends naming the refusal.
    """
    ns1 = namespaces("node1")
    name = "r%d" % (os.getpid(),)
    control = started_control(workdir, cluster=name)
    agent = AgentProcess(workdir, control.url, loopback_root, ns1, name,
                         extra="cluster: %s\n" % (name,))
    try:
        cluster, apps = write_configuration(
            workdir, control.url, name, placed=APP, command=APP_COMMAND,
            root=loopback_root)
        with open(cluster) as f:
            text = f.read()
        with open(cluster, "w") as f:
            f.write(text.replace("node1: {address: 127.0.0.1}",
                                 "node1: {address: 127.0.0.1, "
                                 "instance_id: i-elsewhere}"))
        agent.start()
        result = deploy(cluster, apps, "--error-patience", "2")
        assert result.returncode == 1, result.stdout + result.stderr
        [reason] = result.stderr.splitlines()
        assert "refusing the slice" in reason, reason
        assert "backend instance 'i-elsewhere'" in reason, reason
        assert LoopbackBlockDeviceAPI(loopback_root, name,
                                      "node1").list_volumes() == []
        assert agent.app_pid() is None
        assert any(m.get("message_type") == "blockmover:agent:slice-refused"
                   for m in read_log(agent.log))
    finally:
        agent.terminate()
        control.stop()


def test_deploy_gives_up_on_persistent_error(workdir, loopback_root,
                                             namespaces):
    """
    An application whose command cannot start: the agent keeps retrying
    it with backoff and reports the error; ``blockmover-deploy --wait``
    gives up with exit 1 naming the node and the failing change.
    """
    ns1 = namespaces("node1")
    name = "e%d" % (os.getpid(),)
    control = started_control(workdir, cluster=name)
    agent = AgentProcess(workdir, control.url, loopback_root, ns1, name)
    try:
        cluster, apps = write_configuration(
            workdir, control.url, name, placed=APP,
            command="/nonexistent/%s" % (APP,), root=loopback_root)
        agent.start()
        result = deploy(cluster, apps, "--error-patience", "2")
        assert result.returncode == 1, result.stdout + result.stderr
        [reason] = result.stderr.splitlines()
        assert reason.startswith("blockmover-deploy: convergence failed: "
                                 "node1: start %s: " % (APP,))
        assert "/nonexistent/%s" % (APP,) in reason
        assert agent.app_pid() is None
        # Deployed nowhere, the volume is let go again.
        write_configuration(workdir, control.url, "e%d" % (os.getpid(),),
                            placed="", command="/nonexistent/%s" % (APP,),
                            root=loopback_root)
        result = deploy(cluster, apps)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        agent.terminate()
        control.stop()


# --- the reporter ------------------------------------------------------------

def test_reporter_sends_newest_and_keeps_backend_flag():
    """
    Reports queued behind one in flight collapse to the newest, keeping a
    ``changed_backend`` flag of a collapsed one; a failed send is retried
    with backoff until the control service takes it.
    """
    from agents.report import Reporter
    from blockmover.model import NodeReport, Progress
    from blockmover.poll import Backoff
    from twisted.internet.defer import fail

    def report(generation, changed_backend=False):
        return NodeReport(state=NodeState(node="n1", backend_id="n1"),
                          progress=Progress(converged=False,
                                            generation=generation),
                          changed_backend=changed_backend)

    class Client(object):
        def __init__(self):
            self.sent = []
            self.failures = 2
            self.in_flight = None

        def put_state(self, node, report):
            self.sent.append(report)
            if len(self.sent) == 1:
                self.in_flight = Deferred()
                return self.in_flight
            if self.failures:
                self.failures -= 1
                return fail(ControlUnreachable("http://x", "refused"))
            return succeed(None)

    client = Client()

    @inlineCallbacks
    def scenario(reactor):
        reporter = Reporter(reactor, client, "n1",
                            backoff=Backoff(initial=0.05, factor=2.0,
                                            maximum=1.0))
        reporter.send(report(1))
        reporter.send(report(2, changed_backend=True))
        reporter.send(report(3))
        client.in_flight.callback(None)
        yield _until(reactor, lambda: len(client.sent) == 4, "the retries")
        yield reporter.flush()
    run_reactor(scenario)
    assert [r.progress.generation for r in client.sent] == [1, 3, 3, 3]
    assert all(r.changed_backend for r in client.sent[1:])
