"""
The control service's pushes between sites (see ``push_rules`` for what a
push is): kept in ``pushes.json`` beside the configuration, decided again
whenever a configuration is deployed, a node taking part reports or the
listing changes, and committed with the one backend call that makes the
volume pushed into the dataset's.

Every record is saved before any slice shows it, so a restarted service
goes on with the same push (the same id, the same phase): never a second
push of a dataset, never an application started twice.
"""


from eliot import log_message, write_failure
from pyrsistent import pmap
from twisted.internet.defer import DeferredLock, inlineCallbacks, succeed

from blockmover.control import push_rules
from blockmover.control.recordfile import RecordFile
from blockmover.identity import (
    COMPLETE, FORMAT_KEY, FORMATTED, PUSH_ID_KEY, PUSH_KEY, is_incoming,
)
from blockmover.model import to_data

FORMAT_VERSION = 1
FILENAME = "pushes.json"


class PushStore(object):
    """
    ``{dataset id: PushRecord}`` in ``<state_dir>/pushes.json``. Blocking
    file I/O: ``save`` runs off the reactor, ``load`` once at the
    service's start.
    """
    # The record it keeps, in metrics.
    name = "pushes"


    def __init__(self, state_dir):
        # Never guessed around: a push taken for another phase could start
        # its application twice.
        self._file = RecordFile(
            state_dir, FILENAME, FORMAT_VERSION, "push records",
            "restore it from a backup (a push under way when it was lost is "
            "safe: its volume stays marked incoming, and deploying again "
            "starts a new one)")
        self.path = self._file.path

    def load(self):
        """
        :return: the stored records (empty if none yet).
        :raise StoreError: the file is unreadable or malformed.
        """
        records = self._file.load(lambda data: pmap({
            dataset: push_rules.PushRecord.create(record)
            for dataset, record in data["pushes"].items()}))
        return records if records is not None else pmap()

    def save(self, records):
        """
        Replace the stored records with ``records``, durably.

        :raise StoreError: they could not be saved; the old ones stay.
        """
        self._file.save({"pushes": {d: to_data(r)
                                    for d, r in records.items()}})


class Pushes(object):
    """
    The pushes of one control service.

    :ivar records: ``{dataset id: PushRecord}`` as saved.
    """

    def __init__(self, service, reactor, store):
        self._service = service
        self._reactor = reactor
        self._store = store
        self.records = pmap()
        self._lock = DeferredLock()
        self._effective = None
        self._parts = None
        self._committing = set()

    def start(self):
        """
        Load the records. :raise StoreError: see ``PushStore.load``.
        """
        self.records = self._store.load()

    # --- what the slices see ------------------------------------------------

    def effective(self, deployment, records=None):
        """
        ``deployment`` with the pushes' placement (``push_rules.effective``)
        of ``records`` (the saved ones by default); the same object while
        neither changes.
        """
        records = self.records if records is None else records
        made = self._effective
        if made is None or made[0] is not deployment or \
                made[1] is not records:
            made = (deployment, records,
                    push_rules.effective(deployment, records))
            self._effective = made
        return made[2]

    def parts(self, deployment, listing, size_of, records=None):
        """
        ``push_rules.slice_parts`` of ``records`` (the saved ones by
        default), made once per records and listing.
        """
        records = self.records if records is None else records
        if not records:
            return {}
        made = self._parts
        if made is None or made[0] is not deployment or \
                made[1] is not listing or made[2] is not records:
            made = (deployment, listing, records,
                    push_rules.slice_parts(deployment, listing, records,
                                           size_of))
            self._parts = made
        return made[3]

    def affected(self, changes):
        """
        The nodes of the pushes under way whose datasets ``changes`` (the
        listing's, pairs of volumes) touch.
        """
        if not self.records:
            return set()
        datasets = {v.dataset_id for pair in changes for v in pair
                    if v is not None}
        return {node for dataset, push in self.records.items()
                if dataset in datasets and push.phase in push_rules.ACTIVE
                for node in push.nodes}

    def nodes(self):
        """
        The nodes taking part in a push under way.
        """
        return {node for push in self.records.values()
                if push.phase in push_rules.ACTIVE for node in push.nodes}

    # --- deciding -----------------------------------------------------------

    def proposed(self, deployment, listing, reports):
        """
        The records a configuration being deployed would have (not saved:
        ``save`` them with it), pushes that failed tried again.
        """
        records, _ = push_rules.decide(
            deployment, listing, self.records, reports,
            self._reactor.seconds(), fresh=True, down=self._down(deployment))
        return records

    def _down(self, deployment):
        failures = self._service.failures
        return frozenset(n for n in deployment.nodes if failures.is_down(n))

    def save(self, records):
        """
        Save ``records`` and take them. :return: a Deferred firing once
        saved.
        """
        if records is self.records:
            return succeed(None)
        d = self._service.save_record(self._store, records)

        def saved(_):
            self._log(self.records, records)
            self.records = records
        d.addCallback(saved)
        return d

    def update(self):
        """
        Decide again from the current configuration, listing and reports;
        save what changed, have the slices of the nodes it concerns
        computed again, and commit what is ready. :return: a Deferred.
        """
        service = self._service
        if service.deployment is None or service.listing.listing is None \
                or (not service.deployment.sites and not self.records):
            return succeed(None)
        return self._lock.run(self._update)

    @inlineCallbacks
    def _update(self):
        service = self._service
        deployment = service.deployment
        reports = {node: report for node, (report, _)
                   in service.last_reports().items()}
        records, commits = push_rules.decide(
            deployment, service.listing.listing, self.records, reports,
            self._reactor.seconds(), down=self._down(deployment))
        before = self.records
        if records is not before:
            yield self.save(records)
            service.nodes_changed({
                node for dataset, push in records.items()
                if before.get(dataset) != push for node in push.nodes})
        for push in commits:
            if push.dataset_id not in self._committing:
                self._committing.add(push.dataset_id)
                d = self._commit(push)
                d.addErrback(write_failure)
                d.addBoth(lambda _, dataset=push.dataset_id:
                          self._committing.discard(dataset))

    @inlineCallbacks
    def _commit(self, push):
        """
        Make ``push``'s volume the dataset's: checked as the backend says
        it is now (still incoming, for this push, attached to the target),
        then marked complete in one call. Then the record says committed.
        """
        service = self._service
        listing = service.listing.listing
        volume = push_rules.target_volume(listing, push)
        if volume is None:
            return
        backend = service.backend.site(push.target_site)
        yield backend.ready()
        as_it_is = yield backend.api.get_volume(volume.volume_id)
        target = service.deployment.nodes.get(push.target_node)
        if target is None or not is_incoming(as_it_is) or \
                as_it_is.metadata.get(PUSH_ID_KEY) != push.push_id or \
                as_it_is.attached_to != target.backend_id:
            log_message(message_type="blockmover:control:push-not-committed",
                        push_id=push.push_id, volume_id=volume.volume_id,
                        reason="the volume is no longer this push's")
            return
        yield backend.api.set_metadata(volume.volume_id, {
            PUSH_KEY: COMPLETE, FORMAT_KEY: FORMATTED})
        log_message(message_type="blockmover:control:push-committed",
                    push_id=push.push_id, dataset_id=push.dataset_id,
                    volume_id=volume.volume_id, site=push.target_site,
                    generation=push.generation)
        yield self._lock.run(self._committed, push)
        service.listing.request()

    @inlineCallbacks
    def _committed(self, push):
        current = self.records.get(push.dataset_id)
        if current is None or current.push_id != push.push_id:
            return
        records = self.records.set(push.dataset_id, current.set(
            phase=push_rules.COMMITTED,
            ended_at=self._reactor.seconds()))
        yield self.save(records)
        self._service.nodes_changed(set(push.nodes))

    def _log(self, before, after):
        for dataset, push in after.items():
            old = before.get(dataset)
            if old is None or old.phase != push.phase or \
                    old.push_id != push.push_id:
                log_message(message_type="blockmover:control:push",
                            push_id=push.push_id, dataset_id=dataset,
                            application=push.application,
                            source=push.source_node,
                            target=push.target_node, phase=push.phase,
                            error=push.error)
