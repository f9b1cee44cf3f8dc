"""
Each node's slice of the desired state, with its generation, and the long
polls of agents waiting for their slice to change.
"""

import json

from twisted.internet.defer import Deferred

from blockmover.model import to_data


# What a wait ended by ``Slices.end_all`` fires with.
ENDED = object()


class SliceChange(object):
    """
    New slices computed but not yet handed out (``Slices.propose``):
    ``counter`` is the counter they need saved first, ``changed`` the nodes
    whose slice changes or goes away, ``updates`` node -> the new
    ``NodeDesired`` (None: it goes away), ``listed_at`` when the listing
    they come from started.
    """

    def __init__(self, version, updates, counter, changed, listed_at):
        self.version = version
        self.updates = updates
        self.counter = counter
        self.changed = changed
        self.listed_at = listed_at


def _same_content(a, b):
    # What makes two slices the same for an agent: not when they were made
    # nor by which task.
    return (a.node == b.node and a.backend_id == b.backend_id
            and a.cluster_name == b.cluster_name
            and a.datasets == b.datasets
            and a.applications == b.applications
            and a.volumes == b.volumes
            and a.release == b.release
            and a.incoming == b.incoming
            and a.outgoing == b.outgoing)


class Slices(object):
    """
    The ``NodeDesired`` of every node, numbered by one global counter: a
    slice whose content changes takes a new generation, so generations only
    grow and an agent asks "anything newer than what I hold?".

    Every slice handed out carries the start of the latest listing
    (``listed_at``), kept once for all of them: a listing that changes no
    slice costs no slice a thing. Each slice is serialized once per
    generation (``serialized``), however many times it is asked for.

    :ivar counter: the highest generation handed out.
    :ivar listed_at: when the listing the slices come from started.
    """

    def __init__(self, counter=0):
        self.counter = counter
        self.listed_at = 0.0
        self._slices = {}
        self._waiters = {}
        # node -> (generation, its JSON without listed_at).
        self._serialized = {}
        # Grows on every commit: a change proposed against another version
        # is refused.
        self._version = 0
        # Grows on every commit that gives a node its first slice or takes
        # one's away: what is worked out from which nodes have slices
        # holds while it stays.
        self.membership = 0

    def get(self, node):
        """
        :return: the node's ``NodeDesired``, or None when it has none.
        """
        return self._current(node)

    def nodes(self):
        """
        The nodes that have a slice.
        """
        return set(self._slices)

    def generation(self, node):
        desired = self._slices.get(node)
        return desired.generation if desired is not None else None

    def update(self, computed, generation=None, tasks=None):
        """
        ``propose`` and ``commit`` at once, for a caller that keeps no
        counter anywhere.

        :return: the set of nodes whose slice changed or went away.
        """
        change = self.propose(computed, generation, tasks)
        self.commit(change)
        return change.changed

    def propose(self, computed, generation=None, tasks=None):
        """
        The ``SliceChange`` replacing every slice with ``computed`` (node ->
        ``NodeDesired``, its generation a placeholder): ``propose_some`` of
        every node computed, the others going away, listed at the latest
        ``listed_at`` of ``computed``.
        """
        listed_at = max([d.listed_at for d in computed.values()]
                        + [self.listed_at])
        return self.propose_some(computed, set(self._slices) - set(computed),
                                 listed_at, generation, tasks)

    def propose_some(self, computed, removed=(), listed_at=None,
                     generation=None, tasks=None):
        """
        The ``SliceChange`` replacing the slices of the nodes in
        ``computed`` (node -> ``NodeDesired``, its generation a
        placeholder) and removing those of ``removed``, handing nothing
        out yet; every other slice stays as it is. Slices whose content
        differs from before take a new generation: ``generation`` when
        given (which must exceed the counter), else the counter plus one.
        Unchanged ones keep theirs. ``tasks`` (node -> serialized eliot
        task id) stamps changed slices with the task that changed them;
        unchanged ones keep theirs. ``listed_at`` (None: as now) is when
        the listing they come from started. A slice computed with the
        generation, task and ``listed_at`` it takes is handed out as it
        is.
        """
        if generation is not None and generation <= self.counter:
            raise ValueError("generation %d does not exceed %d"
                             % (generation, self.counter))
        new_generation = (generation if generation is not None
                          else self.counter + 1)
        if listed_at is None:
            listed_at = self.listed_at
        tasks = tasks or {}
        changed = set()
        updates = {}
        for node, desired in computed.items():
            old = self._slices.get(node)
            if old is not None and _same_content(old, desired):
                continue
            task_id = tasks.get(node)
            if (desired.generation, desired.task_id, desired.listed_at) != \
                    (new_generation, task_id, listed_at):
                desired = desired.set(generation=new_generation,
                                      task_id=task_id, listed_at=listed_at)
            updates[node] = desired
            changed.add(node)
        for node in removed:
            if node in self._slices and node not in computed:
                updates[node] = None
                changed.add(node)
        counter = (new_generation if changed or generation is not None
                   else self.counter)
        return SliceChange(self._version, updates, counter, changed,
                           listed_at)

    def commit(self, change):
        """
        Hand out ``change``'s slices: take its counter and wake whoever waits
        for a changed or removed slice. The caller saves the counter first,
        so a restart never hands out a generation twice.

        :raise ValueError: the slices changed since ``change`` was proposed.
        """
        if change.version != self._version:
            raise ValueError("the slices changed since this change was "
                             "proposed; propose it again")
        self._version += 1
        if any((desired is None) != (node not in self._slices)
               for node, desired in change.updates.items()):
            self.membership += 1
        self.counter = change.counter
        self.listed_at = change.listed_at
        for node, desired in change.updates.items():
            self._serialized.pop(node, None)
            if desired is None:
                del self._slices[node]
            else:
                self._slices[node] = desired
        for node in change.changed:
            self._wake(node)

    def touch(self, listed_at):
        """
        Note that a listing taken at ``listed_at`` found nothing new: every
        slice takes that ``listed_at`` and keeps its generation; nothing
        else is done.
        """
        self.listed_at = listed_at

    def serialized(self, desired):
        """
        ``desired`` (a slice handed out by ``get`` or ``wait``) as the JSON
        bytes of ``to_data``: made once per node and generation, its
        ``listed_at`` added to that on every call.
        """
        made = self._serialized.get(desired.node)
        if made is None or made[0] != desired.generation:
            data = to_data(desired)
            del data["listed_at"]
            made = (desired.generation,
                    json.dumps(data, sort_keys=True).encode("utf-8"))
            if self._slices.get(desired.node) is not None and \
                    self._slices[desired.node].generation == \
                    desired.generation:
                self._serialized[desired.node] = made
        # The object's last key: its closing brace becomes listed_at's.
        return b'%s, "listed_at": %s}' % (
            made[1][:-1], json.dumps(desired.listed_at).encode("ascii"))

    def end_all(self):
        """
        Answer every wait with ``ENDED``: nothing new for now (a replica
        that starts leading, whose own slices are numbered anew).
        """
        waiters, self._waiters = self._waiters, {}
        for entries in waiters.values():
            for _, d in list(entries):
                d.callback(ENDED)

    def cancel_all(self):
        """
        End every wait (the service stops).
        """
        waiters, self._waiters = self._waiters, {}
        for entries in waiters.values():
            for _, d in list(entries):
                d.cancel()

    def wait(self, node, after):
        """
        :return: a Deferred that fires with the node's slice once its
            generation exceeds ``after`` (at once if it already does), or
            with None if the node's slice goes away. Cancelling it stops
            the wait and leaves nothing behind.
        """
        desired = self._slices.get(node)
        if desired is not None and (after is None
                                    or desired.generation > after):
            d = Deferred()
            d.callback(self._current(node))
            return d
        waiters = self._waiters.setdefault(node, [])

        def cancel(d):
            waiters.remove(entry)
            if not waiters and self._waiters.get(node) is waiters:
                del self._waiters[node]

        d = Deferred(canceller=cancel)
        entry = (after, d)
        waiters.append(entry)
        return d

    def waiting(self):
        """
        How many long polls wait now.
        """
        return sum(len(w) for w in self._waiters.values())

    def _current(self, node):
        """
        The node's slice with the latest ``listed_at`` (kept so for the
        next ask), or None.
        """
        desired = self._slices.get(node)
        if desired is not None and desired.listed_at != self.listed_at:
            desired = desired.set(listed_at=self.listed_at)
            self._slices[node] = desired
        return desired

    def _wake(self, node):
        waiters = self._waiters.get(node)
        if not waiters:
            return
        desired = self._current(node)
        remaining = []
        ready = []
        for after, d in waiters:
            if desired is None or after is None or desired.generation > after:
                ready.append(d)
            else:
                remaining.append((after, d))
        waiters[:] = remaining
        if not remaining:
            del self._waiters[node]
        for d in ready:
            d.callback(desired)
