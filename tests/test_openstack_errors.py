"""
How the openstack backend reads the cloud's refusals and failures: which
are retried, which become the backend interface's errors, with the cloud's
own words kept.
"""

import json

import pytest
import requests
from openstack import exceptions as os_exceptions

from blockmover.backends.interface import (
    BackendUnavailable, BlockDeviceError, OverLimit, UnknownVolume,
)
from blockmover.backends.openstack import (
    OpenStackBlockDeviceAPI, Retry, translate,
)
from blockmover.identity import CLUSTER_KEY, DATASET_KEY
from blockmover.poll import Backoff


def cloud_error(status, fault, message, headers=None):
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(
        {fault: {"code": status, "message": message}}).encode("utf-8")
    response.headers["Content-Type"] = "application/json"
    response.headers.update(headers or {})
    try:
        os_exceptions.raise_from_response(response)
    except os_exceptions.HttpException as e:
        return e
    raise AssertionError("not an error response")


def test_quota_refusal_is_over_limit_with_the_cloud_message():
    message = ("VolumeLimitExceeded: Maximum number of volumes allowed (10) "
               "exceeded for quota 'volumes'.")
    error = translate(cloud_error(413, "overLimit", message,
                                  {"Retry-After": "0"}))
    assert isinstance(error, OverLimit)
    assert message in str(error)


def test_rate_limit_is_retried_after_what_the_cloud_asked():
    error = translate(cloud_error(413, "overLimit", "slow down",
                                  {"Retry-After": "3"}))
    assert isinstance(error, Retry)
    assert error.seconds == 3.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_failures_are_retried(status):
    error = translate(cloud_error(status, "serviceUnavailable", "busy"))
    assert isinstance(error, Retry)
    assert error.seconds is None


def test_not_found_names_the_volume():
    error = translate(cloud_error(404, "itemNotFound",
                                  "Volume abc could not be found."), "abc")
    assert isinstance(error, UnknownVolume)
    assert error.volume_id == "abc"
    assert "could not be found" in str(error)


def test_device_limit_is_over_limit():
    error = translate(cloud_error(
        403, "forbidden", "The maximum allowed number of disk devices (2) "
        "to attach to a single instance has been exceeded."))
    assert isinstance(error, OverLimit)


def test_other_refusals_keep_the_message():
    error = translate(cloud_error(400, "badRequest", "Invalid input"))
    assert type(error) is BlockDeviceError
    assert "Invalid input" in str(error)


class Failing(object):
    """
    A cloud call that fails ``failures`` times with ``error`` then answers.
    """
    def __init__(self, failures, error):
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


def backend(deadline, slept):
    return OpenStackBlockDeviceAPI(
        connection=None, cluster_name="c", instance_id="i", deadline=deadline,
        retry_backoff=Backoff(initial=0.5, factor=2.0, maximum=4.0),
        sleep=slept.append)


def test_call_retries_with_backoff_then_answers():
    slept = []
    call = Failing(3, cloud_error(503, "serviceUnavailable", "busy"))
    assert backend(60, slept)._call("list", call) == "answer"
    assert call.calls == 4
    assert slept == [0.5, 1.0, 2.0]


def test_call_honours_retry_after():
    slept = []
    call = Failing(1, cloud_error(413, "overLimit", "later",
                                  {"Retry-After": "2"}))
    assert backend(60, slept)._call("list", call) == "answer"
    assert slept == [2.0]


def test_call_gives_up_at_the_deadline():
    slept = []
    call = Failing(1000, cloud_error(503, "serviceUnavailable", "busy"))
    with pytest.raises(BackendUnavailable) as raised:
        backend(0.1, slept)._call("list volumes", call)
    assert "list volumes" in str(raised.value)
    assert "busy" in str(raised.value)


def test_call_does_not_retry_a_refusal():
    slept = []
    call = Failing(1, cloud_error(400, "badRequest", "no"))
    with pytest.raises(BlockDeviceError):
        backend(60, slept)._call("x", call)
    assert call.calls == 1
    assert slept == []


def test_identity_refusal_says_to_check_the_credentials():
    from keystoneauth1 import exceptions as ks_exceptions
    error = translate(ks_exceptions.Unauthorized(
        "The request you have made requires authentication."))
    assert type(error) is BlockDeviceError
    assert "credentials" in str(error) and "clouds.yaml" in str(error)


def test_identity_outage_is_retried():
    from keystoneauth1 import exceptions as ks_exceptions
    error = translate(ks_exceptions.ServiceUnavailable("down"))
    assert isinstance(error, Retry)


class Statuses(object):
    """
    A cloud whose volume ``v`` shows ``statuses`` one look after another
    (the last one from then on), attached to ``holder`` until it shows
    ``available``; a detach request is recorded.
    """
    def __init__(self, statuses, holder="node2"):
        self.statuses = list(statuses)
        self.holder = holder
        self.detached = []
        self.block_storage = self
        self.compute = self

    def get_volume(self, volume_id):
        status = self.statuses.pop(0) if len(self.statuses) > 1 \
            else self.statuses[0]
        attachments = [] if status == "available" else [
            {"server_id": self.holder}]
        return _Raw(id=volume_id, status=status, size=1,
                    metadata={CLUSTER_KEY: "c", DATASET_KEY: "d"},
                    attachments=attachments)

    def delete_volume_attachment(self, server, volume_id):
        self.detached.append((server.id, volume_id))


class _Raw(object):
    def __init__(self, **fields):
        self.__dict__.update(fields)


def detaching_backend(cloud):
    return OpenStackBlockDeviceAPI(
        connection=cloud, cluster_name="c", instance_id="node1",
        deadline=60, backoff=Backoff(initial=0.1, factor=1.0, maximum=0.1),
        sleep=lambda seconds: None)


def test_detach_waits_while_nova_has_not_begun():
    # Nova answers 202 and begins later: in-use before detaching is no
    # failure.
    cloud = Statuses(["in-use", "in-use", "in-use", "detaching",
                      "available"])
    volume = detaching_backend(cloud).detach_volume("v", "node2")
    assert volume.attached_to is None
    assert cloud.detached == [("node2", "v")]


def test_detach_rolled_back_is_an_error():
    cloud = Statuses(["in-use", "detaching", "in-use"])
    with pytest.raises(BlockDeviceError) as raised:
        detaching_backend(cloud).detach_volume("v", "node2")
    assert "could not detach volume v from node2" in str(raised.value)
