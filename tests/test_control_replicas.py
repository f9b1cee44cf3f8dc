"""
The control service as three replicas on a three-member etcd, every part a
real process over mutual TLS (``tests.replicas_process``): one leads, the
others serve long polls and send the rest to it; a leader killed or paused
is replaced and acts no more; etcd losing its majority stops writes with a
clear answer, and nothing is lost; a replica with an empty disk rejoins.

Times are printed, never asserted: the machine is shared.
"""

import json
import os
import shutil
import signal
import time
import uuid

from blockmover.poll import Backoff, poll
from tests.replicas_process import APP_YML, Replicas, ask, cluster_yml


def wait_for(check, what, timeout=60):
    """
    Poll ``check`` until it returns something true (not only not None).
    """
    return poll(lambda: check() or None, timeout, what,
                Backoff(initial=0.05, maximum=0.25))


def settled(replicas, root, **kwargs):
    """
    Deploy a first configuration (with short election times), and return
    the leader once one leads with those times: the leader before hands
    over when they change.
    """
    first = replicas.leader()
    replicas.deploy(cluster_yml(root, **kwargs))

    def check():
        leader = replicas.leader()
        status, body = ask(leader, "GET", "/v1/replicas")
        return leader if status == 200 and \
            body["election"]["lease"] == 4 else None
    leader = wait_for(check, "a leader elected with a 4 s lease")
    # The one before starts afresh as a follower.
    wait_for(lambda: _started(first) == 2
             and ask(first, "GET", "/v1/replicas")[0] == 200,
             "the leader before to start afresh")
    return leader


def _started(replica):
    with open(replica.stderr_path) as f:
        text = f.read()
    return text.count("listening on")


def desired(replica, node, after=None, timeout=1):
    query = "?timeout=%s" % (timeout,)
    if after is not None:
        query += "&after=%d" % (after,)
    return ask(replica, "GET", "/v1/nodes/%s/desired%s" % (node, query),
               timeout=timeout + 10)


def test_one_leads_and_the_others_send_every_other_request_to_it(tmp_path):
    with Replicas(3) as replicas:
        leader = replicas.leader()
        for follower in replicas.followers(leader):
            status, body = follower.request("GET", "/v1/state")
            assert status == 421, body
            assert body["leader"] == leader.url
            assert "does not lead" in body["errors"][0]
            status, body = follower.request(
                "PUT", "/v1/configuration",
                {"cluster_yml": "x", "app_yml": "y"})
            assert (status, body["leader"]) == (421, leader.url)
        status, body = replicas.replicas[0].request("GET", "/v1/replicas")
        assert status == 200
        assert sorted(r["name"] for r in body["replicas"]) == [
            "r1", "r2", "r3"]
        assert [r["address"] for r in body["replicas"] if r["leading"]] == [
            leader.url]
        assert [m["healthy"] for m in body["etcd"]] == [True] * 3
        assert sum(m["leader"] for m in body["etcd"]) == 1
        # The access table holds at every replica: a node reads only its
        # own slice, and nodes may not list the replicas.
        follower = replicas.followers(leader)[0]
        assert follower.request("GET", "/v1/nodes/n1/desired",
                                kind="node", name="n2")[0] == 403
        assert follower.request("GET", "/v1/replicas", kind="node",
                                name="n1")[0] == 403
        # Renewals are the replicas' own to send.
        assert leader.request("POST", "/v1/replicas/renewals",
                              {"nodes": ["n1"]})[0] == 403


def test_followers_serve_the_slices_the_leader_hands_out(tmp_path):
    with Replicas(3) as replicas:
        leader = settled(replicas, str(tmp_path),
                         placement={"n1": ["db"]})
        status, mine = desired(leader, "n1")
        assert status == 200
        for follower in replicas.followers(leader):
            status, theirs = wait_for(
                lambda: _served(follower, "n1", mine["generation"]),
                "the follower to serve generation %d" % (mine["generation"],))
            assert theirs["generation"] == mine["generation"]
            assert theirs["applications"] == mine["applications"]
            assert theirs["applications"]["db"]
        # A change reaches a long poll held at a follower.
        follower = replicas.followers(leader)[0]
        replicas.deploy(cluster_yml(str(tmp_path),
                                    placement={"n2": ["db"]}))
        status, moved = desired(follower, "n1", after=mine["generation"],
                                timeout=20)
        assert status == 200 and moved["generation"] > mine["generation"]
        assert moved["applications"] == {}


def _served(replica, node, generation):
    status, body = desired(replica, node)
    if status == 200 and body["generation"] >= generation:
        return status, body
    return None


def test_a_new_leader_takes_over_from_a_killed_one(tmp_path):
    with Replicas(3) as replicas:
        leader = settled(replicas, str(tmp_path),
                         placement={"n1": ["db"]})
        _, before = desired(leader, "n1")
        killed = replicas.kill(leader)
        new = replicas.leader(timeout=60)
        took = time.monotonic() - killed
        print("a new leader answered %.2f s after the kill (lease 4 s)"
              % (took,))
        assert new is not leader
        status, configuration = new.request("GET", "/v1/configuration")
        assert status == 200 and "n1: [db]" in configuration["cluster_yml"]
        # Every slice the new leader hands out is numbered above those of
        # the one before: no generation is handed out twice.
        status, after = desired(new, "n1")
        assert after["generation"] > before["generation"]
        assert after["applications"] == before["applications"]
        for follower in replicas.followers(new):
            wait_for(lambda: _served(follower, "n1", after["generation"]),
                     "the follower to serve the new leader's slice")


def test_nodes_that_poll_a_follower_keep_their_lease(tmp_path):
    with Replicas(3) as replicas:
        leader = settled(replicas, str(tmp_path), lease=3)
        follower = replicas.followers(leader)[0]
        started = time.monotonic()
        # n1 polls only the follower, n2 nobody: after three leases n1 is
        # live at the leader and n2 not.
        while time.monotonic() - started < 9:
            status = desired(follower, "n1", timeout=0.5)[0]
            assert status in (200, 204)
        state = leader.request("GET", "/v1/state")[1]
        assert state["nodes"]["n1"]["failure"]["state"] == "live"
        assert state["nodes"]["n2"]["failure"]["state"] != "live"


def test_writes_stop_without_an_etcd_majority_and_go_on_after(tmp_path):
    with Replicas(3) as replicas:
        leader = settled(replicas, str(tmp_path),
                         placement={"n1": ["db"]})
        generation = leader.request("GET", "/v1/configuration")[1][
            "generation"]
        # One member gone: everything goes on.
        replicas.etcd.members[0].kill()
        answer = replicas.deploy(cluster_yml(str(tmp_path),
                                             placement={"n2": ["db"]}))
        assert answer["generation"] > generation
        generation = answer["generation"]
        # Two gone: no write is taken, and every answer says why.
        replicas.etcd.members[1].kill()
        attempted = cluster_yml(str(tmp_path))
        answers = [ask(r, "PUT", "/v1/configuration",
                       {"cluster_yml": attempted, "app_yml": APP_YML},
                       timeout=30)
                   for r in replicas.running()]
        print("with one etcd member of three:", answers)
        # The leader answers that the write's outcome is unknown, or
        # closes the connection as it ends its term.
        assert all(status in (None, 421, 500, 503) for status, _ in answers)
        for status, body in answers:
            if status == 500:
                assert "etcd may still apply it" in body["errors"][0]

        def nobody_leads():
            # Followers may still name the leader before (its key stays
            # until etcd can end its lease): it answers that nobody leads.
            by_url = {r.url: r for r in replicas.running()}
            answers = []
            for replica in replicas.running():
                status, body = ask(replica, "PUT", "/v1/configuration",
                                   {"cluster_yml": attempted,
                                    "app_yml": APP_YML})
                if status == 421 and body["leader"] in by_url:
                    status, body = ask(by_url[body["leader"]], "PUT",
                                       "/v1/configuration",
                                       {"cluster_yml": attempted,
                                        "app_yml": APP_YML})
                answers.append((status, body))
            return answers if all(status == 503 for status, _ in answers) \
                else None
        for status, body in wait_for(nobody_leads, "every replica to say "
                                     "that nobody leads"):
            assert "no replica of the control service leads" in \
                body["errors"][0]
        # They come back: a leader is elected, with what was stored: the
        # configuration acknowledged, or the one whose outcome was not
        # known (etcd may commit a write it had taken before it lost its
        # majority).
        for member in replicas.etcd.members[:2]:
            member.start()
        replicas.etcd.wait_healthy(replicas.etcd.members)
        leader = replicas.leader(timeout=90)
        configuration = leader.request("GET", "/v1/configuration")[1]
        if configuration["cluster_yml"] == attempted:
            assert configuration["generation"] > generation
        else:
            assert configuration["generation"] == generation
            assert "n2: [db]" in configuration["cluster_yml"]
        answer = replicas.deploy(cluster_yml(str(tmp_path),
                                             placement={"n1": ["db"]}))
        assert answer["generation"] > configuration["generation"]


def test_a_paused_leader_stops_acting_and_a_new_one_leads(tmp_path):
    with Replicas(3) as replicas:
        leader = settled(replicas, str(tmp_path),
                         placement={"n1": ["db"]})
        os.kill(leader.process.pid, signal.SIGSTOP)
        try:
            new = replicas.leader(
                timeout=60, among=replicas.followers(leader))
        finally:
            os.kill(leader.process.pid, signal.SIGCONT)
        assert new is not leader
        # The old one finds it no longer leads (its renew deadline passed
        # while it was stopped) and starts afresh as a follower.
        wait_for(lambda: ask(leader, "GET", "/v1/state")[0] == 421,
                 "the paused leader to follow")
        lost = [json.loads(line) for line in open(leader.log)
                if "blockmover:control:lost-lead" in line]
        assert lost, "the paused leader never said it lost the lead"
        status, answer = new.request(
            "PUT", "/v1/configuration",
            {"cluster_yml": cluster_yml(str(tmp_path),
                                        placement={"n2": ["db"]}),
             "app_yml": APP_YML})
        assert status == 200, answer


def test_a_replica_restarted_with_an_empty_disk_rejoins(tmp_path):
    with Replicas(3) as replicas:
        leader = settled(replicas, str(tmp_path),
                         placement={"n1": ["db"]})
        _, slice_ = desired(leader, "n1")
        follower = replicas.followers(leader)[0]
        follower.stop()
        for name in os.listdir(follower.state_dir):
            os.remove(os.path.join(follower.state_dir, name))
        follower.start()
        status, served = wait_for(
            lambda: _served(follower, "n1", slice_["generation"]),
            "the restarted replica to serve the slice")
        assert served["applications"] == slice_["applications"]
        # Alone of the three, it leads with everything etcd holds.
        for other in replicas.running():
            if other is not follower:
                other.stop()
        assert replicas.leader(timeout=60) is follower
        configuration = follower.request("GET", "/v1/configuration")[1]
        assert "n1: [db]" in configuration["cluster_yml"]


def test_a_revocation_copied_to_one_replica_counts_at_every_one(tmp_path):
    # A name of its own: the cluster's test CA is the whole run's.
    mallory = "mallory-" + uuid.uuid4().hex[:8]
    with Replicas(3) as replicas:
        leader = replicas.leader()
        for replica in replicas.replicas:
            assert replica.request("GET", "/v1/replicas", kind="user",
                                   name=mallory)[0] == 200
        replicas.ca.revoke("user", mallory)
        # The new list, copied to one host only.
        shutil.copyfile(replicas.ca.crl, replicas.replicas[0].crl)
        for replica in replicas.replicas:
            wait_for(lambda: ask(replica, "GET", "/v1/replicas",
                                 kind="user", name=mallory)[0] == 403,
                     "%s to refuse the revoked user" % (replica.url,))
        # Others are still believed; a list older than etcd's is not
        # taken back from another host's file.
        assert leader.request("GET", "/v1/state")[0] == 200
        time.sleep(2)
        for replica in replicas.replicas:
            assert ask(replica, "GET", "/v1/replicas", kind="user",
                       name=mallory)[0] == 403
