"""
The openstack backend checks what it sends against what Cinder refuses
(``cinder_rules``, the same rules the emulator answers by) and fails
before sending, naming the field; what Cinder takes goes through.
"""

import pytest

from blockmover.backends import cinder_rules
from blockmover.backends.cinder_rules import Refused
from blockmover.backends.interface import BlockDeviceError
from blockmover.backends.openstack import (
    InvalidRequest, OpenStackBlockDeviceAPI,
)
from blockmover.identity import CLUSTER_KEY, DATASET_KEY, NAME_KEY
from blockmover.units import GiB


class Raw(object):
    """
    A volume as openstacksdk gives it.
    """
    def __init__(self, id, size, metadata, status="available"):
        self.id = id
        self.size = size
        self.metadata = metadata
        self.status = status
        self.attachments = []


class RecordingBlockStorage(object):
    """
    Cinder as far as creating volumes and setting metadata go; ``sent``
    lists every request that reached it.
    """
    def __init__(self):
        self.sent = []
        self.volumes_by_id = {}

    def volumes(self, details=True, **query):
        self.sent.append(("list", query))
        return []

    def create_volume(self, **attributes):
        self.sent.append(("create", attributes))
        raw = Raw("v1", attributes["size"], attributes["metadata"])
        self.volumes_by_id[raw.id] = raw
        return raw

    def get_volume(self, volume_id):
        return self.volumes_by_id[volume_id]

    def set_volume_metadata(self, volume_id, **metadata):
        self.sent.append(("metadata", metadata))
        self.volumes_by_id[volume_id].metadata.update(metadata)


class RecordingCloud(object):
    def __init__(self):
        self.block_storage = RecordingBlockStorage()


@pytest.fixture
def cloud():
    return RecordingCloud()


@pytest.fixture
def api(cloud):
    return OpenStackBlockDeviceAPI(cloud, "c1", instance_id="i",
                                   deadline=5, sleep=lambda _: None)


def refusal(call, *args):
    with pytest.raises(InvalidRequest) as raised:
        call(*args)
    return raised.value


def test_a_create_cinder_takes_is_sent(api, cloud):
    volume = api.create_volume("d1", GiB, {"blockmover-application": "a"})
    assert volume.volume_id == "v1"
    assert [kind for kind, _ in cloud.block_storage.sent] == [
        "list", "create"]
    attributes = cloud.block_storage.sent[1][1]
    assert attributes["metadata"][DATASET_KEY] == "d1"


def test_a_name_over_255_is_not_sent(api, cloud):
    error = refusal(api.create_volume, "d1", GiB, {NAME_KEY: "n" * 300})
    assert error.field == "name"
    assert isinstance(error, BlockDeviceError)
    assert "name has 300 characters, more than 255" in str(error)
    assert "dataset d1" in str(error)
    assert cloud.block_storage.sent == []


def test_metadata_values_must_be_short_strings(api, cloud):
    error = refusal(api.create_volume, "d1", GiB, {"size-hint": 3})
    assert error.field == "size-hint"
    assert "3 is not of type 'string'" in str(error)
    error = refusal(api.create_volume, "d1", GiB, {"note": "x" * 256})
    assert error.field == "note"
    assert "is too long" in str(error)
    assert cloud.block_storage.sent == []


def test_metadata_keys_cinder_cannot_hold(api, cloud):
    for key in ("a/b", "", "k" * 256):
        error = refusal(api.create_volume, "d1", GiB, {key: "v"})
        assert error.field == "metadata"
    assert cloud.block_storage.sent == []


def test_set_metadata_is_checked_before_sending(api, cloud):
    api.create_volume("d1", GiB, {})
    del cloud.block_storage.sent[:]
    error = refusal(api.set_metadata, "v1", {"state": "x" * 300})
    assert error.field == "state"
    assert "volume v1" in str(error)
    assert cloud.block_storage.sent == []
    api.set_metadata("v1", {"state": "ok"})
    assert cloud.block_storage.sent == [("metadata", {"state": "ok"})]


def test_the_clusters_own_keys_are_valid_metadata_keys():
    # Every key blockmover writes must be one Cinder keeps.
    cinder_rules.check_metadata({CLUSTER_KEY: "c", DATASET_KEY: "d",
                                 NAME_KEY: "n"})


def test_create_keys():
    with pytest.raises(Refused) as raised:
        cinder_rules.check_create({"volume": {"size": 1}, "bogus": 1})
    assert raised.value.field == "bogus"
    with pytest.raises(Refused) as raised:
        cinder_rules.check_create({"volume": {"size": 1, "bogus": 1}})
    assert raised.value.field == "volume"
    # Before microversion 3.53 Cinder took any key inside "volume".
    cinder_rules.check_create({"volume": {"size": 1, "bogus": 1}}, (3, 52))
    cinder_rules.check_create({"volume": {"size": 1, "metadata": None}})


def test_list_filters_and_sorting():
    cinder_rules.check_list_query(["metadata", "updated_at", "limit"])
    with pytest.raises(Refused) as raised:
        cinder_rules.check_list_query(["metadata", "changes-since", "foo"])
    assert raised.value.message == ("Invalid filters changes-since,foo are "
                                    "found in query options.")
    assert cinder_rules.sort_order("name:asc,size") == [
        ("name", "asc"), ("size", "asc")]
    assert cinder_rules.sort_order(sort_key="size", sort_dir="asc") == [
        ("size", "asc")]
    assert cinder_rules.sort_order() == []
    for bad in ("bogus:asc", "name:sideways"):
        with pytest.raises(Refused):
            cinder_rules.sort_order(bad)
