"""
What is on this node now: the devices of the volumes that matter to it,
what their filesystems say of themselves, where they are mounted, and which
applications run. Asks the backend nothing remote.

Blocking: call from a thread, never on the reactor.
"""

from blockmover.model import FILESYSTEMS, Device, Mount, NodeState

from agents.filesystem import device_size, filesystem_size, probe
from agents.mounts import current_mounts, mounts_of


def observe_device(volume, path, mounts):
    """
    The ``model.Device`` of ``volume`` present at ``path``, and the first
    place it is mounted (or None).
    """
    found = probe(path)
    where = mounts_of(path, mounts)
    size = None
    if found.type in FILESYSTEMS:
        size = filesystem_size(path, found.type,
                               where[0] if where else None)
    device = Device(volume_id=volume.volume_id, dataset_id=volume.dataset_id,
                    path=path, size=device_size(path),
                    filesystem=found.type, filesystem_uuid=found.uuid,
                    filesystem_size=size)
    return device, (where[0] if where else None)


def observe(context, desired):
    """
    The ``model.NodeState`` of this node for the volumes ``desired`` (a
    ``model.NodeDesired``) lists: each volume whose device is present here,
    each such device mounted here, and every application the runtime runs.
    """
    mounts = current_mounts()
    devices = {}
    mounted = {}
    for dataset_id, volume in desired.volumes.items():
        path = context.backend.get_device_path(volume.volume_id)
        if path is None:
            continue
        device, mountpoint = observe_device(volume, path, mounts)
        devices[dataset_id] = device
        if mountpoint is not None:
            mounted[dataset_id] = Mount(dataset_id=dataset_id, device=path,
                                        mountpoint=mountpoint)
    return NodeState(node=context.node, backend_id=context.backend_id,
                     devices=devices, mounts=mounted,
                     running=context.runtime.running())
