"""
The volumes pushes keep, through a real ``blockmover-control`` over mutual
TLS with two loopback sites: ``GET /v1/volumes/kept`` and ``DELETE
/v1/volumes/ID`` for operators only, the refusals (the data, a volume
attached as the backend says now, an unknown one), a kept volume removed
from its site's backend and logged with who asked; and ``blockmover volume
list|remove`` as an operator runs them.

A volume is attached here by the loopback backend itself (a loop device):
run it under ``flock /tmp/blockmover-heavy.lock``.
"""

import json
import os
import subprocess

import pytest

from blockmover.backends.loopback import LoopbackBlockDeviceAPI
from blockmover.certificates import NODE
from blockmover.identity import (
    COMPLETE, FORMAT_KEY, FORMATTED, GENERATION_KEY, INCOMING, PUSH_ID_KEY,
    PUSH_KEY, dataset_id, volume_metadata,
)
from blockmover.poll import Backoff, poll
from blockmover.units import MiB
from tests.control_process import ControlProcess
from tests.test_status import BLOCKMOVER, operator_dir

CLUSTER_NAME = "kept"

CLUSTER = """\
version: 1
cluster:
  name: kept
  control: https://127.0.0.1:4523
  sites:
    east: {{backend: {{name: loopback, root: {east}}}}}
    west: {{backend: {{name: loopback, root: {west}}}}}
nodes:
  node1: {{address: 10.9.0.1, site: east}}
  node2: {{address: 10.9.0.2, site: west}}
deployment:
  node1: [web]
  node2: [db]
"""

APP = """\
version: 1
applications:
  db: {command: [sleep, "3600"], volume: {mountpoint: /srv/db,
                                           maximum_size: 64M}}
  web: {command: [sleep, "3600"], volume: {mountpoint: /srv/web,
                                            maximum_size: 64M}}
"""

QUICK = Backoff(initial=0.05, factor=1.5, maximum=0.5)


def make_volume(backend, application, generation=0, incoming=None):
    metadata = volume_metadata(CLUSTER_NAME, application)
    metadata[FORMAT_KEY] = FORMATTED
    if generation:
        metadata.update({GENERATION_KEY: str(generation),
                         PUSH_KEY: COMPLETE})
    if incoming is not None:
        metadata.update({PUSH_KEY: INCOMING, PUSH_ID_KEY: incoming})
    return backend.create_volume(dataset_id(CLUSTER_NAME, application),
                                 64 * MiB, metadata).volume_id


class Sites(object):
    """
    The two sites' backends, their volumes, and the control service.
    """

    def __init__(self, root, control):
        self.east = LoopbackBlockDeviceAPI(os.path.join(root, "east"),
                                           CLUSTER_NAME)
        self.west = LoopbackBlockDeviceAPI(os.path.join(root, "west"),
                                           CLUSTER_NAME)
        self.control = control
        # db was pushed east -> west: its old copy is kept in the east.
        self.db_kept = make_volume(self.east, "db")
        self.db_data = make_volume(self.west, "db", generation=1)
        # A push of web west failed and left its volume marked incoming.
        self.web_data = make_volume(self.east, "web")
        self.web_kept = make_volume(self.west, "web", generation=1,
                                    incoming="p9")

    def listed(self):
        return {v.volume_id for b in (self.east, self.west)
                for v in b.list_volumes()}

    def kept(self):
        status, answer = self.control.request("GET", "/v1/volumes/kept")
        assert status == 200, answer
        return {v["volume_id"]: v for v in answer["volumes"]}


@pytest.fixture
def sites(tmp_path, loopback_root):
    control = ControlProcess(str(tmp_path / "state"),
                             str(tmp_path / "control.log"),
                             cluster=CLUSTER_NAME)
    made = Sites(loopback_root, control)
    control.start()
    try:
        status, answer = control.request("PUT", "/v1/configuration", {
            "cluster_yml": CLUSTER.format(
                east=os.path.join(loopback_root, "east"),
                west=os.path.join(loopback_root, "west")),
            "app_yml": APP})
        assert status == 200, answer
        poll(lambda: len(made.kept()) == 2 or None, 20,
             "the kept volumes to be listed", QUICK)
        yield made
    finally:
        for backend in (made.east, made.west):
            for volume in backend.list_volumes():
                if volume.attached_to is not None:
                    backend.detach_volume(volume.volume_id,
                                          volume.attached_to)
        assert control.stop() in (0, None), "blockmover-control did not stop"


def removal(sites, volume_id, **kwargs):
    return sites.control.request("DELETE", "/v1/volumes/%s" % (volume_id,),
                                 **kwargs)


def test_operators_see_what_is_kept_and_why(sites):
    kept = sites.kept()
    assert set(kept) == {sites.db_kept, sites.web_kept}
    db = kept[sites.db_kept]
    assert (db["application"], db["site"], db["size"], db["attached_to"],
            db["generation"], db["incoming"], db["reason"]) == (
        "db", "east", 64 * MiB, None, 0, False, "older")
    web = kept[sites.web_kept]
    assert (web["application"], web["site"], web["generation"],
            web["incoming"], web["reason"], web["push_id"]) == (
        "web", "west", 1, True, "failed-push", "p9")
    assert "pushed into by push p9" in web["why"]


def test_a_node_may_neither_list_nor_remove(sites):
    for method, path in (("GET", "/v1/volumes/kept"),
                         ("DELETE", "/v1/volumes/%s" % (sites.db_kept,))):
        status, answer = sites.control.request(method, path, kind=NODE,
                                               name="node1")
        assert status == 403, answer
        assert answer["errors"][0].startswith(
            "node node1 may not %s %s: " % (method, path))
    assert sites.db_kept in sites.listed()


def test_data_attached_and_unknown_volumes_are_refused(sites):
    status, answer = removal(sites, sites.db_data)
    assert status == 409, answer
    assert answer["errors"][0].startswith(
        "volume %s is not removed: it holds the data of db" % (
            sites.db_data,))
    status, answer = removal(sites, "no-such-volume")
    assert status == 404, answer
    assert "blockmover volume list" in answer["errors"][0]
    # Attached since the listing: the backend is asked again.
    sites.east.attach_volume(sites.db_kept, "node1")
    status, answer = removal(sites, sites.db_kept)
    assert status == 409, answer
    assert answer["errors"][0].startswith(
        "volume %s is not removed: it is attached to node1" % (
            sites.db_kept,))
    assert sites.listed() == {sites.db_kept, sites.db_data, sites.web_data,
                              sites.web_kept}


def test_a_kept_volume_is_removed_and_the_removal_logged(sites):
    status, answer = removal(sites, sites.db_kept)
    assert status == 200, answer
    assert (answer["removed"]["volume_id"], answer["removed"]["site"],
            answer["removed"]["application"]) == (sites.db_kept, "east",
                                                  "db")
    assert sites.db_kept not in sites.listed()
    # Its image went with it.
    assert not [name for _, _, names in os.walk(sites.east.root)
                for name in names if sites.db_kept in name]
    poll(lambda: sites.db_kept not in sites.kept() or None, 20,
         "the listing to lose the removed volume", QUICK)
    with open(sites.control.log) as f:
        [removed] = [m for m in map(json.loads, f)
                     if m.get("message_type") ==
                     "blockmover:control:volume-removed"]
    assert (removed["volume_id"], removed["site"], removed["by"]) == (
        sites.db_kept, "east", "user operator")
    # Again: it is gone.
    status, answer = removal(sites, sites.db_kept)
    assert status == 404, answer


def blockmover_volume(sites, *args):
    return subprocess.run(
        [BLOCKMOVER, "volume"] + list(args) + [
            "--control", sites.control.url,
            "--tls-dir", operator_dir(CLUSTER_NAME)],
        capture_output=True, text=True, timeout=60)


def test_the_volume_command(sites):
    shown = blockmover_volume(sites, "list")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["VOLUME", "APPLICATION", "SITE", "SIZE",
                                "ATTACHED", "GENERATION", "WHY"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows[sites.db_kept].split()[1:7] == [
        "db", "east", "64", "MiB", "-", "0"]
    assert "pushed into by push p9" in rows[sites.web_kept]
    as_json = blockmover_volume(sites, "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert {v["volume_id"] for v in json.loads(as_json.stdout)["volumes"]} \
        == {sites.db_kept, sites.web_kept}
    refused = blockmover_volume(sites, "remove", sites.web_data)
    assert refused.returncode == 1
    assert "holds the data of web" in refused.stderr
    removed = blockmover_volume(sites, "remove", sites.web_kept)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(
        "removed volume %s of web in site west (64 MiB, pushed into by push "
        "p9" % (sites.web_kept,))
    assert sites.web_kept not in sites.listed()
    helped = subprocess.run([BLOCKMOVER, "volume", "list", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert "a later push back into that site reuses it" in \
        " ".join(helped.stdout.split())
