"""
The loopback backend: the conformance suite on real loop devices, and what
only loopback promises (state on disk shared by processes, healing a lost
loop device, never touching devices of other roots).
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    Bundle, RuleBasedStateMachine, invariant, rule,
)

from blockmover.backends import loopdevice, make_backend
from blockmover.backends.interface import (
    AlreadyAttached, IListsChanges, IReportsLimits, NoInstanceId,
    ShrinkRefused, UnknownVolume, VolumeInUse,
)
from blockmover.backends.loopback import (
    DEFAULT_ROOT, LoopbackBlockDeviceAPI,
)
from blockmover.blockdevice import device_size
from blockmover.command import run
from blockmover.identity import volume_metadata
from blockmover.units import MiB
from tests.conformance import BlockDeviceAPIConformance


class TestLoopbackConformance(BlockDeviceAPIConformance):
    @pytest.fixture
    def backend_factory(self, loopback_root):
        def make(instance_id, cluster_name, sleep=None):
            # Detaches at once under the lock: no wait to pause in.
            return LoopbackBlockDeviceAPI(loopback_root, cluster_name,
                                          instance_id)
        return make


def test_loopback_declares_no_optional_ability(make_loopback):
    """
    Loopback lists whole (a directory is cheap to read) and has no limits
    of its own: it declares neither ability, so nobody asks it for one.
    """
    api = make_loopback("node1")
    assert not IListsChanges.providedBy(api)
    assert not IReportsLimits.providedBy(api)


def _create(api, application="mongodb", size=MiB):
    metadata = volume_metadata(api.cluster_name, application)
    return api.create_volume(metadata["blockmover-dataset"], size, metadata)


def _image(api, volume):
    return os.path.join(api.root, "volumes", volume.volume_id + ".img")


def test_make_backend(loopback_root):
    api = make_backend("loopback", {"root": loopback_root}, "demo", "node1")
    assert isinstance(api, LoopbackBlockDeviceAPI)
    assert api.root == loopback_root
    assert api.compute_instance_id() == "node1"


def test_default_root():
    api = LoopbackBlockDeviceAPI.from_options({}, "demo", "node1")
    assert api.root == DEFAULT_ROOT


def test_no_instance_id(make_loopback):
    api = make_loopback(instance_id=None)
    with pytest.raises(NoInstanceId) as raised:
        api.compute_instance_id()
    assert "instance_id" in str(raised.value)


def test_state_survives_restart(make_loopback):
    api = make_loopback("node1")
    volume = _create(api)
    api.attach_volume(volume.volume_id, "node1")
    path = api.get_device_path(volume.volume_id)
    restarted = make_loopback("node1")
    assert restarted.list_volumes() == [api.get_volume(volume.volume_id)]
    assert restarted.get_device_path(volume.volume_id) == path
    assert _create(restarted).volume_id == volume.volume_id
    restarted.detach_volume(volume.volume_id, "node1")
    restarted.destroy_volume(volume.volume_id)


def test_record_on_disk(make_loopback):
    api = make_loopback("node1")
    volume = _create(api, size=3 * MiB)
    directory = os.path.join(api.root, "volumes")
    assert sorted(os.listdir(directory)) == sorted([
        volume.volume_id + ".img", volume.volume_id + ".json"])
    with open(os.path.join(directory, volume.volume_id + ".json")) as f:
        record = json.load(f)
    assert record["cluster"] == "test"
    assert record["size"] == 3 * MiB
    stat = os.stat(_image(api, volume))
    assert stat.st_size == 3 * MiB
    assert stat.st_blocks == 0, "the image should be sparse"
    api.destroy_volume(volume.volume_id)
    assert os.listdir(directory) == []


def test_vanished_device_recreated(make_loopback):
    api = make_loopback("node1")
    volume = _create(api)
    api.attach_volume(volume.volume_id, "node1")
    image = _image(api, volume)
    first = api.get_device_path(volume.volume_id)
    run(["losetup", "--detach", first])
    assert loopdevice.devices_backing(image) == []
    again = api.get_device_path(volume.volume_id)
    assert again is not None
    assert loopdevice.devices_backing(image) == [again]
    assert device_size(again) == MiB
    api.detach_volume(volume.volume_id, "node1")
    assert loopdevice.devices_backing(image) == []
    api.destroy_volume(volume.volume_id)


def test_attach_heals_missing_device(make_loopback):
    api = make_loopback("node1")
    volume = _create(api)
    api.attach_volume(volume.volume_id, "node1")
    run(["losetup", "--detach", api.get_device_path(volume.volume_id)])
    api.attach_volume(volume.volume_id, "node1")
    assert len(loopdevice.devices_backing(_image(api, volume))) == 1
    api.detach_volume(volume.volume_id, "node1")
    api.destroy_volume(volume.volume_id)


def test_other_root_untouched(make_loopback):
    """
    A loop device of a file with the same name outside the root survives
    detach and destroy.
    """
    api = make_loopback("node1")
    volume = _create(api)
    outside = tempfile.mkdtemp(prefix="blockmover-outside-")
    stranger = os.path.join(outside, volume.volume_id + ".img")
    with open(stranger, "wb") as f:
        f.truncate(MiB)
    device = run(["losetup", "--find", "--show", stranger]).strip()
    try:
        api.attach_volume(volume.volume_id, "node1")
        assert api.get_device_path(volume.volume_id) != device
        api.detach_volume(volume.volume_id, "node1")
        api.destroy_volume(volume.volume_id)
        assert loopdevice.devices_backing(stranger) == [device]
    finally:
        loopdevice.detach_all(stranger)
        os.unlink(stranger)
        os.rmdir(outside)


def test_deleted_backing_file(make_loopback):
    """
    A device whose image was unlinked under it is not the volume's device,
    and destroying the volume removes it.
    """
    api = make_loopback("node1")
    volume = _create(api)
    image = _image(api, volume)
    api.attach_volume(volume.volume_id, "node1")
    stale = api.get_device_path(volume.volume_id)
    os.unlink(image)
    assert loopdevice.devices_backing(image) == []
    assert loopdevice.devices_backing(image, include_deleted=True) == [stale]
    api.detach_volume(volume.volume_id, "node1")
    assert stale not in [d for d, _ in loopdevice.devices_under(api.root)]
    api.destroy_volume(volume.volume_id)


def test_unknown_volume_of_other_root(make_loopback):
    api = make_loopback("node1")
    with pytest.raises(UnknownVolume):
        api.get_volume("../../etc/passwd")


_RACER = """
import sys
from blockmover.backends.interface import AlreadyAttached
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
root, instance, volume_id, action = sys.argv[1:5]
api = LoopbackBlockDeviceAPI(root, "test", instance)
if action == "attach":
    try:
        api.attach_volume(volume_id, instance)
    except AlreadyAttached as e:
        print("refused", e.attached_to)
    else:
        print("won", api.get_device_path(volume_id))
else:
    from blockmover.identity import volume_metadata
    metadata = volume_metadata("test", "mongodb")
    print(api.create_volume(metadata["blockmover-dataset"], 1048576,
                            metadata).volume_id)
"""


def _race(root, action, volume_id="-", racers=4):
    processes = [
        subprocess.Popen([sys.executable, "-c", _RACER, root, "node%d" % i,
                          volume_id, action],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(racers)]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out.split())
    return outputs


def test_concurrent_attach_one_wins(make_loopback):
    api = make_loopback("observer")
    volume = _create(api)
    outcomes = _race(api.root, "attach", volume.volume_id)
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1, outcomes
    holder = api.get_volume(volume.volume_id).attached_to
    assert all(o[1] == holder for o in outcomes if o[0] == "refused")
    assert loopdevice.devices_backing(_image(api, volume)) == [winners[0][1]]
    api.detach_volume(volume.volume_id, holder)
    api.destroy_volume(volume.volume_id)


def test_concurrent_create_one_volume(make_loopback):
    api = make_loopback("observer")
    outcomes = _race(api.root, "create")
    assert len({o[0] for o in outcomes}) == 1, outcomes
    assert [v.volume_id for v in api.list_volumes()] == [outcomes[0][0]]
    api.destroy_volume(outcomes[0][0])


def test_unique_volume_ids(make_loopback):
    api = make_loopback("node1")
    ids = {_create(api, "app-%s" % (uuid.uuid4().hex,)).volume_id
           for _ in range(3)}
    assert len(ids) == 3
    for volume_id in ids:
        api.destroy_volume(volume_id)


def test_leftovers_removed(make_loopback):
    """
    What a create or a record write stopped half way leaves behind goes at
    the next create; records and their images stay.
    """
    api = make_loopback("node1")
    kept = _create(api, "kept")
    directory = os.path.join(api.root, "volumes")
    orphan = os.path.join(directory, str(uuid.uuid4()) + ".img")
    temporary = os.path.join(directory, ".half-written.tmp")
    for path in (orphan, temporary):
        with open(path, "wb") as f:
            f.truncate(MiB)
    made = _create(api, "made")
    assert sorted(os.listdir(directory)) == sorted(
        "%s.%s" % (v.volume_id, ext) for v in (kept, made)
        for ext in ("img", "json"))
    for volume in (kept, made):
        api.destroy_volume(volume.volume_id)


def test_interrupted_destroy_finishes(make_loopback):
    api = make_loopback("node1")
    volume = _create(api)
    # Destroy removes the image first; stopping there leaves the record.
    os.unlink(_image(api, volume))
    api.destroy_volume(volume.volume_id)
    assert api.list_volumes() == []


def test_detach_busy_device(make_loopback, monkeypatch):
    """
    A device still open is reported, and the volume stays attached, until
    it is let go.
    """
    monkeypatch.setattr(loopdevice, "DETACH_DEADLINE", 1.0)
    api = make_loopback("node1")
    volume = _create(api)
    api.attach_volume(volume.volume_id, "node1")
    path = api.get_device_path(volume.volume_id)
    holder = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(loopdevice.LoopDeviceBusy) as raised:
            api.detach_volume(volume.volume_id, "node1")
        assert "unmount" in str(raised.value)
        assert api.get_volume(volume.volume_id).attached_to == "node1"
    finally:
        os.close(holder)
    api.detach_volume(volume.volume_id, "node1")
    assert api.get_volume(volume.volume_id).attached_to is None
    assert loopdevice.devices_backing(_image(api, volume)) == []
    api.destroy_volume(volume.volume_id)


def test_attach_of_lost_image(make_loopback):
    api = make_loopback("node1")
    volume = _create(api)
    os.unlink(_image(api, volume))
    with pytest.raises(loopdevice.LoopDeviceError) as raised:
        api.attach_volume(volume.volume_id, "node1")
    assert "missing" in str(raised.value)
    api.detach_volume(volume.volume_id, "node1")
    api.destroy_volume(volume.volume_id)


def test_keyword_arguments(make_loopback):
    api = make_loopback("node1")
    metadata = volume_metadata("test", "mongodb")
    volume = api.create_volume(dataset_id=metadata["blockmover-dataset"],
                               size=MiB, metadata=metadata)
    api.attach_volume(volume_id=volume.volume_id, attach_to="node1")
    api.detach_volume(volume_id=volume.volume_id, detach_from="node1")
    api.destroy_volume(volume_id=volume.volume_id)
    assert api.list_volumes() == []


def test_threads_attach_one_wins(make_loopback):
    """
    Threads of one process (an agent's thread pool) exclude each other as
    processes do.
    """
    volume = _create(make_loopback("observer"))
    apis = [make_loopback("node%d" % i) for i in range(4)]
    outcomes = [None] * len(apis)

    def attach(index):
        try:
            apis[index].attach_volume(volume.volume_id, "node%d" % index)
            outcomes[index] = "won"
        except AlreadyAttached:
            outcomes[index] = "refused"

    threads = [threading.Thread(target=attach, args=(i,))
               for i in range(len(apis))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["refused"] * 3 + ["won"]
    winner = apis[outcomes.index("won")]
    assert len(loopdevice.devices_backing(_image(winner, volume))) == 1
    winner.detach_volume(volume.volume_id, winner.instance_id)
    winner.destroy_volume(volume.volume_id)


_TAKER = """
import sys, time, os
from blockmover.backends.interface import AlreadyAttached
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
root, instance, volume_id = sys.argv[1:4]
api = LoopbackBlockDeviceAPI(root, "test", instance)
marker = instance.encode().ljust(16)
held = 0
for _ in range(6):
    try:
        api.attach_volume(volume_id, instance)
    except AlreadyAttached:
        time.sleep(0.01)
        continue
    fd = os.open(api.get_device_path(volume_id), os.O_RDWR)
    os.pwrite(fd, marker, 0)
    os.fsync(fd)
    time.sleep(0.05)
    seen = os.pread(fd, 16, 0)
    os.close(fd)
    if seen != marker:
        print("overwritten", seen)
    held += 1
    api.detach_volume(volume_id, instance)
print("held", held)
"""


def test_nodes_take_turns(make_loopback):
    """
    Nodes (processes) that keep taking one volume never hold it at the same
    time: what a holder writes is still there when it looks again.
    """
    api = make_loopback("observer")
    volume = _create(api)
    processes = [
        subprocess.Popen([sys.executable, "-c", _TAKER, api.root,
                          "node%d" % i, volume.volume_id],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(3)]
    held = 0
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "overwritten" not in out, out
        held += int(out.split()[-1])
    assert held > 0
    assert api.get_volume(volume.volume_id).attached_to is None
    assert loopdevice.devices_backing(_image(api, volume)) == []
    api.destroy_volume(volume.volume_id)


_CHURN = """
import sys
from blockmover.backends.loopback import LoopbackBlockDeviceAPI
root, volume_id = sys.argv[1:3]
api = LoopbackBlockDeviceAPI(root, "test", "node1")
print("ready", flush=True)
sys.stdin.readline()
while True:
    api.attach_volume(volume_id, "node1")
    api.get_device_path(volume_id)
    api.detach_volume(volume_id, "node1")
"""


def test_killed_at_any_point_heals(make_loopback):
    """
    A node killed anywhere in attach or detach leaves the volume either
    free or recorded as its own, never a device without a record, and the
    next attach and detach finish the job.
    """
    api = make_loopback("node1")
    volume = _create(api)
    image = _image(api, volume)
    chance = random.Random(0)
    for _ in range(8):
        process = subprocess.Popen(
            [sys.executable, "-c", _CHURN, api.root, volume.volume_id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().split() == ["ready"]
            process.stdin.write("go\n")
            process.stdin.flush()
            time.sleep(chance.uniform(0.0, 0.15))
        finally:
            process.kill()
            process.wait(timeout=60)
            process.stdin.close()
            process.stdout.close()
        holder = api.get_volume(volume.volume_id).attached_to
        devices = loopdevice.devices_backing(image, include_deleted=True)
        assert holder in (None, "node1")
        assert len(devices) <= 1
        assert holder == "node1" or devices == [], (holder, devices)
        api.attach_volume(volume.volume_id, "node1")
        assert api.get_device_path(volume.volume_id) is not None
        api.detach_volume(volume.volume_id, "node1")
        assert loopdevice.devices_backing(image, include_deleted=True) == []
    # A record write cut short leaves a temporary file the next create
    # removes.
    other = _create(api, "other")
    assert sorted(os.listdir(os.path.join(api.root, "volumes"))) == sorted(
        "%s.%s" % (v.volume_id, ext) for v in (volume, other)
        for ext in ("img", "json"))
    for each in (volume, other):
        api.destroy_volume(each.volume_id)


class LoopbackModel(RuleBasedStateMachine):
    """
    Any sequence of calls from two nodes and the control service keeps the
    backend in step with a plain model of it, and a volume's loop devices
    in step with its record: one while attached, none otherwise.
    """
    NODES = ("n0", "n1")

    def __init__(self):
        super().__init__()
        self.root = os.path.realpath(
            tempfile.mkdtemp(prefix="blockmover-model-"))
        self.apis = {node: LoopbackBlockDeviceAPI(self.root, "test", node)
                     for node in self.NODES}
        self.control = LoopbackBlockDeviceAPI(self.root, "test")
        self.model = {}
        self.by_application = {}

    volumes = Bundle("volumes")

    @rule(target=volumes, application=st.sampled_from(["a", "b", "c"]),
          units=st.integers(1, 3))
    def create(self, application, units):
        volume = _create(self.control, application, units * MiB)
        if application in self.by_application:
            assert volume.volume_id == self.by_application[application]
        else:
            self.by_application[application] = volume.volume_id
            self.model[volume.volume_id] = dict(
                size=units * MiB, attached_to=None, metadata=volume.metadata)
        return volume.volume_id

    def _expect_unknown(self, volume_id, call, *args):
        if volume_id in self.model:
            return False
        with pytest.raises(UnknownVolume):
            call(volume_id, *args)
        return True

    @rule(volume_id=volumes, node=st.sampled_from(NODES))
    def attach(self, volume_id, node):
        api = self.apis[node]
        if self._expect_unknown(volume_id, api.attach_volume, node):
            return
        holder = self.model[volume_id]["attached_to"]
        if holder not in (None, node):
            with pytest.raises(AlreadyAttached):
                api.attach_volume(volume_id, node)
            return
        api.attach_volume(volume_id, node)
        self.model[volume_id]["attached_to"] = node

    @rule(volume_id=volumes, node=st.sampled_from(NODES))
    def detach(self, volume_id, node):
        api = self.apis[node]
        if self._expect_unknown(volume_id, api.detach_volume, node):
            return
        api.detach_volume(volume_id, node)
        if self.model[volume_id]["attached_to"] == node:
            self.model[volume_id]["attached_to"] = None

    @rule(volume_id=volumes, units=st.integers(1, 4))
    def grow(self, volume_id, units):
        if self._expect_unknown(volume_id, self.control.grow_volume,
                                units * MiB):
            return
        if units * MiB < self.model[volume_id]["size"]:
            with pytest.raises(ShrinkRefused):
                self.control.grow_volume(volume_id, units * MiB)
            return
        assert self.control.grow_volume(volume_id, units * MiB).size == (
            units * MiB)
        self.model[volume_id]["size"] = units * MiB

    @rule(volume_id=volumes, value=st.sampled_from(["x", "y"]))
    def set_metadata(self, volume_id, value):
        if self._expect_unknown(volume_id, self.control.set_metadata,
                                {"k": value}):
            return
        self.control.set_metadata(volume_id, {"k": value})
        self.model[volume_id]["metadata"] = dict(
            self.model[volume_id]["metadata"], k=value)

    @rule(volume_id=volumes)
    def destroy(self, volume_id):
        if self._expect_unknown(volume_id, self.control.destroy_volume):
            return
        if self.model[volume_id]["attached_to"] is not None:
            with pytest.raises(VolumeInUse):
                self.control.destroy_volume(volume_id)
            return
        self.control.destroy_volume(volume_id)
        del self.model[volume_id]
        self.by_application = {a: v for a, v in self.by_application.items()
                               if v != volume_id}

    @invariant()
    def matches_model(self):
        listed = {v.volume_id: v for v in self.control.list_volumes()}
        assert set(listed) == set(self.model)
        for volume_id, expected in self.model.items():
            volume = listed[volume_id]
            assert volume.size == expected["size"]
            assert volume.attached_to == expected["attached_to"]
            assert dict(volume.metadata) == dict(expected["metadata"])
            devices = loopdevice.devices_backing(
                os.path.join(self.root, "volumes", volume_id + ".img"))
            for node, api in self.apis.items():
                path = api.get_device_path(volume_id)
                if node == expected["attached_to"]:
                    assert devices == [path]
                    assert device_size(path) == expected["size"]
                else:
                    assert path is None
            if expected["attached_to"] is None:
                assert devices == []

    def teardown(self):
        try:
            for _device, backing in loopdevice.devices_under(self.root):
                loopdevice.detach_all(backing)
        finally:
            shutil.rmtree(self.root)


TestLoopbackModel = LoopbackModel.TestCase
TestLoopbackModel.settings = settings(
    max_examples=15, stateful_step_count=15, deadline=None, database=None)
