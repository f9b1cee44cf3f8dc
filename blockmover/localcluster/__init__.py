"""
Tools for trying and testing blockmover, never imported by a production
node or control service: a local cluster on one machine, its demo
(``demo``, with the database client of ``database``) and the count of the
calls it makes to its cloud (``cloudcalls``).

A local cluster on one machine: each node is a network namespace on a
Linux bridge with its own persistent mount namespace; the control service
runs on the host and one agent runs inside each node. ``up`` and ``down``
record everything they make in the cluster's state file, so ``down`` cleans
up after a crash at any point.
"""


class ClusterError(Exception):
    """
    The local cluster cannot be brought up, shown or taken down; the
    message says what to do.
    """
