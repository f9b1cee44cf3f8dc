"""
What an agent does next on its node: a pure function of the node's desired
slice (``NodeDesired``) and what it observes (``NodeState``), no I/O.

Each dataset is classified by what this node sees of it (its own devices and
mounts first, then the control service's cached listing: a device here wins
over a stale listing), and two tables, ``TAKE`` for datasets wanted here and
``GIVE_UP`` for the others, say what to do in that state. The plan is then
laid out in a fixed order, so a move always reads the same way::

    stop -> unmount -> detach -> (create | attach | grow | mkfs | mount) -> start

The agent runs the changes in order and stops at the first failure, then
observes again and plans again: the loop is the retry, every change is
idempotent, and a plan only ever goes as far as what it can see now (after
``CreateVolume`` or ``AttachVolume`` the next step waits for the next look).

A volume marked new (``identity.FORMAT_KEY`` = ``identity.NEW``) that already
holds this dataset's filesystem (a crash between mkfs and marking) gets a
``MakeFilesystem``, which then only marks it formatted, before it is mounted:
a volume holding data must never stay marked new, or an unreadable
filesystem on it would later be formatted.
"""

from pyrsistent import PClass, PVector, field, pvector

from agents.changes import (
    AttachVolume, CreateVolume, DetachVolume, GrowFilesystem, GrowVolume,
    MakeFilesystem, MountFilesystem, StartApplication, StopApplication,
    UnmountFilesystem,
)
from blockmover.identity import FORMAT_KEY, NEW
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
    What one dataset needs: whether its application must stop first, what
    to unmount and detach, what to do to take it, whether it is mounted here
    once all that ran, and why it cannot go on (None when it can).
    """
    stop = field(type=bool, initial=False)
    release = field(type=PVector, initial=pvector(), factory=pvector)
    take = field(type=PVector, initial=pvector(), factory=pvector)
    mounted = field(type=bool, initial=False)
    waiting = field(initial=None)


def _holds_own_filesystem(view):
    # The filesystem's UUID is the dataset id (see identity).
    device = view.device
    return (device is not None and
            (device.filesystem_uuid or "").lower() == view.dataset_id.lower())


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
    return Moves(waiting="volume attached to %s, waiting for it to be "
                         "released" % (view.volume.attached_to,))


def _attach(view):
    return Moves(take=[AttachVolume(dataset_id=view.dataset_id,
                                    volume_id=view.volume.volume_id)])


def _make_filesystem(view):
    if view.volume is None:
        return Moves(waiting="device %s is here but the volume listing does "
                             "not show its volume yet" % (view.device.path,))
    if not view.marked_new:
        return Moves(waiting="device %s holds no filesystem that can be read "
                             "and its volume is not marked new, so it may "
                             "hold data and is never formatted: check the "
                             "device by hand" % (view.device.path,))
    return Moves(take=_grow_volume(view) + [
        MakeFilesystem(dataset_id=view.dataset_id,
                       volume_id=view.device.volume_id,
                       filesystem=view.want.filesystem),
        _mount(view)], mounted=True)


def _refuse_foreign(view):
    return Moves(waiting="device %s holds a filesystem of something else "
                         "(uuid %s); it is never mounted nor formatted: "
                         "check the device by hand"
                         % (view.device.path, view.device.filesystem_uuid))


def _mount_unmounted(view):
    grown = _grow(view, mounted=False)
    if grown is not None:
        return grown
    return Moves(take=_mark(view) + [_mount(view)], mounted=True)


def _keep_mounted(view):
    if not _holds_own_filesystem(view):
        # Mounted, but its device or filesystem cannot be checked: keep
        # the mount as it is, grow nothing, mount nothing again.
        if view.mount.mountpoint == view.want.mountpoint:
            return Moves(mounted=True)
        return Moves(waiting="mounted at %s, not at %s, and its device "
                             "cannot be checked before mounting it again"
                             % (view.mount.mountpoint, view.want.mountpoint))
    if view.mount.mountpoint != view.want.mountpoint:
        # The application moved its mountpoint: mount again, grow next turn.
        return Moves(stop=True, release=[_unmount(view)],
                     take=_mark(view) + [_mount(view)], mounted=True)
    grown = _grow(view, mounted=True)
    if grown is not None:
        return grown
    return Moves(take=_mark(view), mounted=True)


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
        _grow_filesystem(view), _mount(view)], mounted=True)
    if mounted:
        return moves.set(stop=True, release=[_unmount(view)])
    return moves


def _grow_online(view, mounted, grow_volume):
    # xfs: xfs_growfs only works on a mounted filesystem; the app runs on.
    if mounted:
        return Moves(take=_mark(view) + grow_volume
                     + [_grow_filesystem(view)], mounted=True)
    return Moves(take=_mark(view) + grow_volume
                 + [_mount(view), _grow_filesystem(view)], mounted=True)


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
                     mounted=True,
                     waiting="cannot grow a %s filesystem" % (filesystem,))
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
    A ``DatasetView`` of every dataset that matters to this node (wanted
    here, listed, with a device or a mount here), sorted by dataset id.
    """
    ids = (set(desired.datasets) | set(desired.volumes)
           | set(observed.devices) | set(observed.mounts))
    return [DatasetView(dataset_id=d, backend_id=observed.backend_id,
                        want=desired.datasets.get(d),
                        volume=desired.volumes.get(d),
                        device=observed.devices.get(d),
                        mount=observed.mounts.get(d))
            for d in sorted(ids)]


def dataset_moves(desired, observed):
    """
    The ``Moves`` of every dataset that matters to this node, by dataset id.
    """
    return {view.dataset_id: (TAKE if view.want is not None else GIVE_UP)[
        view.state](view) for view in views(desired, observed)}


def _dataset_of(desired, name):
    for want in desired.datasets.values():
        if want.application == name:
            return want.dataset_id
    return None


def _runnable(desired, moves, name):
    """
    Whether the desired application ``name`` may run here once the plan's
    unmounts and mounts ran: it has no volume, or its volume stays mounted.
    """
    app = desired.applications[name]
    if app.volume is None:
        return True
    dataset = _dataset_of(desired, name)
    return dataset is not None and moves[dataset].mounted


def _may_keep_running(desired, observed, moves, name):
    """
    Whether the running application ``name`` may run on through the plan:
    it is wanted here and has no volume, or its volume is mounted at its
    mountpoint now and stays so.
    """
    if name not in desired.applications:
        return False
    if desired.applications[name].volume is None:
        return True
    dataset = _dataset_of(desired, name)
    if dataset is None:
        return False
    mount = observed.mounts.get(dataset)
    return (mount is not None
            and mount.mountpoint == desired.datasets[dataset].mountpoint
            and moves[dataset].mounted and not moves[dataset].stop)


def plan(desired, observed):
    """
    The changes to run now on this node, in order, to bring ``observed``
    (a ``NodeState``) toward ``desired`` (its ``NodeDesired`` slice).

    Pure. The agent runs them in order, stops at the first failure, and
    plans again from a fresh look; every change is idempotent.
    """
    moves = dataset_moves(desired, observed)
    stops = [name for name in sorted(observed.running)
             if not _may_keep_running(desired, observed, moves, name)]
    starts = [name for name in sorted(desired.applications)
              if (name not in observed.running or name in stops)
              and _runnable(desired, moves, name)]
    releases = [c for d in sorted(moves) for c in moves[d].release]
    return pvector(
        [StopApplication(name=name) for name in stops]
        + [c for c in releases if isinstance(c, UnmountFilesystem)]
        + [c for c in releases if isinstance(c, DetachVolume)]
        + [c for d in sorted(moves) for c in moves[d].take]
        + [StartApplication(application=desired.applications[name])
           for name in starts])


def waiting(desired, observed):
    """
    Why this node cannot finish yet, one line a person reads per reason
    (an application's volume held by another node, a device that is never
    formatted ...); empty when nothing is held up.
    """
    reasons = []
    moves = dataset_moves(desired, observed)
    for dataset, m in sorted(moves.items()):
        if m.waiting is not None:
            want = desired.datasets[dataset]
            reasons.append("%s: %s" % (want.application, m.waiting))
    for name, app in sorted(desired.applications.items()):
        if app.volume is not None and _dataset_of(desired, name) is None:
            reasons.append("%s: the desired state names no dataset for its "
                           "volume; check the control service's placement"
                           % (name,))
    return reasons


def is_converged(desired, observed):
    """
    True when this node has nothing to do and nothing to wait for.
    """
    return not plan(desired, observed) and not waiting(desired, observed)
