"""
The state changes an agent makes to its node and to the backend.

Each change is a small value naming one dataset (or application) and one
thing to do; ``agents.plan`` decides which to run and in what order. Each is
idempotent: running it again after it succeeded, or after a crash half-way,
does nothing wrong and finishes the job. ``run(context)`` blocks and is
called in a thread, inside an eliot action naming the node, the dataset and
the outcome.

Each change says itself what it is about: its ``kind`` (the word reports
and displays use), its ``dataset_id`` (every change belongs to one dataset:
an application's changes to its volume's, see ``identity.dataset_id``), its
``application`` where it has one, whether it ``touches_backend`` (after it
the control service's volume listing is stale) and what it ``waits_for``
while it runs, if anything.
"""

import re

from eliot import log_message, start_action
from pyrsistent import PClass, field

from blockmover import identity
from blockmover.model import Application, Step
from blockmover.poll import Backoff, poll
from agents.ready import check_ready

from agents import filesystem, mounts


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
    # Pushes between sites: what this node knows of them
    # (``agents.pushing.PushRegistry``) and the TLS files it pushes with.
    pushes = field(initial=None)
    push_files = field(initial=None)


class DeviceMissing(Exception):
    """
    The volume has no block device on this node.
    """
    def __init__(self, volume_id):
        self.volume_id = volume_id
        Exception.__init__(
            self, "volume %s has no block device on this node; attach it "
            "here first" % (volume_id,))


class IncomingVolume(Exception):
    """
    The dataset's volume in this site is being pushed into: it holds no
    data anyone may use yet.
    """


class VolumeNotMounted(Exception):
    """
    An application's volume is not mounted where it should be, so the
    application is not started.
    """


class Change(PClass):
    """
    What every state change has: the dataset it belongs to, and the
    class-level facts below. ``run(context)`` makes the change, blocking.
    """
    dataset_id = field(type=str, mandatory=True)

    kind = None
    touches_backend = False
    waits_for = None

    @property
    def application_name(self):
        """
        The application this change is about, or None.
        """
        return None

    @property
    def step(self):
        """
        The change as reports show it (``model.Step``).
        """
        return Step(kind=self.kind, dataset_id=self.dataset_id,
                    application=self.application_name)

    def describe(self):
        """
        One line for a person: what the change does, to what.
        """
        return "%s %s" % (self.kind, self.application_name or self.dataset_id)


def _action(change, context, **fields):
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(change).__name__).lower()
    return start_action(action_type="blockmover:agent:" + name,
                        node=context.node, **fields)


def _device(context, volume_id):
    path = context.backend.get_device_path(volume_id)
    if path is None:
        raise DeviceMissing(volume_id)
    return path


class CreateVolume(Change):
    """
    Create the dataset's volume in the backend, stamped with its identity
    and marked new (no filesystem yet).
    """
    kind = "create"
    touches_backend = True
    waits_for = "the backend to create the volume"
    application = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     size=self.size) as action:
            expected = identity.dataset_id(context.cluster_name,
                                           self.application)
            if expected != self.dataset_id:
                raise ValueError(
                    "dataset %s is not application %r's in cluster %r (%s)"
                    % (self.dataset_id, self.application,
                       context.cluster_name, expected))
            volume = context.backend.create_volume(
                self.dataset_id, self.size,
                identity.volume_metadata(context.cluster_name,
                                         self.application))
            if identity.is_incoming(volume):
                # This site's volume of the dataset is being pushed into
                # from another: it is not the dataset's data yet.
                raise IncomingVolume(
                    "volume %s of dataset %s is being pushed into (push %s) "
                    "and holds no data to use yet"
                    % (volume.volume_id, self.dataset_id,
                       volume.metadata.get(identity.PUSH_ID_KEY)))
            action.add_success_fields(volume_id=volume.volume_id)
            return volume


class AttachVolume(Change):
    """
    Attach the volume to this node and wait, with backoff under a deadline,
    for its block device to appear.
    """
    kind = "attach"
    touches_backend = True
    waits_for = "the backend to attach the volume and its device to appear"
    volume_id = field(type=str, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     volume_id=self.volume_id) as action:
            context.backend.attach_volume(self.volume_id, context.backend_id)
            path = poll(
                lambda: context.backend.get_device_path(self.volume_id),
                context.device_deadline,
                "the device of volume %s to appear" % (self.volume_id,),
                Backoff(initial=0.1))
            action.add_success_fields(device=path)
            return path


class MakeFilesystem(Change):
    """
    Make a filesystem stamped with the dataset id on the volume's device,
    only when the device holds none and the backend marks the volume as
    created blank by blockmover (``identity.NEW``), then mark the volume
    formatted. A device that already holds this dataset's filesystem is
    only marked; one holding any other filesystem, or a blank one of a
    volume not marked new, is refused.
    """
    kind = "mkfs"
    touches_backend = True
    volume_id = field(type=str, mandatory=True)
    filesystem = field(type=str, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     volume_id=self.volume_id,
                     filesystem=self.filesystem) as action:
            device = _device(context, self.volume_id)
            found = filesystem.probe(device)
            if (identity.stamped(found.uuid, self.dataset_id)
                    and found.type == self.filesystem):
                action.add_success_fields(made=False)
            elif not found.blank:
                raise filesystem.FilesystemPresent(device, found.signature)
            else:
                volume = context.backend.get_volume(self.volume_id)
                mark = volume.metadata.get(identity.FORMAT_KEY)
                if mark == identity.FORMATTED:
                    # A formatted volume showing a blank device is not the
                    # volume we think, or lost its data: never paper over it.
                    raise filesystem.FilesystemError(
                        "volume %s is marked formatted but %s is blank; "
                        "check which device belongs to the volume"
                        % (self.volume_id, device))
                if mark != identity.NEW:
                    # The planner checks this too; a filesystem is made only
                    # on a volume blockmover itself created blank, whatever
                    # asked for it.
                    raise filesystem.FilesystemError(
                        "volume %s is not marked as created blank by "
                        "blockmover (its %s is %s, not %r), so no filesystem "
                        "is made on %s; if it is really new and empty, set "
                        "that metadata to %r in the backend"
                        % (self.volume_id, identity.FORMAT_KEY,
                           "missing" if mark is None else repr(mark),
                           identity.NEW, device, identity.NEW))
                filesystem.make_filesystem(device, self.filesystem,
                                           self.dataset_id)
                action.add_success_fields(made=True)
            context.backend.set_metadata(
                self.volume_id, {identity.FORMAT_KEY: identity.FORMATTED})


class MountFilesystem(Change):
    """
    Check that the device belongs to the volume and its filesystem carries
    the dataset's stamp, then mount it at ``mountpoint``.
    """
    kind = "mount"
    volume_id = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     volume_id=self.volume_id, mountpoint=self.mountpoint):
            mounts.mount(_device(context, self.volume_id), self.mountpoint,
                         self.dataset_id)


class _ApplicationChange(Change):
    """
    A change of an application as ``app.yml`` describes it.
    """
    application = field(type=Application, mandatory=True)

    @property
    def application_name(self):
        return self.application.name


class StartApplication(_ApplicationChange):
    """
    Start the application, only where its volume is mounted.
    """
    kind = "start"

    def run(self, context):
        application = self.application
        with _action(self, context, application=application.name) as action:
            if application.volume is not None:
                self._check_volume(context)
            running = context.runtime.start(application)
            action.add_success_fields(pid=running.pid)
            return running

    def _check_volume(self, context):
        # Invariant: an application runs only where its volume is mounted.
        mountpoint = self.application.volume.mountpoint
        top = mounts.mount_at(mountpoint)
        if top is None or top.mountpoint == "/" or not identity.stamped(
                filesystem.probe(top.source).uuid, self.dataset_id):
            raise VolumeNotMounted(
                "the volume of %r (dataset %s) is not mounted at %s; mount "
                "it before starting the application"
                % (self.application.name, self.dataset_id, mountpoint))


class AwaitReady(_ApplicationChange):
    """
    Wait, with backoff under the check's deadline, until the running
    application serves (its ready checks pass), then record it ready.
    """
    kind = "ready"
    waits_for = "the application to serve"

    def run(self, context):
        application = self.application
        with _action(self, context, application=application.name):
            check_ready(application,
                        lambda: application.name in context.runtime.running())
            context.runtime.mark_ready(application.name)


class StopApplication(Change):
    """
    Stop the application: SIGTERM, then SIGKILL after the stop timeout.
    """
    kind = "stop"
    waits_for = "the application to exit"
    name = field(type=str, mandatory=True)

    @property
    def application_name(self):
        return self.name

    def run(self, context):
        with _action(self, context, application=self.name):
            context.runtime.stop(self.name)


class UnmountFilesystem(Change):
    """
    Unmount the dataset's filesystem; refuse while it is busy.
    """
    kind = "unmount"
    mountpoint = field(type=str, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     mountpoint=self.mountpoint):
            mounts.unmount(self.mountpoint, self.dataset_id)


class DetachVolume(Change):
    """
    Detach the volume from this node and wait until the backend lets it go.
    """
    kind = "detach"
    touches_backend = True
    waits_for = "the backend to detach the volume"
    volume_id = field(type=str, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     volume_id=self.volume_id):
            device = context.backend.get_device_path(self.volume_id)
            if device is not None:
                where = mounts.mounts_of(device)
                if where:
                    raise filesystem.FilesystemMounted(
                        "volume %s is mounted at %s; unmount it before "
                        "detaching it" % (self.volume_id, ", ".join(where)))
            # A slice can be stale: the backend detaches only from this
            # node, and leaves a volume another node took meanwhile.
            volume = context.backend.detach_volume(self.volume_id,
                                                   context.backend_id)
            if volume.attached_to is not None:
                # Another node holds it now: it took it at once, or the
                # slice was stale and nothing was detached.
                log_message(message_type="blockmover:agent:held_elsewhere",
                            volume_id=self.volume_id,
                            attached_to=volume.attached_to)


class GrowVolume(Change):
    """
    Grow the volume in the backend to ``size`` bytes.
    """
    kind = "grow"
    touches_backend = True
    waits_for = "the backend to grow the volume"
    volume_id = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     volume_id=self.volume_id, size=self.size):
            return context.backend.grow_volume(self.volume_id, self.size)


class GrowFilesystem(Change):
    """
    Grow the filesystem to fill its device: ext4 unmounted (check, then
    resize2fs), xfs mounted (xfs_growfs at ``mountpoint``).
    """
    kind = "growfs"
    volume_id = field(type=str, mandatory=True)
    filesystem = field(type=str, mandatory=True)
    mountpoint = field(type=str, mandatory=True)

    def run(self, context):
        with _action(self, context, dataset_id=self.dataset_id,
                     volume_id=self.volume_id,
                     filesystem=self.filesystem) as action:
            device = _device(context, self.volume_id)
            found = filesystem.probe(device).uuid
            if not identity.stamped(found, self.dataset_id):
                raise mounts.WrongFilesystem(device, self.dataset_id, found)
            where = mounts.mounts_of(device)
            if self.filesystem == "ext4":
                if where:
                    raise filesystem.FilesystemMounted(
                        "ext4 on %s is grown unmounted, and it is mounted "
                        "at %s; unmount it first" % (device, ", ".join(where)))
                filesystem.grow_ext4(device)
            elif self.filesystem == "xfs":
                if self.mountpoint not in where:
                    raise filesystem.FilesystemNotMounted(
                        "xfs on %s is grown mounted, and it is not mounted at "
                        "%s; mount it first" % (device, self.mountpoint))
                filesystem.grow_xfs(self.mountpoint)
            else:
                raise filesystem.UnsupportedFilesystem(self.filesystem)
            action.add_success_fields(size=filesystem.filesystem_size(
                device, self.filesystem, self.mountpoint if where else None))


