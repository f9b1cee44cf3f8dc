"""
The rules of pushes between sites (``blockmover.control.push_rules``): when
a push starts, how it goes on from its nodes' reports and the listing,
where the application runs meanwhile, and what each slice says of it.
"""

import os

from blockmover.config import load_deployment
from blockmover.control import push_rules
from blockmover.control.push_rules import (
    CANCELLED, COMMITTED, FAILED, FINAL, LIVE, decide, effective_placement,
    slice_parts,
)
from blockmover.identity import (
    COMPLETE, FORMAT_KEY, FORMATTED, GENERATION_KEY, INCOMING, PUSH_ID_KEY,
    PUSH_KEY, dataset_id, volume_metadata,
)
from blockmover.model import (
    PUSH_FAILED, PUSH_LIVE, PUSH_RECEIVING, PUSH_VERIFIED, NodeReport,
    NodeState, Progress, PushProgress, Step, StepError, Volume,
)
from blockmover.placement import Listing, desired_slices
from blockmover.units import GiB

CLUSTER = """\
version: 1
cluster:
  name: demo
  control: "https://127.0.0.1:4523"
  sites:
    east: {{backend: {{name: loopback, root: /srv/east}}}}
    west: {{backend: {{name: loopback, root: /srv/west}}}}
  push: {{bandwidth: 100M, port: 4600}}
nodes:
  node1: {{address: 10.0.0.1, site: east}}
  node2: {{address: 10.0.0.2, site: west}}
  node3: {{address: 10.0.0.3, site: east}}
deployment:
  {node}: [db]
"""

APP = """\
version: 1
applications:
  db: {command: [d], volume: {mountpoint: /data/db, maximum_size: 1G}}
"""

DB = dataset_id("demo", "db")


def deployment(node):
    return load_deployment(CLUSTER.format(node=node), APP)


def data(site="east", attached_to="node1", generation=0, volume_id=None):
    metadata = volume_metadata("demo", "db")
    metadata[FORMAT_KEY] = FORMATTED
    if generation:
        metadata[GENERATION_KEY] = str(generation)
        metadata[PUSH_KEY] = COMPLETE
    return Volume(volume_id=volume_id or "vol-" + site, dataset_id=DB,
                  size=GiB, attached_to=attached_to, metadata=metadata,
                  site=site)


def incoming(push_id, site="west", attached_to="node2", generation=1):
    metadata = volume_metadata("demo", "db")
    metadata.update({PUSH_KEY: INCOMING, PUSH_ID_KEY: push_id,
                     GENERATION_KEY: str(generation)})
    return Volume(volume_id="vol-in-" + site, dataset_id=DB, size=GiB,
                  attached_to=attached_to, metadata=metadata, site=site)


def report(node, pushes=(), errors=()):
    return NodeReport(
        state=NodeState(node=node, backend_id=node,
                        pushes={p.dataset_id: p for p in pushes}),
        progress=Progress(converged=False, errors=list(errors)))


def ids(*names):
    it = iter(names)
    return lambda: next(it)


def started(listing, node="node2"):
    records, commits = decide(deployment(node), listing, {}, {}, 10.0,
                              make_id=ids("p1"))
    assert commits == []
    return records


def test_a_move_within_a_site_is_no_push():
    listing = Listing.of([data()])
    records, _ = decide(deployment("node3"), listing, {}, {}, 1.0)
    assert dict(records) == {}


def test_a_move_to_another_site_starts_a_push_from_the_holder():
    records = started(Listing.of([data()]))
    push = records[DB]
    assert (push.push_id, push.phase, push.source_node, push.target_node,
            push.source_site, push.target_site, push.source_volume,
            push.generation) == ("p1", LIVE, "node1", "node2", "east",
                                 "west", "vol-east", 1)


def test_the_application_runs_at_the_source_while_live_and_nowhere_in_the_final_round():
    records = started(Listing.of([data()]))
    new = deployment("node2")
    assert effective_placement(new, records)["db"] == "node1"
    final = records.set(DB, records[DB].set(phase=FINAL))
    assert "db" not in effective_placement(new, final)
    committed = records.set(DB, records[DB].set(phase=COMMITTED))
    assert effective_placement(new, committed)["db"] == "node2"


def test_settled_rounds_make_it_final():
    listing = Listing.of([data(), incoming("p1")])
    records = started(listing)
    settled = PushProgress(push_id="p1", dataset_id=DB, phase=PUSH_LIVE,
                           round=3, settled=True)
    after, _ = decide(deployment("node2"), listing, records,
                      {"node1": report("node1", [settled])}, 20.0)
    assert (after[DB].phase, after[DB].final_at) == (FINAL, 20.0)


def test_a_report_of_another_push_counts_for_nothing():
    listing = Listing.of([data(), incoming("p1")])
    records = started(listing)
    other = PushProgress(push_id="old", dataset_id=DB, phase=PUSH_LIVE,
                         settled=True)
    after, _ = decide(deployment("node2"), listing, records,
                      {"node1": report("node1", [other])}, 20.0)
    assert after[DB].phase == LIVE


def _final(listing):
    records = started(listing)
    return records.set(DB, records[DB].set(phase=FINAL))


def test_commit_needs_both_sides_to_report_the_same_digest():
    listing = Listing.of([data(), incoming("p1")])
    records = _final(listing)
    source = PushProgress(push_id="p1", dataset_id=DB, phase=PUSH_VERIFIED,
                          source_digest="abc", target_digest="abc")
    target = PushProgress(push_id="p1", dataset_id=DB, phase=PUSH_RECEIVING,
                          target_digest="abc")
    wrong = target.set(target_digest="abd")
    for reports, ready in (
            ({"node1": report("node1", [source])}, False),
            ({"node1": report("node1", [source]),
              "node2": report("node2", [wrong])}, False),
            ({"node1": report("node1", [source]),
              "node2": report("node2", [target])}, True)):
        _, commits = decide(deployment("node2"), listing, records, reports,
                            30.0)
        assert bool(commits) == ready


def test_a_commit_seen_in_the_listing_ends_the_push():
    records = _final(Listing.of([data(), incoming("p1")]))
    committed = incoming("p1").set(metadata=incoming("p1").metadata.set(
        PUSH_KEY, COMPLETE))
    after, commits = decide(deployment("node2"), Listing.of(
        [data(), committed]), records, {}, 40.0)
    assert (after[DB].phase, commits) == (COMMITTED, [])
    # And the volume pushed into is the dataset's now: no push back.
    again, _ = decide(deployment("node2"), Listing.of([data(), committed]),
                      after, {}, 50.0, make_id=ids("p2"))
    assert again[DB].phase == COMMITTED


def test_a_listing_that_lags_behind_a_commit_starts_no_push():
    records = _final(Listing.of([data(), incoming("p1")]))
    records = records.set(DB, records[DB].set(phase=COMMITTED))
    # Still the listing of before the commit: the data in site east.
    after, _ = decide(deployment("node2"), Listing.of(
        [data(), incoming("p1")]), records, {}, 40.0, make_id=ids("p2"))
    assert (after[DB].push_id, after[DB].phase) == ("p1", COMMITTED)


def test_a_source_that_gives_up_puts_the_application_back_until_the_next_deploy():
    listing = Listing.of([data(), incoming("p1")])
    records = _final(listing)
    gave_up = PushProgress(push_id="p1", dataset_id=DB, phase=PUSH_FAILED,
                           error="target unreachable")
    after, _ = decide(deployment("node2"), listing, records,
                      {"node1": report("node1", [gave_up])}, 40.0)
    assert (after[DB].phase, after[DB].error) == (FAILED,
                                                  "target unreachable")
    assert effective_placement(deployment("node2"), after)["db"] == "node1"
    same, _ = decide(deployment("node2"), listing, after, {}, 50.0)
    assert same[DB].phase == FAILED
    retried, _ = decide(deployment("node2"), listing, after, {}, 60.0,
                        fresh=True, make_id=ids("p2"))
    assert (retried[DB].push_id, retried[DB].phase) == ("p2", LIVE)


def test_a_node_proven_down_fails_the_push_and_starts_none():
    listing = Listing.of([data(), incoming("p1")])
    records = _final(listing)
    after, _ = decide(deployment("node2"), listing, records, {}, 40.0,
                      down={"node1"})
    assert (after[DB].phase, after[DB].error) == (
        FAILED, "node node1 is proven down")
    assert effective_placement(deployment("node2"), after)["db"] == "node1"
    again, _ = decide(deployment("node2"), listing, after, {}, 50.0,
                      fresh=True, down={"node1"}, make_id=ids("p2"))
    assert again[DB].push_id == "p1"


def test_a_target_over_its_quota_fails_the_push_while_the_application_runs():
    listing = Listing.of([data()])
    records = started(listing)
    refused = StepError(step=Step(kind="create", dataset_id=DB),
                        kind="OverLimit", message="quota of 1 volume")
    after, _ = decide(deployment("node2"), listing, records,
                      {"node2": report("node2", errors=[refused])}, 20.0)
    assert after[DB].phase == FAILED
    assert "site west could not make the volume" in after[DB].error
    assert "quota of 1 volume" in after[DB].error
    assert effective_placement(deployment("node2"), after)["db"] == "node1"


def test_moving_it_back_before_the_commit_cancels_the_push():
    listing = Listing.of([data(), incoming("p1")])
    records = started(listing)
    after, _ = decide(deployment("node1"), listing, records, {}, 20.0)
    assert after[DB].phase == CANCELLED
    assert effective_placement(deployment("node1"), after)["db"] == "node1"


def test_slices_name_the_push_on_both_sides():
    listing = Listing.of([data(), incoming("p1")])
    records = started(listing)
    config = deployment("node2")
    parts = slice_parts(config, listing, records, lambda d: GiB)
    into, out = parts["node2"][0][DB], parts["node1"][1][DB]
    assert (into.push_id, into.source_node, into.volume.volume_id,
            into.port) == ("p1", "node1", "vol-in-west", 4600)
    assert (out.target_node, out.target_address, out.target_volume,
            out.final, out.bandwidth) == ("node2", "10.0.0.2",
                                          "vol-in-west", False, 100 * 2**20)


def test_the_source_waits_for_the_volume_marked_for_this_push():
    listing = Listing.of([data(), incoming("old")])
    records = started(listing)
    parts = slice_parts(deployment("node2"), listing, records, lambda d: GiB)
    assert parts["node1"][1][DB].target_volume is None
    # The target is told of the volume its site keeps, to mark it.
    assert parts["node2"][0][DB].volume.volume_id == "vol-in-west"


def test_the_data_is_the_highest_generation_and_never_an_incoming_volume():
    old = data(site="east", attached_to="node1")
    pushed = data(site="west", attached_to="node2", generation=1)
    listing = Listing.of([old, pushed])
    assert listing.chosen(DB).volume_id == "vol-west"
    assert [v.volume_id for v in listing.kept(DB)] == ["vol-east"]
    assert Listing.of([old, incoming("p1")]).chosen(DB) is old
    assert Listing.of([incoming("p1")]).chosen(DB) is None


def test_a_copy_left_attached_at_the_source_is_given_up_there():
    old = data(site="east", attached_to="node1")
    pushed = data(site="west", attached_to="node2", generation=1)
    slices = desired_slices(deployment("node2"), [old, pushed], GiB)
    assert slices["node1"].volumes[DB].volume_id == "vol-east"
    assert DB not in slices["node1"].datasets
    assert slices["node2"].volumes[DB].volume_id == "vol-west"


def test_needed_pushes_of_a_cluster_of_one_site_are_none():
    one = load_deployment(
        "version: 1\ncluster: {name: demo, control: 'https://127.0.0.1:1'}\n"
        "nodes: {node1: {address: 10.0.0.1}}\ndeployment: {node1: [db]}\n",
        APP)
    assert push_rules.needed_pushes(one, Listing.of([data(site="main")])) \
        == {}


def test_a_volume_pushed_into_by_a_push_that_ended_is_given_up():
    slices = desired_slices(deployment("node1"),
                            [data(), incoming("p1", attached_to="node2")],
                            GiB)
    assert slices["node2"].volumes[DB].volume_id == "vol-in-west"
    assert DB not in slices["node2"].datasets


def test_push_records_are_kept_and_a_damaged_file_is_refused(tmp_path):
    from blockmover.control.errors import StoreError
    from blockmover.control.pushes import PushStore
    import pytest
    store = PushStore(str(tmp_path))
    assert dict(store.load()) == {}
    records = started(Listing.of([data()]))
    store.save(records)
    assert store.load() == records
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    with open(store.path, "w") as f:
        f.write("{not json")
    with pytest.raises(StoreError) as refused:
        store.load()
    assert "deploying again starts a new one" in str(refused.value)


def test_fencing_of_a_cluster_of_sites_works_in_every_site():
    from blockmover.config import ConfigError
    import pytest
    mixed = CLUSTER.format(node="node1").replace(
        "west: {backend: {name: loopback, root: /srv/west}}",
        "west: {backend: {name: openstack, cloud: west}}")
    # By default none: the loopback site cannot power a node off.
    assert load_deployment(mixed, APP).fencing.method == "none"
    with pytest.raises(ConfigError) as refused:
        load_deployment(mixed.replace(
            "  push: {bandwidth: 100M, port: 4600}",
            "  push: {bandwidth: 100M, port: 4600}\n"
            "  fencing: {method: backend}"), APP)
    assert "loopback" in str(refused.value)
