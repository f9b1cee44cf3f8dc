"""
``blockmover demo``: a 2-node local cluster, MongoDB (``secantusd-py``) on
node1 with N documents, moved to node2 with its volume, every document
checked on node2, the time of each step of the move printed.

``blockmover demo --ha``: the same with the control service as three
replicas on a three-member etcd, the leading replica killed (SIGKILL) in
the middle of the move; another leads and the move completes.
"""

import os
import threading
import time

from blockmover import proc
from blockmover.localcluster import ClusterError, state, trust
from blockmover.localcluster.database import (
    application, checksum, missing_or_wrong, read_documents,
    refuses_connections, wait_for_server, write_documents,
)
from blockmover.localcluster.deploying import (
    ChangeTimes, deploy, write_configuration,
)
from blockmover.localcluster.down import down
from blockmover.localcluster.layout import DEFAULT_LATENCY, make_layout
from blockmover.localcluster.status import leading_replica
from blockmover.localcluster.up import up
from blockmover.poll import Backoff, Timeout, poll

DATA_ROOT = "/var/lib/blockmover/demo-data"
APP = "mongodb"
# The replicas' election with --ha: a leader lost is replaced within about
# 7 s (cluster.yml's cluster.election; 15 s by default).
HA_ELECTION = {"lease": 6, "renew_deadline": 4, "retry": 1}


def step(text):
    print("==> " + text, flush=True)


def print_move_times(changes, total):
    for node, change, seconds in changes:
        print("    %-6s %-58s %7.2fs" % (node, change, seconds))
    print("    %-65s %7.2fs" % ("total (deploy to serving on the new node)", total))


def run_demo(layout, documents):
    """
    Deploy, fill, move and verify on the cluster ``layout``, which is up.

    :raise ClusterError: a step failed or the data did not survive.
    """
    node1, node2 = layout.nodes[0], layout.nodes[1]
    apps = {APP: application(os.path.join(DATA_ROOT, APP))}

    step("deploying %s on %s" % (APP, node1.name))
    write_configuration(layout, apps, {APP: node1.name})
    deploy(layout)
    wait_for_server(node1.address)

    step("writing %d documents to %s:27017" % (documents, node1.address))
    write_documents(node1.address, documents)
    before = checksum(read_documents(node1.address))
    print("    checksum %s" % (before,))

    step("moving %s from %s to %s" % (APP, node1.name, node2.name))
    write_configuration(layout, apps, {APP: node2.name})
    with ChangeTimes(layout) as times:
        if layout.replicated:
            total = _move_killing_the_leader(layout, node1)
        else:
            total = deploy(layout)
    print_move_times(times.changes, total)

    step("checking every document on %s:27017" % (node2.address,))
    wait_for_server(node2.address)
    found = read_documents(node2.address)
    bad = missing_or_wrong(found, documents)
    after = checksum(found)
    if bad or after != before:
        raise ClusterError(
            "the data did not survive the move: %d documents missing or "
            "wrong (first ids %s), checksum %s instead of %s"
            % (len(bad), bad[:10], after, before))
    if not refuses_connections(node1.address):
        raise ClusterError("%s still accepts connections on %s:27017 after "
                           "the move" % (node1.name, node1.address))
    print("    %d documents intact, checksum %s matches; %s refuses "
          "connections" % (len(found), after, node1.name))


def _move_killing_the_leader(layout, source):
    """
    Deploy the move (and wait for it) while the leading replica is killed
    as soon as MongoDB stopped on ``source``. :return: the deploy's
    seconds.
    """
    credentials = trust.operator_credentials(layout)
    outcome = {}

    def deploying():
        try:
            outcome["seconds"] = deploy(layout)
        except ClusterError as e:
            outcome["error"] = e
    thread = threading.Thread(target=deploying, name="demo-deploy")
    thread.start()
    try:
        poll(lambda: True if refuses_connections(source.address) else None,
             240.0, "%s to stop on %s" % (APP, source.name),
             Backoff(initial=0.05, maximum=0.2))
        leader = leading_replica(layout, credentials)
        record = state.load(layout.state_file).processes[leader.name]
        proc.kill(record)
        killed = time.monotonic()
        step("killed the leading control replica %s (pid %d, SIGKILL) in "
             "the middle of the move" % (leader.name, record.pid))
        new = leading_replica(layout, credentials, other_than=leader.name)
        print("    %s leads now, %.1fs after the kill (lease %gs)"
              % (new.name, time.monotonic() - killed,
                 HA_ELECTION["lease"]), flush=True)
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["seconds"]


def remove_empty_mountpoints():
    """
    Remove the demo's mountpoint directories, only where empty: with the
    cluster down nothing is mounted on them, and data is never deleted.
    """
    for path in (os.path.join(DATA_ROOT, APP), DATA_ROOT):
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


def demo(documents=10000, keep=False, backend="loopback",
         attach_latency=DEFAULT_LATENCY, detach_latency=DEFAULT_LATENCY,
         ha=False):
    """
    Run the demo on ``backend`` (loopback, or openstack on an emulator
    whose attach and detach take the latencies given); with ``ha``, on
    three control replicas, the leader killed mid-move. 0 when the data
    was verified on the new node.
    """
    layout = make_layout(backend=backend, attach_latency=attach_latency,
                         detach_latency=detach_latency,
                         control_replicas=3 if ha else 1,
                         election=HA_ELECTION if ha else None)
    started = time.monotonic()
    step("bringing up cluster %s with 2 nodes on the %s backend%s"
         % (layout.name, backend, ", the control service as 3 replicas on "
            "a 3-member etcd" if ha else ""))
    up(layout)
    # Late, like every use of pymongo: it comes with the demo extra only.
    from pymongo.errors import PyMongoError
    try:
        run_demo(layout, documents)
    except (ClusterError, Timeout, PyMongoError) as e:
        print("blockmover demo FAILED: %s" % (e,), flush=True)
        if not keep:
            print("(run `blockmover demo --keep` to leave the cluster up "
                  "and read its logs in %s)" % (layout.logs_dir,))
        return 1
    finally:
        if keep:
            step("cluster left running: `blockmover status`, then "
                 "`blockmover cluster down`")
        else:
            step("taking the cluster down")
            down(layout.state_file)
            remove_empty_mountpoints()
    step("demo passed in %.1fs" % (time.monotonic() - started,))
    return 0
