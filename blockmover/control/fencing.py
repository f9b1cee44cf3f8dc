"""
The ways the control service fences a node, making sure it can no longer
write before anything moves off it (``cluster.fencing.method``):

- ``backend``: the block-storage backend powers the node's server off and
  waits until it says the server is off (``IFencesNodes.fence``; on
  OpenStack, Nova's ``SHUTOFF``; a server in ERROR or any other state is
  unknown, never fenced).
- ``command``: the operator's fence command (IPMI, a hypervisor's power
  off, a Pacemaker fence agent, the local cluster's namespace power-off),
  run as a child process with the node's name and address as its last two
  arguments, and in its environment ``BLOCKMOVER_CLUSTER``,
  ``BLOCKMOVER_NODE``, ``BLOCKMOVER_NODE_ADDRESS`` and
  ``BLOCKMOVER_NODE_INSTANCE_ID`` (empty when the node has none). Exit 0
  means the node is off; anything else, or no exit within the deadline,
  means it is not.

Each returns a Deferred firing with a sentence saying what proved the node
off, or failing with ``FenceFailed``; the reactor never waits. Retries are
the caller's (``blockmover.control.failures``).
"""

import os
import subprocess

from eliot import log_message
from twisted.internet.threads import deferToThreadPool

from blockmover.backends.interface import (
    BlockDeviceError, FenceFailed, IFencesNodes,
)
from blockmover.model import FENCE_BACKEND, FENCE_COMMAND

# How much of a failed fence command's output a person is shown.
_OUTPUT_SHOWN = 300


def fence_environment(cluster, node):
    """
    The environment a fence command runs in: this process's, and the
    node's name, address and instance id.
    """
    environment = dict(os.environ)
    environment.update({
        "BLOCKMOVER_CLUSTER": cluster,
        "BLOCKMOVER_NODE": node.name,
        "BLOCKMOVER_NODE_ADDRESS": node.address,
        "BLOCKMOVER_NODE_INSTANCE_ID": node.instance_id or ""})
    return environment


def run_fence_command(command, cluster, node, deadline):
    """
    Run the fence ``command`` (a list) for ``node`` (a ``model.Node``) and
    wait for it, at most ``deadline`` seconds. Blocks: run it in a thread.
    The command is never logged: it may carry a fence device's password.

    :return: a sentence saying the node is off.
    :raise FenceFailed: it exited non-zero, could not start, or ran past
        the deadline (then it is killed).
    """
    argv = list(command) + [node.name, node.address]
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True,
            timeout=deadline, env=fence_environment(cluster, node),
            start_new_session=True)
    except subprocess.TimeoutExpired:
        raise FenceFailed(node.name, None, "the fence command did not end "
                          "within its deadline of %g seconds (it was "
                          "killed); check that it can reach the node's "
                          "power control, or raise cluster.fencing.deadline"
                          % (deadline,))
    except OSError as e:
        raise FenceFailed(node.name, None, "the fence command could not be"
                          " started (%s); check cluster.fencing.command"
                          % (e.strerror or e,))
    log_message(message_type="blockmover:control:fence-command",
                node=node.name, exit=result.returncode)
    if result.returncode != 0:
        output = (result.stderr or result.stdout or b"").decode(
            "utf-8", "replace").strip()
        last = output.splitlines()[-1][:_OUTPUT_SHOWN] if output else ""
        raise FenceFailed(node.name, None, "the fence command exited %d%s;"
                          " the node is not known to be off"
                          % (result.returncode,
                             ": " + last if last else ""))
    return "the fence command exited 0"


def fence(deployment, backend, node, reactor, threadpool):
    """
    Fence ``node`` (a ``model.Node``) by ``deployment``'s method, through
    ``backend`` (the ``SiteBackends``: the node's site's) for method
    backend and in
    ``threadpool`` for method command.

    :return: a Deferred firing with what proved the node off, or failing
        with ``FenceFailed`` (or the backend's ``BlockDeviceError``, which
        counts as failed just the same).
    """
    method = deployment.fencing.method
    if method == FENCE_COMMAND:
        return deferToThreadPool(reactor, threadpool, run_fence_command,
                                 deployment.fencing.command,
                                 deployment.cluster_name, node,
                                 deployment.fencing.deadline)
    if method != FENCE_BACKEND:
        raise FenceFailed(node.name, None, "cluster.yml sets no fencing "
                          "method (cluster.fencing.method: none); confirm "
                          "the node down with blockmover node confirm-down"
                          " once it is off")

    def by_backend(_):
        site = backend.site(node.site)
        if not IFencesNodes.providedBy(site.raw):
            raise FenceFailed(node.name, None, "the %s backend cannot power"
                              " a node off; use cluster.fencing.method: "
                              "command" % (site.name,))
        return site.api.fence(node.backend_id)

    def fenced(power):
        return "the backend says server %s is %s" % (node.backend_id,
                                                     power.status)

    def failed(failure):
        failure.trap(BlockDeviceError)
        if failure.check(FenceFailed):
            return failure
        raise FenceFailed(node.name, None, "the backend could not power "
                          "the node off: %s" % (failure.getErrorMessage(),))
    d = backend.ready()
    d.addCallback(by_backend)
    d.addCallbacks(fenced, failed)
    return d
