"""
Asking destinations how the cases they took are getting on.

For each destination that provides :class:`gateway.interfaces.IStatusSource` with a positive
``status_interval``, a loop on the injected clock takes the deliveries it should check from the
store (least recently checked first), asks the destination for each one's status, records it,
and calls ``on_change(delivery, status)`` when it changed. A status in the destination's
``final_statuses`` ends the tracking of that case. Errors are logged and the case is asked
again next round.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping

from twisted.internet import defer, task
from twisted.logger import Logger

from gateway.interfaces import IStatusSource

#: How many cases one round asks a destination about, at most.
ROUND_SIZE = 50


class StatusPolling:
    """``destinations`` maps names to destinations; those that can report status are polled."""

    log = Logger()

    def __init__(self, store, destinations: Mapping, clock, on_change: Callable):
        self.store = store
        self.clock = clock
        self.on_change = on_change
        self.sources = {name: d for name, d in destinations.items()
                        if IStatusSource.providedBy(d) and (getattr(d, "status_interval", 0) or 0) > 0}
        self.loops: Dict[str, task.LoopingCall] = {}
        self.rounds: Dict[str, defer.Deferred] = {}

    def start(self) -> None:
        for name, source in self.sources.items():
            loop = task.LoopingCall(self._round, name, source)
            loop.clock = self.clock
            self.loops[name] = loop
            loop.start(source.status_interval, now=False).addErrback(
                lambda f, name=name: self.log.failure("Status polling of {destination} stopped", f, destination=name))

    def stop(self) -> defer.Deferred:
        """Stop the loops; fires when rounds in progress have ended."""
        for loop in self.loops.values():
            if loop.running:
                loop.stop()
        return defer.DeferredList(list(self.rounds.values()), consumeErrors=True).addCallback(lambda _: None)

    def _round(self, name, source) -> defer.Deferred:
        d = self._ask_all(name, source)
        self.rounds[name] = d
        d.addErrback(lambda f: self.log.failure("Status round of {destination} failed", f, destination=name))

        def done(_):
            del self.rounds[name]
        d.addBoth(done)
        return d

    @defer.inlineCallbacks
    def _ask_all(self, name, source):
        final = {str(s).lower() for s in (getattr(source, "final_statuses", None) or ())}
        for tracked in (yield self.store.tracked(name, ROUND_SIZE)):
            try:
                status = yield defer.maybeDeferred(source.poll_status, tracked.reference)
            except Exception as e:
                self.log.warn("Status of {reference} at {destination} unavailable: {error}",
                              reference=tracked.reference, destination=name, error=e)
                continue
            if status is None:
                continue
            status = str(status)
            changed = yield self.store.record_status(tracked.delivery.id, status, status.lower() in final,
                                                     self.clock.seconds())
            if changed:
                self.log.info("Case {ticket} at {destination} ({reference}) is now {status!r}",
                              ticket=tracked.delivery.message.ticket, destination=name,
                              reference=tracked.reference, status=status)
                self.on_change(tracked.delivery, status)
