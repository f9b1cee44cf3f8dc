"""
The openstack backend against the OpenStack emulator over HTTP, through the
real openstacksdk, with real loop devices: the conformance suite, then what
only a cloud does (server-side filters and pages, incremental listing, slow
transitions, faults, quotas, limits) and that credentials never leak.
"""

import json
import logging
import os
import time
import uuid

import openstack
import pytest
from eliot import add_destinations, remove_destination

from blockmover.backends import loopdevice, make_backend
from blockmover.backends.interface import BlockDeviceError, OverLimit
from blockmover.backends.openstack import (
    STATUS_BACKOFF, OpenStackBlockDeviceAPI,
)
from blockmover.identity import dataset_id, volume_metadata
from blockmover.poll import Backoff
from blockmover.units import GiB
from tests.conformance import (
    NODE_A, NODE_B, BlockDeviceAPIConformance, FencesNodesConformance,
    ListsChangesConformance, ReportsLimitsConformance, wait_for_device,
)
from tests.emulator_process import RunningEmulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.3, "detach": 0.3, "extend": 0.1,
        "delete": 0.05, "stop": 0.2, "start": 0.2}
# The suite's nodes, plus one kept apart for the per-server device limit
# and one the fencing suite powers off.
SERVERS = {NODE_A: {}, NODE_B: {}, "node-full": {}, "node-fence": {}}
MAX_DISK_DEVICES = 3
PASSWORD = "pw-" + uuid.uuid4().hex
QUICK = Backoff(initial=0.05, factor=1.5, maximum=0.5)


@pytest.fixture(scope="module")
def cloud():
    emulator = RunningEmulator({
        "latency": FAST, "servers": SERVERS,
        "max_disk_devices": MAX_DISK_DEVICES,
        "users": {"demo": {"password": PASSWORD, "project": "demo"}},
        "quotas": {"volumes": 100, "gigabytes": 1000}})
    emulator.start()
    try:
        yield emulator
    finally:
        state_dir = os.path.realpath(emulator.state_dir)
        emulator.cleanup()
    assert loopdevice.devices_under(state_dir) == []


@pytest.fixture(scope="module")
def conn(cloud):
    return cloud.connect()


@pytest.fixture(scope="module")
def logged():
    """
    Every eliot message and stdlib log line of this module's tests, to show
    the password appears in none.
    """
    messages = []
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))
    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    add_destinations(messages.append)
    try:
        yield messages, records
    finally:
        remove_destination(messages.append)
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture(autouse=True)
def no_faults(cloud, logged):
    yield
    cloud.admin.clear_faults()


def make_api(cloud, conn, instance, cluster, **kwargs):
    kwargs.setdefault("deadline", 30.0)
    kwargs.setdefault("backoff", QUICK)
    kwargs.setdefault("device_root", cloud.by_id_root(instance))
    return OpenStackBlockDeviceAPI(conn, cluster,
                                   instance_id=cloud.servers[instance],
                                   **kwargs)


class TestOpenStackConformance(BlockDeviceAPIConformance,
                               ListsChangesConformance,
                               ReportsLimitsConformance,
                               FencesNodesConformance):
    @pytest.fixture
    def fenceable_node(self, cloud, conn):
        server = cloud.servers["node-fence"]
        yield server
        if conn.compute.get_server(server).status == "SHUTOFF":
            conn.compute.start_server(server)
        conn.compute.wait_for_server(conn.compute.get_server(server),
                                     "ACTIVE", interval=0.05, wait=20)

    @pytest.fixture
    def backend_factory(self, cloud, conn):
        def make(instance_id, cluster_name, sleep=None):
            if sleep is None:
                return make_api(cloud, conn, instance_id, cluster_name)
            # Every pause of its waits goes through ``sleep``.
            return make_api(cloud, conn, instance_id, cluster_name,
                            sleep=sleep, watch_devices=False)
        return make


@pytest.fixture
def clusters(cloud, conn):
    """
    ``clusters(instance, **backend_options)``: a backend for a cluster of
    its own, seen from server ``instance``; afterwards every volume of
    those clusters is detached and destroyed.
    """
    made = []

    def make(instance=NODE_A, **kwargs):
        api = make_api(cloud, conn, instance,
                       "openstack-%s" % (uuid.uuid4().hex[:8],), **kwargs)
        made.append(api)
        return api
    yield make
    for api in made:
        for volume in make_api(cloud, conn, NODE_A,
                               api._cluster).list_volumes():
            if volume.attached_to is not None:
                api.detach_volume(volume.volume_id, volume.attached_to)
            api.destroy_volume(volume.volume_id)


def create(api, application, size=GiB):
    metadata = volume_metadata(api._cluster, application)
    return api.create_volume(dataset_id(api._cluster, application), size,
                             metadata)


def detail_requests(logged):
    # keystoneauth logs each request it sends as a curl line.
    _, records = logged
    return [line for line in records
            if line.startswith("REQ: curl") and "/volumes/detail" in line]


def test_lists_this_cluster_only_on_every_page(cloud, clusters, logged):
    ours = clusters(page_size=2)
    theirs = clusters()
    mine = {create(ours, "app-%d" % (i,)).volume_id for i in range(5)}
    for i in range(5):
        create(theirs, "app-%d" % (i,))
    cloud.admin.reset_counters()
    already = len(detail_requests(logged))

    listed = ours.list_volumes()

    assert {v.volume_id for v in listed} == mine
    assert len(listed) == len(mine)
    # Three pages of at most two of our five volumes, plus the SDK's look
    # after the last marker (an empty page); the ten volumes unfiltered
    # would take six calls.
    assert cloud.admin.counters() == {"GET /v3/{project}/volumes/detail": 4}
    sent = detail_requests(logged)[already:]
    assert len(sent) == 4
    for line in sent:
        assert "limit=" in line and "metadata=" in line and (
            ours._cluster in line)


class Sleeps(object):
    """
    ``time.sleep`` that remembers how long it was asked to sleep.
    """
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)
        time.sleep(seconds)


STATUS_CALLS = "GET /v3/{project}/volumes/{volume}"


def test_waits_for_another_node_poll_with_backoff(cloud, clusters):
    # No device of node A shows on node B: B's waits on A's behalf poll.
    sleeps = Sleeps()
    api = clusters(instance=NODE_B, sleep=sleeps)
    node_a = cloud.servers[NODE_A]
    volume = create(api, "slow")
    cloud.admin.set_faults({"stuck": [
        {"operation": "attach", "seconds": 2.0, "count": 1},
        {"operation": "detach", "seconds": 2.0, "count": 1}]})

    attached = api.attach_volume(volume.volume_id, node_a)
    assert attached.attached_to == node_a
    assert cloud.volume_status(volume.volume_id) == "in-use"
    waits = list(sleeps.delays)
    # Backoff: the waits grow, never past the maximum, and cover the 2 s.
    assert len(waits) >= 3 and waits == sorted(waits)
    assert waits[-1] > waits[0] and max(waits) <= QUICK.maximum
    assert sum(waits) >= 2.0

    del sleeps.delays[:]
    assert api.detach_volume(volume.volume_id, node_a).attached_to is None
    assert cloud.volume_status(volume.volume_id) == "available"
    assert sleeps.delays == sorted(sleeps.delays) and len(sleeps.delays) >= 3
    assert sum(sleeps.delays) >= 2.0


def test_waits_on_this_node_end_on_the_device_event(cloud, clusters):
    # The default backoff: without the event, the look after the stuck
    # 2 s would come at about 2.65 s, the one before at 1.6 s.
    sleeps = Sleeps()
    api = clusters(sleep=sleeps, backoff=STATUS_BACKOFF)
    here = api.compute_instance_id()
    volume = create(api, "evented")
    cloud.admin.set_faults({"stuck": [
        {"operation": "attach", "seconds": 2.0, "count": 1},
        {"operation": "detach", "seconds": 2.0, "count": 1}]})
    for change in (api.attach_volume, api.detach_volume):
        del sleeps.delays[:]
        cloud.admin.reset_counters()
        change(volume.volume_id, here)
        # Paused on the watch, never asleep; a look at the start, about
        # six while backing off, one or two once the device came or went.
        assert sleeps.delays == []
        looks = cloud.admin.counters()[STATUS_CALLS]
        assert 3 <= looks <= 12, looks
    assert cloud.volume_status(volume.volume_id) == "available"
    assert api.get_device_path(volume.volume_id) is None


def test_attach_and_detach_ride_out_faults(cloud, clusters):
    sleeps = Sleeps()
    api = clusters(sleep=sleeps)
    volume = create(api, "faulty")
    attachments = "POST /compute/v2.1/servers/*/os-volume_attachments"
    cloud.admin.set_faults({
        "errors": [{"match": "* /v3/*", "status": 503, "fraction": 0.3},
                   {"match": "* /compute/*", "status": 503,
                    "fraction": 0.3}],
        "over_limit": [{"match": attachments, "count": 1, "retry_after": 1},
                       {"match": "DELETE /compute/*", "count": 1,
                        "retry_after": 1}]})

    attached = api.attach_volume(volume.volume_id, api.compute_instance_id())
    assert attached.attached_to == api.compute_instance_id()
    # The 413 asked for a second: the backend waited exactly that.
    assert 1.0 in sleeps.delays
    del sleeps.delays[:]
    api.detach_volume(volume.volume_id, api.compute_instance_id())
    assert 1.0 in sleeps.delays
    cloud.admin.clear_faults()
    assert api.get_volume(volume.volume_id).attached_to is None
    assert cloud.admin.faults() == {}


def test_quota_refusal_is_over_limit_with_the_cloud_message(clusters):
    api = clusters()
    with pytest.raises(OverLimit) as raised:
        create(api, "huge", size=1001 * GiB)
    assert "VolumeSizeExceedsAvailableQuota" in str(raised.value)
    assert "exceeds allowed gigabytes quota" in str(raised.value)
    assert api.list_volumes() == []


def test_device_limit_is_over_limit(clusters):
    api = clusters(instance="node-full")
    volumes = [create(api, "disk-%d" % (i,))
               for i in range(MAX_DISK_DEVICES + 1)]
    for volume in volumes[:-1]:
        api.attach_volume(volume.volume_id, api.compute_instance_id())
    with pytest.raises(OverLimit) as raised:
        api.attach_volume(volumes[-1].volume_id, api.compute_instance_id())
    assert ("maximum allowed number of disk devices (%d)"
            % (MAX_DISK_DEVICES,)) in str(raised.value)
    assert api.get_volume(volumes[-1].volume_id).attached_to is None


def test_limits_come_from_cinder(cloud, clusters):
    api = clusters()
    cloud.admin.reset_counters()
    limits = api.limits()
    assert (limits.region_volumes, limits.region_size) == (100, 1000 * GiB)
    assert cloud.admin.counters() == {"GET /v3/{project}/limits": 1}


def test_make_backend_from_clouds_yaml(cloud, monkeypatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", cloud.clouds_yaml)
    server = cloud.servers[NODE_A]
    cluster = "made-" + uuid.uuid4().hex[:8]
    api = make_backend("openstack", {
        "cloud": "blockmover-cloud",
        "device_root": cloud.by_id_root(NODE_A)}, cluster, server)
    assert isinstance(api, OpenStackBlockDeviceAPI)
    assert api.compute_instance_id() == server
    volume = create(api, "made")
    try:
        assert api.list_volumes() == [volume]
        api.attach_volume(volume.volume_id, server)
        # Found through the by-id root the options named.
        device = wait_for_device(api, volume.volume_id)
        assert os.path.realpath(os.path.join(
            cloud.by_id_root(NODE_A), "virtio-" + volume.volume_id[:20])) \
            == device
    finally:
        api.detach_volume(volume.volume_id, server)
        api.destroy_volume(volume.volume_id)
    assert api.list_volumes() == []


def test_unknown_cloud_name_is_a_clear_error(cloud, monkeypatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", cloud.clouds_yaml)
    with pytest.raises(BlockDeviceError) as raised:
        make_backend("openstack", {"cloud": "no-such-cloud"}, "demo", "x")
    assert "no-such-cloud" in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_wrong_password_is_refused_without_showing_it(cloud, tmp_path):
    wrong = "wrong-" + uuid.uuid4().hex
    with open(cloud.clouds_yaml) as f:
        text = f.read()
    path = tmp_path / "clouds.yaml"
    path.write_text(text.replace(PASSWORD, wrong))
    from openstack.config import loader
    config = loader.OpenStackConfig(config_files=[str(path)]).get_one(
        cloud="blockmover-cloud")
    api = OpenStackBlockDeviceAPI(openstack.connection.Connection(
        config=config), "demo", instance_id="x", deadline=5.0)
    with pytest.raises(BlockDeviceError) as raised:
        api.list_volumes()
    assert "credentials" in str(raised.value)
    assert wrong not in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_credentials_never_logged(cloud, logged):
    # Last in the module: everything the tests above logged, here and in
    # the emulator, is in.
    messages, records = logged
    assert records, "nothing was logged; the check would prove nothing"
    assert PASSWORD not in json.dumps(messages, default=repr)
    assert not [line for line in records if PASSWORD in line]
    with open(cloud.log_path) as f:
        assert PASSWORD not in f.read()
    assert PASSWORD not in cloud.output()
