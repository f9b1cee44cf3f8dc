"""
What an agent does next on its node: a pure function of the node's desired
slice (``NodeDesired``) and what it observes (``NodeState``), no I/O.

Everything on a node belongs to one dataset: a volume, its filesystem and
mount, and the application that keeps its data there (an application
without a volume is a dataset of its own, see ``identity.dataset_id``).
Each dataset is classified by what this node sees of it (its own devices
and mounts first, then the control service's cached listing: a device here
wins over a stale listing), and two tables, ``TAKE`` for datasets wanted
here and ``GIVE_UP`` for the others, say what to do in that state. A
dataset's plan is laid out in a fixed order, so a move always reads the
same way::

    stop -> unmount -> detach -> (create | attach | grow | mkfs | mount)
         -> start -> ready

The agent runs each dataset's plan on its own (``dataset_plan``), the
datasets side by side, and a dataset's changes in order, stopping at the
first failure; then it observes that dataset again and plans again: the
loop is the retry, every change is idempotent, and a plan only ever goes as
far as what it can see now (after ``CreateVolume`` or ``AttachVolume`` the
next step waits for the next look). ``plan`` lays every dataset's plan out
in that same order for the whole node, for people and the simulated world.

A dataset pushed between sites is planned apart from the tables: on the
target, the volume it goes into is made (or taken), attached and grown,
never formatted nor mounted (``_receive``); on the source, rounds are
pushed while the application runs (``_next_round``), then it is stopped
and unmounted, its volume kept attached, for the last round
(``_last_round``).

A volume marked new (``identity.FORMAT_KEY`` = ``identity.NEW``) that already
holds this dataset's filesystem (a crash between mkfs and marking) gets a
``MakeFilesystem``, which then only marks it formatted, before it is mounted:
a volume holding data must never stay marked new, or an unreadable
filesystem on it would later be formatted.
"""

from pyrsistent import PClass, PVector, field, pvector

from agents.changes import (
    AttachVolume, AwaitReady, CreateVolume, DetachVolume, GrowFilesystem,
    GrowVolume, MakeFilesystem, MountFilesystem, StartApplication,
    StopApplication, UnmountFilesystem,
)
from agents.pushing import CreateIncoming, PushFinal, PushRound
from blockmover.identity import (
    FORMAT_KEY, NEW, PUSH_ID_KEY, dataset_id, is_incoming, stamped,
)
from blockmover.model import PUSH_FAILED, PUSH_VERIFIED, Waiting
from blockmover.units import MiB

# A filesystem may leave a little of its device unused (ext4 drops a last
# block group too small for its own tables); only more than this is growth.
FILESYSTEM_SLACK = 4 * MiB

# What this node sees of one dataset.
NO_VOLUME = "no volume"           # not listed, no device here
ELSEWHERE = "attached elsewhere"  # listed attached to another node, no device here
FREE = "free"                     # listed unattached, no device here
NO_DEVICE = "no device yet"       # listed attached here, its device not here
BLANK = "blank"                   # device here holding no filesystem
FOREIGN = "foreign"               # device here holding another filesystem
UNMOUNTED = "unmounted"           # device here holding this dataset's filesystem
MOUNTED = "mounted"               # mounted here

# Why a dataset cannot go on (``Waiting.reason``).
HELD_ELSEWHERE = "held elsewhere"        # attached to another node
NOT_LISTED = "not listed yet"            # a device here the listing lacks
NEVER_FORMATTED = "never formatted"      # unreadable, and may hold data
FOREIGN_FILESYSTEM = "foreign filesystem"
MOUNTED_ELSEWHERE = "mounted elsewhere"  # at another mountpoint
CANNOT_GROW = "cannot grow"
NO_DATASET = "no dataset"                # the slice names none for a volume


class Wait(PClass):
    """
    Why one dataset cannot go on: a reason above, the sentence for a
    person, and the node holding its volume where that is the reason.
    """
    reason = field(type=str, mandatory=True)
    detail = field(type=str, mandatory=True)
    holder = field(initial=None)


class DatasetView(PClass):
    """
    Everything the tables look at for one dataset on this node. ``want`` is
    the ``DesiredDataset`` when the dataset is wanted here, else None.
    """
    dataset_id = field(type=str, mandatory=True)
    backend_id = field(type=str, mandatory=True)
    want = field(mandatory=True)
    volume = field(mandatory=True)
    device = field(mandatory=True)
    mount = field(mandatory=True)

    @property
    def state(self):
        return classify(self)

    @property
    def volume_id(self):
        if self.device is not None:
            return self.device.volume_id
        if self.volume is not None:
            return self.volume.volume_id
        return None

    @property
    def marked_new(self):
        return (self.volume is not None
                and self.volume.metadata.get(FORMAT_KEY) == NEW)


class Moves(PClass):
    """
    What one dataset's volume needs: whether its application must stop
    first, what to unmount and detach, what to do to take it, whether it
    stays mounted here once all that ran, and why it cannot go on (a
    ``Wait``, None when it can).
    """
    stop = field(type=bool, initial=False)
    release = field(type=PVector, initial=pvector(), factory=pvector)
    take = field(type=PVector, initial=pvector(), factory=pvector)
    stays_mounted = field(type=bool, initial=False)
    waiting = field(initial=None)


def _holds_own_filesystem(view):
    return (view.device is not None
            and stamped(view.device.filesystem_uuid, view.dataset_id))


def classify(view):
    """
    The state of one dataset on this node, one of the constants above.
    """
    if view.mount is not None:
        return MOUNTED
    device = view.device
    if device is not None:
        if device.filesystem is None and device.filesystem_uuid is None:
            return BLANK
        if _holds_own_filesystem(view):
            return UNMOUNTED
        return FOREIGN
    if view.volume is None:
        return NO_VOLUME
    if view.volume.attached_to is None:
        return FREE
    if view.volume.attached_to == view.backend_id:
        return NO_DEVICE
    return ELSEWHERE


# --- taking a dataset that is wanted here ----------------------------------

def _create(view):
    # The listing must show the volume before anything else happens to it.
    return Moves(take=[CreateVolume(dataset_id=view.dataset_id,
                                    application=view.want.application,
                                    size=view.want.size)])


def _wait_for_release(view):
    holder = view.volume.attached_to
    return Moves(waiting=Wait(
        reason=HELD_ELSEWHERE, holder=holder,
        detail="volume attached to %s, waiting for it to be released"
        % (holder,)))


def _attach(view):
    return Moves(take=[AttachVolume(dataset_id=view.dataset_id,
                                    volume_id=view.volume.volume_id)])


def _make_filesystem(view):
    if view.volume is None:
        return Moves(waiting=Wait(
            reason=NOT_LISTED,
            detail="device %s is here but the volume listing does not show "
            "its volume yet" % (view.device.path,)))
    if not view.marked_new:
        return Moves(waiting=Wait(
            reason=NEVER_FORMATTED,
            detail="device %s holds no filesystem that can be read and its "
            "volume is not marked new, so it may hold data and is never "
            "formatted: check the device by hand" % (view.device.path,)))
    return Moves(take=_grow_volume(view) + [
        MakeFilesystem(dataset_id=view.dataset_id,
                       volume_id=view.device.volume_id,
                       filesystem=view.want.filesystem),
        _mount(view)], stays_mounted=True)


def _refuse_foreign(view):
    return Moves(waiting=Wait(
        reason=FOREIGN_FILESYSTEM,
        detail="device %s holds a filesystem of something else (uuid %s); "
        "it is never mounted nor formatted: check the device by hand"
        % (view.device.path, view.device.filesystem_uuid)))


def _mount_unmounted(view):
    grown = _grow(view, mounted=False)
    if grown is not None:
        return grown
    return Moves(take=_mark(view) + [_mount(view)], stays_mounted=True)


def _keep_mounted(view):
    if not _holds_own_filesystem(view):
        # Mounted, but its device or filesystem cannot be checked: keep
        # the mount as it is, grow nothing, mount nothing again.
        if view.mount.mountpoint == view.want.mountpoint:
            return Moves(stays_mounted=True)
        return Moves(waiting=Wait(
            reason=MOUNTED_ELSEWHERE,
            detail="mounted at %s, not at %s, and its device cannot be "
            "checked before mounting it again"
            % (view.mount.mountpoint, view.want.mountpoint)))
    if view.mount.mountpoint != view.want.mountpoint:
        # The application moved its mountpoint: mount again, grow next turn.
        return Moves(stop=True, release=[_unmount(view)],
                     take=_mark(view) + [_mount(view)], stays_mounted=True)
    grown = _grow(view, mounted=True)
    if grown is not None:
        return grown
    return Moves(take=_mark(view), stays_mounted=True)


TAKE = {
    NO_VOLUME: _create,
    ELSEWHERE: _wait_for_release,
    FREE: _attach,
    NO_DEVICE: _attach,
    BLANK: _make_filesystem,
    FOREIGN: _refuse_foreign,
    UNMOUNTED: _mount_unmounted,
    MOUNTED: _keep_mounted,
}


# --- growing ---------------------------------------------------------------

def _grow_offline(view, mounted, grow_volume):
    # ext4: resize2fs is refused on a mounted filesystem on these machines.
    moves = Moves(take=_mark(view) + grow_volume + [
        _grow_filesystem(view), _mount(view)], stays_mounted=True)
    if mounted:
        return moves.set(stop=True, release=[_unmount(view)])
    return moves


def _grow_online(view, mounted, grow_volume):
    # xfs: xfs_growfs only works on a mounted filesystem; the app runs on.
    if mounted:
        return Moves(take=_mark(view) + grow_volume
                     + [_grow_filesystem(view)], stays_mounted=True)
    return Moves(take=_mark(view) + grow_volume
                 + [_mount(view), _grow_filesystem(view)],
                 stays_mounted=True)


GROW = {"ext4": _grow_offline, "xfs": _grow_online}


def _grow(view, mounted):
    """
    The moves that grow the volume and its filesystem to the wanted size,
    or None when neither needs growing.
    """
    device = view.device
    grow_volume = _grow_volume(view)
    behind = (device.filesystem_size is not None
              and device.size - device.filesystem_size > FILESYSTEM_SLACK)
    if not grow_volume and not behind:
        return None
    filesystem = device.filesystem or view.want.filesystem
    if filesystem not in GROW:
        return Moves(take=_mark(view) + ([] if mounted else [_mount(view)]),
                     stays_mounted=True,
                     waiting=Wait(reason=CANNOT_GROW,
                                  detail="cannot grow a %s filesystem"
                                  % (filesystem,)))
    return GROW[filesystem](view, mounted, grow_volume)


def _grow_volume(view):
    # Never shrink: the larger of what the listing and the device say wins.
    size = view.device.size
    if view.volume is not None:
        size = max(size, view.volume.size)
    if view.want.size <= size:
        return []
    return [GrowVolume(dataset_id=view.dataset_id,
                       volume_id=view.device.volume_id, size=view.want.size)]


# --- giving up a dataset that is not wanted here ---------------------------

def _nothing(view):
    return Moves()


def _detach(view):
    return Moves(release=[DetachVolume(dataset_id=view.dataset_id,
                                       volume_id=view.volume_id)])


def _unmount_and_detach(view):
    release = [_unmount(view)]
    if view.volume_id is not None:
        release.append(DetachVolume(dataset_id=view.dataset_id,
                                    volume_id=view.volume_id))
    return Moves(stop=True, release=release)


GIVE_UP = {
    NO_VOLUME: _nothing,
    ELSEWHERE: _nothing,
    FREE: _nothing,
    NO_DEVICE: _detach,
    BLANK: _detach,
    FOREIGN: _detach,
    UNMOUNTED: _detach,
    MOUNTED: _unmount_and_detach,
}


# --- the changes ------------------------------------------------------------

def _mark(view):
    # Only marks: the device already holds this dataset's filesystem.
    if not view.marked_new:
        return []
    return [MakeFilesystem(dataset_id=view.dataset_id,
                           volume_id=view.volume_id,
                           filesystem=view.device.filesystem
                           or view.want.filesystem)]


def _mount(view):
    return MountFilesystem(dataset_id=view.dataset_id,
                           volume_id=view.device.volume_id,
                           mountpoint=view.want.mountpoint)


def _unmount(view):
    return UnmountFilesystem(dataset_id=view.dataset_id,
                             mountpoint=view.mount.mountpoint)


def _grow_filesystem(view):
    return GrowFilesystem(dataset_id=view.dataset_id,
                          volume_id=view.device.volume_id,
                          filesystem=view.device.filesystem
                          or view.want.filesystem,
                          mountpoint=view.want.mountpoint)


# --- the node ----------------------------------------------------------------

def views(desired, observed):
    """
    A ``DatasetView`` of every dataset whose volume matters to this node
    (wanted here, listed, with a device or a mount here), sorted by dataset
    id.
    """
    ids = (set(desired.datasets) | set(desired.volumes)
           | set(observed.devices) | set(observed.mounts)) - set(
               desired.incoming)
    return [_view(desired, observed, d) for d in sorted(ids)]


def _view(desired, observed, dataset):
    return DatasetView(dataset_id=dataset, backend_id=observed.backend_id,
                       want=desired.datasets.get(dataset),
                       volume=desired.volumes.get(dataset),
                       device=observed.devices.get(dataset),
                       mount=observed.mounts.get(dataset))


def _has_volume_here(desired, observed, dataset):
    return (dataset in desired.datasets or dataset in desired.volumes
            or dataset in observed.devices or dataset in observed.mounts)


def volume_moves(desired, observed, dataset):
    """
    The ``Moves`` of ``dataset``'s volume on this node (empty for a
    dataset with no volume here).
    """
    if not _has_volume_here(desired, observed, dataset):
        return Moves()
    view = _view(desired, observed, dataset)
    return (TAKE if view.want is not None else GIVE_UP)[view.state](view)


def datasets(desired, observed):
    """
    Every dataset that matters to this node, sorted: those whose volume
    matters (see ``views``) and those of every application wanted or
    running here.
    """
    names = set(desired.applications) | set(observed.running)
    return sorted({view.dataset_id for view in views(desired, observed)}
                  | {dataset_id(desired.cluster_name, name) for name in names}
                  | set(desired.incoming) | set(desired.outgoing)
                  | set(observed.incoming))


def application_of(desired, observed, dataset):
    """
    The name of the application that keeps its data in ``dataset``, wanted
    or running here, or None.
    """
    want = desired.datasets.get(dataset)
    if want is not None:
        return want.application
    for name in sorted(set(desired.applications) | set(observed.running)):
        if dataset_id(desired.cluster_name, name) == dataset:
            return name
    return None


def _may_keep_running(desired, observed, moves, name):
    """
    Whether the running application ``name`` may run on through its
    dataset's plan: it is wanted here and has no volume, or its volume is
    mounted at its mountpoint now and stays so.
    """
    app = desired.applications.get(name)
    if app is None:
        return False
    if app.volume is None:
        return True
    dataset = dataset_id(desired.cluster_name, name)
    want = desired.datasets.get(dataset)
    mount = observed.mounts.get(dataset)
    return (want is not None and mount is not None
            and mount.mountpoint == want.mountpoint
            and moves.stays_mounted and not moves.stop)


def _runnable(desired, moves, name):
    """
    Whether the wanted application ``name`` may run here once its
    dataset's unmounts and mounts ran: it has no volume, or its volume
    stays mounted.
    """
    if desired.applications[name].volume is None:
        return True
    return (dataset_id(desired.cluster_name, name) in desired.datasets
            and moves.stays_mounted)


def dataset_plan(desired, observed, dataset):
    """
    The changes to run now for ``dataset`` on this node, in order, to bring
    ``observed`` (a ``NodeState``; only this dataset's devices and mounts
    are read, and the running applications) toward ``desired`` (the node's
    ``NodeDesired`` slice).

    Pure. The agent runs them in order, stops at the first failure, and
    plans again from a fresh look at the dataset; every change is
    idempotent.
    """
    incoming = desired.incoming.get(dataset)
    if incoming is not None:
        return _receive(incoming, observed.incoming.get(dataset),
                        observed.backend_id)
    outgoing = desired.outgoing.get(dataset)
    if outgoing is not None and outgoing.final:
        return _last_round(observed, dataset, outgoing)
    changes = _converge(desired, observed, dataset)
    if outgoing is not None and not changes:
        return _next_round(observed, dataset, outgoing)
    return changes


def _converge(desired, observed, dataset):
    moves = volume_moves(desired, observed, dataset)
    name = application_of(desired, observed, dataset)
    running = name is not None and name in observed.running
    stop = running and not _may_keep_running(desired, observed, moves, name)
    app = desired.applications.get(name) if name is not None else None
    start = (app is not None and (not running or stop)
             and _runnable(desired, moves, name))
    ready = app is not None and (start or (
        running and not stop and not observed.running[name].ready))
    return pvector(
        ([StopApplication(dataset_id=dataset, name=name)] if stop else [])
        + [c for c in moves.release if isinstance(c, UnmountFilesystem)]
        + [c for c in moves.release if isinstance(c, DetachVolume)]
        + list(moves.take)
        + ([StartApplication(dataset_id=dataset, application=app)]
           if start else [])
        + ([AwaitReady(dataset_id=dataset, application=app)]
           if ready else []))


# --- pushes between sites ---------------------------------------------------

def _receive(incoming, device, backend_id):
    """
    The target's side of a push: the volume pushed into made (or the one
    this site keeps marked), attached here and grown to the push's size;
    never formatted, never mounted.
    """
    volume = incoming.volume
    dataset = incoming.dataset_id
    changes = []
    if volume is None or not (
            is_incoming(volume)
            and volume.metadata.get(PUSH_ID_KEY) == incoming.push_id):
        # Made, or the one this site keeps of the dataset taken: marked.
        changes.append(CreateIncoming(
            dataset_id=dataset, application=incoming.application,
            size=incoming.size, push_id=incoming.push_id,
            generation=incoming.generation))
        if volume is None:
            return pvector(changes)
    if volume.attached_to not in (None, backend_id):
        # Held by the node of this site that last had it: it gives it up.
        return pvector(changes)
    if device is None:
        changes.append(AttachVolume(dataset_id=dataset,
                                    volume_id=volume.volume_id))
    elif device.size < incoming.size:
        changes.append(GrowVolume(dataset_id=dataset,
                                  volume_id=volume.volume_id,
                                  size=incoming.size))
    return pvector(changes)


def _pushing(observed, dataset, outgoing):
    """
    Whether ``outgoing`` can push from here now: its target's volume is
    ready and this node holds the source's device.
    """
    device = observed.devices.get(dataset)
    return (outgoing.target_volume is not None and device is not None
            and device.volume_id == outgoing.source_volume)


def _progress(observed, dataset, outgoing):
    push = observed.pushes.get(dataset)
    if push is None or push.push_id != outgoing.push_id:
        return None
    return push


def _next_round(observed, dataset, outgoing):
    """
    A round of a push while the application runs, until the rounds have
    settled (or the push was given up).
    """
    push = _progress(observed, dataset, outgoing)
    if not _pushing(observed, dataset, outgoing) or dataset not in \
            observed.mounts or (push is not None and (
                push.settled or push.phase == PUSH_FAILED)):
        return pvector()
    return pvector([PushRound(dataset_id=dataset, outgoing=outgoing,
                              device=observed.devices[dataset].path)])


def _last_round(observed, dataset, outgoing):
    """
    The end of a push at the source: the application stopped, the
    filesystem unmounted, the volume kept attached, the last round pushed
    and both sides' digests compared.
    """
    changes = []
    if outgoing.application in observed.running:
        changes.append(StopApplication(dataset_id=dataset,
                                       name=outgoing.application))
    mount = observed.mounts.get(dataset)
    if mount is not None:
        changes.append(UnmountFilesystem(dataset_id=dataset,
                                         mountpoint=mount.mountpoint))
    push = _progress(observed, dataset, outgoing)
    if _pushing(observed, dataset, outgoing) and not (
            push is not None and push.phase in (PUSH_VERIFIED,
                                                PUSH_FAILED)):
        changes.append(PushFinal(dataset_id=dataset, outgoing=outgoing,
                                 device=observed.devices[dataset].path))
    return pvector(changes)


# The order of a move, for laying out a whole node's plan.
_PHASES = (StopApplication, UnmountFilesystem, DetachVolume, None,
           StartApplication, AwaitReady)


def _phase(change):
    for i, kind in enumerate(_PHASES):
        if kind is not None and isinstance(change, kind):
            return i
    return _PHASES.index(None)


def plan(desired, observed):
    """
    Every dataset's plan on this node laid out as one list in the order of
    a move (every stop, then every unmount, every detach, what takes each
    volume, every start, every readiness wait), each dataset's changes in
    their own order. Pure: what ``dataset_plan`` plans, for the whole node.
    """
    changes = [c for d in datasets(desired, observed)
               for c in dataset_plan(desired, observed, d)]
    return pvector(sorted(changes, key=_phase))


def dataset_waiting(desired, observed, dataset):
    """
    Why ``dataset`` cannot finish on this node yet, as ``model.Waiting``
    records (empty when nothing holds it up).
    """
    found = []
    name = application_of(desired, observed, dataset)
    moves = volume_moves(desired, observed, dataset)
    if moves.waiting is not None and dataset in desired.datasets:
        found.append(Waiting(dataset_id=dataset, application=name,
                             reason=moves.waiting.reason,
                             detail=moves.waiting.detail,
                             holder=moves.waiting.holder))
    app = desired.applications.get(name) if name is not None else None
    if app is not None and app.volume is not None and \
            dataset not in desired.datasets:
        found.append(Waiting(
            dataset_id=dataset, application=name, reason=NO_DATASET,
            detail="the desired state names no dataset for its volume; "
            "check the control service's placement"))
    return found


def waiting(desired, observed):
    """
    Why this node cannot finish yet, every dataset's ``model.Waiting``
    records; empty when nothing is held up.
    """
    return [w for d in datasets(desired, observed)
            for w in dataset_waiting(desired, observed, d)]


def is_converged(desired, observed):
    """
    True when this node has nothing to do and nothing to wait for.
    """
    return not plan(desired, observed) and not waiting(desired, observed)
