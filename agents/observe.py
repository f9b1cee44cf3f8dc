"""
What is on this node now: the devices of the volumes that matter to it,
what their filesystems say of themselves, where they are mounted, and which
applications run. Asks the backend nothing remote.

Blocking: call from a thread, never on the reactor.
"""

import os
import stat

from eliot import log_message

from blockmover.blockdevice import device_size
from blockmover.command import CommandFailed
from blockmover.model import FILESYSTEMS, Device, Mount, NodeState

from agents.filesystem import filesystem_size, probe
from agents.mounts import current_mounts, device_number, mounts_of


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


def _is_block_device(path):
    try:
        return path.startswith("/") and stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def stray_mounts(dataset_ids, mounts, known):
    """
    ``Mount`` records of the datasets in ``dataset_ids`` mounted from block
    devices other than ``known`` (device numbers): a dataset's filesystem
    found by its stamp though no volume device here leads to it.
    """
    wanted = set(dataset_ids)
    found = {}
    seen = set(known)
    for entry in mounts:
        if not wanted or entry.dev in seen or \
                not _is_block_device(entry.source):
            continue
        seen.add(entry.dev)
        try:
            uuid = probe(entry.source).uuid
        except CommandFailed as e:
            # A device going away while probed holds no dataset any more.
            log_message(message_type="blockmover:agent:probe_failed",
                        device=entry.source, error=str(e))
            continue
        if uuid in wanted:
            wanted.discard(uuid)
            found[uuid] = Mount(dataset_id=uuid, device=entry.source,
                                mountpoint=entry.mountpoint)
    return found


def observe(context, desired, datasets=None, known=()):
    """
    The ``model.NodeState`` of this node for the volumes ``desired`` (a
    ``model.NodeDesired``) lists: each volume whose device is present here,
    each such device mounted here (and any of those datasets' filesystems
    mounted here from another device), and every application the runtime
    runs.

    :param datasets: look only at these datasets' volumes (None: at all);
        a dataset's worker looks at its own.
    :param known: devices of volumes found here already, whose mounts
        need no probe for a stray dataset filesystem.
    """
    mounts = current_mounts()
    devices = {}
    mounted = {}
    for dataset_id, volume in desired.volumes.items():
        if datasets is not None and dataset_id not in datasets:
            continue
        path = context.backend.get_device_path(volume.volume_id)
        if path is None:
            continue
        device, mountpoint = observe_device(volume, path, mounts)
        devices[dataset_id] = device
        if mountpoint is not None:
            mounted[dataset_id] = Mount(dataset_id=dataset_id, device=path,
                                        mountpoint=mountpoint)
    incoming = {}
    for dataset_id, push in desired.incoming.items():
        if push.volume is None or (datasets is not None
                                   and dataset_id not in datasets):
            continue
        path = context.backend.get_device_path(push.volume.volume_id)
        if path is not None:
            # Never probed for a filesystem: what it holds is not data yet.
            incoming[dataset_id] = Device(
                volume_id=push.volume.volume_id, dataset_id=dataset_id,
                path=path, size=device_size(path))
    known = {device_number(path)
             for path in list(known) + [d.path for d in devices.values()]
             + [d.path for d in incoming.values()]}
    looked_at = desired.volumes if datasets is None else datasets
    mounted.update(stray_mounts(
        [d for d in looked_at if d not in mounted and d not in incoming],
        mounts, known))
    pushes = context.pushes.snapshot() if context.pushes is not None else {}
    return NodeState(node=context.node, backend_id=context.backend_id,
                     devices=devices, mounts=mounted, incoming=incoming,
                     pushes=pushes, running=context.runtime.running())
