"""
ONE cached, cluster-wide listing of the backend's volumes. Nothing that
answers a request lists the backend: the listing is refreshed on a timer and
on demand, and concurrent demands coalesce into at most one more listing.
What clients ask for (``request``) starts at most one listing a second,
however many clients ask and however often.
A backend that lists only what changed has its changes merged into the
cache here, the only copy.
"""

import time

from eliot import log_message, write_failure
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from blockmover.placement import Listing


class ChangedVolumes(object):
    """
    What a lister returns when it listed only the volumes changed since
    its previous good listing: each replaces the cached volume of the same
    id, and the others stay.
    """

    def __init__(self, volumes):
        self.volumes = list(volumes)


# The least time between the starts of two listings clients asked for.
MIN_GAP = 1.0
# Why a listing starts, as metrics count it (``refresh``'s ``cause``).
START, TIMER, NODE_REQUEST, OTHER = "start", "timer", "node_request", "other"


class VolumeListing(object):
    """
    The last good listing of the backend's volumes.

    :ivar listing: the last good listing (a whole one, or one with changes
        merged into it) as a ``placement.Listing``, or None before the
        first one.
    :ivar changes: what the last good listing changed, as pairs ``(old,
        new)`` of volumes (``Listing.changed``), or None when it was the
        first (everything changed).
    :ivar listed_at: when that listing started (seconds since the epoch), or
        0.0 before the first one.
    :ivar refreshes: how many listings of the backend were started (or
        seeded by ``set_lister``).
    :ivar failures: how many of them failed.
    :ivar last_error: the last failure's message, or None after a success.
    """

    def __init__(self, clock, interval, on_listed, min_gap=MIN_GAP,
                 observer=None, merge=None):
        """
        :param clock: an ``IReactorTime``.
        :param interval: seconds between refreshes when nothing asks sooner.
        :param min_gap: the least seconds between the starts of two
            listings ``request`` asks for.
        :param on_listed: called as ``on_listed(changed)`` after every good
            listing; ``changed`` says whether the volumes differ from the
            previous listing (and ``changes`` says how).
        :param observer: told of every listing of the backend, for
            metrics: ``listing_started(cause)`` when it starts (``cause``
            is what first asked for it) and ``listing_ended(seconds, ok)``.
        :param merge: how a whole listing is compared with the cache:
            called as ``merge(function, *args)``, it returns a Deferred of
            ``function(*args)`` (run in a thread, so that comparing a
            hundred thousand volumes holds up no request); None calls it
            at once. A listing of changes is merged at once, at the cost
            of its changes.
        """
        # Invariant: ``listing`` is always a whole listing, or a whole
        # listing with later changes merged in; never changes alone.
        self._clock = clock
        self._interval = interval
        self._on_listed = on_listed
        self._merge = merge if merge is not None else maybeDeferred
        self._lister = None
        self.listing = None
        self.changes = None
        self.listed_at = 0.0
        self.refreshes = 0
        self.failures = 0
        self.last_error = None
        self._running = False
        self._again = False
        # Fired when the listing now running ends / when the next one ends.
        self._current = []
        self._next = []
        self._timer = None
        self._stopped = False
        self._min_gap = min_gap
        self._last_started = None
        self._requested = None
        # Fired when the listing ``request`` scheduled has ended.
        self._after_request = []
        self._observer = observer
        # What first asked for the listing to start next.
        self._cause = None

    def set_lister(self, lister, volumes=None, listed_at=0.0, cause=OTHER):
        """
        List with ``lister`` from now on: a callable returning a Deferred
        that fires with a list of every volume, or with the
        ``ChangedVolumes`` since its previous good listing
        (``ControlBackend.list_volumes``).
        ``volumes`` and ``listed_at`` seed the cache with a listing the
        caller already made with it, or leave it empty (None); ``cause``
        says why the caller made it, for metrics. A listing of the previous
        lister still running is discarded when it ends.
        """
        self._lister = lister
        self.listing = Listing.of(volumes) if volumes is not None else None
        self.changes = None
        self.listed_at = listed_at if volumes is not None else 0.0
        self.last_error = None
        if volumes is not None:
            # A listing of the backend all the same, made by the caller.
            self.refreshes += 1
            if self._observer is not None:
                self._observer.listing_started(cause)
        if not self._running:
            self._schedule()

    @property
    def volumes(self):
        """
        The volumes (``model.Volume``, sorted by volume id) of the last good
        listing, or None before the first one.
        """
        return None if self.listing is None else self.listing.volumes()

    def refresh(self, cause=OTHER):
        """
        Ask for a listing that starts after this call. While one runs, any
        number of calls cause exactly one more listing after it.
        ``cause`` says why (``START``, ``TIMER``, ``NODE_REQUEST``, or the
        caller's word), for metrics.

        :return: a Deferred that fires with None once that listing ended,
            well or badly.
        """
        done = Deferred()
        if self._cause is None:
            self._cause = cause
        if self._running:
            self._again = True
            self._next.append(done)
        else:
            self._current.append(done)
            self._start()
        return done

    def request(self):
        """
        A client's ask for a fresh listing (a node that changed the
        backend): a listing starts at once if none started within
        ``min_gap`` seconds, else once that much time has passed; every ask
        until then is the same one. No client can make the backend be
        listed more often than that.
        """
        if self._requested is not None and self._requested.active():
            return
        wait = 0.0
        if self._last_started is not None:
            wait = self._last_started + self._min_gap - self._clock.seconds()
        if wait <= 0:
            self._requested = None
            self.refresh(NODE_REQUEST)
        else:
            self._requested = self._clock.callLater(wait, self._request_due)

    def _request_due(self):
        self._requested = None
        waiters, self._after_request = self._after_request, []
        done = self.refresh(NODE_REQUEST)
        done.addBoth(lambda _: [waiter.callback(None) for waiter in waiters])

    def settled(self):
        """
        A Deferred firing once the listings asked for so far (by
        ``request`` or ``refresh``) have ended, so that what is checked
        next sees every change reported until now; at once when none is
        asked for. It starts no listing of its own.
        """
        if self._requested is not None and self._requested.active():
            waiter = Deferred()
            self._after_request.append(waiter)
            return waiter
        if self._running:
            waiter = Deferred()
            (self._next if self._again else self._current).append(waiter)
            return waiter
        return succeed(None)

    def start(self):
        """
        List now, and then every ``interval`` seconds.
        """
        self._stopped = False
        self.refresh(START)

    def stop(self):
        """
        Stop the timer; a listing still running ends but starts no other.
        """
        self._stopped = True
        for timer in (self._timer, self._requested):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = None
        self._requested = None
        waiters, self._after_request = self._after_request, []
        for waiter in waiters:
            waiter.callback(None)

    def _start(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        lister = self._lister
        cause, self._cause = self._cause or OTHER, None
        if lister is None:
            self._finished()
            return
        self._running = True
        self.refreshes += 1
        started = self._clock.seconds()
        self._last_started = started
        if self._observer is not None:
            self._observer.listing_started(cause)
            listing = _timed(lister, self._observer)
        else:
            listing = maybeDeferred(lister)
        listing.addCallbacks(self._listed, self._failed,
                             callbackArgs=(lister, started),
                             errbackArgs=(lister,))
        listing.addErrback(write_failure)
        listing.addBoth(lambda _: self._finished())

    def _listed(self, result, lister, started):
        """
        Merge a listing into the cache at the cost of what it changed: a
        listing of changes that changes nothing costs its own volumes'
        comparison, and no copy of anything; a whole listing is compared
        with the cache by ``merge``.
        """
        if lister is not self._lister:
            return None
        if isinstance(result, ChangedVolumes):
            if self.listing is None:
                self.failures += 1
                self.last_error = (
                    "the backend listed only changed volumes before any "
                    "whole listing; the next whole listing fills the cache")
                return None
            self._take(*self.listing.changed(result.volumes),
                       started=started)
            return None
        if self.listing is None:
            merged = self._merge(_first, result)
        else:
            merged = self._merge(self.listing.changed, result, True)
        base = self.listing

        def take(merged):
            # Only listings of this lister change the cache, one at a time:
            # it is still what the merge started from, unless the lister
            # changed meanwhile.
            if lister is self._lister and self.listing is base:
                self._take(*merged, started=started)
        return merged.addCallback(take)

    def _take(self, listing, changes, started):
        changed = changes is None or bool(changes)
        self.listing = listing
        self.changes = changes
        self.listed_at = started
        self.last_error = None
        log_message(message_type="blockmover:control:listed",
                    volumes=len(listing), changed=changed,
                    changes=None if changes is None else len(changes))
        self._on_listed(changed)

    def _failed(self, failure, lister):
        if lister is not self._lister:
            return
        self.failures += 1
        self.last_error = failure.getErrorMessage()
        # The last good listing stays; the next refresh tries again.
        write_failure(failure)

    def _finished(self):
        self._running = False
        done, self._current = self._current, []
        for d in done:
            d.callback(None)
        if self._again:
            self._again = False
            self._current, self._next = self._next, []
            self._start()
        else:
            self._schedule()

    def _schedule(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._stopped and self._lister is not None:
            self._timer = self._clock.callLater(self._interval, self.refresh,
                                                TIMER)


def _timed(lister, observer, clock=time.perf_counter):
    """
    ``lister()``'s Deferred, its time told to ``observer``.
    """
    started = clock()
    listing = maybeDeferred(lister)

    def ended(result):
        observer.listing_ended(clock() - started,
                               not isinstance(result, Failure))
        return result
    listing.addBoth(ended)
    return listing


def _first(volumes):
    """
    The first listing as ``Listing.changed`` gives changes: everything
    changed (None).
    """
    return Listing.of(volumes), None
