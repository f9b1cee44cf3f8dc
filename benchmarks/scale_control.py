"""
``blockmover-control`` for ``benchmarks/scale.py``: the real service
(its command line, its TLS, its API, its ``ControlService``) over an
in-memory cloud of ``--fake-nodes`` nodes' volumes instead of the backend
``cluster.yml`` names.

Why not the loopback backend: it reads one JSON file per volume on every
listing, about 5 s of CPU for the 110,000 volumes of 10,000 nodes, which
would drown what the benchmark measures (the service's own work). The
in-memory cloud behaves as the OpenStack backend does (``IListsChanges``:
a listing of the volumes changed since a time, a whole listing every
tenth), and hands out fresh ``Volume`` records on every listing, as a
cloud's SDK does.

    python benchmarks/scale_control.py --fake-nodes N --changes PATH \\
        --listings PATH -- BLOCKMOVER-CONTROL-OPTIONS...

``--changes`` names a JSON file ``{"stamp": K, "volume_ids": [...]}`` the
benchmark writes to change volumes: the next listing after it changed
stamps those volumes' metadata with K. Every listing appends a line
``KIND COUNT TIME`` (``whole`` or ``changes``) to ``--listings``.
"""

import argparse
import cProfile
import datetime
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet.task import react  # noqa: E402
from zope.interface import implementer  # noqa: E402

from blockmover.backends.interface import IListsChanges  # noqa: E402
from blockmover.control import main as control_main  # noqa: E402
from blockmover.identity import (  # noqa: E402
    FORMAT_KEY, FORMATTED, dataset_id, volume_metadata,
)
from blockmover.model import Volume  # noqa: E402
from blockmover.units import GiB, MiB  # noqa: E402

# Volumes of applications no longer configured, per node: the listing
# holds ten times more volumes than the nodes' own.
LEFTOVERS_PER_NODE = 10
_STAMP_KEY = "benchmark-stamp"


def node_name(i):
    return "n%d" % (i,)


def application_name(i):
    return "a%d" % (i,)


def volume_ids(nodes):
    """
    The ids of the cloud's volumes, in order: for node ``i`` the volume of
    application ``i``, then ``LEFTOVERS_PER_NODE`` volumes of applications
    no longer configured.
    """
    for i in range(nodes):
        yield "vol-%07d" % (i,)
        for j in range(LEFTOVERS_PER_NODE):
            yield "old-%07d-%d" % (i, j)


def _application_of(volume_id):
    """
    The application a volume is of, and the node it is attached to (None:
    unattached), from its id.
    """
    if volume_id.startswith("vol-"):
        i = int(volume_id[4:])
        return application_name(i), node_name(i)
    _, i, j = volume_id.split("-")
    return "gone%d-%s" % (int(i), j), None


@implementer(IListsChanges)
class MemoryCloud(object):
    """
    A cloud's volumes, listed whole or by what changed since a time (as
    Cinder's ``updated_at=gte:``), changed by the benchmark through the
    ``changes`` file. Each volume is made from its id when listed, so the
    cloud itself holds next to nothing in the service's memory: what the
    service's memory holds is its own.
    """

    def __init__(self, cluster, nodes, changes, listings):
        self._cluster = cluster
        self._nodes = nodes
        self._changes = changes
        self._listings = listings
        self._seen = None
        # volume id -> (stamp, updated_at) of the volumes changed.
        self._changed = {}
        self._lock = threading.Lock()

    def allocation_unit(self):
        return MiB

    def list_volumes(self):
        with self._lock:
            self._apply_changes()
            volumes = [self._volume(v) for v in volume_ids(self._nodes)]
        self._note("whole", volumes)
        return volumes

    def list_changed_volumes(self, since):
        with self._lock:
            self._apply_changes()
            volumes = [self._volume(v)
                       for v, (_, updated_at) in sorted(self._changed.items())
                       if updated_at >= since]
        self._note("changes", volumes)
        return volumes

    def _volume(self, volume_id):
        application, attached_to = _application_of(volume_id)
        metadata = volume_metadata(self._cluster, application)
        metadata[FORMAT_KEY] = FORMATTED
        if volume_id in self._changed:
            metadata[_STAMP_KEY] = str(self._changed[volume_id][0])
        return Volume(volume_id=volume_id,
                      dataset_id=dataset_id(self._cluster, application),
                      size=GiB, attached_to=attached_to, metadata=metadata)

    def _apply_changes(self):
        try:
            with open(self._changes) as f:
                changes = json.load(f)
        except FileNotFoundError:
            return
        if changes["stamp"] == self._seen:
            return
        self._seen = changes["stamp"]
        now = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%f")
        for volume_id in changes["volume_ids"]:
            self._changed[volume_id] = (changes["stamp"], now)

    def _note(self, kind, volumes):
        with open(self._listings, "a") as f:
            f.write("%s %d %.6f\n" % (kind, len(volumes), time.time()))


def parser():
    p = argparse.ArgumentParser(
        description="blockmover-control over an in-memory cloud, for "
        "benchmarks/scale.py")
    p.add_argument("--fake-nodes", type=int, required=True)
    p.add_argument("--changes", required=True)
    p.add_argument("--listings", required=True)
    p.add_argument("--profile", metavar="PATH",
                   help="write the service's cProfile statistics to PATH "
                   "when it stops")
    p.add_argument("control", nargs=argparse.REMAINDER,
                   help="-- then blockmover-control's options")
    return p


def _run(reactor, args, options):
    """
    ``blockmover.control.main.run``, with the in-memory cloud as the
    backend every configuration names.
    """
    cloud = []

    def make_backend(name, backend_options, cluster_name):
        # One cloud for the life of the process, made on first use.
        if not cloud:
            cloud.append(MemoryCloud(cluster_name, args.fake_nodes,
                                     args.changes, args.listings))
        return cloud[0]
    return control_main.run(reactor, options, make_backend=make_backend)


def main(argv=None):
    args = parser().parse_args(argv)
    control = args.control
    if control and control[0] == "--":
        control = control[1:]
    options = control_main.parser().parse_args(control)
    if args.profile is None:
        react(_run, (args, options))
        return
    profile = cProfile.Profile()
    try:
        profile.runcall(react, _run, (args, options))
    finally:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
