"""
The state changes an agent makes to its node and to the backend.

Each change is a small value naming one dataset (or application) and one
thing to do; ``agents.plan`` decides which to run and in what order. Each is
idempotent: running it again after it succeeded, or after a crash half-way,
does nothing wrong and finishes the job. ``run(context)`` blocks and is
called in a thread, inside an eliot action naming the node, the dataset and
the outcome.
"""

from pyrsistent import PClass, field

from blockmover.model import Application


class NodeContext(PClass):
    """
    What a change needs to touch the world: the node, the synchronous
    backend, the application runtime, and how long an attach may take to
    show its device.
    """
    node = field(type=str, mandatory=True)
    backend_id = field(type=str, mandatory=True)
    cluster_name = field(type=str, mandatory=True)
    backend = field(mandatory=True)
    runtime = field(mandatory=True)
    device_deadline = field(type=float, mandatory=True, initial=120.0)


class CreateVolume(PClass):
    """
    Create the dataset's volume in the backend, stamped with its identity
    and marked new (no filesystem yet).
    """
    dataset_id = field(type=str, mandatory=True)
    application = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)


class AttachVolume(PClass):
    """
    Attach the volume to this node and wait, with backoff under a deadline,
    for its block device to appear.
    """
    dataset_id = field(type=str, mandatory=True)
    volume_id = field(type=str, mandatory=True)


class MakeFilesystem(PClass):
    """
    Make a filesystem stamped with the dataset id on the volume's device,
    only when the device holds none, then mark the volume formatted. A
    device that already holds this dataset's filesystem is only marked; one
    holding any other filesystem is refused.
    """
    dataset_id = field(type=str, mandatory=True)
    volume_id = field(type=str, mandatory=True)
    filesystem = field(type=str, mandatory=True)


class MountFilesystem(PClass):
    """
    Check that the device belongs to the volume and its filesystem carries
    the dataset's stamp, then mount it at ``mountpoint``.
    """
    dataset_id = field(type=str, mandatory=True)
    volume_id = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)


class StartApplication(PClass):
    application = field(type=Application, mandatory=True)


class StopApplication(PClass):
    """
    Stop the application: SIGTERM, then SIGKILL after the stop timeout.
    """
    name = field(type=str, mandatory=True)


class UnmountFilesystem(PClass):
    """
    Unmount the dataset's filesystem; refuse while it is busy.
    """
    dataset_id = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)


class DetachVolume(PClass):
    """
    Detach the volume from this node and wait until the backend lets it go.
    """
    dataset_id = field(type=str, mandatory=True)
    volume_id = field(type=str, mandatory=True)


class GrowVolume(PClass):
    """
    Grow the volume in the backend to ``size`` bytes.
    """
    dataset_id = field(type=str, mandatory=True)
    volume_id = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)


class GrowFilesystem(PClass):
    """
    Grow the filesystem to fill its device: ext4 unmounted (check, then
    resize2fs), xfs mounted (xfs_growfs at ``mountpoint``).
    """
    dataset_id = field(type=str, mandatory=True)
    volume_id = field(type=str, mandatory=True)
    filesystem = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)


ALL_CHANGES = (
    CreateVolume, AttachVolume, MakeFilesystem, MountFilesystem,
    StartApplication, StopApplication, UnmountFilesystem, DetachVolume,
    GrowVolume, GrowFilesystem,
)


def describe(change):
    """
    One line for a person: what the change does, to what.
    """
    subject = getattr(change, "dataset_id", None)
    if isinstance(change, StartApplication):
        subject = change.application.name
    elif isinstance(change, StopApplication):
        subject = change.name
    return "%s %s" % (type(change).__name__, subject)
