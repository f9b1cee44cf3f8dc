"""
What Cinder refuses, the emulator refuses with the same status and words,
on the wire (OPENSTACK.md, "What Cinder refuses", measured against a real
Cinder 29.0.0).
"""

import os
import time

import pytest

from tests.emulator_process import RunningEmulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="loop devices need root")

FAST = {"create": 0.05, "attach": 0.1, "detach": 0.1, "extend": 0.05,
        "delete": 0.05}
# What openstacksdk asks for on volume calls.
LATEST = {"OpenStack-API-Version": "volume 3.71"}


@pytest.fixture(scope="module")
def cloud():
    emulator = RunningEmulator({
        "latency": FAST,
        "users": {"demo": {"password": "demo-password", "project": "demo"},
                  "operator": {"password": "operator-password",
                               "project": "demo", "admin": True}}})
    emulator.start()
    yield emulator
    emulator.cleanup()


@pytest.fixture
def volume(cloud):
    """
    A factory of available volumes, detached and deleted after the test.
    """
    made = []

    def create(**spec):
        spec.setdefault("size", 1)
        status, _, body = cloud.request("POST", "/v3/volumes",
                                        {"volume": spec}, headers=LATEST)
        assert status == 202, body
        made.append(body["volume"]["id"])
        cloud.wait_for_status(made[-1], "available")
        return made[-1]
    yield create
    for volume_id in made:
        status, _, _ = cloud.request(
            "DELETE", "/compute/v2.1/servers/%s/os-volume_attachments/%s"
            % (cloud.servers["node1"], volume_id))
        if status == 202:
            cloud.wait_for_status(volume_id, "available")
        cloud.request("DELETE", "/v3/volumes/%s" % (volume_id,))
        cloud.wait_for_status(volume_id, None)


def refused(cloud, method, path, body=None, code=400, **kwargs):
    """
    The message of the refusal of the request, which must be ``code``.
    """
    kwargs.setdefault("headers", LATEST)
    status, _, answer = cloud.request(method, path, body, **kwargs)
    assert status == code, answer
    [(fault, detail)] = answer.items()
    assert detail["code"] == code
    return detail["message"]


def created_names(cloud):
    _, _, body = cloud.request("GET", "/v3/volumes")
    return [v["name"] for v in body["volumes"]]


def test_a_name_over_255_characters(cloud, volume):
    message = refused(cloud, "POST", "/v3/volumes",
                      {"volume": {"size": 1, "name": "n" * 300}})
    assert message == ("Invalid input received: name has 300 characters, "
                       "more than 255.")
    # 255 is allowed, and counted without surrounding spaces.
    volume(name=" " + "n" * 255 + " ")
    assert "n" * 300 not in created_names(cloud)


def test_an_unknown_key_in_the_body_or_the_volume(cloud):
    message = refused(cloud, "POST", "/v3/volumes",
                      {"volume": {"size": 1}, "bogus": 1})
    assert message == ("Additional properties are not allowed ('bogus' was "
                       "unexpected)")
    message = refused(cloud, "POST", "/v3/volumes",
                      {"volume": {"size": 1, "bogus": 1}})
    assert message == (
        "Invalid input for field/attribute volume. Value: {'size': 1, "
        "'bogus': 1}. Additional properties are not allowed ('bogus' was "
        "unexpected)")
    message = refused(cloud, "PUT", "/v3/volumes/%s" % ("0" * 36,),
                      {"volume": {"name": "x", "size": 2}}, code=404)
    assert message.startswith("Volume ")


def test_unknown_volume_keys_pass_below_353(cloud, volume):
    # Cinder checks the keys inside "volume" from microversion 3.53 on.
    status, _, body = cloud.request(
        "POST", "/v3/volumes", {"volume": {"size": 1, "name": "old-client",
                                           "bogus": 1}},
        headers={"OpenStack-API-Version": "volume 3.52"})
    assert status == 202, body
    cloud.wait_for_status(body["volume"]["id"], "available")
    cloud.request("DELETE", "/v3/volumes/%s" % (body["volume"]["id"],))
    cloud.wait_for_status(body["volume"]["id"], None)


def test_an_update_with_an_unknown_key(cloud, volume):
    volume_id = volume(name="updated")
    message = refused(cloud, "PUT", "/v3/volumes/%s" % (volume_id,),
                      {"volume": {"name": "x", "size": 2}})
    assert message.startswith("Invalid input for field/attribute volume.")
    assert message.endswith("Additional properties are not allowed ('size' "
                            "was unexpected)")
    message = refused(cloud, "PUT", "/v3/volumes/%s" % (volume_id,),
                      {"volume": {"name": "n" * 256}})
    assert message == ("Invalid input received: name has 256 characters, "
                       "more than 255.")


@pytest.mark.parametrize("where", ["create", "merge", "replace"])
def test_metadata_values_must_be_strings_of_255(cloud, volume, where):
    volume_id = volume(metadata={"kept": "yes"}) if where != "create" \
        else None

    def send(metadata):
        if where == "create":
            return refused(cloud, "POST", "/v3/volumes",
                           {"volume": {"size": 1, "metadata": metadata}})
        return refused(cloud, "POST" if where == "merge" else "PUT",
                       "/v3/volumes/%s/metadata" % (volume_id,),
                       {"metadata": metadata})
    assert send({"k": 1}) == ("Invalid input for field/attribute k. Value: "
                              "1. 1 is not of type 'string'")
    long = "v" * 256
    assert send({"k": long}) == ("Invalid input for field/attribute k. "
                                 "Value: %s. '%s' is too long" % (long, long))
    assert send({"bad/key": "v"}) == (
        "Invalid input for field/attribute metadata. Value: {'bad/key': "
        "'v'}. 'bad/key' does not match any of the regexes: "
        "'^[a-zA-Z0-9-_:. ]{1,255}$'")
    if volume_id is not None:
        _, _, body = cloud.request("GET", "/v3/volumes/%s/metadata"
                                   % (volume_id,))
        assert body == {"metadata": {"kept": "yes"}}


def test_metadata_that_is_not_an_object(cloud, volume):
    volume_id = volume()
    message = refused(cloud, "POST", "/v3/volumes/%s/metadata"
                      % (volume_id,), {"metadata": "x"})
    assert message == ("Invalid input for field/attribute metadata. Value: "
                       "x. 'x' is not of type 'object'")
    # On create, metadata may also be null.
    message = refused(cloud, "POST", "/v3/volumes",
                      {"volume": {"size": 1, "metadata": "x"}})
    assert message == ("Invalid input for field/attribute metadata. Value: "
                       "x. 'x' is not of type 'object', 'null'")


def test_unknown_list_filters(cloud):
    for path in ("/v3/volumes/detail?foo=bar", "/v3/volumes?foo=bar"):
        assert refused(cloud, "GET", path) == (
            "Invalid filters foo are found in query options.")
    status, _, body = cloud.request("GET", "/v3/volumes/detail?metadata="
                                    "notadict", headers=LATEST)
    assert (status, body["volumes"]) == (200, [])


def test_sorting(cloud, volume):
    ids = [volume(name=name, size=size, metadata={"sorting": "1"})
           for name, size in (("b", 2), ("a", 3), ("c", 1))]
    query = "/v3/volumes/detail?metadata=%7B%27sorting%27%3A%271%27%7D&"

    def listed(order):
        status, _, body = cloud.request("GET", query + order,
                                        headers=LATEST)
        assert status == 200, body
        return [v["id"] for v in body["volumes"]]
    assert listed("sort=name:asc") == [ids[1], ids[0], ids[2]]
    assert listed("sort=created_at:asc") == ids
    assert listed("sort_key=size&sort_dir=asc") == [ids[2], ids[0], ids[1]]
    assert listed("sort=name:desc&limit=1&marker=" + ids[0]) == [ids[1]]
    assert listed("") == list(reversed(ids))
    assert refused(cloud, "GET", query + "sort=bogus:asc") == (
        "Invalid input received: Invalid sort key")


def test_admin_actions_are_for_admins(cloud, volume):
    volume_id = volume()
    path = "/v3/volumes/%s/action" % (volume_id,)
    for action in ({"os-reset_status": {"status": "error"}},
                   {"os-force_detach": {}}):
        status, _, body = cloud.request("POST", path, action)
        assert status == 403, body
        assert list(body) == ["forbidden"]
    assert cloud.volume_status(volume_id) == "available"

    status, _, _ = cloud.request("POST", path, {"os-reset_status": {
        "status": "error"}}, user="operator")
    assert status == 202
    assert cloud.volume_status(volume_id) == "error"
    cloud.request("POST", path, {"os-reset_status": {
        "status": "available"}}, user="operator")

    status, _, body = cloud.request(
        "POST", "/compute/v2.1/servers/%s/os-volume_attachments"
        % (cloud.servers["node1"],), {"volumeAttachment": {
            "volumeId": volume_id}})
    assert status == 200, body
    cloud.wait_for_status(volume_id, "in-use")
    link = os.path.join(cloud.by_id_root("node1"),
                        "virtio-" + volume_id[:20])
    assert os.path.lexists(link)
    status, _, _ = cloud.request("POST", path, {"os-force_detach": {}},
                                 user="operator")
    assert status == 202
    assert cloud.volume_status(volume_id) == "available"
    _, _, body = cloud.request("GET", "/v3/volumes/%s" % (volume_id,))
    assert body["volume"]["attachments"] == []
    assert not os.path.lexists(link)


def test_updated_at_filter_from_331(cloud, volume):
    first = volume(name="older")
    time.sleep(0.05)
    _, _, body = cloud.request("GET", "/v3/volumes/%s" % (first,))
    since = body["volume"]["updated_at"]
    second = volume(name="newer")
    path = "/v3/volumes/detail?updated_at=gt:%s" % (since,)

    def listed(version):
        _, _, body = cloud.request("GET", path, headers={
            "OpenStack-API-Version": "volume " + version})
        return [v["id"] for v in body["volumes"]]
    assert second in listed("3.31") and first not in listed("3.31")
    assert {first, second} <= set(listed("3.30"))


def test_empty_answers_carry_a_content_type(cloud, volume):
    volume_id = volume()
    status, headers, body = cloud.request(
        "POST", "/v3/volumes/%s/action" % (volume_id,),
        {"os-extend": {"new_size": 2}})
    assert (status, body) == (202, None)
    assert headers["content-type"] == "application/json"
    cloud.wait_for_status(volume_id, "available")


def test_missing_metadata_key_and_unknown_marker(cloud, volume):
    volume_id = volume(metadata={"a": "1"})
    message = refused(cloud, "DELETE", "/v3/volumes/%s/metadata/nope"
                      % (volume_id,), code=404)
    assert message == "Volume %s has no metadata with key nope." % (
        volume_id,)
    marker = "4f0c8a34-0000-4000-8000-000000000000"
    message = refused(cloud, "GET", "/v3/volumes/detail?marker=" + marker,
                      code=404)
    assert message == "Volume %s could not be found." % (marker,)


def test_an_unsupported_microversion_is_echoed(cloud):
    status, headers, body = cloud.request(
        "GET", "/v3/volumes/detail",
        headers={"OpenStack-API-Version": "volume 3.99"})
    assert status == 406
    assert body["computeFault"]["message"] == (
        "Version 3.99 is not supported by the API. Minimum is 3.0 and "
        "maximum is 3.71.")
    assert headers["openstack-api-version"] == "volume 3.99"
    assert headers["vary"] == "OpenStack-API-Version"
