"""
How many calls a local cluster on the openstack backend makes to its
cloud: a converged cluster of N nodes with a few applications, and the
emulator's request counters read over a window. The control service lists
the volumes for the whole cluster, so the list calls must not grow with N.
"""

import os
import time

from blockmover.localcluster import cloud
from blockmover.localcluster.database import application, wait_for_server
from blockmover.localcluster.deploying import deploy, write_configuration

DATABASE = "mongodb"
# The listing endpoints of Cinder, with and without the project in the
# path (both are served).
LIST_ENDPOINTS = frozenset(
    "GET /v3%s/volumes%s" % (project, detail)
    for project in ("", "/{project}") for detail in ("", "/detail"))
CLOUD_PREFIXES = ("/v3", "/compute")


def idle_application():
    """
    ``app.yml``'s entry for a small process with no volume.
    """
    return {"command": ["sleep", "86400"], "ports": [], "environment": {}}


def deploy_workload(layout, output=None):
    """
    Deploy one idle application per node and MongoDB with a volume on the
    first node, and wait until they all run; return the placement.
    """
    first = layout.nodes[0]
    applications = {DATABASE: application(
        os.path.join(layout.state_dir, "data", DATABASE))}
    placement = {DATABASE: first.name}
    for node in layout.nodes:
        name = "idle-" + node.name
        applications[name] = idle_application()
        placement[name] = node.name
    write_configuration(layout, applications, placement)
    deploy(layout, output=output)
    wait_for_server(first.address)
    return applications, placement


class CallCounts(object):
    """
    The cloud's requests in one window: ``counters`` (endpoint -> N),
    ``seconds``, and the totals that matter.
    """

    def __init__(self, counters, seconds):
        self.counters = dict(counters)
        self.seconds = seconds

    @property
    def list_calls(self):
        """
        Volume listings (``GET .../volumes`` and ``.../volumes/detail``).
        """
        return sum(n for key, n in self.counters.items()
                   if key in LIST_ENDPOINTS)

    @property
    def cloud_calls(self):
        """
        Every Cinder and Nova request (tokens and the admin API left out).
        """
        return sum(n for key, n in self.counters.items()
                   if key.split(" ", 1)[-1].startswith(CLOUD_PREFIXES))

    def per_minute(self, calls):
        return calls * 60.0 / self.seconds


def count_calls(layout, seconds, sleep=time.sleep):
    """
    Reset the emulator's counters, wait ``seconds`` and read them.

    :return: ``CallCounts``.
    """
    admin = cloud.admin(layout)
    admin.reset_counters()
    started = time.monotonic()
    sleep(seconds)
    counters = admin.counters()
    return CallCounts(counters, time.monotonic() - started)
