"""
The agent's convergence loop: one short sleep-and-wake loop comparing the
node's desired slice with what is on the node, and running the difference.

Each turn observes the node (in the thread pool), plans (pure), and runs the
planned changes in order in the thread pool, each inside an eliot action,
stopping at the first failure. The loop is the retry mechanism: a change
that failed is retried on a later turn with backoff of its own dataset, so
one failing dataset never stalls the others. A long poll for the desired
slice is always outstanding; a new slice wakes the loop at once, and the
next turn uses it. Nothing here blocks the reactor, and nothing sleeps a
fixed time.
"""

import time
from contextlib import nullcontext

from eliot import Action, log_message, start_action, write_failure
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from agents import changes as C
from agents.report import Reporter
from blockmover.client import ControlError, ControlUnreachable
from blockmover.identity import dataset_id
from blockmover.model import FinishedChange, NodeReport, Progress
from blockmover.poll import Backoff

# Changes after which the control service's volume listing is stale
# (MakeFilesystem marks the volume formatted in its metadata).
BACKEND_CHANGES = (C.CreateVolume, C.AttachVolume, C.DetachVolume,
                   C.GrowVolume, C.MakeFilesystem)

# An unchanged report is sent again after this many seconds, so the control
# service knows the agent is alive.
HEARTBEAT = 30.0


def subject(change, cluster_name):
    """
    The dataset a change belongs to, for its retry backoff: an
    application's changes belong to its volume's dataset.
    """
    if isinstance(change, C.StartApplication):
        return dataset_id(cluster_name, change.application.name)
    if isinstance(change, C.StopApplication):
        return dataset_id(cluster_name, change.name)
    return getattr(change, "dataset_id", C.describe(change))


class _Failing(object):
    """
    A dataset whose last change failed: how often in a row, until when its
    changes are skipped, and why.
    """
    def __init__(self, attempts, retry_at, error):
        self.attempts = attempts
        self.retry_at = retry_at
        self.error = error


class ConvergenceLoop(object):
    """
    Converge one node towards its desired slice, forever, until ``stop()``.

    :param reactor: the reactor (``callLater``, ``seconds``).
    :param client: a ``blockmover.client.ControlClient``.
    :param context: the ``agents.changes.NodeContext`` to run changes with,
        or a blocking callable ``context(desired) -> NodeContext`` (called
        in the thread pool on every turn, so it may build a backend for the
        slice's cluster and cache it).
    :param threadpool: a started ``ThreadPool`` for everything blocking.
    :param node: the node's name (defaults to ``context.node``).
    :param backoff: delays between turns while not converged (and,
        grown to its maximum, between re-checks once converged); reset when
        a new slice arrives.
    :param dataset_backoff: delays before a failed dataset is retried.
    :param poll_timeout: seconds each long poll for the slice may wait.
    """

    def __init__(self, reactor, client, context, threadpool, node=None,
                 backoff=Backoff(initial=0.1, factor=1.5, maximum=5.0),
                 dataset_backoff=Backoff(initial=0.2, factor=2.0,
                                         maximum=30.0),
                 poll_timeout=30.0, observe=None, plan=None,
                 is_converged=None, waiting=None, clock=time.time):
        if observe is None:
            from agents.observe import observe
        if plan is None or is_converged is None or waiting is None:
            from agents import plan as planning
            plan = plan or planning.plan
            is_converged = is_converged or planning.is_converged
            waiting = waiting or planning.waiting
        self._reactor = reactor
        self._client = client
        self._context = context
        self._threadpool = threadpool
        self._node = node if node is not None else context.node
        self._backoff = backoff
        self._dataset_backoff = dataset_backoff
        self._poll_timeout = poll_timeout
        self._observe = observe
        self._plan = plan
        self._is_converged = is_converged
        self._waiting = waiting
        self._clock = clock
        self._reporter = Reporter(reactor, client, self._node)

        self._running = False
        self._desired = None
        self._state = None
        self._failing = {}
        self._finished = []
        self._current = None
        self._since = None
        self._changed_backend = False
        self._last_report = None
        self._last_report_at = 0.0
        self._sleeping = None
        self._polling = None
        self._pausing = None
        self._done = False
        self._waiters = []
        self._follower = None
        self._last_turn = None
        self._trouble = None
        # The deploy's eliot task, continued for the slice it changed: the
        # changes made for that slice are its children.
        self._task = None
        self._task_id = None

    # --- life -------------------------------------------------------------

    def start(self):
        """
        Start converging. :return: a Deferred firing when the loop has
        stopped (after ``stop()``).
        """
        self._running = True
        self._follower = self._follow()
        d = self._converge()
        d.addErrback(write_failure)
        d.addBoth(lambda _: self._follower)
        d.addBoth(lambda _: self._reporter.flush())
        d.addBoth(self._stopped)
        return self.when_stopped()

    def when_stopped(self):
        """
        A Deferred firing with None once the loop has stopped.
        """
        if self._done is True:
            return succeed(None)
        d = Deferred()
        self._waiters.append(d)
        return d

    def _stopped(self, _):
        self._end_task()
        self._reporter.stop()
        self._done = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def stop(self):
        """
        Stop after the change running now (if any) finishes; start no other.
        Applications keep running. :return: a Deferred firing once stopped
        and the last report sent (or given up on).
        """
        if not self._running:
            return self.when_stopped()
        self._running = False
        for d in (self._polling, self._pausing):
            if d is not None and not d.called:
                d.cancel()
        self._wake()
        return self.when_stopped()

    @property
    def desired(self):
        """
        The newest desired slice received, or None.
        """
        return self._desired

    # --- following the desired slice ------------------------------------

    @inlineCallbacks
    def _follow(self):
        failures = 0
        while self._running:
            after = None if self._desired is None \
                else self._desired.generation
            self._polling = self._poll(after)
            try:
                desired = yield self._polling
            except Exception as e:
                if not self._running:
                    break
                self._log_unreachable(e)
                delay = self._backoff.delay(failures)
                failures += 1
                yield self._pause(delay)
                continue
            finally:
                self._polling = None
            failures = 0
            if desired is not None and (
                    self._desired is None
                    or desired.generation != self._desired.generation):
                self._new_slice(desired)

    def _poll(self, after):
        """
        A long poll that ``stop()`` ends at once, whether or not the HTTP
        request below it takes its cancellation promptly.
        """
        request = self._client.get_desired(
            self._node, after=after, timeout=self._poll_timeout)
        poll = Deferred(lambda _: request.cancel())

        def settle(result):
            if not poll.called:
                poll.callback(result)
        request.addBoth(settle)
        return poll

    def _log_unreachable(self, error):
        if isinstance(error, (ControlUnreachable, ControlError)):
            log_message(message_type="blockmover:agent:control-unavailable",
                        node=self._node, reason=str(error))
        else:
            write_failure_of(error)

    def _pause(self, seconds):
        self._pausing = Deferred()
        call = self._reactor.callLater(seconds, self._pausing.callback, None)
        self._pausing.addErrback(lambda f: call.cancel() if call.active()
                                 else None)
        return self._pausing

    def _new_slice(self, desired):
        log_message(message_type="blockmover:agent:desired",
                    node=self._node, generation=desired.generation)
        previous, self._desired = self._desired, desired
        if desired.task_id is not None and desired.task_id != self._task_id:
            self._end_task()
            self._task = Action.continue_task(
                task_id=desired.task_id, action_type="blockmover:agent:converge",
                node=self._node, generation=desired.generation)
            self._task_id = desired.task_id
        # A slice that only refreshes the volume listing is not a new move:
        # keep its progress and retry backoff.
        if previous is None or (previous.datasets, previous.applications) \
                != (desired.datasets, desired.applications):
            self._failing = {}
            self._finished = []
        self._wake()

    def _end_task(self):
        if self._task is not None:
            self._task.finish()
            self._task = None

    # --- sleeping and waking ---------------------------------------------

    def _sleep(self, seconds):
        d = Deferred()
        call = None
        if seconds is not None:
            call = self._reactor.callLater(seconds, self._wake)
        self._sleeping = (d, call)
        return d

    def _wake(self):
        if self._sleeping is None:
            return
        (d, call), self._sleeping = self._sleeping, None
        if call is not None and call.active():
            call.cancel()
        d.callback(None)

    # --- converging ------------------------------------------------------

    @inlineCallbacks
    def _converge(self):
        attempt = 0
        while self._running:
            desired = self._desired
            if desired is None:
                yield self._sleep(None)
                continue
            try:
                progressed = yield self._turn(desired)
            except Exception as e:
                # Looking at the node (or making its backend) failed: say so
                # with the last state seen, and try again with backoff.
                write_failure_of(e)
                self._trouble = "cannot look at the node: %s" % (e,)
                if self._state is not None:
                    self._report(desired, converged=False)
                progressed = False
            if not self._running:
                break
            if self._desired is not desired or progressed:
                attempt = 0
                continue
            yield self._sleep(self._backoff.delay(attempt))
            attempt += 1

    def _in_thread(self, f, *args):
        return deferToThreadPool(self._reactor, self._threadpool, f, *args)

    def _context_for(self, desired):
        if isinstance(self._context, C.NodeContext):
            return self._context
        return self._context(desired)

    @inlineCallbacks
    def _turn(self, desired):
        """
        One turn: observe, plan, run what may run. Fires with True when
        changes ran and all succeeded (worth another turn at once).
        """
        context = yield self._in_thread(self._context_for, desired)
        self._state = yield self._in_thread(self._observe, context, desired)
        self._trouble = None
        if self._is_converged(desired, self._state):
            self._end_task()
            self._failing = {}
            self._set_current(None)
            self._report(desired, converged=True)
            return False
        now = self._reactor.seconds()
        runnable = [
            change for change in self._plan(desired, self._state)
            if self._ready(subject(change, desired.cluster_name), now)]
        if not runnable:
            waits = self._waiting(desired, self._state)
            self._set_current(
                "waiting: " + "; ".join(waits) if waits else None)
            self._report(desired, converged=False)
            return False
        # The same changes planned from the same state again: the control
        # service's listing lags behind them, so do not spin; back off.
        repeat = (self._state, runnable) == self._last_turn
        self._last_turn = (self._state, runnable)
        for change in runnable:
            if not self._running or self._desired is not desired:
                return True
            ok = yield self._run(desired, context, change)
            if not ok:
                return False
        return not repeat

    def _ready(self, key, now):
        failing = self._failing.get(key)
        return failing is None or failing.retry_at <= now

    @inlineCallbacks
    def _run(self, desired, context, change):
        key = subject(change, desired.cluster_name)
        description = C.describe(change)
        self._set_current(description)
        self._report(desired, converged=False)
        started = time.monotonic()
        try:
            yield self._in_thread(_run_change, change, context, self._task)
        except Exception as e:
            attempts = self._failing[key].attempts if key in self._failing \
                else 0
            self._failing[key] = _Failing(
                attempts + 1,
                self._reactor.seconds() + self._dataset_backoff.delay(
                    attempts),
                "%s: %s" % (description, e))
            ok = False
        else:
            self._failing.pop(key, None)
            # A change repeated while the listing lags is shown once.
            if description not in [f.change for f in self._finished]:
                self._finished.append(FinishedChange(
                    change=description,
                    seconds=round(time.monotonic() - started, 3)))
            ok = True
        if isinstance(change, BACKEND_CHANGES):
            self._changed_backend = True
        self._set_current(None)
        self._report(desired, converged=False)
        return ok

    # --- reporting -------------------------------------------------------

    def _set_current(self, current):
        if current != self._current:
            self._current = current
            self._since = None if current is None else self._clock()

    def _report(self, desired, converged):
        progress = Progress(
            converged=converged, generation=desired.generation,
            current=self._current, since=self._since,
            errors=[f.error for f in self._failing.values()]
            + ([self._trouble] if self._trouble else []),
            finished=self._finished)
        report = NodeReport(state=self._state, progress=progress,
                            changed_backend=self._changed_backend)
        now = self._reactor.seconds()
        if report == self._last_report and \
                now - self._last_report_at < HEARTBEAT:
            return
        self._last_report, self._last_report_at = report, now
        self._changed_backend = False
        self._reporter.send(report)


def _run_change(change, context, task=None):
    """
    Run one change, blocking, inside an eliot action naming it: a child of
    ``task`` (the deploy's task, continued) when there is one.
    """
    with (task.context() if task is not None else nullcontext()):
        with start_action(action_type="blockmover:agent:change",
                          node=context.node, change=C.describe(change)):
            change.run(context)


def write_failure_of(error):
    """
    Log an unexpected error with its traceback; the loop carries on.
    """
    write_failure(Failure(error, type(error), error.__traceback__))
