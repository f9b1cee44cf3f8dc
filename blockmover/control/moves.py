"""
The moves of applications the control service follows, from the
configuration that changed where an application runs to the application
ready on its new node: the one place that sees both sides of a move (no
agent does), from the nodes' reports.

A move starts when a configuration is taken that places an application on
another node than before: ``move`` from one node to another, ``deploy``
from no node to one, ``remove`` from one node to none. Its phases are the
changes the two nodes make for the application's dataset: the source's
``stop``, ``unmount``, ``detach``, the destination's ``attach``,
``mount``, ``start``, ``ready`` (and ``create`` and ``mkfs`` for a new
volume), each as long as the agent that ran it measured it. Between them
the move is ``waiting`` (for a node to take its new slice, for the listing
to show the volume detached...). A change that failed and is being retried
keeps the move in that change's phase.

A move ends when its destination reports the application ready (for a
``remove``, when the source reports it stopped and its volume gone), or
when a later configuration places the application again (the new move
replaces it). Moves are kept in memory: a restarted control service follows
only the moves that start after it.

Nodes report their progress against a generation of their slice; only
reports of the generation the move gave the node, or a later one, count
for it. Times are the control service's own clock (when it saw a phase
begin), so the nodes' clocks need not agree with it.
"""

from blockmover.identity import dataset_id

MOVE = "move"
DEPLOY = "deploy"
REMOVE = "remove"
# The phase of a move while neither node runs or retries a change of it.
WAITING = "waiting"


class Move(object):
    """
    One application's move in progress.

    :ivar kind: ``MOVE``, ``DEPLOY`` or ``REMOVE``.
    :ivar generations: node -> the slice generation the move gave it.
    :ivar phase: the phase it is in now, since ``phase_since``.
    """

    def __init__(self, application, dataset, source, destination,
                 generations, started):
        self.application = application
        self.dataset_id = dataset
        self.source = source
        self.destination = destination
        if source is None:
            self.kind = DEPLOY
        elif destination is None:
            self.kind = REMOVE
        else:
            self.kind = MOVE
        self.generations = generations
        self.started = started
        self.phase = WAITING
        self.phase_since = started
        # node -> the kind of change it runs or retries for the move now.
        self.acting = {}
        # (node, kind) of the phases already measured.
        self.measured = set()

    def nodes(self):
        return [node for node in (self.source, self.destination)
                if node is not None]


class MoveWatch(object):
    """
    The moves in progress, measured into ``phases`` (a histogram labelled
    by kind and phase) and ``totals`` (a histogram labelled by kind).
    """

    def __init__(self, phases, totals):
        self._phases = phases
        self._totals = totals
        self._moves = {}
        # node -> the applications whose moves it takes part in: a report
        # looks only at its node's moves, however many move at once.
        self._by_node = {}

    def placed(self, before, after, generation_of, now):
        """
        A configuration was taken at ``now``: ``before`` and ``after`` are
        the previous and the new ``Deployment`` (``before`` None for the
        first), ``generation_of(node)`` the generation of ``node``'s slice
        now. Every application placed otherwise starts a move, replacing
        the one it was in.
        """
        old = dict(before.placement) if before is not None else {}
        new = dict(after.placement)
        for application in sorted(set(old) | set(new)):
            source, destination = old.get(application), new.get(application)
            if source == destination:
                continue
            generations = {node: generation_of(node)
                           for node in (source, destination)
                           if node is not None}
            self._end(application)
            move = Move(application,
                        dataset_id(after.cluster_name, application),
                        source, destination, generations, now)
            self._moves[application] = move
            for node in move.nodes():
                self._by_node.setdefault(node, set()).add(application)

    def reported(self, node, report, now):
        """
        Node ``node`` sent ``report`` (a ``NodeReport``) at ``now``: measure
        the phases it finished, note the one it is in, and end the moves it
        completes.
        """
        for application in sorted(self._by_node.get(node, ())):
            move = self._moves[application]
            generation = move.generations.get(node)
            if generation is None or report.progress.generation < generation:
                continue
            progress = report.progress
            for finished in progress.finished:
                step = finished.step
                if step.dataset_id != move.dataset_id or \
                        (node, step.kind) in move.measured:
                    continue
                move.measured.add((node, step.kind))
                self._phases.labels(move.kind, step.kind).observe(
                    finished.seconds)
            acting = [r.step.kind for r in progress.running
                      if r.step.dataset_id == move.dataset_id]
            acting += [e.step.kind for e in progress.errors
                       if e.step.dataset_id == move.dataset_id]
            move.acting[node] = acting[0] if acting else None
            if _completes(move, node, report.state):
                self._totals.labels(move.kind).observe(now - move.started)
                self._end(application)
                continue
            phase = (move.acting.get(move.destination)
                     or move.acting.get(move.source) or WAITING)
            if phase != move.phase:
                move.phase, move.phase_since = phase, now

    def _end(self, application):
        move = self._moves.pop(application, None)
        if move is None:
            return
        for node in move.nodes():
            applications = self._by_node[node]
            applications.discard(application)
            if not applications:
                del self._by_node[node]

    def in_progress(self):
        """
        The moves in progress (``Move``), by application.
        """
        return dict(self._moves)


def _completes(move, node, state):
    """
    Whether ``node``'s ``state`` (a ``NodeState``) ends ``move``: the
    application ready on its destination, or (for a remove) stopped on
    its source with its volume let go.
    """
    if move.destination is not None:
        if node != move.destination:
            return False
        running = state.running.get(move.application)
        return running is not None and running.ready
    return (node == move.source and move.application not in state.running
            and move.dataset_id not in state.mounts
            and move.dataset_id not in state.devices)
