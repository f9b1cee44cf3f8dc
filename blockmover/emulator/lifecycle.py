"""
How a volume moves through Cinder's statuses, each step taking the
configured time (``reactor.callLater``), with the blocking work (sparse
files, ``losetup``) in a thread pool. An attached volume's loop device is
backed by a hard link ``attachments/<server id>/<volume id>`` of its file
(see ``Store.attachment_path``), and the server sees it as a cloud's guest
does, by a link ``by-id/<server id>/virtio-<id[:20]>`` to the device, made
when the attach completes and removed first when the detach completes
(``Store.device_link``):

    create   creating -> available (error if the file cannot be made)
    attach   reserved -> attaching -> in-use (back to available on failure)
    detach   detaching -> available
    extend   extending -> available | in-use (error_extending on failure)
    delete   deleting -> gone

Each scheduled step first checks the volume is still in the status that
scheduled it, so a step is harmless if repeated or outdated, and
``resume`` restarts the steps of volumes caught mid-way by a restart.
"""

import datetime
import os

from eliot import log_message
from twisted.internet.threads import deferToThread

from blockmover.backends import loopdevice


def now_text(clock):
    """
    A Cinder timestamp (UTC, microseconds, no zone) for ``clock``'s now.
    """
    moment = datetime.datetime.fromtimestamp(clock.seconds(),
                                             datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _make_file(path, size_gib):
    # Sparse: a 100G volume costs nothing until written.
    with open(path, "a"):
        pass
    if os.path.getsize(path) < size_gib * 1024 ** 3:
        os.truncate(path, size_gib * 1024 ** 3)


def _grow(path, size_gib, link):
    _make_file(path, size_gib)
    if link is not None:
        # The link shares the file's inode, so its device sees the new size
        # once told to look.
        loopdevice.refresh_capacity(link)


def _point(device_link, device):
    # Replaced in one rename: a watcher sees the link come once, whole.
    os.makedirs(os.path.dirname(device_link), exist_ok=True)
    temporary = os.path.join(os.path.dirname(device_link),
                             "." + os.path.basename(device_link) + ".tmp")
    if os.path.lexists(temporary):
        os.remove(temporary)
    os.symlink(device, temporary)
    os.rename(temporary, device_link)


def _unpoint(device_link):
    try:
        os.remove(device_link)
    except FileNotFoundError:
        # Already gone: a repeated or resumed detach.
        return


def plug(path, link, device_link):
    """
    Hard-link the volume file ``path`` at ``link``, make a loop device
    backed by the link and point the server's by-id ``device_link`` at it;
    return the device. Idempotent: an existing link of the same file and
    its device are kept.
    """
    os.makedirs(os.path.dirname(link), exist_ok=True)
    try:
        os.link(path, link)
    except FileExistsError:
        if not os.path.samefile(path, link):
            # Left from a volume file that was replaced; never serve it.
            unplug(link, device_link)
            os.link(path, link)
    device = loopdevice.attach(link)
    _point(device_link, device)
    return device


def unplug(link, device_link):
    """
    Remove the server's by-id ``device_link`` (first, as a guest's device
    goes before the cloud says so), the loop devices backed by ``link``
    and the link itself; the volume's file stays. Idempotent.
    """
    _unpoint(device_link)
    loopdevice.detach_all(link)
    try:
        os.remove(link)
    except FileNotFoundError:
        # Already gone: a repeated or resumed detach.
        return


def _remove(path):
    # Devices on the volume file itself come only from state written by an
    # older emulator; they must not outlive the file either.
    loopdevice.detach_all(path)
    try:
        os.remove(path)
    except FileNotFoundError:
        return


class Lifecycle(object):
    """
    Runs the status transitions of the volumes in ``store``.
    """

    def __init__(self, reactor, store, latency, faults, run_in_thread=None):
        self.reactor = reactor
        self.store = store
        self.latency = latency
        self.faults = faults
        self._thread = run_in_thread or deferToThread

    def _set(self, volume, status, **changes):
        volume["status"] = status
        volume.update(changes)
        volume["updated_at"] = now_text(self.reactor)
        log_message(message_type="blockmover:emulator:volume-status",
                    volume=volume["id"], status=status)
        return self.store.save()

    def _later(self, delay, volume_id, expected, step, *args):
        def fire():
            volume = self.store.volumes.get(volume_id)
            if volume is None or volume["status"] not in expected:
                return
            step(volume, *args)
        self.reactor.callLater(delay, fire)

    def _links(self, volume):
        # The attachment's hard link and by-id link, while it has one.
        attachment = volume.get("attachment")
        if not attachment:
            return None, None
        return (self.store.attachment_path(attachment["server_id"],
                                           volume["id"]),
                self.store.device_link(attachment["server_id"],
                                       volume["id"]))

    def _link(self, volume):
        return self._links(volume)[0]

    def _server(self, volume):
        return (volume.get("attachment") or {}).get("server_id")

    def _failed(self, failure, volume, what):
        log_message(message_type="blockmover:emulator:step-failed",
                    volume=volume["id"], step=what,
                    error=failure.getErrorMessage())

    # create
    def create(self, volume):
        self._later(self.latency["create"], volume["id"], ("creating",),
                    self._finish_create)

    def _finish_create(self, volume):
        d = self._thread(_make_file, self.store.volume_path(volume["id"]),
                         volume["size"])
        d.addCallback(lambda _: self._set(volume, "available"))

        def failed(failure):
            self._failed(failure, volume, "create")
            return self._set(volume, "error")
        d.addErrback(failed)
        return d

    # attach
    def attach(self, volume):
        self._later(self.latency["attach"] / 2, volume["id"], ("reserved",),
                    self._attaching)

    def _attaching(self, volume):
        self._set(volume, "attaching")
        delay = (self.latency["attach"] / 2
                 + self.faults.stuck("attach", volume, self._server(volume)))
        self._later(delay, volume["id"], ("attaching",), self._finish_attach)

    def _finish_attach(self, volume):
        if self.faults.attach_fails(volume, self._server(volume)):
            return self._attach_failed(None, volume)
        d = self._thread(plug, self.store.volume_path(volume["id"]),
                         *self._links(volume))

        def attached(device):
            attachment = dict(volume["attachment"], loop=device,
                              attached_at=now_text(self.reactor))
            return self._set(volume, "in-use", attachment=attachment)
        d.addCallbacks(attached, self._attach_failed, errbackArgs=(volume,))
        return d

    def _attach_failed(self, failure, volume):
        if failure is not None:
            self._failed(failure, volume, "attach")
        else:
            log_message(message_type="blockmover:emulator:injected-fault",
                        volume=volume["id"], fault="attach_error")
        # Nova drops the attachment and Cinder rolls the volume back.
        d = self._thread(unplug, *self._links(volume))
        d.addErrback(self._failed, volume, "attach-rollback")
        d.addCallback(lambda _: self._set(volume, "available",
                                          attachment=None))
        return d

    # detach
    def detach(self, volume):
        delay = (self.latency["detach"]
                 + self.faults.stuck("detach", volume, self._server(volume)))
        self._later(delay, volume["id"], ("detaching",),
                    self._finish_detach)

    def _finish_detach(self, volume):
        d = self._thread(unplug, *self._links(volume))
        d.addCallback(lambda _: self._set(volume, "available",
                                          attachment=None))

        def failed(failure):
            self._failed(failure, volume, "detach")
            # Still attached: the server sees its device again.
            saved = self._set(volume, "in-use")
            saved.addCallback(lambda _: self._relink(volume))
            return saved
        d.addErrback(failed)
        return d

    def drop_attachment(self, volume, status):
        """
        End the volume's attachment at once, as Cinder's ``os-force_detach``
        (or a reset to ``detached``) does without Nova: the device and its
        links go, the volume is left in ``status``. Returns a Deferred
        firing once that is saved.
        """
        d = self._thread(unplug, *self._links(volume))
        d.addErrback(self._failed, volume, "force-detach")
        d.addCallback(lambda _: self._set(volume, status, attachment=None))
        return d

    # extend
    def extend(self, volume, new_size):
        volume["extend_to"] = new_size
        self._later(self.latency["extend"], volume["id"], ("extending",),
                    self._finish_extend)

    def _finish_extend(self, volume):
        new_size = volume["extend_to"]
        d = self._thread(_grow, self.store.volume_path(volume["id"]),
                         new_size, self._link(volume))
        back = "in-use" if volume.get("attachment") else "available"
        d.addCallback(lambda _: self._set(volume, back, size=new_size,
                                          extend_to=None))

        def failed(failure):
            self._failed(failure, volume, "extend")
            return self._set(volume, "error_extending", extend_to=None)
        d.addErrback(failed)
        return d

    # delete
    def delete(self, volume):
        self._later(self.latency["delete"], volume["id"], ("deleting",),
                    self._finish_delete)

    def _finish_delete(self, volume):
        d = self._thread(_remove, self.store.volume_path(volume["id"]))

        def removed(_):
            self.store.volumes.pop(volume["id"], None)
            log_message(message_type="blockmover:emulator:volume-status",
                        volume=volume["id"], status="deleted")
            return self.store.save()

        def failed(failure):
            self._failed(failure, volume, "delete")
            return self._set(volume, "error_deleting")
        d.addCallbacks(removed, failed)
        return d

    def resume(self):
        """
        After a restart: finish the transitions that were under way and
        re-create the loop devices and by-id links of attached volumes
        (a device's number may have changed).
        """
        steps = {
            "creating": self._finish_create,
            "reserved": self._attaching,
            "attaching": self._finish_attach,
            "detaching": self._finish_detach,
            "extending": self._finish_extend,
            "deleting": self._finish_delete,
        }
        for volume in list(self.store.volumes.values()):
            step = steps.get(volume["status"])
            if step is not None:
                self._later(0, volume["id"], (volume["status"],), step)
            elif volume.get("attachment") and volume["status"] == "in-use":
                self._later(0, volume["id"], ("in-use",), self._relink)

    def _relink(self, volume):
        d = self._thread(plug, self.store.volume_path(volume["id"]),
                         *self._links(volume))

        def linked(device):
            volume["attachment"]["loop"] = device
            return self.store.save()
        d.addCallbacks(linked, self._failed, errbackArgs=(volume, "relink"))
        return d
