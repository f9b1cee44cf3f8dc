"""
The contract of ``IBlockDeviceAPI`` as one suite that every backend passes,
against real block devices on this machine.

To run it on a backend, subclass ``BlockDeviceAPIConformance`` in a test
module (its name starting with ``Test``) and give it a fixture
``backend_factory`` returning a callable ``(instance_id, cluster_name,
sleep=None) -> IBlockDeviceAPI``: one node's view of one cluster's volumes.
``sleep``, when given, is what the backend calls to pause between two looks
of a wait (instead of waiting for an event), so a test can make something
happen exactly there; a backend that never waits may ignore it. The suite
makes unique cluster names per test and, afterwards, detaches and destroys
every volume of those clusters. The optional abilities (``IListsChanges``,
``IReportsLimits``, ``IFencesNodes``) have suites of their own, which the
test class of each backend that declares them mixes in.

Devices may appear, grow and go some time after the backend says so (a real
cloud takes seconds); the suite waits for them with ``blockmover.poll``.
"""

import datetime
import os
import stat
import time
import uuid

import pytest
from zope.interface.verify import verifyObject

from blockmover.backends.interface import (
    POWER_OFF, POWER_ON, POWER_UNKNOWN, AlreadyAttached, IBlockDeviceAPI,
    IFencesNodes, IListsChanges, IReportsLimits, PowerStateUnknown,
    ShrinkRefused, UnknownVolume, VolumeInUse,
)
from blockmover.blockdevice import device_size
from blockmover.identity import (
    CLUSTER_KEY, FORMAT_KEY, FORMATTED, dataset_id, volume_metadata,
)
from blockmover.model import Limits, Volume
from blockmover.poll import Backoff, poll

# Long enough for a slow cloud; a local backend answers at once.
DEVICE_DEADLINE = 180.0
_BACKOFF = Backoff(initial=0.05, factor=1.5, maximum=2.0)

NODE_A = "node-a"
NODE_B = "node-b"


class Backends(object):
    """
    ``make_api(instance_id, cluster_name="conformance")``: the backend seen
    from node ``instance_id`` for a cluster unique to this test; remembers
    what it made so the test can clean up.
    """

    def __init__(self, factory):
        self._factory = factory
        self._suffix = uuid.uuid4().hex[:8]
        self._clusters = {}
        self._cluster_of = {}

    def __call__(self, instance_id, cluster_name="conformance", sleep=None):
        cluster = "%s-%s" % (cluster_name, self._suffix)
        if sleep is None:
            api = self._factory(instance_id, cluster)
        else:
            api = self._factory(instance_id, cluster, sleep=sleep)
        self._clusters.setdefault(cluster, api)
        self._cluster_of[id(api)] = cluster
        return api

    def cluster_of(self, api):
        """
        The unique cluster name ``api`` was made for.
        """
        return self._cluster_of[id(api)]

    def create(self, api, application, size=None):
        """
        Create the volume of ``application`` the way the control service
        does: dataset id and metadata from ``blockmover.identity``.
        """
        cluster = self.cluster_of(api)
        return api.create_volume(
            dataset_id(cluster, application),
            size or api.allocation_unit(),
            volume_metadata(cluster, application))

    def cleanup(self):
        failures = []
        for api in self._clusters.values():
            for volume in api.list_volumes():
                try:
                    if volume.attached_to is not None:
                        api.detach_volume(volume.volume_id,
                                          volume.attached_to)
                    api.destroy_volume(volume.volume_id)
                except Exception as e:
                    failures.append("%s: %s" % (volume.volume_id, e))
        assert not failures, "could not clean up: %s" % (failures,)


def wait_for_device(api, volume_id):
    """
    The path ``api.get_device_path`` gives once the device has appeared.
    """
    return poll(lambda: api.get_device_path(volume_id), DEVICE_DEADLINE,
                "the device of volume %s" % (volume_id,), backoff=_BACKOFF)


def wait_for_no_device(api, volume_id):
    poll(lambda: True if api.get_device_path(volume_id) is None else None,
         DEVICE_DEADLINE, "the device of volume %s to go" % (volume_id,),
         backoff=_BACKOFF)


def block_device_size(path):
    """
    The size in bytes of the block device at ``path``, which must be one.
    """
    assert stat.S_ISBLK(os.stat(path).st_mode), "%s is not a block device" % (
        path,)
    return device_size(path)


def wait_for_size(path, size):
    return poll(lambda: True if block_device_size(path) == size else None,
                DEVICE_DEADLINE, "%s to be %d bytes" % (path, size),
                backoff=_BACKOFF)


def write_marker(path, marker):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, marker, 4096)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_marker(path, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, 4096)
    finally:
        os.close(fd)


class BlockDeviceAPIConformance(object):
    """
    Mixin of tests every ``IBlockDeviceAPI`` passes; see the module's
    docstring for the ``backend_factory`` fixture it needs.
    """

    @pytest.fixture
    def make_api(self, backend_factory):
        backends = Backends(backend_factory)
        yield backends
        backends.cleanup()

    # --- the interface ---------------------------------------------------

    def test_provides_interface(self, make_api):
        api = make_api(NODE_A)
        assert verifyObject(IBlockDeviceAPI, api)

    def test_allocation_unit(self, make_api):
        unit = make_api(NODE_A).allocation_unit()
        assert isinstance(unit, int) and unit > 0

    def test_compute_instance_id(self, make_api):
        instance = make_api(NODE_A).compute_instance_id()
        assert isinstance(instance, str) and instance != ""
        assert make_api(NODE_B).compute_instance_id() != instance

    # --- volumes ---------------------------------------------------------

    def test_create_get_list(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        assert isinstance(volume, Volume)
        assert volume.size == api.allocation_unit()
        assert volume.attached_to is None
        assert volume.metadata[CLUSTER_KEY] == make_api.cluster_of(api)
        assert volume.dataset_id == dataset_id(make_api.cluster_of(api),
                                               "mongodb")
        assert api.get_volume(volume.volume_id) == volume
        assert api.list_volumes() == [volume]

    def test_size_rounds_up(self, make_api):
        api = make_api(NODE_A)
        unit = api.allocation_unit()
        volume = make_api.create(api, "mongodb", size=unit + 1)
        assert volume.size == 2 * unit

    def test_create_idempotent_per_dataset(self, make_api):
        api = make_api(NODE_A)
        first = make_api.create(api, "mongodb")
        again = make_api.create(api, "mongodb")
        from_other_node = make_api.create(make_api(NODE_B), "mongodb")
        assert again.volume_id == first.volume_id
        assert from_other_node.volume_id == first.volume_id
        assert [v.volume_id for v in api.list_volumes()] == [first.volume_id]

    def test_datasets_get_their_own_volumes(self, make_api):
        api = make_api(NODE_A)
        one = make_api.create(api, "mongodb")
        two = make_api.create(api, "postgres")
        assert one.volume_id != two.volume_id
        assert sorted(v.volume_id for v in api.list_volumes()) == sorted(
            [one.volume_id, two.volume_id])

    def test_other_cluster_invisible(self, make_api):
        ours = make_api(NODE_A)
        theirs = make_api(NODE_A, cluster_name="other")
        mine = make_api.create(ours, "mongodb")
        other = make_api.create(theirs, "mongodb")
        assert mine.volume_id != other.volume_id
        assert ours.list_volumes() == [mine]
        assert theirs.list_volumes() == [other]
        with pytest.raises(UnknownVolume):
            ours.get_volume(other.volume_id)

    def test_set_metadata_merges(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        api.set_metadata(volume.volume_id, {FORMAT_KEY: FORMATTED,
                                            "note": "kept"})
        api.set_metadata(volume.volume_id, {"other": "also"})
        metadata = api.get_volume(volume.volume_id).metadata
        assert metadata == dict(volume.metadata, **{
            FORMAT_KEY: FORMATTED, "note": "kept", "other": "also"})

    def test_destroy(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        api.destroy_volume(volume.volume_id)
        assert api.list_volumes() == []
        with pytest.raises(UnknownVolume):
            api.get_volume(volume.volume_id)

    @pytest.mark.parametrize("operation", [
        "get_volume", "attach_volume", "detach_volume", "destroy_volume",
        "grow_volume", "set_metadata"])
    def test_unknown_volume(self, make_api, operation):
        api = make_api(NODE_A)
        missing = str(uuid.uuid4())
        arguments = {
            "attach_volume": (api.compute_instance_id(),),
            "detach_volume": (api.compute_instance_id(),),
            "grow_volume": (api.allocation_unit(),),
            "set_metadata": ({"k": "v"},),
        }.get(operation, ())
        with pytest.raises(UnknownVolume) as raised:
            getattr(api, operation)(missing, *arguments)
        assert raised.value.volume_id == missing
        assert missing in str(raised.value)

    def test_no_device_for_unknown_volume(self, make_api):
        assert make_api(NODE_A).get_device_path(str(uuid.uuid4())) is None

    # --- attachment ------------------------------------------------------

    def test_attach_makes_device(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        assert api.get_device_path(volume.volume_id) is None
        attached = api.attach_volume(volume.volume_id,
                                     api.compute_instance_id())
        assert attached.attached_to == api.compute_instance_id()
        assert api.get_volume(volume.volume_id).attached_to == (
            api.compute_instance_id())
        assert [v.attached_to for v in api.list_volumes()] == [
            api.compute_instance_id()]
        path = wait_for_device(api, volume.volume_id)
        assert block_device_size(path) == volume.size

    def test_attach_again_same_node(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        api.attach_volume(volume.volume_id, api.compute_instance_id())
        path = wait_for_device(api, volume.volume_id)
        again = api.attach_volume(volume.volume_id, api.compute_instance_id())
        assert again.attached_to == api.compute_instance_id()
        assert wait_for_device(api, volume.volume_id) == path

    def test_attach_elsewhere_refused(self, make_api):
        node_a, node_b = make_api(NODE_A), make_api(NODE_B)
        volume = make_api.create(node_a, "mongodb")
        node_a.attach_volume(volume.volume_id, node_a.compute_instance_id())
        wait_for_device(node_a, volume.volume_id)
        with pytest.raises(AlreadyAttached) as raised:
            node_b.attach_volume(volume.volume_id,
                                 node_b.compute_instance_id())
        assert raised.value.attached_to == node_a.compute_instance_id()
        assert node_a.compute_instance_id() in str(raised.value)
        assert node_b.get_device_path(volume.volume_id) is None
        assert node_b.get_volume(volume.volume_id).attached_to == (
            node_a.compute_instance_id())

    def test_detach_twice(self, make_api):
        api = make_api(NODE_A)
        here = api.compute_instance_id()
        volume = make_api.create(api, "mongodb")
        api.attach_volume(volume.volume_id, here)
        wait_for_device(api, volume.volume_id)
        detached = api.detach_volume(volume.volume_id, here)
        assert detached.attached_to is None
        assert api.get_volume(volume.volume_id).attached_to is None
        wait_for_no_device(api, volume.volume_id)
        again = api.detach_volume(volume.volume_id, here)
        assert again.attached_to is None
        assert api.get_volume(volume.volume_id) == detached

    def test_detach_unattached_changes_nothing(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        assert api.detach_volume(volume.volume_id,
                                 api.compute_instance_id()) == volume
        assert api.get_volume(volume.volume_id) == volume

    def test_detach_of_another_nodes_volume_changes_nothing(self, make_api):
        # A stale detach: node B's slice still shows the volume it gave up.
        node_a, node_b = make_api(NODE_A), make_api(NODE_B)
        volume = make_api.create(node_a, "mongodb")
        node_a.attach_volume(volume.volume_id, node_a.compute_instance_id())
        path = wait_for_device(node_a, volume.volume_id)
        held = node_a.get_volume(volume.volume_id)
        for api in (node_a, node_b):
            returned = api.detach_volume(volume.volume_id,
                                         node_b.compute_instance_id())
            assert returned.attached_to == node_a.compute_instance_id()
        assert node_a.get_volume(volume.volume_id) == held
        assert node_a.get_device_path(volume.volume_id) == path
        assert node_b.get_device_path(volume.volume_id) is None

    def test_detach_after_a_crash_half_way(self, make_api):
        class Crash(Exception):
            pass

        def crash(seconds):
            # The process dies while the detach is under way.
            raise Crash()
        api = make_api(NODE_A)
        here = api.compute_instance_id()
        volume = make_api.create(api, "mongodb")
        crashing = make_api(NODE_A, sleep=crash)
        api.attach_volume(volume.volume_id, here)
        wait_for_device(api, volume.volume_id)
        try:
            crashing.detach_volume(volume.volume_id, here)
        except Crash:
            # A backend that waits was stopped in its wait, the detach
            # asked for: it is still detaching, or done.
            assert api.get_volume(volume.volume_id).attached_to in (
                here, None)
        else:
            # One that detaches at once never paused.
            assert api.get_volume(volume.volume_id).attached_to is None
        assert api.detach_volume(volume.volume_id, here).attached_to is None
        assert api.get_volume(volume.volume_id).attached_to is None
        wait_for_no_device(api, volume.volume_id)
        api.attach_volume(volume.volume_id, here)
        wait_for_device(api, volume.volume_id)

    def test_detach_ends_when_another_node_attaches_first(self, make_api):
        """
        The target attaches the volume before the source's detach wait
        looks: the volume is never seen free, and the detach still ends at
        once, leaving the volume where it went.
        """
        node_b = make_api(NODE_B)
        volume = make_api.create(node_b, "mongodb")
        raced = []

        def target_attaches(seconds):
            if not raced:
                raced.append(seconds)
                poll(lambda: True if node_b.get_volume(
                    volume.volume_id).attached_to is None else None,
                    DEVICE_DEADLINE, "volume %s to be free"
                    % (volume.volume_id,), backoff=_BACKOFF)
                node_b.attach_volume(volume.volume_id,
                                     node_b.compute_instance_id())
            time.sleep(seconds)
        node_a = make_api(NODE_A)
        node_a.attach_volume(volume.volume_id, node_a.compute_instance_id())
        wait_for_device(node_a, volume.volume_id)
        racing = make_api(NODE_A, sleep=target_attaches)
        returned = racing.detach_volume(volume.volume_id,
                                        node_a.compute_instance_id())
        if not raced:
            # A backend that detaches without waiting: B takes it now.
            assert returned.attached_to is None
            node_b.attach_volume(volume.volume_id,
                                 node_b.compute_instance_id())
        else:
            assert returned.attached_to == node_b.compute_instance_id()
        assert node_b.get_volume(volume.volume_id).attached_to == (
            node_b.compute_instance_id())
        wait_for_device(node_b, volume.volume_id)
        wait_for_no_device(node_a, volume.volume_id)

    def test_move_keeps_data(self, make_api):
        node_a, node_b = make_api(NODE_A), make_api(NODE_B)
        volume = make_api.create(node_a, "mongodb")
        marker = b"blockmover-" + uuid.uuid4().hex.encode("ascii")
        node_a.attach_volume(volume.volume_id, node_a.compute_instance_id())
        write_marker(wait_for_device(node_a, volume.volume_id), marker)
        # Any node's backend may detach on another's behalf.
        node_b.detach_volume(volume.volume_id, node_a.compute_instance_id())
        wait_for_no_device(node_a, volume.volume_id)
        node_b.attach_volume(volume.volume_id, node_b.compute_instance_id())
        path = wait_for_device(node_b, volume.volume_id)
        assert node_a.get_device_path(volume.volume_id) is None
        assert read_marker(path, len(marker)) == marker

    def test_destroy_attached_refused(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        api.attach_volume(volume.volume_id, api.compute_instance_id())
        with pytest.raises(VolumeInUse) as raised:
            api.destroy_volume(volume.volume_id)
        assert "detach" in str(raised.value)
        assert api.get_volume(volume.volume_id).attached_to == (
            api.compute_instance_id())
        wait_for_device(api, volume.volume_id)

    # --- growing ---------------------------------------------------------

    def test_grow_unattached(self, make_api):
        api = make_api(NODE_A)
        unit = api.allocation_unit()
        volume = make_api.create(api, "mongodb")
        grown = api.grow_volume(volume.volume_id, 3 * unit)
        assert grown.size == 3 * unit
        assert api.get_volume(volume.volume_id).size == 3 * unit
        api.attach_volume(volume.volume_id, api.compute_instance_id())
        assert block_device_size(wait_for_device(api, volume.volume_id)) == (
            3 * unit)

    def test_grow_attached(self, make_api):
        api = make_api(NODE_A)
        unit = api.allocation_unit()
        volume = make_api.create(api, "mongodb")
        api.attach_volume(volume.volume_id, api.compute_instance_id())
        path = wait_for_device(api, volume.volume_id)
        grown = api.grow_volume(volume.volume_id, 2 * unit)
        assert grown.size == 2 * unit
        assert grown.attached_to == api.compute_instance_id()
        wait_for_size(path, 2 * unit)
        assert wait_for_device(api, volume.volume_id) == path

    def test_grow_same_size(self, make_api):
        api = make_api(NODE_A)
        volume = make_api.create(api, "mongodb")
        assert api.grow_volume(volume.volume_id, volume.size) == volume
        assert api.get_volume(volume.volume_id) == volume

    def test_shrink_refused(self, make_api):
        api = make_api(NODE_A)
        unit = api.allocation_unit()
        volume = make_api.create(api, "mongodb", size=2 * unit)
        with pytest.raises(ShrinkRefused) as raised:
            api.grow_volume(volume.volume_id, unit)
        assert raised.value.size == 2 * unit
        assert raised.value.requested == unit
        assert "shrink" in str(raised.value)
        assert api.get_volume(volume.volume_id).size == 2 * unit


# --- optional abilities -------------------------------------------------------
# A backend's test class mixes in the suite of each ability it declares.

class ListsChangesConformance(object):
    """
    ``IListsChanges``: only the volumes changed since a time.
    """

    def test_lists_changes(self, make_api):
        api = make_api(NODE_A)
        assert IListsChanges.providedBy(api)
        assert verifyObject(IListsChanges, api)
        old = make_api.create(api, "old")
        changed = make_api.create(api, "changed")
        since = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%f")
        assert api.list_changed_volumes(since) == []
        api.set_metadata(changed.volume_id, {"note": "touched"})
        assert [v.volume_id for v in api.list_changed_volumes(since)] == [
            changed.volume_id]
        assert sorted(v.volume_id for v in api.list_volumes()) == sorted(
            [old.volume_id, changed.volume_id])


class ReportsLimitsConformance(object):
    """
    ``IReportsLimits``: the backend's own limits, as ``model.Limits``.
    """

    def test_reports_limits(self, make_api):
        api = make_api(NODE_A)
        assert IReportsLimits.providedBy(api)
        assert verifyObject(IReportsLimits, api)
        limits = api.limits()
        assert isinstance(limits, Limits)
        for value in (limits.region_volumes, limits.region_size):
            assert value is None or value > 0


class FencesNodesConformance(object):
    """
    ``IFencesNodes``: a node powered off and confirmed off, idempotently;
    a node the backend does not know is never taken for fenced. Needs a
    fixture ``fenceable_node``: the backend id of a node that is on, which
    the test may fence and the fixture powers on again afterwards.
    """

    def test_fence_powers_off_and_is_idempotent(self, make_api,
                                                fenceable_node):
        api = make_api(NODE_A)
        assert IFencesNodes.providedBy(api)
        assert verifyObject(IFencesNodes, api)
        assert api.power_state(fenceable_node).power == POWER_ON
        assert api.fence(fenceable_node).power == POWER_OFF
        assert api.power_state(fenceable_node).power == POWER_OFF
        # Already off: fenced again, at once.
        assert api.fence(fenceable_node).power == POWER_OFF

    def test_unknown_node_is_not_fenced(self, make_api):
        api = make_api(NODE_A)
        unknown = str(uuid.uuid4())
        assert api.power_state(unknown).power == POWER_UNKNOWN
        with pytest.raises(PowerStateUnknown) as raised:
            api.fence(unknown)
        assert raised.value.node == unknown
