"""
Moving MongoDB around the acceptance cluster and checking its data.
"""

import os
import subprocess

from blockmover.localcluster.database import (
    application, checksum, missing_or_wrong, read_documents,
    refuses_connections, wait_for_server, write_documents,
)
from blockmover.localcluster.deploying import (
    app_yml_path, deploy, deploy_argv, write_configuration,
)
from blockmover.localcluster.services import service_env
from blockmover.poll import Backoff, poll

APP = "mongodb"
DOCUMENTS = 2000


class MongoDB(object):
    """
    MongoDB on the acceptance cluster: where it should run now, and the
    checksum of the documents written to it.
    """
    def __init__(self, cluster):
        self.cluster = cluster
        self.layout = cluster.layout
        self.mountpoint = os.path.join(self.layout.state_dir, "data", APP)
        self.applications = {APP: application(self.mountpoint)}
        self.where = None
        self.checksum = None

    def node(self, name):
        return self.layout.node(name)

    def other(self):
        """
        The node MongoDB does not run on now.
        """
        return [n for n in self.layout.nodes if n.name != self.where][0]

    def configure(self, node_name):
        write_configuration(self.layout, self.applications,
                            {APP: node_name})

    def deploy(self, node_name, wait=True):
        """
        Place MongoDB on ``node_name`` and deploy; with ``wait``, until it
        runs there.
        """
        self.configure(node_name)
        with open(self.cluster.log_path, "a") as output:
            deploy(self.layout, wait=wait, timeout=240, output=output)

    def submit(self, node_name):
        """
        Place MongoDB on ``node_name`` and send the configuration without
        waiting for the move.
        """
        self.configure(node_name)
        with open(self.cluster.log_path, "a") as output:
            subprocess.run(
                deploy_argv(self.layout) + [self.layout.cluster_yml,
                                            app_yml_path(self.layout)],
                stdout=output, stderr=subprocess.STDOUT, check=True,
                env=service_env(self.layout), timeout=120)

    def start(self, node_name):
        self.deploy(node_name)
        address = self.node(node_name).address
        wait_for_server(address)
        write_documents(address, DOCUMENTS)
        self.checksum = checksum(read_documents(address))
        self.where = node_name

    def check_on(self, node_name, previous=None):
        """
        Assert every document is intact on ``node_name`` and, when given,
        that ``previous`` refuses connections.
        """
        address = self.node(node_name).address
        wait_for_server(address)
        documents = read_documents(address)
        assert missing_or_wrong(documents, DOCUMENTS) == []
        assert checksum(documents) == self.checksum
        if previous is not None:
            assert refuses_connections(self.node(previous).address)
        self.where = node_name

    def move(self, node_name):
        previous = self.where
        self.deploy(node_name)
        self.check_on(node_name, previous)


def wait_for_stop_on(watcher, node_name, deadline=120.0):
    """
    Wait until no MongoDB process runs on ``node_name`` any more: the
    source has just finished StopApplication and goes on to unmount.
    """
    def stopped():
        return True if not watcher.running().get(node_name) else None
    poll(stopped, deadline, "MongoDB to stop on %s" % (node_name,),
         backoff=Backoff(initial=0.01, factor=1.0, maximum=0.01))
