"""
Nodes without cloud credentials: the real control service (over mutual
TLS) makes the cloud calls its nodes ask for, on the OpenStack emulator,
after checking each against the asking node's slice and what the cloud
says of the volume; and the agent's ``RelayedBlockDeviceAPI`` drives a
volume through create, attach (its device found on the node), grow, mark
and detach without a clouds.yaml.
"""

import os
import threading

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread

from blockmover import identity
from blockmover.backends import loopdevice
from blockmover.backends.interface import BlockDeviceError
from blockmover.backends.relayed import RelayedBlockDeviceAPI
from blockmover.certificates import NODE
from blockmover.client import ControlClient
from blockmover.poll import Backoff, poll
from blockmover.units import GiB
from blockmover.control.nodecalls import NodeWakes
from tests.control_process import ControlProcess
from tests.emulator_process import CLOUD, RunningEmulator

CLUSTER_NAME = "calls"
FAST = {"create": 0.05, "attach": 0.1, "detach": 0.1, "extend": 0.05,
        "delete": 0.05}
QUICK = Backoff(initial=0.05, factor=1.5, maximum=0.5)

CLUSTER = """\
version: 1
cluster:
  name: calls
  control: https://127.0.0.1:4523
  backend: {{name: openstack, cloud: {cloud}, deadline: "60"}}
nodes:
  node1: {{address: 10.9.0.1, instance_id: {node1}}}
  node2: {{address: 10.9.0.2, instance_id: {node2}}}
deployment:
  node1: [app]
  node2: []
"""

APP = """\
version: 1
applications:
  app:
    command: [sleep, "3600"]
    volume: {mountpoint: /srv/app, maximum_size: 2G}
"""

DATASET = identity.dataset_id(CLUSTER_NAME, "app")


@pytest.fixture
def cloud():
    emulator = RunningEmulator({"latency": FAST,
                                "servers": ["node1", "node2"]})
    emulator.start()
    try:
        yield emulator
    finally:
        state_dir = os.path.realpath(emulator.state_dir)
        emulator.cleanup()
    assert loopdevice.devices_under(state_dir) == []


@pytest.fixture
def control(cloud, tmp_path):
    service = ControlProcess(
        str(tmp_path / "state"), str(tmp_path / "control.log"),
        cluster=CLUSTER_NAME,
        env={"OS_CLIENT_CONFIG_FILE": cloud.clouds_yaml})
    service.start()
    os.makedirs(service.state_dir, exist_ok=True)
    status, answer = service.request("PUT", "/v1/configuration", {
        "cluster_yml": CLUSTER.format(cloud=CLOUD, **cloud.servers),
        "app_yml": APP})
    assert status == 200, answer
    try:
        yield service
    finally:
        assert service.stop() in (0, None)


def call(control, node, what, **body):
    return control.request("POST", "/v1/nodes/%s/volumes/%s" % (node, what),
                           body)


def test_each_call_is_checked_against_the_slice_and_the_cloud(cloud,
                                                              control):
    """
    A node gets the calls of its own slice made for it, with the slice's
    size, the cluster's stamp and its own server; everything else is 403
    naming the node and what it asked, and changes nothing.
    """
    node1 = cloud.servers["node1"]
    status, answer = call(control, "node2", "create", dataset_id=DATASET)
    assert status == 403
    assert answer["errors"] == [
        "node node2 may not create a volume for dataset %s: its slice does "
        "not want that dataset on it" % (DATASET,)]
    assert cloud.admin.volumes() == []

    status, answer = call(control, "node1", "create", dataset_id=DATASET)
    assert status == 200, answer
    volume = answer["volume"]
    assert (volume["dataset_id"], volume["size"]) == (DATASET, 2 * GiB)
    assert volume["metadata"][identity.CLUSTER_KEY] == CLUSTER_NAME
    assert volume["metadata"][identity.FORMAT_KEY] == identity.NEW
    volume_id = volume["volume_id"]
    # Asked again (a retry after a crash): the same volume.
    status, again = call(control, "node1", "create", dataset_id=DATASET)
    assert again["volume"]["volume_id"] == volume_id
    assert len(cloud.admin.volumes()) == 1

    status, answer = call(control, "node2", "attach", volume_id=volume_id)
    assert status == 403 and "node node2 may not attach volume" in \
        answer["errors"][0]
    status, answer = call(control, "node1", "attach", volume_id=volume_id)
    assert status == 200, answer
    assert answer["volume"]["attached_to"] == node1

    # Another node's detach of it is stale: nothing happens.
    status, answer = call(control, "node2", "detach", volume_id=volume_id)
    assert status == 200 and answer["volume"]["attached_to"] == node1

    status, answer = call(control, "node1", "grow", volume_id=volume_id,
                          size=3 * GiB)
    assert status == 403 and "at most %d bytes" % (2 * GiB,) in \
        answer["errors"][0]
    status, answer = call(control, "node2", "formatted",
                          volume_id=volume_id)
    assert status == 403
    status, answer = control.request(
        "GET", "/v1/nodes/node2/volumes?volume_id=%s" % (volume_id,))
    assert status == 403 and "node node2 may not read volume" in \
        answer["errors"][0]
    # The operator is no node: the calls are refused by the table.
    status, answer = control.request(
        "POST", "/v1/nodes/node1/volumes/detach", {"volume_id": volume_id},
        kind="user", name="operator")
    assert status == 403 and answer["errors"][0].startswith(
        "user operator may not POST /v1/nodes/node1/volumes/detach")
    # Nor may node2 call for node1, whatever the body says.
    status, answer = control.request(
        "POST", "/v1/nodes/node1/volumes/detach", {"volume_id": volume_id},
        kind=NODE, name="node2")
    assert status == 403
    [raw] = cloud.admin.volumes()
    assert raw["server_id"] == node1

    status, answer = call(control, "node1", "formatted", volume_id=volume_id)
    assert status == 200
    assert answer["volume"]["metadata"][identity.FORMAT_KEY] == \
        identity.FORMATTED
    status, answer = call(control, "node1", "attach", volume_id="nope")
    assert status == 400 and "nope" in answer["errors"][0]
    status, answer = call(control, "node1", "attach")
    assert status == 400 and answer["errors"] == [
        "the body needs 'volume_id' (a string)"]

    status, answer = call(control, "node1", "detach", volume_id=volume_id)
    assert status == 200 and answer["volume"]["attached_to"] is None
    # The listing follows the calls (at most one listing a second).
    poll(lambda: [v for v in control.request("GET", "/v1/volumes")[1]
                  ["volumes"] if v["volume_id"] == volume_id] or None,
         10, "the listing to show the volume", QUICK)


@pytest.fixture
def reactor():
    """
    A reactor running in a thread of its own, as the agent's reactor runs
    beside the threads its backend calls block in.
    """
    reactor = EPollReactor()
    thread = threading.Thread(target=reactor.run,
                              kwargs={"installSignalHandlers": False},
                              daemon=True)
    thread.start()
    try:
        yield reactor
    finally:
        reactor.callFromThread(reactor.stop)
        thread.join(10)


def test_a_node_without_credentials_moves_its_volume(cloud, control,
                                                     reactor):
    """
    The agent's backend on a node with a certificate and no clouds.yaml:
    create, attach (the device appears in the node's by-id directory),
    mark formatted, grow within the slice, detach; a metadata change other
    than the mark, and an attach to another server, are refused at once.
    """
    client = ControlClient(control.url, reactor,
                           credentials=control.credentials(NODE, "node1"))
    api = RelayedBlockDeviceAPI(client, reactor, "node1",
                                instance_id=cloud.servers["node1"],
                                device_root=cloud.by_id_root("node1"))
    volume = api.create_volume(DATASET, 2 * GiB, {})
    assert volume.dataset_id == DATASET and api.get_device_path(
        volume.volume_id) is None
    with pytest.raises(BlockDeviceError):
        api.attach_volume(volume.volume_id, cloud.servers["node2"])
    attached = api.attach_volume(volume.volume_id, cloud.servers["node1"])
    assert attached.attached_to == cloud.servers["node1"]
    device = poll(lambda: api.get_device_path(volume.volume_id), 10,
                  "the device to appear", QUICK)
    assert os.path.realpath(device).startswith("/dev/loop")
    with pytest.raises(BlockDeviceError) as info:
        api.set_metadata(volume.volume_id, {"other": "x"})
    assert "may only mark its volumes formatted" in str(info.value)
    api.set_metadata(volume.volume_id,
                     {identity.FORMAT_KEY: identity.FORMATTED})
    assert api.get_volume(volume.volume_id).metadata[
        identity.FORMAT_KEY] == identity.FORMATTED
    with pytest.raises(BlockDeviceError) as info:
        api.grow_volume(volume.volume_id, 4 * GiB)
    assert "the control service refused" in str(info.value)
    detached = api.detach_volume(volume.volume_id, cloud.servers["node1"])
    assert detached.attached_to is None
    poll(lambda: api.get_device_path(volume.volume_id) is None or None, 10,
         "the device to go", QUICK)
    blockingCallFromThread(reactor, client.close)


def test_only_the_node_a_wait_is_for_can_wake_it():
    """
    The service's waits on a node's attach or detach are woken by that
    node's word alone, once per word, and forgotten when they end.
    """
    wakes = NodeWakes()
    assert wakes.seen("v1", "server-1") == 0
    with wakes.watch("v1", "server-1") as wake:
        assert not wake.wait(0)
        assert wakes.seen("v1", "server-2") == 0
        assert wakes.seen("v2", "server-1") == 0
        assert not wake.wait(0)
        assert wakes.seen("v1", "server-1") == 1
        assert wake.wait(0) and not wake.wait(0)
    assert wakes.seen("v1", "server-1") == 0


def test_a_nodes_word_ends_the_services_wait_early(cloud, control, reactor):
    """
    With the cloud slow to attach, node1 telling the service it saw its
    device makes the service's wait look at once; node2's word for the
    same volume wakes nothing.
    """
    client = ControlClient(control.url, reactor,
                           credentials=control.credentials(NODE, "node1"))
    other = ControlClient(control.url, reactor,
                          credentials=control.credentials(NODE, "node2"))
    api = RelayedBlockDeviceAPI(client, reactor, "node1",
                                instance_id=cloud.servers["node1"],
                                device_root=cloud.by_id_root("node1"))
    volume = api.create_volume(DATASET, 2 * GiB, {})
    attached = api.attach_volume(volume.volume_id, cloud.servers["node1"])
    assert attached.attached_to == cloud.servers["node1"]
    assert blockingCallFromThread(
        reactor, other.node_seen, "node2", volume.volume_id) == 0
    api.detach_volume(volume.volume_id, cloud.servers["node1"])
    for each in (client, other):
        blockingCallFromThread(reactor, each.close)
    # Each call told the service once it saw its device come or go.
    told = [line for line in open(control.log)
            if '"path":"/v1/nodes/node1/volumes/seen"' in line.replace(
                " ", "")]
    assert len(told) >= 2, told
