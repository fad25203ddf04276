"""
Handing stored deliveries to their destinations: one lane per priority, retries with backoff and
jitter, a circuit breaker per destination, dead letters.

- The emergency lane gets its deliveries straight from the accept (the store returns them
  already claimed) and starts them at once, up to its own capacity, and their requests are sent
  within the same reactor turn (:func:`send_pending_output`); it never waits behind the other
  lanes and never backs off for load.
- The other lanes (high, normal, low) claim due deliveries from the store when they have room:
  a bounded number in flight per destination, an optional rate limit, and a pause while the
  reactor runs late, so that a flood piles up on disk instead of slowing emergencies down.
- A destination providing :class:`gateway.interfaces.IBatchDestination` with a ``batch_size``
  above 1 gets the other lanes' deliveries in batches: each attempt takes up to ``batch_size`` of
  what waits for it, full batches whenever there is room and a partial one only while no other
  partial one is in flight (see ``_drain``). Its ``concurrency`` and ``rate_limit`` then count
  batches, and its circuit breaker one outcome per batch; retries and dead letters stay per
  delivery. Emergencies still go one by one.
- A failure is retried with exponential backoff and jitter (``Retry-After`` honoured) until
  ``max_attempts`` or ``max_age``; a permanent failure is dead-lettered at once.

Time comes from the injected ``clock`` (``IReactorTime``).
"""

from __future__ import annotations

import collections
import random
from typing import Callable, Deque, Dict, Mapping, Optional

from twisted.internet import defer, task
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.reflect import safe_str

from gateway import logs
from gateway.errors import DeliveryError, TemporaryDeliveryError
from gateway.interfaces import IBatchDestination
from gateway.message import EMERGENCY, PRIORITIES, Delivery
from gateway.metrics import Metrics
from gateway.plugins import observe

OTHER_LANES = tuple(p for p in PRIORITIES if p != EMERGENCY)


class CircuitBreaker:
    """
    Opens after ``threshold`` consecutive failures; after ``reset_after`` seconds lets one probe
    through (half-open); a success closes it, a failure opens it again.
    """

    def __init__(self, clock, threshold: int, reset_after: float):
        self.clock = clock
        self.threshold = threshold
        self.reset_after = reset_after
        self.failures = 0
        self.opened_at: Optional[float] = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock.seconds() >= self.opened_at + self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether an attempt may go out now (claims the probe when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    @property
    def refusing(self) -> bool:
        """Whether an attempt would be refused now (open, or half-open with its probe out)."""
        state = self.state
        return state == "open" or (state == "half-open" and self.probing)

    #: While the probe is out, a refused attempt comes back after this many seconds at most.
    probe_wait = 1.0

    def retry_at(self) -> float:
        """
        When an attempt refused by the breaker should come back: when the breaker half-opens,
        or, when it already has and its probe is still out, a little later (``probe_wait``,
        at most ``reset_after``), so that a slow probe does not make the lane claim and put
        back the same deliveries over and over.
        """
        now = self.clock.seconds()
        at = (self.opened_at if self.opened_at is not None else now) + self.reset_after
        if at <= now:
            return now + min(self.probe_wait, self.reset_after)
        return at

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock.seconds()


class RetryPolicy:
    """When to try a failed delivery again, if at all."""

    def __init__(self, settings: Mapping, random_fraction: Callable[[], float] = random.random):
        self.max_attempts = settings.get("max_attempts", 12)
        self.max_age = settings.get("max_age", 86400.0)
        self.base_delay = settings.get("base_delay", 1.0)
        self.max_delay = settings.get("max_delay", 600.0)
        self.emergency_max_delay = settings.get("emergency_max_delay", 5.0)
        self.random_fraction = random_fraction

    def next_attempt(self, delivery: Delivery, error: DeliveryError, now: float) -> Optional[float]:
        """The time of the next attempt, or None when the delivery should be dead-lettered."""
        if not error.retryable:
            return None
        if delivery.attempt >= self.max_attempts or now - delivery.message.received_at > self.max_age:
            return None
        cap = self.emergency_max_delay if delivery.priority == EMERGENCY else self.max_delay
        backoff = min(cap, self.base_delay * 2 ** (delivery.attempt - 1))
        delay = backoff * (0.5 + 0.5 * self.random_fraction())
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return now + delay


def batch_size_of(name: str, destination) -> int:
    """
    How many deliveries one attempt of ``destination`` takes: its ``batch_size`` when it provides
    :class:`gateway.interfaces.IBatchDestination`, else 1. Raises ValueError, naming the
    destination, for a ``batch_size`` that is not an integer of 1 or more, or a batching
    destination without a ``deliver_batch`` method.
    """
    if not IBatchDestination.providedBy(destination):
        return 1
    size = getattr(destination, "batch_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"destination {name!r}: batch_size must be an integer of 1 or more, got {size!r}")
    if size > 1 and not callable(getattr(destination, "deliver_batch", None)):
        raise ValueError(f"destination {name!r}: batch_size is {size} but it has no deliver_batch method")
    return size


def send_pending_output(reactor) -> None:
    """
    Send what every connection of ``reactor`` has buffered, now, instead of on the reactor's
    next pass over its descriptors.

    A transport's ``write`` only buffers; the reactor sends in its next iteration, after
    everything else that became ready meanwhile, which under a flood is tens of milliseconds
    of ordinary requests. The dispatcher calls this right after starting emergency deliveries,
    so that their requests leave within the turn that triaged them (the other buffered output
    goes out a little early too; nothing is sent twice). A writer that fails here fails again
    on the reactor's own ``doWrite``, which then closes it as usual. A reactor without
    ``IReactorFDSet`` (a test clock) is left alone.
    """
    writers = getattr(reactor, "getWriters", None)
    if writers is None:
        return
    for writer in list(writers()):
        try:
            writer.doWrite()
        except Exception:  # noqa: BLE001 - the reactor's own doWrite reports and closes it
            pass


class Dispatcher:
    """
    Delivers what the store holds. ``destinations`` maps names to started
    :class:`gateway.interfaces.IDestination` providers; ``hook`` is the pluggy hook relay (for
    the observer hooks) or None.

    Bookkeeping of the other lanes: ``waiting[name]`` holds claimed deliveries not yet started,
    ``active[name]`` counts attempts (requests: one delivery, or one batch) in flight per
    destination, ``partial_active[name]`` those of them that carry less than a full batch,
    ``lane_active[priority]`` counts deliveries in flight per lane.
    """

    log = Logger()

    def __init__(self, store, destinations: Mapping, clock, settings: Mapping, metrics: Optional[Metrics] = None,
                 hook=None, random_fraction: Callable[[], float] = random.random,
                 overrides: Optional[Mapping[str, Mapping]] = None,
                 on_delivered: Optional[Callable] = None):
        self.store = store
        self.destinations = dict(destinations)
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.hook = hook
        self.on_delivered = on_delivered
        self.emergency_capacity = settings.get("emergency_concurrency", 32)
        self.lag_threshold = settings.get("lag_threshold", 0.02)
        #: The most deliveries one store claim takes (a lane with more room claims again).
        self.claim_chunk = settings.get("claim_chunk", 64)
        # Each destination's settings: its own ``dispatch:`` overrides, then the global ones.
        per = {name: collections.ChainMap(dict((overrides or {}).get(name, {})), dict(settings))
               for name in self.destinations}
        self.policies = {name: RetryPolicy(per[name], random_fraction) for name in per}
        self.concurrency = {name: per[name].get("concurrency", 8) for name in per}
        self.batch_sizes = {name: batch_size_of(name, destination) for name, destination in self.destinations.items()}
        self.rate_limits = {name: per[name].get("rate_limit") for name in per}
        self.breakers = {name: CircuitBreaker(clock, per[name].get("breaker_failures", 5),
                                              per[name].get("breaker_reset", 30.0))
                         for name in per}
        self.running = False
        self.emergency_waiting: Deque[Delivery] = collections.deque()
        self.emergency_active = 0
        self.active: Dict[str, int] = collections.Counter()
        self.lane_active: Dict[str, int] = collections.Counter()
        self.in_flight: Dict[str, int] = collections.Counter()
        #: Attempts in flight per destination that carry less than a full batch.
        self.partial_active: Dict[str, int] = collections.Counter()
        self.waiting: Dict[str, Deque[Delivery]] = {name: collections.deque() for name in self.destinations}
        self._pumping: Dict[str, bool] = {}
        self._again: Dict[str, bool] = {}
        self._timers: Dict[str, object] = {}
        self._held: set = set()
        self._sent_at: Dict[str, Deque[float]] = collections.defaultdict(collections.deque)
        self._attempts: Dict[str, defer.Deferred] = {}
        self.lag = 0.0
        self._lag_probe: Optional[task.LoopingCall] = None
        self._last_tick: Optional[float] = None
        self.lag_interval = settings.get("lag_interval", 0.02)
        self.poll_interval = settings.get("poll_interval", 2.0)
        self._poller: Optional[task.LoopingCall] = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self):
        """
        Requeue what was in flight when the gateway last stopped, then start every lane.
        Returns a Deferred that fires when the lanes run.
        """
        self.running = True
        self._lag_probe = task.LoopingCall(self._measure_lag)
        self._lag_probe.clock = self.clock
        self._last_tick = self.clock.seconds()
        self._lag_probe.start(self.lag_interval, now=False)
        d = self.store.recover(self.clock.seconds())

        def recovered(count):
            if count:
                self.log.info("Requeued {count} deliveries that were in flight at the last stop", count=count)
            # Besides the wake-ups from accepts and retry timers, a slow poll picks up what changed
            # outside this process (a replay from the command line, another node).
            self._poller = task.LoopingCall(self._wake_all)
            self._poller.clock = self.clock
            self._poller.start(self.poll_interval, now=True)
        return d.addCallback(recovered)

    def _wake_all(self):
        for priority in PRIORITIES:
            self.wake(priority)

    def stop(self):
        """Stop starting deliveries; fire when the ones in flight have ended."""
        self.running = False
        for loop in (self._lag_probe, self._poller):
            if loop is not None and loop.running:
                loop.stop()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        pending = [d for d in self._attempts.values()]
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def _measure_lag(self):
        now = self.clock.seconds()
        self.lag = max(0.0, now - self._last_tick - self.lag_interval)
        self._last_tick = now
        self.metrics.reactor_lag.set(self.lag)
        if self.lag <= self.lag_threshold and self._held:
            held, self._held = self._held, set()
            for priority in held:
                self.wake(priority)

    def reset_lag(self) -> None:
        """
        Measure the reactor's lag afresh from now: after a stall that was the gateway's own and
        is over (start-up, with its full garbage collection), which is no reason to shed load.
        """
        self._last_tick = self.clock.seconds()
        self.lag = 0.0
        self.metrics.reactor_lag.set(0.0)

    @property
    def saturated(self) -> bool:
        """Whether the reactor runs late enough that the non-emergency lanes hold back."""
        return self.lag > self.lag_threshold

    # -- entry points -----------------------------------------------------------------------

    def submit(self, accepted) -> None:
        """
        Take the deliveries of newly accepted messages (a list of
        :class:`gateway.message.Accepted`): emergencies start now, other lanes are woken.
        """
        lanes = set()
        for item in accepted:
            for delivery in item.deliveries:
                if delivery.priority == EMERGENCY:
                    self.emergency_waiting.append(delivery)
                else:
                    lanes.add(delivery.priority)
        self._run_emergencies()
        for priority in lanes:
            self.wake(priority)

    def wake(self, priority: str) -> None:
        """Claim and start due deliveries of ``priority`` as far as there is room."""
        if not self.running:
            return
        if self._pumping.get(priority):
            self._again[priority] = True
            return
        self._pumping[priority] = True
        self._again[priority] = False
        d = self._pump(priority)
        d.addErrback(lambda f: self.log.failure("Dispatch of lane {lane} failed", f, lane=priority))

        def done(_):
            self._pumping[priority] = False
            if self._again.get(priority) and self.running:
                self.wake(priority)
        d.addBoth(done)

    # -- the lanes --------------------------------------------------------------------------

    def _room(self, priority: str) -> int:
        if priority == EMERGENCY:
            return self.emergency_capacity - self.emergency_active - len(self.emergency_waiting)
        if self.saturated:
            return 0
        # Enough for every destination's attempts in flight, each taking a full batch.
        total = sum(self.concurrency[name] * self.batch_sizes[name] for name in self.concurrency) or 1
        busy = sum(self.lane_active[p] for p in OTHER_LANES) + sum(len(q) for q in self.waiting.values())
        return total - busy

    def _refusing(self) -> list:
        """The destinations whose breaker would refuse an attempt now."""
        return [name for name, breaker in self.breakers.items() if breaker.refusing]

    @defer.inlineCallbacks
    def _pump(self, priority):
        started_any = False
        while self.running:
            room = self._room(priority)
            if room <= 0:
                # Full lanes are woken by their attempts ending; held-back ones by the lag probe.
                if priority != EMERGENCY and self.saturated:
                    self._held.add(priority)
                break
            refusing = self._refusing() if priority != EMERGENCY else []
            if refusing:
                # Claim only for destinations that would take an attempt: a destination that is
                # down keeps its backlog on disk instead of having it claimed and put back.
                claimed_any, more = yield self._pump_destinations(priority, refusing)
                started_any = started_any or claimed_any
                if not more:
                    break
                continue
            # In chunks: a claim reads and decodes its rows in one go, and the reactor (where the
            # store may run) should turn between chunks to read new requests.
            limit = min(room, self.claim_chunk)
            claimed = yield self.store.claim(priority, limit, self.clock.seconds())
            started_any = started_any or bool(claimed)
            if priority == EMERGENCY:
                self.emergency_waiting.extend(claimed)
                self._run_emergencies()
            else:
                self._queue(claimed, more_coming=len(claimed) == limit)
            if len(claimed) < limit:
                break
        # A lane that started deliveries is woken again when they end; only an idle lane needs
        # the store's next due time (one query less per pump under load).
        if not started_any:
            yield self._schedule(priority)

    @defer.inlineCallbacks
    def _pump_destinations(self, priority, refusing):
        """
        One round of claims, destination by destination, leaving out ``refusing``. Fires with
        ``(claimed_any, more)``: whether anything was claimed, and whether a destination may
        have more due.
        """
        claimed_any, more = False, False
        for name in self.destinations:
            if name in refusing:
                continue
            room = self.concurrency[name] * self.batch_sizes[name] - self.in_flight[name] - len(self.waiting[name])
            if room <= 0:
                continue
            limit = min(room, self.claim_chunk)
            claimed = yield self.store.claim(priority, limit, self.clock.seconds(), destination_id=name)
            claimed_any = claimed_any or bool(claimed)
            self._queue(claimed, more_coming=len(claimed) == limit)
            more = more or len(claimed) == limit
        return claimed_any, more

    def _run_emergencies(self):
        started = False
        while self.running and self.emergency_waiting and self.emergency_active < self.emergency_capacity:
            delivery = self.emergency_waiting.popleft()
            self.emergency_active += 1
            started = True
            d = self._attempt(delivery)

            def finished(_):
                self.emergency_active -= 1
                self._run_emergencies()
                if not self.emergency_waiting:
                    self.wake(EMERGENCY)
            d.addBoth(finished)
        if started:
            send_pending_output(self.clock)

    def _queue(self, claimed, more_coming: bool = False):
        """
        Put claimed deliveries in their destinations' queues, then start what there is room for.
        With ``more_coming`` (the lane claims again at once) a batching destination only starts
        full batches, so that claiming in chunks does not split its batches.
        """
        touched = {}
        for delivery in claimed:
            name = delivery.destination_id
            queue = self.waiting.get(name)
            if queue is None:
                self._unknown_destination(delivery)
                continue
            queue.append(delivery)
            touched[name] = True
        # All of a claim is queued before any starts, so that a batching destination's first
        # attempts take what the claim brought rather than one delivery each.
        if more_coming:
            for name in touched:
                self._drain(name, full_only=True)
        else:
            for name, queue in self.waiting.items():
                if queue:
                    self._drain(name)

    def _drain(self, name: str, full_only: bool = False):
        """
        Start attempts for what waits for ``name``, as far as its concurrency and rate allow. A
        batching destination gets full batches whenever there is room, and a partial one only
        while no other partial one of its is in flight (as Nagle's algorithm does for small
        segments): at a trickle every delivery goes at once, under load what arrives while a
        partial batch is on its way waits for it to end, or for a full batch, instead of going
        out in many small requests.
        """
        queue = self.waiting[name]
        rate = self.rate_limits[name]
        size = self.batch_sizes[name]
        while self.running and queue and self.active[name] < self.concurrency[name]:
            if len(queue) < size and (full_only or self.partial_active[name]):
                return
            if rate and not self._rate_allows(name, rate):
                key = f"rate:{name}"
                if key not in self._timers or not self._timers[key].active():
                    self._timers[key] = self.clock.callLater(1.0 / rate, self._drain, name)
                return
            if size == 1:
                deliveries = (queue.popleft(),)
            else:
                deliveries = tuple(queue.popleft() for _ in range(min(size, len(queue))))
            self.active[name] += 1
            self.in_flight[name] += len(deliveries)
            if len(deliveries) < size:
                self.partial_active[name] += 1
            for delivery in deliveries:
                self.lane_active[delivery.priority] += 1
            d = self._attempt(deliveries[0]) if size == 1 else self._attempt_batch(name, deliveries)
            d.addBoth(self._ended, name, deliveries)

    def _ended(self, _, name: str, deliveries) -> None:
        """An attempt of the other lanes ended: free its room, start what waits, wake its lanes."""
        self.active[name] -= 1
        self.in_flight[name] -= len(deliveries)
        if len(deliveries) < self.batch_sizes[name]:
            self.partial_active[name] -= 1
        for delivery in deliveries:
            self.lane_active[delivery.priority] -= 1
        self._drain(name)
        for priority in _lanes_of(deliveries):
            self.wake(priority)

    def _rate_allows(self, name: str, rate: float) -> bool:
        now = self.clock.seconds()
        sent = self._sent_at[name]
        while sent and sent[0] <= now - 1.0:
            sent.popleft()
        if len(sent) < rate:
            sent.append(now)
            return True
        return False

    def _schedule_lanes(self, deliveries) -> defer.Deferred:
        """``_schedule`` each lane of ``deliveries`` once; never fails (a failure is logged)."""
        def logged(failure, priority):
            self.log.failure("Could not schedule the next attempt of lane {lane}", failure, lane=priority)
        return defer.DeferredList([self._schedule(priority).addErrback(logged, priority)
                                   for priority in _lanes_of(deliveries)])

    @defer.inlineCallbacks
    def _schedule(self, priority):
        """
        Set a timer for the next pending delivery of the lane that is due later. Deliveries to a
        destination whose breaker refuses count from when it would take an attempt again.
        """
        refusing = self._refusing() if priority != EMERGENCY else []
        if not refusing:
            due = yield self.store.next_due(priority)
        else:
            times = [self.breakers[name].retry_at() for name in refusing]
            for name in self.destinations:
                if name not in refusing:
                    times.append((yield self.store.next_due(priority, destination_id=name)))
            times = [t for t in times if t is not None]
            due = min(times) if times else None
        old = self._timers.pop(priority, None)
        if old is not None and old.active():
            old.cancel()
        if due is None or not self.running:
            return
        delay = max(0.0, due - self.clock.seconds())
        self._timers[priority] = self.clock.callLater(max(delay, 0.001), self.wake, priority)

    # -- one attempt ------------------------------------------------------------------------

    def _unknown_destination(self, delivery: Delivery):
        error = f"destination {delivery.destination_id!r} is not configured"
        self.log.error("Dead-lettering delivery {delivery_id}: {error}", delivery_id=delivery.id, error=error)
        self.store.dead_letter(delivery.id, error, self.clock.seconds())

    def _attempt(self, delivery: Delivery) -> defer.Deferred:
        """Deliver once and record the outcome; the Deferred never fails."""
        destination = self.destinations.get(delivery.destination_id)
        if destination is None:
            self._unknown_destination(delivery)
            return defer.succeed(None)
        breaker = self.breakers[delivery.destination_id]
        if not breaker.allow():
            d = self.store.release(delivery.id, breaker.retry_at())
            d.addCallback(lambda _: self._schedule(delivery.priority))
            d.addErrback(self._store_failed, delivery)
            return d
        started = self.clock.seconds()
        self.metrics.attempt_started(delivery.destination_id)
        d = defer.maybeDeferred(destination.deliver, delivery)
        self._attempts[delivery.id] = d
        d.addCallbacks(self._delivered_one, self._failed_one, callbackArgs=(delivery, breaker, started),
                       errbackArgs=(delivery, breaker, started))
        d.addErrback(self._store_failed, delivery)

        def forget(result):
            self._attempts.pop(delivery.id, None)
            return result
        return d.addBoth(forget)

    def _delivered_one(self, receipt, delivery, breaker, started):
        breaker.succeeded()
        return self._delivered(receipt, delivery, started)

    def _failed_one(self, failure, delivery, breaker, started):
        breaker.failed()
        return self._failed(_as_delivery_error(failure.value), delivery, started)

    def _attempt_batch(self, name: str, deliveries) -> defer.Deferred:
        """
        Deliver a batch (one ``deliver_batch`` call) and record each delivery's outcome; the
        breaker counts the call once. The Deferred never fails.
        """
        breaker = self.breakers[name]
        if not breaker.allow():
            at = breaker.retry_at()
            released = [self.store.release(delivery.id, at).addErrback(self._store_failed, delivery)
                        for delivery in deliveries]
            return defer.DeferredList(released).addCallback(lambda _: self._schedule_lanes(deliveries))
        started = self.clock.seconds()
        for _ in deliveries:
            self.metrics.attempt_started(name)
        key = "batch:" + deliveries[0].id
        d = defer.maybeDeferred(self.destinations[name].deliver_batch, list(deliveries))
        self._attempts[key] = d
        d.addCallbacks(self._batch_answered, self._batch_failed, callbackArgs=(name, deliveries, breaker, started),
                       errbackArgs=(name, deliveries, breaker, started))
        d.addErrback(lambda f: self.log.failure("Recording the outcome of a batch to {destination} failed", f,
                                                destination=name))

        def forget(result):
            self._attempts.pop(key, None)
            return result
        return d.addBoth(forget)

    def _batch_answered(self, results, name, deliveries, breaker, started):
        if not isinstance(results, (list, tuple)) or len(results) != len(deliveries):
            count = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            self.log.error("Destination {destination} answered a batch of {size} with {count} results",
                           destination=name, size=len(deliveries), count=count)
            error = TemporaryDeliveryError(f"deliver_batch answered {count} results for {len(deliveries)} deliveries")
            return self._batch_failed_with(error, deliveries, breaker, started)
        failed = [delivery for delivery, result in zip(deliveries, results) if _is_error(result)]
        if len(failed) == len(deliveries):
            breaker.failed()
        else:
            breaker.succeeded()
        recorded, delivered = [], []
        for delivery, result in zip(deliveries, results):
            if _is_error(result):
                d = defer.maybeDeferred(self._failed, _as_delivery_error(result), delivery, started, schedule=False)
                recorded.append(d.addErrback(self._store_failed, delivery))
            else:
                self._note_delivered(result, delivery, started)
                delivered.append((delivery, result))
        if delivered:
            # One store operation for every delivery the batch got through.
            d = self.store.delivered_many([(delivery.id, receipt) for delivery, receipt in delivered],
                                          self.clock.seconds())
            d.addCallback(self._delivered_many, delivered)
            d.addErrback(lambda f: self.log.failure(
                "Could not record {count} deliveries to {destination}; they will be retried after a restart", f,
                count=len(delivered), destination=name))
            recorded.append(d)
        return defer.DeferredList(recorded).addCallback(lambda _: self._schedule_lanes(failed))

    def _delivered_many(self, missing, delivered):
        if missing:
            self.log.error("Delivered {count} deliveries the store does not know: {ids}", count=len(missing),
                           ids=", ".join(missing))
        if self.on_delivered is not None:
            gone = set(missing)
            for delivery, receipt in delivered:
                if delivery.id not in gone:
                    self.on_delivered(delivery, receipt)

    def _batch_failed(self, failure, name, deliveries, breaker, started):
        return self._batch_failed_with(_as_delivery_error(failure.value), deliveries, breaker, started)

    def _batch_failed_with(self, error, deliveries, breaker, started):
        """Every delivery of the batch failed with ``error``: one breaker failure, each its own retry."""
        breaker.failed()
        recorded = [defer.maybeDeferred(self._failed, error, delivery, started, schedule=False)
                    .addErrback(self._store_failed, delivery) for delivery in deliveries]
        return defer.DeferredList(recorded).addCallback(lambda _: self._schedule_lanes(deliveries))

    def _note_delivered(self, receipt, delivery, started) -> float:
        """Metrics, log line and observer hook of one delivery that got through; returns now."""
        now = self.clock.seconds()
        self.metrics.attempt_ended(delivery.destination_id, delivery.priority, "delivered", now - started, now,
                                   delivery.message.received_at)
        if delivery.priority == EMERGENCY or logs.wanted(LogLevel.debug):
            emit = self.log.info if delivery.priority == EMERGENCY else self.log.debug
            emit("Delivered {delivery_id} ({lane}) to {destination} reference={reference}",
                 delivery_id=delivery.id, lane=delivery.priority, destination=delivery.destination_id,
                 reference=getattr(receipt, "reference", None))
        self._observe("siaga_delivered", delivery=delivery, receipt=receipt)
        return now

    def _delivered(self, receipt, delivery, started):
        now = self._note_delivered(receipt, delivery, started)
        d = self.store.delivered(delivery.id, receipt, now)
        if self.on_delivered is not None:
            def tell(_):
                self.on_delivered(delivery, receipt)
            d.addCallback(tell)
        return d

    def _failed(self, error: DeliveryError, delivery, started, schedule: bool = True):
        """Retry or dead-letter one failed delivery; with ``schedule``, then reschedule its lane."""
        now = self.clock.seconds()
        at = self.policies[delivery.destination_id].next_attempt(delivery, error, now)
        outcome = "retry" if at is not None else "dead"
        self.metrics.attempt_ended(delivery.destination_id, delivery.priority, outcome, now - started, now)
        if at is None:
            self.log.warn("Dead-lettering {delivery_id} to {destination} after attempt {attempt}: {error}",
                          delivery_id=delivery.id, destination=delivery.destination_id, attempt=delivery.attempt,
                          error=error.reason)
            self._observe("siaga_dead_lettered", delivery=delivery, error=error.reason)
            return self.store.dead_letter(delivery.id, error.reason, now)
        self.log.info("Delivery {delivery_id} to {destination} failed (attempt {attempt}), retry in {delay:.1f}s: {error}",
                      delivery_id=delivery.id, destination=delivery.destination_id, attempt=delivery.attempt,
                      delay=at - now, error=error.reason)
        d = self.store.retry_later(delivery.id, error.reason, at)
        if schedule:
            d.addCallback(lambda _: self._schedule(delivery.priority))
        return d

    def _store_failed(self, failure, delivery):
        self.log.failure("Could not record the outcome of delivery {delivery_id}; it will be retried after a restart",
                         failure, delivery_id=delivery.id)

    def _observe(self, name, **kwargs):
        observe(self.hook, name, **kwargs)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "lag_seconds": round(self.lag, 4),
            "saturated": self.saturated,
            "emergency_active": self.emergency_active,
            "emergency_waiting": len(self.emergency_waiting),
            "breakers": {name: b.state for name, b in self.breakers.items()},
        }


def _is_error(result) -> bool:
    """Whether an entry of a batch's results is a failed delivery (an exception or a Failure)."""
    return isinstance(result, (BaseException, Failure))


def _as_delivery_error(value) -> DeliveryError:
    """An exception (or Failure) as a DeliveryError: any other exception counts as temporary."""
    if isinstance(value, Failure):
        value = value.value
    if isinstance(value, DeliveryError):
        return value
    return DeliveryError(f"{type(value).__name__}: {safe_str(value)}")


def _lanes_of(deliveries):
    """The lanes of ``deliveries``, each once, in order."""
    return list(dict.fromkeys(delivery.priority for delivery in deliveries))
