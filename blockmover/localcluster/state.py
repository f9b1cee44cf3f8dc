"""
The local cluster's state file: its layout, written before anything is
made, and every background process, recorded the moment it starts. ``down``
reads only this file, so it cleans up after a crash at any point.
"""

import json
import os

from pyrsistent import PClass, field, pmap_field, pvector_field

from blockmover.files import write_atomically
from blockmover.localcluster import ClusterError
from blockmover.localcluster.layout import ClusterLayout
from blockmover.model import from_data, to_data
from blockmover.proc import Process


class ProcessRecord(Process):
    """
    A process of the cluster (a ``blockmover.proc.Process``: its pid and
    start time, so a reused pid is never mistaken for it), with the
    command it runs and the file its output goes to.
    """
    argv = pvector_field(str)
    output = field(type=str, mandatory=True, initial="")


class ClusterState(PClass):
    """
    The layout, the background processes, and the nodes powered off
    (``blockmover cluster power off``): node name -> when.
    """
    layout = field(type=ClusterLayout, mandatory=True)
    processes = pmap_field(str, ProcessRecord)
    powered_off = pmap_field(str, float)


def load(state_file):
    """
    The state recorded in ``state_file``, or None when there is none.

    :raise ClusterError: the file exists but cannot be read.
    """
    try:
        with open(state_file) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ClusterError("cannot read the cluster state file %s (%s): "
                           "fix or remove it" % (state_file, e))
    return from_data(ClusterState, data)


def save(state):
    """
    Write ``state`` to its state file atomically: a crash leaves the old
    file or the new one, never half of one.
    """
    path = state.layout.state_file
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, json.dumps(to_data(state), indent=2,
                                      sort_keys=True))
