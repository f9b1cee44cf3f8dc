"""
Each node's slice of the desired state, with its generation, and the long
polls of agents waiting for their slice to change.
"""

from twisted.internet.defer import Deferred


class SliceChange(object):
    """
    New slices computed but not yet handed out (``Slices.propose``):
    ``counter`` is the counter they need saved first, ``changed`` the nodes
    whose slice changes or goes away.
    """

    def __init__(self, base, slices, counter, changed):
        self.base = base
        self.slices = slices
        self.counter = counter
        self.changed = changed


def _content(desired):
    # What makes two slices the same for an agent: not when they were made.
    return desired.set(generation=0, listed_at=0.0, task_id=None)


class Slices(object):
    """
    The ``NodeDesired`` of every node, numbered by one global counter: a
    slice whose content changes takes a new generation, so generations only
    grow and an agent asks "anything newer than what I hold?".

    :ivar counter: the highest generation handed out.
    """

    def __init__(self, counter=0):
        self.counter = counter
        self._slices = {}
        self._waiters = {}

    def get(self, node):
        """
        :return: the node's ``NodeDesired``, or None when it has none.
        """
        return self._slices.get(node)

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
        ``NodeDesired``, its generation a placeholder), handing nothing out
        yet. Slices whose content differs from before take a new
        generation: ``generation`` when given (which must exceed the
        counter), else the counter plus one. Unchanged ones keep theirs but
        take the new ``listed_at``. Nodes no longer named lose their slice.
        ``tasks`` (node -> serialized eliot task id) stamps changed slices
        with the task that changed them; unchanged ones keep theirs.
        """
        if generation is not None and generation <= self.counter:
            raise ValueError("generation %d does not exceed %d"
                             % (generation, self.counter))
        new_generation = (generation if generation is not None
                          else self.counter + 1)
        changed = set()
        slices = {}
        for node, desired in computed.items():
            old = self._slices.get(node)
            if old is not None and _content(old) == _content(desired):
                slices[node] = desired.set(generation=old.generation,
                                           task_id=old.task_id)
            else:
                slices[node] = desired.set(
                    generation=new_generation,
                    task_id=(tasks or {}).get(node))
                changed.add(node)
        changed |= set(self._slices) - set(slices)
        counter = (new_generation if changed or generation is not None
                   else self.counter)
        return SliceChange(self._slices, slices, counter, changed)

    def commit(self, change):
        """
        Hand out ``change``'s slices: take its counter and wake whoever waits
        for a changed or removed slice. The caller saves the counter first,
        so a restart never hands out a generation twice.

        :raise ValueError: the slices changed since ``change`` was proposed.
        """
        if change.base is not self._slices:
            raise ValueError("the slices changed since this change was "
                             "proposed; propose it again")
        self.counter = change.counter
        self._slices = change.slices
        for node in change.changed:
            self._wake(node)

    def touch(self, listed_at):
        """
        Note that a listing taken at ``listed_at`` found nothing new: every
        slice takes that ``listed_at`` and keeps its generation. (A change
        proposed before cannot be committed after.)
        """
        self._slices = {node: desired.set(listed_at=listed_at)
                        for node, desired in self._slices.items()}

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
            d.callback(desired)
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

    def _wake(self, node):
        waiters = self._waiters.get(node)
        if not waiters:
            return
        desired = self._slices.get(node)
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
