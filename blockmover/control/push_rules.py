"""
When an application moves to a node of another site, its volume cannot
follow by detach and attach: its blocks are pushed, agent to agent. These
are the rules of a push as the control service keeps them, pure: which
pushes a configuration starts, how each goes on from what its two nodes
report and what the listing shows, where the application runs meanwhile,
and what each node's slice says of it.

A push goes::

    live ──(the source says its rounds settled)──▶ final
    final ──(both sides' digests of the whole device match)──▶ committed
    live | final ──(the source gives up, the target cannot make its
                    volume)──▶ failed
    live | final ──(the configuration no longer moves it)──▶ cancelled

While ``live`` the application runs on at the source and the source
pushes rounds. While ``final`` it runs nowhere: the source stops it,
unmounts, pushes the last round and compares digests. ``committed`` is
the one write that makes the target's volume the dataset's (its mark goes
from incoming to complete, and its generation is one more than the
source's): from then on placement is the configuration's. ``failed``
puts the application back on the source until the next deploy, and the
volume pushed into stays marked incoming, never data.
"""

import uuid

from pyrsistent import PClass, field, pmap

from blockmover.identity import (
    PUSH_ID_KEY, dataset_id, generation, is_incoming,
)
from blockmover.model import (
    PUSH_FAILED, PUSH_VERIFIED, IncomingPush, OutgoingPush, optional,
)

LIVE = "live"
FINAL = "final"
COMMITTED = "committed"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE = (LIVE, FINAL)

# The changes of the target's side of a push (``model.Step.kind``): when
# one of them fails this often in a row, or with a refusal of the backend's
# limits, the push fails before the application ever stopped.
TARGET_STEPS = ("create", "attach", "grow")
TARGET_ATTEMPTS = 3
OVER_LIMIT = "OverLimit"


class PushRecord(PClass):
    """
    One push of ``dataset_id`` (``application``'s) from ``source_node`` in
    ``source_site`` (its volume ``source_volume``) to ``target_node`` in
    ``target_site``; the volume pushed into gets ``generation``. Times are
    the service's clock.
    """
    push_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    application = field(type=str, mandatory=True)
    source_node = field(type=str, mandatory=True)
    source_site = field(type=str, mandatory=True)
    source_volume = field(type=str, mandatory=True)
    target_node = field(type=str, mandatory=True)
    target_site = field(type=str, mandatory=True)
    generation = field(type=int, mandatory=True)
    phase = field(type=str, mandatory=True, initial=LIVE)
    started_at = field(type=float, mandatory=True)
    final_at = optional(float)
    ended_at = optional(float)
    error = optional(str)

    @property
    def nodes(self):
        return (self.source_node, self.target_node)


def new_push_id():
    return uuid.uuid4().hex[:12]


class Needed(PClass):
    """
    A push a configuration asks for: ``application``'s data volume
    ``volume`` is in another site than ``target_node``'s, attached to
    ``source_node`` (None when it is attached to no node of its site).
    """
    application = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    target_node = field(type=str, mandatory=True)
    source_node = optional(str)
    volume = field(mandatory=True)


def needed(deployment, listing, application):
    """
    The ``Needed`` push of ``application`` under ``deployment``, or None
    when its volume is where it is placed (or it has none, or is placed
    nowhere, or has no volume yet).
    """
    app = deployment.applications.get(application)
    target = deployment.placement.get(application)
    if app is None or app.volume is None or target is None:
        return None
    dataset = dataset_id(deployment.cluster_name, application)
    volume = listing.chosen(dataset)
    if volume is None or volume.site == deployment.site_of(target):
        return None
    source = None
    if volume.attached_to is not None:
        holder = deployment.node_by_backend_id(volume.attached_to)
        if holder is not None and holder.site == volume.site:
            source = holder.name
    return Needed(application=application, dataset_id=dataset,
                  target_node=target, source_node=source, volume=volume)


def needed_pushes(deployment, listing):
    """
    Every ``Needed`` push of ``deployment``, by dataset id.
    """
    if not deployment.sites:
        return {}
    found = {}
    for name in sorted(deployment.placement):
        need = needed(deployment, listing, name)
        if need is not None:
            found[need.dataset_id] = need
    return found


def _progress(reports, node, push):
    """
    The ``PushProgress`` that ``node`` last reported of ``push``, or None.
    """
    report = reports.get(node)
    if report is None:
        return None
    progress = report.state.pushes.get(push.dataset_id)
    if progress is None or progress.push_id != push.push_id:
        return None
    return progress


def _target_refusal(reports, push):
    """
    Why the target cannot make the volume to push into, or None: one of
    its changes for the dataset refused by the backend's limits, or
    failing ``TARGET_ATTEMPTS`` times in a row.
    """
    report = reports.get(push.target_node)
    if report is None:
        return None
    for error in report.progress.errors:
        if error.step.dataset_id != push.dataset_id or \
                error.step.kind not in TARGET_STEPS:
            continue
        if error.kind == OVER_LIMIT or error.attempts >= TARGET_ATTEMPTS:
            return ("site %s could not make the volume to push into on %s: "
                    "%s" % (push.target_site, push.target_node,
                            error.message))
    return None


def _committed(listing, push):
    """
    Whether the listing shows ``push``'s commit made: a volume of its
    dataset in its target site, of its generation, no longer incoming.
    """
    for volume in listing.claiming(push.dataset_id):
        if volume.site == push.target_site and not is_incoming(volume) \
                and generation(volume) == push.generation:
            return True
    return False


def _ended(push, phase, now, error=None):
    return push.set(phase=phase, ended_at=now, error=error)


def _advance(push, need, listing, reports, now, down):
    """
    ``push`` (active) after what its nodes reported: the next record, and
    whether it is ready to commit.
    """
    if _committed(listing, push):
        return push.set(phase=COMMITTED, ended_at=now), False
    for node in push.nodes:
        if node in down:
            # It will report no more: the application goes back to the
            # source's site, where a failover may take it.
            return _ended(push, FAILED, now, "node %s is proven down"
                          % (node,)), False
    if need is None or need.target_node != push.target_node or \
            need.volume.volume_id != push.source_volume:
        return _ended(push, CANCELLED, now, "the configuration no longer "
                      "moves %s to %s" % (push.application,
                                          push.target_node)), False
    source = _progress(reports, push.source_node, push)
    if source is not None and source.phase == PUSH_FAILED:
        return _ended(push, FAILED, now, source.error or "the source gave "
                      "up"), False
    if push.phase == LIVE:
        refusal = _target_refusal(reports, push)
        if refusal is not None:
            return _ended(push, FAILED, now, refusal), False
        if source is not None and source.settled:
            return push.set(phase=FINAL, final_at=now), False
        return push, False
    target = _progress(reports, push.target_node, push)
    ready = (source is not None and source.phase == PUSH_VERIFIED
             and source.source_digest is not None
             and source.source_digest == source.target_digest
             and target is not None
             and target.target_digest == source.source_digest)
    return push, ready


def decide(deployment, listing, records, reports, now, fresh=False,
           make_id=new_push_id, down=frozenset()):
    """
    The push records after a look: ``(records, commits)``.

    :param records: ``{dataset id: PushRecord}`` so far.
    :param reports: ``{node: NodeReport}``, the nodes' last.
    :param fresh: a configuration is being deployed: pushes that failed
        are tried again.
    :param down: the nodes proven down (fenced or confirmed down): a push
        either takes part in fails, and none starts from or to one.
    :return: the new records (the same mapping when nothing changed), and
        the records whose commit can be made now.
    """
    result = dict(records)
    commits = []
    needs = needed_pushes(deployment, listing)
    for dataset, push in records.items():
        if push.phase in ACTIVE:
            result[dataset], ready = _advance(push, needs.get(dataset),
                                              listing, reports, now, down)
            if ready:
                commits.append(result[dataset])
    for dataset, need in sorted(needs.items()):
        push = result.get(dataset)
        if push is not None and push.phase in ACTIVE:
            continue
        if push is not None and push.phase == FAILED and not fresh and \
                push.target_node == need.target_node:
            continue
        if push is not None and push.phase == COMMITTED and \
                need.volume.volume_id == push.source_volume:
            # The listing has not caught up with the commit yet.
            continue
        if need.source_node is None or need.source_node in down or \
                need.target_node in down:
            continue
        result[dataset] = PushRecord(
            push_id=make_id(), dataset_id=dataset,
            application=need.application, source_node=need.source_node,
            source_site=need.volume.site,
            source_volume=need.volume.volume_id,
            target_node=need.target_node,
            target_site=deployment.site_of(need.target_node),
            generation=generation(need.volume) + 1, started_at=now)
    if result == dict(records):
        return records, commits
    return pmap(result), commits


def effective_placement(deployment, records):
    """
    ``{application: node}``: where applications run while pushes go on:
    on the source while live, and after failing until the next deploy;
    nowhere while final; as configured otherwise.
    """
    placement = dict(deployment.placement)
    for push in records.values():
        if placement.get(push.application) != push.target_node:
            continue
        if push.phase == LIVE or push.phase == FAILED:
            placement[push.application] = push.source_node
        elif push.phase == FINAL:
            del placement[push.application]
    return placement


def effective(deployment, records):
    """
    ``deployment`` with ``effective_placement`` (itself when no push
    changes it).
    """
    if not records:
        return deployment
    placement = effective_placement(deployment, records)
    if placement == dict(deployment.placement):
        return deployment
    return deployment.set(placement=placement)


def target_volume(listing, push):
    """
    The volume of ``push``'s dataset in its target site that is not the
    dataset's data (the one being pushed into, or a copy an earlier push
    left there, which is pushed into again), or None.
    """
    data = listing.chosen(push.dataset_id)
    for volume in listing.claiming(push.dataset_id):
        if volume.site == push.target_site and volume is not data:
            return volume
    return None


def slice_parts(deployment, listing, records, size_of):
    """
    ``{node: (incoming, outgoing)}``: what each node's slice says of the
    active pushes it takes part in, each a ``{dataset id: IncomingPush or
    OutgoingPush}``. ``size_of(dataset)`` is the size the configuration
    wants (None when unknown).
    """
    parts = {}
    for push in records.values():
        if push.phase not in ACTIVE or \
                push.target_node not in deployment.nodes or \
                push.source_node not in deployment.nodes:
            continue
        source = listing.get(push.source_volume)
        size = max(size_of(push.dataset_id) or 0,
                   source.size if source is not None else 0)
        target = target_volume(listing, push)
        target_node = deployment.nodes[push.target_node]
        ready = (target is not None and is_incoming(target)
                 and target.metadata.get(PUSH_ID_KEY) == push.push_id
                 and target.attached_to == target_node.backend_id)
        incoming = IncomingPush(
            push_id=push.push_id, dataset_id=push.dataset_id,
            application=push.application, size=size,
            generation=push.generation, source_node=push.source_node,
            volume=target, port=deployment.push.port)
        outgoing = OutgoingPush(
            push_id=push.push_id, dataset_id=push.dataset_id,
            application=push.application,
            source_volume=push.source_volume,
            target_node=push.target_node,
            target_address=target_node.address,
            port=deployment.push.port,
            target_volume=target.volume_id if ready else None,
            size=size, final=push.phase == FINAL,
            bandwidth=deployment.push.bandwidth)
        parts.setdefault(push.target_node, ({}, {}))[0][
            push.dataset_id] = incoming
        parts.setdefault(push.source_node, ({}, {}))[1][
            push.dataset_id] = outgoing
    return parts
