"""
The volumes an operator may remove (``blockmover volume``): a push
between sites leaves the volume it came from behind, detached, and a push
that failed or was cancelled leaves the volume it pushed into marked
incoming. Nothing removes them by itself: a kept copy makes a later push
back into its site send only what changed since, and only the operator
knows whether that is worth its storage.

``kept`` and ``refusal`` are pure (a listing and the push records in);
``remove`` checks a volume again as its backend says now before it
destroys it.

A volume is kept when it is neither its dataset's data
(``Listing.chosen``) nor taking part in a push under way: the volume
pushed into (``push_rules.target_volume``) or, until the push is
committed, the one pushed from.
"""

from eliot import log_message
from pyrsistent import PClass, field
from twisted.internet.defer import inlineCallbacks

from blockmover.backends.interface import (
    BlockDeviceError, UnknownVolume, VolumeInUse,
)
from blockmover.control import push_rules
from blockmover.control.errors import BackendError
from blockmover.identity import (
    APPLICATION_KEY, PUSH_ID_KEY, generation, is_incoming,
)
from blockmover.model import optional, to_data

# Why a volume is kept (``KeptVolume.reason``).
LEFT = "left"                   # the source of a push that committed
FAILED_PUSH = "failed-push"     # pushed into by a push that failed
CANCELLED_PUSH = "cancelled-push"  # ... or was cancelled
OLDER = "older"                 # a copy no push record explains any more


class KeptVolume(PClass):
    """
    A volume of ``dataset_id`` (``application``'s, as its metadata says)
    that is not its data: ``reason`` (one of the constants above) and
    ``why``, for a person; ``push_id`` is the push that left it.
    """
    volume_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    application = optional(str)
    site = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True)
    attached_to = optional(str)
    generation = field(type=int, mandatory=True)
    incoming = field(type=bool, mandatory=True)
    reason = field(type=str, mandatory=True)
    why = field(type=str, mandatory=True)
    push_id = optional(str)


class UnknownKeptVolume(Exception):
    """
    No volume of the cluster has this id (404).
    """
    def __init__(self, volume_id):
        Exception.__init__(
            self, "the cluster has no volume %s; blockmover volume list "
            "shows the volumes you may remove" % (volume_id,))


class NotRemovable(Exception):
    """
    The volume is not one to remove (409); the message says why and what
    to do.
    """


class NotListed(Exception):
    """
    The control service has not listed the volumes yet (503).
    """
    def __init__(self):
        Exception.__init__(self, "the control service has not listed the "
                           "cluster's volumes yet; try again in a moment")


def _in_use(listing, records):
    """
    ``{volume id: why}`` of the volumes active pushes take part in.
    """
    used = {}
    for push in records.values():
        if push.phase not in push_rules.ACTIVE:
            continue
        used[push.source_volume] = (
            "it is the source of push %s of %s to %s (%s), which is not "
            "committed yet; wait for it to end (blockmover status shows "
            "it)" % (push.push_id, push.application, push.target_node,
                     push.target_site))
        target = push_rules.target_volume(listing, push)
        if target is not None:
            used[target.volume_id] = (
                "push %s of %s from %s (%s) pushes into it now; wait for "
                "it to end, or deploy a configuration that no longer moves "
                "%s" % (push.push_id, push.application, push.source_node,
                        push.source_site, push.application))
    return used


def _explained(volume, push):
    """
    ``(reason, why, push id)`` of kept ``volume``, from its dataset's push
    record ``push`` (or None).
    """
    if is_incoming(volume):
        mark = volume.metadata.get(PUSH_ID_KEY)
        if push is not None and push.push_id == mark and \
                push.phase in (push_rules.FAILED, push_rules.CANCELLED):
            reason = (FAILED_PUSH if push.phase == push_rules.FAILED
                      else CANCELLED_PUSH)
            why = "pushed into by push %s from %s (%s), which %s" % (
                push.push_id, push.source_node, push.source_site,
                "failed" if push.phase == push_rules.FAILED
                else "was cancelled")
            if push.error:
                why += ": " + push.error
            return reason, why, push.push_id
        return (FAILED_PUSH, "pushed into by push %s, which never "
                "completed; it holds no data anyone may use"
                % (mark or "?",), mark)
    if push is not None and push.source_volume == volume.volume_id and \
            push.phase == push_rules.COMMITTED:
        return (LEFT, "left by push %s to %s (%s)" % (
            push.push_id, push.target_node, push.target_site),
            push.push_id)
    return (OLDER, "an older copy (generation %d) of the data, left by an "
            "earlier push" % (generation(volume),), None)


def kept(listing, records):
    """
    The kept volumes of ``listing`` (a ``placement.Listing``) under the
    push records ``records`` (``{dataset id: PushRecord}``), as a list of
    ``KeptVolume`` sorted by application, site and volume id.
    """
    used = _in_use(listing, records)
    found = []
    datasets = {volume.dataset_id for volume in listing.volumes()}
    for dataset in datasets:
        volumes = listing.claiming(dataset)
        data = listing.chosen(dataset)
        for volume in volumes:
            if volume is data or volume.volume_id in used:
                continue
            reason, why, push_id = _explained(volume, records.get(dataset))
            found.append(KeptVolume(
                volume_id=volume.volume_id, dataset_id=dataset,
                application=volume.metadata.get(APPLICATION_KEY),
                site=volume.site, size=volume.size,
                attached_to=volume.attached_to,
                generation=generation(volume),
                incoming=is_incoming(volume), reason=reason, why=why,
                push_id=push_id))
    return sorted(found, key=lambda v: (v.application or "", v.site,
                                        v.volume_id))


def refusal(listing, records, volume):
    """
    Why ``volume`` may not be removed under ``listing`` and ``records``,
    said for a person with what to do; None when it may.
    """
    used = _in_use(listing, records)
    if volume.volume_id in used:
        return "volume %s is not removed: %s" % (volume.volume_id,
                                                 used[volume.volume_id])
    if volume == listing.chosen(volume.dataset_id):
        return ("volume %s is not removed: it holds the data of %s; "
                "blockmover removes no application's data (remove the "
                "application from app.yml and its volume in the backend "
                "yourself if you mean to)"
                % (volume.volume_id, volume.metadata.get(
                    APPLICATION_KEY, "dataset " + volume.dataset_id)))
    if volume.attached_to is not None:
        return ("volume %s is not removed: it is attached to %s; the node "
                "that holds it detaches it once its slice no longer wants "
                "it, then try again" % (volume.volume_id,
                                        volume.attached_to))
    return None


def shown(listing, records, listed_at):
    """
    ``GET /v1/volumes/kept``: ``{"listed_at": T, "volumes": [KEPT]}``, each
    a ``KeptVolume`` as data.
    """
    volumes = kept(listing, records) if listing is not None else []
    return {"listed_at": listed_at if listing is not None else None,
            "volumes": [to_data(volume) for volume in volumes]}


@inlineCallbacks
def remove(service, volume_id, who):
    """
    Destroy the kept volume ``volume_id`` through its site's backend, for
    the user ``who``: refused as ``refusal`` says, under the listing and
    again under the volume as the backend says now; then a listing is
    asked for.

    :return: a Deferred firing with ``{"removed": KEPT}``; failing with
        ``UnknownKeptVolume``, ``NotRemovable``, ``NotListed`` or
        ``BackendError``.
    """
    listing = service.listing.listing
    if listing is None:
        raise NotListed()
    volume = listing.get(volume_id)
    if volume is None:
        raise UnknownKeptVolume(volume_id)
    said = refusal(listing, service.pushes.records, volume)
    if said is not None:
        raise NotRemovable(said)
    backends = service.backend.sites if service.backend is not None else {}
    if volume.site not in backends:
        raise NotRemovable("volume %s is not removed: its site %s is no "
                           "longer in the configuration" % (volume_id,
                                                            volume.site))
    backend = backends[volume.site]
    yield backend.ready()
    try:
        now = yield backend.api.get_volume(volume_id)
    except UnknownVolume:
        raise UnknownKeptVolume(volume_id)
    except BlockDeviceError as e:
        raise BackendError("volume %s in site %s could not be read: %s; "
                           "check the backend and try again"
                           % (volume_id, volume.site, e))
    # Checked again as it is now, against what the pushes are now.
    now = now.set(site=volume.site)
    listing, _ = service.listing.listing.changed([now])
    records = service.pushes.records
    said = refusal(listing, records, listing.get(volume_id))
    if said is not None:
        raise NotRemovable(said)
    entry = {v.volume_id: v for v in kept(listing, records)}[volume_id]
    try:
        yield backend.api.destroy_volume(volume_id)
    except UnknownVolume:
        raise UnknownKeptVolume(volume_id)
    except VolumeInUse:
        raise NotRemovable("volume %s is not removed: it was attached "
                           "meanwhile; try again once it is detached"
                           % (volume_id,))
    except BlockDeviceError as e:
        raise BackendError("volume %s in site %s could not be removed: %s; "
                           "check the backend and try again"
                           % (volume_id, volume.site, e))
    log_message(message_type="blockmover:control:volume-removed",
                volume_id=volume_id, dataset_id=volume.dataset_id,
                application=entry.application, site=volume.site,
                reason=entry.reason, by=who)
    service.listing.request()
    return {"removed": to_data(entry)}
