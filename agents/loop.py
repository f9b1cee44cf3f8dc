"""
The agent's convergence loop: one worker per dataset, each a short
sleep-and-wake loop comparing its dataset's desired state with what is on
the node, and running the difference.

A worker observes its own dataset (in the thread pool), plans it (pure,
``agents.plan.dataset_plan``) and runs its changes in order in the thread
pool, each inside an eliot action, stopping at the first failure. The
workers run side by side, never two changes of one dataset at once, so a
slow attach, a hung command or a long device wait of one dataset never
delays another. A worker is the retry mechanism of its dataset: a change
that failed is retried after a backoff of its own.

A worker wakes at once when its change ends, when a new slice arrives
(the long poll for it is always outstanding), when its backoff ends, or
when its application exits (a pidfd the reactor watches). Nothing here
blocks the reactor, and nothing sleeps a fixed time.
"""

import os
import threading
import time
from contextlib import nullcontext

from eliot import Action, log_message, start_action, write_failure
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from agents.changes import NodeContext
from agents.identity import NodeIdentity, SliceRefused, check_slice
from agents.metrics import DESIRED, REPORT, AgentMetrics
from agents.report import Reporter
from agents.runtime import IApplicationExits
from blockmover.client import ControlError, ControlUnreachable
from blockmover.identity import dataset_id
from blockmover.model import (
    FinishedStep, NodeReport, NodeState, Progress, RunningStep, StepError,
)
from blockmover.poll import Backoff

# An unchanged report is sent again after this many seconds, so the control
# service knows the agent is alive.
HEARTBEAT = 30.0
# How long ``stop()`` lets the changes running at that moment finish. Every
# change is safe to cut short (it is resumed on restart, as after a crash),
# so a change waiting on a slow cloud does not hold the agent's stop.
STOP_GRACE = 5.0


class _DaemonThread(threading.Thread):
    # A change still running when the agent stops must not keep the
    # process alive: see STOP_GRACE.
    def __init__(self, *args, **kwargs):
        threading.Thread.__init__(self, *args, daemon=True, **kwargs)


class AgentThreadPool(ThreadPool):
    """
    The agent's thread pool: room for one blocking change per dataset at
    once, in daemon threads.
    """
    threadFactory = _DaemonThread


class Alarm(object):
    """
    One wakeable sleep: ``sleep(seconds)`` fires after ``seconds`` (None:
    only when woken) or at ``wake()``, whichever comes first. A wake while
    nobody sleeps is kept, so the next sleep returns at once.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._sleeping = None
        self._pending = False

    def sleep(self, seconds=None):
        if self._pending:
            self._pending = False
            return succeed(None)
        d = Deferred()
        call = None
        if seconds is not None:
            call = self._reactor.callLater(max(0.0, seconds), self._fire)
        self._sleeping = (d, call)
        return d

    def wake(self):
        if self._sleeping is None:
            self._pending = True
            return
        self._fire()

    def _fire(self):
        if self._sleeping is None:
            return
        (d, call), self._sleeping = self._sleeping, None
        if call is not None and call.active():
            call.cancel()
        d.callback(None)


class ExitWatch(object):
    """
    Wakes ``alarm`` once the process behind ``fd`` (a pidfd) exits: the
    reactor watches the descriptor, so an application's exit is noticed
    when it happens. Closed by ``close()`` or after it fired.
    """

    def __init__(self, reactor, fd, alarm):
        self._reactor = reactor
        self._fd = fd
        self._alarm = alarm
        reactor.addReader(self)

    def fileno(self):
        return self._fd

    def logPrefix(self):
        return "blockmover-agent-exit-watch"

    def doRead(self):
        self.close()
        self._alarm.wake()

    def connectionLost(self, reason):
        self.close()

    def close(self):
        if self._fd is None:
            return
        self._reactor.removeReader(self)
        os.close(self._fd)
        self._fd = None

    @property
    def open(self):
        return self._fd is not None


class DatasetWorker(object):
    """
    What the loop knows of one dataset's worker: the change it runs now,
    why the dataset waits, its last error and retry backoff, and whether
    it found nothing to do on the current slice.
    """

    def __init__(self, dataset_id, alarm):
        self.dataset_id = dataset_id
        self.alarm = alarm
        self.running = None        # RunningStep
        self.waiting = []          # [Waiting]
        self.error = None          # StepError of the last failure in a row
        self.retry_at = None       # reactor seconds
        self.attempts = 0
        self.settled_on = None     # the generation it found nothing to do on
        self.trouble = None        # why its dataset could not be looked at
        self.last_run = None       # (observed, changes) last run in full
        # How many times last_run came back unchanged and was waited on,
        # and whether it was, since it last ran.
        self.repeats = 0
        self.waited = False
        self.exit_watch = None
        self.done = False

    def failed(self, change, error, reactor_now, wall_now, backoff):
        delay = backoff.delay(self.attempts)
        self.attempts += 1
        self.retry_at = reactor_now + delay
        self.error = StepError(
            step=change.step, kind=type(error).__name__,
            message="%s: %s" % (change.describe(), error),
            attempts=self.attempts, retry_at=float(wall_now + delay))

    def succeeded(self):
        self.attempts = 0
        self.retry_at = None
        self.error = None

    def close_exit_watch(self):
        if self.exit_watch is not None:
            self.exit_watch.close()
            self.exit_watch = None


class ConvergenceLoop(object):
    """
    Converge one node towards its desired slice, one worker per dataset,
    forever, until ``stop()``.

    :param reactor: the reactor (``callLater``, ``seconds``, ``addReader``).
    :param client: a ``blockmover.client.ControlClient``.
    :param context: the ``agents.changes.NodeContext`` to run changes with,
        or a blocking callable ``context(desired) -> NodeContext`` (called
        in the thread pool for every new slice, so it may build a backend
        for the slice's cluster and cache it).
    :param threadpool: a started ``ThreadPool`` for everything blocking,
        with a thread for every dataset that may run a change at once.
    :param node: the node's name (defaults to ``context.node``).
    :param recheck: delays between looks at a dataset while it waits, and
        (grown to its maximum) while it has nothing to do.
    :param dataset_backoff: delays before a dataset's failed change is
        retried.
    :param poll_timeout: seconds each long poll for the slice may wait.
    :param observe, dataset_plan, dataset_waiting, datasets: the look at
        the node and the planner (``agents.observe``, ``agents.plan``);
        parameters so that tests can drive the loop.
    :param metrics: the ``agents.metrics.AgentMetrics`` to count in (new
        ones of its own by default).
    :param on_slice: called with each slice taken (on the reactor), before
        anything is done with it.
    """

    def __init__(self, reactor, client, context, threadpool, node=None,
                 recheck=Backoff(initial=0.1, factor=1.5, maximum=30.0),
                 dataset_backoff=Backoff(initial=0.2, factor=2.0,
                                         maximum=30.0),
                 poll_timeout=30.0, observe=None, dataset_plan=None,
                 dataset_waiting=None, datasets=None, clock=time.time,
                 metrics=None, on_slice=None):
        # Late imports: the planner and the look at the node pull in the
        # filesystem tools, which tests of the loop replace.
        if observe is None:
            from agents.observe import observe
        if None in (dataset_plan, dataset_waiting, datasets):
            from agents import plan as planning
            dataset_plan = dataset_plan or planning.dataset_plan
            dataset_waiting = dataset_waiting or planning.dataset_waiting
            datasets = datasets or planning.datasets
        self._reactor = reactor
        self._client = client
        self._context_source = context
        self._threadpool = threadpool
        self._node = node if node is not None else context.node
        self._recheck = recheck
        self._dataset_backoff = dataset_backoff
        self._poll_timeout = poll_timeout
        self._observe = observe
        self._dataset_plan = dataset_plan
        self._dataset_waiting = dataset_waiting
        self._datasets = datasets
        self._clock = clock
        self._on_slice = on_slice
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.metrics.watch(self)
        self._reporter = Reporter(
            reactor, client, self._node,
            on_retry=lambda: self.metrics.control_retry(REPORT))

        self._running = False
        self._desired = None
        self._context = None
        self._state = None
        self._workers = {}
        self._finished = []
        self._changed_backend = False
        self._last_report = None
        self._last_report_at = 0.0
        self._polling = None
        self._pausing = None
        self._heartbeat = None
        self._discovery = Alarm(reactor)
        self._discovered = None    # the generation the datasets were found on
        self._trouble = None
        self._in_flight = 0
        self._stopped_deferreds = []
        self._done = False
        self._all_ended = None
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
        self._follower.addErrback(write_failure)
        self._discoverer = self._discover()
        self._discoverer.addErrback(write_failure)
        self._heartbeat = self._reactor.callLater(HEARTBEAT, self._beat)
        return self.when_stopped()

    def _beat(self):
        # The control service hears from a quiet node every HEARTBEAT.
        self._report()
        if self._running:
            self._heartbeat = self._reactor.callLater(HEARTBEAT, self._beat)

    def when_stopped(self):
        """
        A Deferred firing with None once the loop has stopped.
        """
        if self._done:
            return succeed(None)
        d = Deferred()
        self._stopped_deferreds.append(d)
        return d

    def stop(self):
        """
        Start no other change; let those running now finish for up to
        ``STOP_GRACE`` seconds (they resume on restart if cut short).
        Applications keep running. :return: a Deferred firing once stopped
        and the last report sent (or given up on).
        """
        if not self._running:
            return self.when_stopped()
        self._running = False
        if self._heartbeat.active():
            self._heartbeat.cancel()
        for d in (self._polling, self._pausing):
            if d is not None and not d.called:
                d.cancel()
        self._discovery.wake()
        for worker in list(self._workers.values()):
            worker.close_exit_watch()
            worker.alarm.wake()
        self._wait_for_workers()
        return self.when_stopped()

    @property
    def changes_in_flight(self):
        """
        How many changes run in the thread pool now; after ``stop()``, the
        ones cut short by it.
        """
        return self._in_flight

    def _wait_for_workers(self):
        """
        Stop once no change runs any more, or ``STOP_GRACE`` seconds from
        now, whichever comes first.
        """
        settled = Deferred()
        self._all_ended = settled
        grace = self._reactor.callLater(STOP_GRACE, self._changes_ended)
        if not self._in_flight:
            self._changes_ended()

        def ended(_):
            if grace.active():
                grace.cancel()
            if self._in_flight:
                log_message(message_type="blockmover:agent:stopped-mid-change",
                            node=self._node, changes=self._in_flight)
            return self._follower
        settled.addCallback(ended)
        settled.addBoth(lambda _: self._reporter.flush())
        settled.addBoth(self._stopped)

    def _changes_ended(self):
        settled, self._all_ended = self._all_ended, None
        if settled is not None:
            settled.callback(None)

    def _stopped(self, _):
        self._end_task()
        self._reporter.stop()
        self._done = True
        waiters, self._stopped_deferreds = self._stopped_deferreds, []
        for d in waiters:
            d.callback(None)

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
                self.metrics.control_retry(DESIRED)
                delay = self._recheck.delay(failures)
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
        # What it must give up and why is in the slice itself: say it.
        log_message(message_type="blockmover:agent:desired",
                    node=self._node, generation=desired.generation,
                    release=list(desired.release))
        previous, self._desired = self._desired, desired
        if self._on_slice is not None:
            try:
                self._on_slice(desired)
            except Exception as e:
                write_failure_of(e)
                self._trouble = "cannot take the slice's pushes: %s" % (e,)
        if desired.task_id is not None and desired.task_id != self._task_id:
            self._end_task()
            self._task = Action.continue_task(
                task_id=desired.task_id,
                action_type="blockmover:agent:converge",
                node=self._node, generation=desired.generation)
            self._task_id = desired.task_id
        # A slice that only refreshes the volume listing is not a new move:
        # keep its progress and retry backoff.
        if previous is None or (previous.datasets, previous.applications) \
                != (desired.datasets, desired.applications):
            self._finished = []
            for worker in list(self._workers.values()):
                worker.succeeded()
        if self._needs_discovery(previous, desired):
            self._discovery.wake()
            return
        # The same node: only the workers whose part of the slice changed
        # have anything new to look at, and datasets new to this node get
        # a worker that looks at them.
        self._discovered = desired.generation
        before, after = _parts(previous), _parts(desired)
        for worker in list(self._workers.values()):
            d = worker.dataset_id
            if before(d) != after(d) or worker.settled_on is None:
                worker.alarm.wake()
            else:
                worker.settled_on = desired.generation
        for dataset in sorted(_named(desired) - set(self._workers)):
            self._start_worker(dataset)
        self._report()

    def _needs_discovery(self, previous, desired):
        """
        Whether ``desired`` needs a new look at the whole node (and its
        context made, which checks that the slice is this node's): the
        first slice, another node, cluster or backend id than the slice
        accepted before, or a look that has not ended.
        """
        return (previous is None or self._context is None
                or self._discovered != previous.generation
                or _identity(previous) != _identity(desired))

    def _end_task(self):
        if self._task is not None:
            self._task.finish()
            self._task = None

    # --- finding the datasets ----------------------------------------------

    @inlineCallbacks
    def _discover(self):
        """
        For every new slice: make its context, look at the whole node, and
        give every dataset that matters a worker.
        """
        attempt = 0
        while self._running:
            desired = self._desired
            if desired is None or (desired.generation == self._discovered
                                   and self._trouble is None):
                yield self._discovery.sleep(None)
                continue
            try:
                context = yield self._in_thread(self._context_for, desired)
                state = yield self._in_thread(self._observe, context,
                                              desired)
            except SliceRefused as e:
                # Not this node's: nothing acts on it; a new slice is looked
                # at again, this one after a while.
                log_message(message_type="blockmover:agent:slice-refused",
                            node=self._node, reason=str(e))
                self._trouble = str(e)
                self._report()
                yield self._discovery.sleep(self._recheck.delay(attempt))
                attempt += 1
                continue
            except Exception as e:
                # Looking at the node (or making its backend) failed: say so
                # with the last state seen, and try again with backoff.
                write_failure_of(e)
                self._trouble = "cannot look at the node: %s" % (e,)
                self._report()
                yield self._discovery.sleep(self._recheck.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            self._trouble = None
            if not self._running:
                break
            self._context = context
            self._state = state
            self._discovered = desired.generation
            for worker in list(self._workers.values()):
                worker.alarm.wake()
            for dataset in self._datasets(desired, state):
                if dataset not in self._workers:
                    self._start_worker(dataset)
            self._report()

    def _context_for(self, desired):
        source = self._context_source
        if isinstance(source, NodeContext):
            check_slice(NodeIdentity(node=source.node,
                                     cluster=source.cluster_name,
                                     instance_id=source.backend_id), desired)
            return source
        return source(desired)

    def _in_thread(self, f, *args):
        return deferToThreadPool(self._reactor, self._threadpool, f, *args)

    # --- the workers ---------------------------------------------------------

    def _start_worker(self, dataset):
        worker = DatasetWorker(dataset, Alarm(self._reactor))
        self._workers[dataset] = worker
        d = self._work(worker)
        d.addErrback(write_failure)

        def ended(_):
            worker.close_exit_watch()
            if self._workers.get(dataset) is worker:
                del self._workers[dataset]
            self._report()
        d.addBoth(ended)

    def _merge(self, dataset, seen):
        """
        The node's state with ``seen`` (a look at ``dataset`` alone) in it.
        """
        state = self._state
        devices, mounts = state.devices, state.mounts
        incoming = state.incoming
        devices = (devices.set(dataset, seen.devices[dataset])
                   if dataset in seen.devices else devices.discard(dataset))
        mounts = (mounts.set(dataset, seen.mounts[dataset])
                  if dataset in seen.mounts else mounts.discard(dataset))
        incoming = (incoming.set(dataset, seen.incoming[dataset])
                    if dataset in seen.incoming
                    else incoming.discard(dataset))
        self._state = state.set(devices=devices, mounts=mounts,
                                incoming=incoming, running=seen.running,
                                pushes=seen.pushes)
        return self._state

    def current(self):
        """
        ``(desired, state)``: the slice held and the node as last seen
        (either None before the first). Values: any thread may read them.
        """
        return self._desired, self._state

    def pushes_progressed(self, pushes):
        """
        ``pushes`` (``{dataset: PushProgress}``) changed while a round
        runs: report them. On the reactor.
        """
        if self._state is not None and self._state.pushes != pushes:
            self._state = self._state.set(pushes=pushes)
            self._report()

    @inlineCallbacks
    def _work(self, worker):
        dataset = worker.dataset_id
        idle = 0
        while self._running:
            desired, context = self._desired, self._context
            if context is None or self._discovered != desired.generation:
                # A new slice is being looked at: its context comes first.
                yield worker.alarm.sleep(None)
                continue
            if worker.retry_at is not None and \
                    worker.retry_at > self._reactor.seconds():
                yield worker.alarm.sleep(
                    worker.retry_at - self._reactor.seconds())
                continue
            try:
                seen = yield self._in_thread(
                    self._observe, context, desired, [dataset],
                    [device.path for d, device in self._state.devices.items()
                     if d != dataset])
            except Exception as e:
                write_failure_of(e)
                worker.trouble = "cannot look at dataset %s: %s" % (dataset,
                                                                   e)
                self._report()
                yield worker.alarm.sleep(self._recheck.delay(idle))
                idle += 1
                continue
            worker.trouble = None
            if not self._running:
                break
            if self._desired is not desired:
                # A slice came while we looked. The look holds for it when
                # it names the same volume (the look found devices by it).
                if _volume_id(self._desired, dataset) != \
                        _volume_id(desired, dataset) or \
                        self._discovered != self._desired.generation:
                    continue
                desired = self._desired
            state = self._merge(dataset, seen)
            changes = self._dataset_plan(desired, state, dataset)
            worker.waiting = list(self._dataset_waiting(desired, state,
                                                        dataset))
            if not changes:
                if dataset not in self._datasets(desired, state):
                    # Nothing of it is on this node or wanted here: done.
                    break
                worker.settled_on = desired.generation
                worker.succeeded()
                worker.last_run = None
                yield self._watch_exit(worker, context, desired, state)
                self._report()
                yield worker.alarm.sleep(self._recheck.delay(idle))
                idle += 1
                continue
            worker.settled_on = None
            # The same changes planned from the same look again, right after
            # they all ran: the control service's listing lags behind them.
            # Wait for it (a new slice wakes us) rather than spin, then run
            # them once more; longer each time the same look comes back (a
            # leader being elected sends no slice for seconds).
            look = (seen, changes)
            if look == worker.last_run and not worker.waited:
                self._report()
                yield worker.alarm.sleep(self._recheck.delay(worker.repeats))
                worker.repeats += 1
                worker.waited = True
                continue
            if look != worker.last_run:
                worker.repeats = 0
            worker.waited = False
            idle = 0
            ran_all = yield self._run_changes(worker, desired, context,
                                              changes)
            worker.last_run = look if ran_all else None
        worker.done = True

    @inlineCallbacks
    def _watch_exit(self, worker, context, desired, state):
        """
        Watch the running application of ``worker``'s dataset, so that its
        exit wakes the worker at once.
        """
        if worker.exit_watch is not None and worker.exit_watch.open:
            return
        if not IApplicationExits.providedBy(context.runtime):
            return
        worker.close_exit_watch()
        names = [name for name in state.running
                 if name in desired.applications
                 and dataset_id(desired.cluster_name, name)
                 == worker.dataset_id]
        for name in names:
            fd = yield self._in_thread(context.runtime.exit_fd, name)
            if fd is None:
                continue
            if not self._running:
                os.close(fd)
                return
            worker.exit_watch = ExitWatch(self._reactor, fd, worker.alarm)

    @inlineCallbacks
    def _run_changes(self, worker, desired, context, changes):
        """
        Run ``changes`` of one dataset in order until one fails, the slice
        changes or the loop stops. Fires with True when all of them ran.
        """
        worker.close_exit_watch()
        for change in changes:
            if not self._running or self._desired is not desired:
                return False
            ok = yield self._run(worker, context, change)
            if not ok:
                return False
        return True

    @inlineCallbacks
    def _run(self, worker, context, change):
        worker.running = RunningStep(step=change.step,
                                     since=float(self._clock()),
                                     waiting_for=change.waits_for)
        self._report()
        started = time.monotonic()
        self._in_flight += 1
        try:
            yield self._in_thread(_run_change, change, context, self._task)
        except Exception as e:
            worker.failed(change, e, self._reactor.seconds(), self._clock(),
                          self._dataset_backoff)
            ok = False
        else:
            worker.succeeded()
            step = change.step
            # A change repeated while the listing lags is shown once.
            if step not in [f.step for f in self._finished]:
                self._finished.append(FinishedStep(
                    step=step, seconds=round(time.monotonic() - started, 3),
                    finished_at=float(self._clock())))
            ok = True
        finally:
            self._in_flight -= 1
            if not self._in_flight and not self._running:
                self._changes_ended()
        self.metrics.change_ended(change.kind, time.monotonic() - started, ok)
        if change.touches_backend:
            self._changed_backend = True
        worker.running = None
        self._report()
        return ok

    # --- reporting -------------------------------------------------------

    def metrics_facts(self):
        """
        What the agent's metrics read of the loop when scraped (on the
        reactor): a ``LoopFacts``.
        """
        now, wall = self._reactor.seconds(), self._clock()
        workers = list(self._workers.values())
        desired = self._desired
        return LoopFacts(
            running=[(w.running.step.kind, max(0.0, wall - w.running.since))
                     for w in workers if w.running is not None],
            backing_off=sum(1 for w in workers if w.retry_at is not None
                            and w.retry_at > now),
            converged=self._converged(),
            generation=desired.generation if desired is not None else None)

    def _converged(self):
        desired = self._desired
        if desired is None or self._discovered != desired.generation \
                or self._trouble is not None:
            return False
        return all(w.settled_on == desired.generation and not w.waiting
                   and w.error is None and w.trouble is None
                   for w in self._workers.values())

    def _report(self):
        desired = self._desired
        if desired is None:
            return
        if self._state is None:
            if self._trouble is None:
                return
            # Trouble before the first look: say so, with nothing seen yet.
            self._state = NodeState(node=self._node, backend_id="")
        workers = [self._workers[d] for d in sorted(self._workers)]
        converged = self._converged()
        if converged:
            self._end_task()
        troubles = [self._trouble] + [w.trouble for w in workers]
        progress = Progress(
            converged=converged, generation=desired.generation,
            running=[w.running for w in workers if w.running is not None],
            waiting=[x for w in workers for x in w.waiting],
            errors=[w.error for w in workers if w.error is not None],
            finished=self._finished,
            trouble="; ".join(t for t in troubles if t) or None)
        report = NodeReport(state=self._state, progress=progress,
                            changed_backend=self._changed_backend)
        now = self._reactor.seconds()
        if report == self._last_report and \
                now - self._last_report_at < HEARTBEAT:
            return
        self._last_report, self._last_report_at = report, now
        self._changed_backend = False
        self._reporter.send(report)


class LoopFacts(object):
    """
    The loop's state as metrics show it: ``running``, a (kind, seconds it
    has run) pair per change running now; ``backing_off``, how many
    datasets wait out a failed change's backoff; whether it is
    ``converged``; the ``generation`` of the slice it holds (None: none).
    """

    def __init__(self, running, backing_off, converged, generation):
        self.running = running
        self.backing_off = backing_off
        self.converged = converged
        self.generation = generation


def _identity(desired):
    return (desired.node, desired.cluster_name, desired.backend_id)


def _named(desired):
    """
    The datasets ``desired`` names: wanted here, listed here, or of an
    application wanted here.
    """
    return set(desired.datasets) | set(desired.volumes) | set(
        desired.incoming) | set(desired.outgoing) | {
        dataset_id(desired.cluster_name, name)
        for name in desired.applications}


def _volume_id(desired, dataset):
    volume = desired.volumes.get(dataset)
    incoming = desired.incoming.get(dataset)
    if incoming is not None:
        volume = incoming.volume
    return volume.volume_id if volume is not None else None


def _parts(desired):
    """
    ``part(dataset)``: what ``desired`` says of one dataset (wanted here,
    its listed volume, its application), to tell whose part changed.
    """
    applications = {dataset_id(desired.cluster_name, name): app
                    for name, app in desired.applications.items()}

    def part(dataset):
        return (desired.datasets.get(dataset), desired.volumes.get(dataset),
                applications.get(dataset), desired.incoming.get(dataset),
                desired.outgoing.get(dataset))
    return part


def _run_change(change, context, task=None):
    """
    Run one change, blocking, inside an eliot action naming it: a child of
    ``task`` (the deploy's task, continued) when there is one.
    """
    with (task.context() if task is not None else nullcontext()):
        with start_action(action_type="blockmover:agent:change",
                          node=context.node, change=type(change).__name__,
                          dataset_id=change.dataset_id,
                          application=change.application_name):
            change.run(context)


def write_failure_of(error):
    """
    Log an unexpected error with its traceback; the loop carries on.
    """
    write_failure(Failure(error, type(error), error.__traceback__))
