"""
What the control service decided about failed nodes, kept on disk so that a
restarted service neither fences nor decides twice: each node's fence
attempts and their results, an operator's fence request or confirm-down
(who and when), the failovers decided, and the nodes removed from the
configuration that still hold volumes.

One JSON file in the state directory (``failures.json``), replaced
atomically like the configuration (``blockmover.control.store``): a crash
at any point leaves the records before a change or after it, never a mix.
Every record is written before what it allows is done: a fence is recorded
as started before it is tried, a failover before any slice shows it.
"""


from pyrsistent import PClass, field, pmap_field, pvector_field

from blockmover.control.recordfile import RecordFile
from blockmover.model import optional, optional_record, to_data

FORMAT_VERSION = 1
FILENAME = "failures.json"

# What a fence attempt came to.
STARTED = "started"
FENCED = "fenced"
FAILED = "failed"

# Who asked for a fence the service started by itself.
BY_SERVICE = "control service"

# The ended fence attempts of a node kept, the latest: enough to tell a
# person what was tried, bounded for a fence device that fails for days.
HISTORY = 20


class FenceAttempt(PClass):
    """
    The last fence of a node: its ``result`` (``STARTED`` while it runs,
    and after a crash in the middle; ``FENCED``; ``FAILED``), the
    ``method`` used, who asked (``BY_SERVICE`` or an operator's identity),
    how many tries failed in a row (``failures``), when it started and
    ended (service clock), and the last error for a person.
    """
    result = field(type=str, mandatory=True)
    method = field(type=str, mandatory=True)
    requested_by = field(type=str, mandatory=True)
    started_at = field(type=float, mandatory=True)
    finished_at = optional(float)
    failures = field(type=int, mandatory=True, initial=0)
    error = optional(str)


class Confirmation(PClass):
    """
    An operator's word that a node is down (``blockmover node
    confirm-down``): who, by their certificate, and when.
    """
    by = field(type=str, mandatory=True)
    at = field(type=float, mandatory=True)


class NodeRecord(PClass):
    """
    What is recorded of one node: its last fence, an operator's
    confirmation that it is down, ``down_since`` (when it was last proven
    down by either, None before: nothing moves off a node before it is
    set) and ``returned_at`` (when it was heard from again after that:
    the proof no longer holds). The record goes once the node has come
    back and holds nothing it should not.
    """
    fence = optional_record(FenceAttempt)
    confirmed_down = optional_record(Confirmation)
    down_since = optional(float)
    returned_at = optional(float)
    # The fence attempts that ended before ``fence``, oldest first, at
    # most ``HISTORY``.
    history = pvector_field(FenceAttempt)

    def with_fence(self, attempt):
        """
        This record with ``attempt`` as its fence, the fence it replaces
        kept in ``history`` if that one had ended (one that had not is the
        same attempt, now ended).
        """
        history = self.history
        if self.fence is not None and self.fence.finished_at is not None:
            history = history.append(self.fence)[-HISTORY:]
        return self.set(fence=attempt, history=history)

    def proven_down(self):
        """
        Whether the record proves the node down: a proof, and the node not
        heard from since.
        """
        return self.down_since is not None and (
            self.returned_at is None or self.returned_at < self.down_since)


class FailoverDecision(PClass):
    """
    The control service moved ``application`` from ``from_node`` (fenced
    or confirmed down) to ``to_node``, at ``decided_at``. It holds while
    the configuration still places the application on ``from_node``.
    """
    from_node = field(type=str, mandatory=True)
    to_node = field(type=str, mandatory=True)
    decided_at = field(type=float, mandatory=True)


class FailureRecords(PClass):
    """
    Everything ``failures.json`` holds: node records by node name,
    failover decisions by application, and the backend ids of nodes
    removed from the configuration that may still hold volumes.
    """
    nodes = pmap_field(str, NodeRecord)
    failovers = pmap_field(str, FailoverDecision)
    removed = pmap_field(str, str)


class FailureStore(object):
    """
    ``FailureRecords`` in ``<state_dir>/failures.json``. Blocking file I/O:
    ``save`` runs off the reactor, ``load`` once at the service's start.
    """
    # The record it keeps, in metrics.
    name = "failures"


    def __init__(self, state_dir):
        # Never guessed around: these records say which nodes are proven
        # down, and a wrong guess moves a volume off a live one.
        self._file = RecordFile(
            state_dir, FILENAME, FORMAT_VERSION, "node failure records",
            "restore it from a backup, or remove it to forget every fence, "
            "confirmation and failover (then confirm failed nodes down "
            "again)")
        self.state_dir = state_dir
        self.path = self._file.path

    def load(self):
        """
        :return: the stored ``FailureRecords``, empty ones if none yet.
        :raise StoreError: the file is unreadable or malformed.
        """
        records = self._file.load(lambda data: FailureRecords.create({
            "nodes": data["nodes"], "failovers": data["failovers"],
            "removed": data.get("removed", {})}))
        return records if records is not None else FailureRecords()

    def save(self, records):
        """
        Replace the stored records with ``records``, durably.

        :raise StoreError: they could not be saved; the old ones stay.
        """
        self._file.save(to_data(records))
