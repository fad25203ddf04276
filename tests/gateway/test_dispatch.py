"""Lanes, retries, circuit breakers and dead letters, on a task.Clock."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from gateway.config import Route
from gateway.dispatch import CircuitBreaker, Dispatcher, RetryPolicy
from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError
from gateway.message import EMERGENCY, HIGH, NORMAL, Message, Receipt, Triage
from gateway.routing import route
from gateway.testing import MemoryStore, RecordingBatchDestination, RecordingDestination, intake_for

SETTINGS = {"max_attempts": 4, "base_delay": 1.0, "max_delay": 60.0, "emergency_max_delay": 2.0,
            "breaker_failures": 3, "breaker_reset": 30.0, "concurrency": 2, "emergency_concurrency": 4,
            "poll_interval": 5.0, "lag_threshold": 1e9}  # task.Clock jumps are not reactor lag


class RoutingTests(SynchronousTestCase):
    routes = (
        Route({"priority": ("emergency",)}, ("cad", "notify"), continue_=True),
        Route({"priority": ("emergency",), "category": ("fire",)}, ("damkar",)),
        Route({"channel": ("wa",)}, ("lapor",)),
        Route({}, ("outbox",)),
    )

    def message(self, channel="web"):
        return Message(channel_id=channel, channel_type="web", sender="1", text="x")

    def test_continue_collects_destinations(self):
        self.assertEqual(route(self.message(), Triage(EMERGENCY, "fire"), self.routes), ("cad", "notify", "damkar"))

    def test_first_match_decides(self):
        self.assertEqual(route(self.message("wa"), Triage(NORMAL, "complaint"), self.routes), ("lapor",))

    def test_continue_then_catch_all(self):
        self.assertEqual(route(self.message(), Triage(EMERGENCY, "flood"), self.routes), ("cad", "notify", "outbox"))

    def test_no_routes(self):
        self.assertEqual(route(self.message(), Triage(NORMAL, "complaint"), ()), ())


class DispatchTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = MemoryStore()
        self.target = RecordingDestination("target")
        self.other = RecordingDestination("other")
        self.dispatcher = Dispatcher(self.store, {"target": self.target, "other": self.other}, self.clock, SETTINGS,
                                     random_fraction=lambda: 1.0)
        self.successResultOf(self.dispatcher.start())

    def tearDown(self):
        self.successResultOf(self.dispatcher.stop())

    def accept(self, priority=NORMAL, destinations=("target",), count=1):
        accepted = self.successResultOf(self.store.accept(
            [intake_for(priority=priority, destinations=destinations, received_at=self.clock.seconds())
             for _ in range(count)]))
        self.dispatcher.submit(accepted)
        return accepted

    def states(self):
        return sorted(row.state for row in self.store.rows.values())

    def test_emergency_delivered_at_once(self):
        self.accept(EMERGENCY)
        self.assertEqual(len(self.target.delivered), 1)
        self.assertEqual(self.states(), ["delivered"])

    def test_normal_delivered_on_wake(self):
        self.accept(NORMAL, count=3)
        self.assertEqual(len(self.target.delivered), 3)
        self.assertEqual(self.states(), ["delivered"] * 3)

    def test_per_destination_concurrency(self):
        self.target.hold = True
        self.accept(NORMAL, count=5)
        self.assertEqual(len(self.target.pending), 2)
        self.target.pending[0].callback(None)
        self.assertEqual(len(self.target.pending), 3)
        for d in list(self.target.pending[1:]):
            d.callback(None)
        while len([d for d in self.target.pending if not d.called]):
            for d in [d for d in self.target.pending if not d.called]:
                d.callback(None)
        self.assertEqual(self.states(), ["delivered"] * 5)

    def test_emergency_does_not_wait_behind_normal(self):
        self.target.hold = True
        self.accept(NORMAL, count=5)
        self.assertEqual(len(self.target.pending), 2)
        self.target.hold = False
        self.accept(EMERGENCY)
        emergencies = [d for d in self.target.delivered if d.priority == EMERGENCY]
        self.assertEqual(len(emergencies), 1)
        for d in self.target.pending:
            d.callback(None)

    def test_temporary_failure_retried_with_backoff(self):
        self.target.failure = TemporaryDeliveryError("503")
        self.accept(NORMAL)
        row = next(iter(self.store.rows.values()))
        self.assertEqual((row.state, row.attempts), ("pending", 1))
        self.assertEqual(row.next_attempt_at, self.clock.seconds() + 1.0)
        self.clock.advance(1.0)
        self.assertEqual((row.state, row.attempts), ("pending", 2))
        self.assertEqual(row.next_attempt_at, self.clock.seconds() + 2.0)
        self.target.failure = None
        self.clock.advance(2.0)
        self.assertEqual(row.state, "delivered")
        self.assertEqual(row.attempts, 3)

    def test_retry_after_honoured(self):
        self.target.failure = TemporaryDeliveryError("429", retry_after=42.0)
        self.accept(NORMAL)
        row = next(iter(self.store.rows.values()))
        self.assertEqual(row.next_attempt_at, self.clock.seconds() + 42.0)

    def test_permanent_failure_dead_lettered_at_once(self):
        self.target.failure = PermanentDeliveryError("400 bad payload")
        self.accept(NORMAL)
        dead = self.successResultOf(self.store.dead_letters())
        self.assertEqual(len(dead), 1)
        self.assertEqual(dead[0].error, "400 bad payload")

    def test_out_of_attempts(self):
        self.dispatcher.breakers["target"].threshold = 100
        self.target.failure = TemporaryDeliveryError("down")
        self.accept(NORMAL)
        self.clock.pump([1.0, 2.0, 4.0, 8.0, 16.0])
        dead = self.successResultOf(self.store.dead_letters())
        self.assertEqual(len(dead), 1)
        self.assertEqual(dead[0].attempts, 4)

    def test_any_exception_is_temporary(self):
        self.target.failure = RuntimeError("bug")
        self.accept(NORMAL)
        self.assertEqual(self.states(), ["pending"])

    def test_emergency_retry_delay_is_capped(self):
        self.target.failure = TemporaryDeliveryError("down")
        self.accept(EMERGENCY)
        self.clock.pump([1.0, 2.0])
        row = next(iter(self.store.rows.values()))
        self.assertLessEqual(row.next_attempt_at - self.clock.seconds(), 2.0)

    def test_replay_from_elsewhere_picked_up_by_poll(self):
        self.target.failure = PermanentDeliveryError("no")
        self.accept(NORMAL)
        self.target.failure = None
        self.assertEqual(self.successResultOf(self.store.replay(now=self.clock.seconds())), 1)
        self.clock.advance(5.0)
        self.assertEqual(self.states(), ["delivered"])

    def test_recover_in_flight_at_start(self):
        store = MemoryStore()
        self.successResultOf(store.accept([intake_for(priority=EMERGENCY, destinations=("target",))]))
        self.assertEqual([r.state for r in store.rows.values()], ["in_flight"])
        dispatcher = Dispatcher(store, {"target": self.target}, self.clock, SETTINGS)
        self.successResultOf(dispatcher.start())
        self.assertEqual([r.state for r in store.rows.values()], ["delivered"])
        self.successResultOf(dispatcher.stop())

    def test_unknown_destination_dead_lettered(self):
        self.accept(NORMAL, destinations=("gone",))
        self.assertEqual(self.states(), ["dead"])

    def test_breaker_opens_and_probes(self):
        self.target.failure = TemporaryDeliveryError("down")
        self.accept(NORMAL, count=3)
        breaker = self.dispatcher.breakers["target"]
        self.assertEqual(breaker.state, "open")
        self.assertEqual(self.dispatcher.status()["breakers"]["target"], "open")
        self.clock.advance(1.0)  # the retries come due while the breaker is open: put back, not tried
        self.assertEqual([(r.state, r.attempts) for r in self.store.rows.values()], [("pending", 1)] * 3)
        self.target.failure = None
        self.clock.pump([30.0, 0.01])
        self.assertEqual(breaker.state, "closed")
        self.clock.pump([5.0] * 10)
        self.assertEqual(self.states(), ["delivered"] * 3)

    def test_slow_probe_does_not_spin(self):
        breaker = self.dispatcher.breakers["target"]
        for _ in range(3):
            breaker.failed()
        self.accept(NORMAL, count=2)  # refused: back when the breaker half-opens
        claims = []
        claim = self.store.claim

        def counted(*args, **kwargs):
            claims.append(args)
            if len(claims) > 20:
                raise RuntimeError("the lane claims over and over")
            return claim(*args, **kwargs)
        self.store.claim = counted
        self.target.hold = True
        self.clock.advance(30.0)
        self.assertEqual(len(self.target.pending), 1, "one probe")
        self.assertLessEqual(len(claims), 10, "a wake or two per lane, not a spin")
        waiting = [r for r in self.store.rows.values() if r.state == "pending"]
        self.assertEqual([r.next_attempt_at for r in waiting], [self.clock.seconds() + 1.0])
        self.target.hold = False
        self.target.pending[0].callback(None)
        self.assertEqual(breaker.state, "closed")
        self.clock.advance(1.0)
        self.assertEqual(self.states(), ["delivered"] * 2)

    def test_open_breaker_leaves_its_backlog_on_disk(self):
        breaker = self.dispatcher.breakers["target"]
        for _ in range(3):
            breaker.failed()
        claims = []
        claim = self.store.claim

        def counted(*args, **kwargs):
            claims.append(kwargs.get("destination_id"))
            return claim(*args, **kwargs)
        self.store.claim = counted
        backlog = self.successResultOf(self.store.accept(
            [intake_for(destinations=("target",), received_at=self.clock.seconds()) for _ in range(200)]))
        self.dispatcher.submit(backlog)
        flowing = self.successResultOf(self.store.accept(
            [intake_for(destinations=("other",), received_at=self.clock.seconds()) for _ in range(5)]))
        self.dispatcher.submit(flowing)
        self.clock.advance(10.0)
        self.assertEqual(len(self.other.delivered), 5, "the other destination of the lane keeps going")
        self.assertEqual(self.target.delivered, [])
        self.assertNotIn("target", claims, "nothing claimed for the destination that is down")
        self.assertLessEqual(len(claims), 30, "no claim and put-back churn")
        pending = [r for r in self.store.rows.values() if r.delivery.destination_id == "target"]
        self.assertEqual({(r.state, r.attempts) for r in pending}, {("pending", 0)})
        self.clock.advance(25.0)  # the breaker half-opens: a probe goes out, then the rest
        self.assertEqual(len(self.target.delivered), 200)

    def test_stop_waits_for_attempts(self):
        self.target.hold = True
        self.accept(EMERGENCY)
        stopped = self.dispatcher.stop()
        self.assertNoResult(stopped)
        self.target.pending[0].callback(None)
        self.successResultOf(stopped)

    def test_observer_hooks(self):
        calls = []

        class Hook:
            def siaga_delivered(self, delivery, receipt):
                calls.append(("delivered", delivery.destination_id))

            def siaga_dead_lettered(self, delivery, error):
                calls.append(("dead", error))
        self.dispatcher.hook = Hook()
        self.accept(NORMAL)
        self.other.failure = PermanentDeliveryError("gone")
        self.accept(NORMAL, destinations=("other",))
        self.assertEqual(calls, [("delivered", "target"), ("dead", "gone")])


class PerDestinationTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.slow = RecordingDestination("slow")
        self.fast = RecordingDestination("fast")
        self.dispatcher = Dispatcher(self.store, {"slow": self.slow, "fast": self.fast}, self.clock, SETTINGS,
                                     random_fraction=lambda: 1.0,
                                     overrides={"slow": {"rate_limit": 2.0, "max_attempts": 1}})
        self.successResultOf(self.dispatcher.start())
        self.addCleanup(lambda: self.successResultOf(self.dispatcher.stop()))

    def accept(self, destination, count=1):
        self.dispatcher.submit(self.successResultOf(self.store.accept(
            [intake_for(priority=NORMAL, destinations=(destination,), received_at=0) for _ in range(count)])))

    def test_rate_limit_of_one_destination(self):
        self.accept("slow", count=5)
        self.accept("fast", count=5)
        self.assertEqual((len(self.slow.delivered), len(self.fast.delivered)), (2, 5))
        self.clock.advance(0.5)
        self.assertEqual(len(self.slow.delivered), 2, "still within the same second")
        self.clock.advance(0.6)
        self.assertEqual(len(self.slow.delivered), 4)
        self.clock.pump([0.5] * 4)
        self.assertEqual(len(self.slow.delivered), 5)

    def test_attempts_limit_of_one_destination(self):
        self.slow.failure = TemporaryDeliveryError("down")
        self.fast.failure = TemporaryDeliveryError("down")
        self.accept("slow")
        self.accept("fast")
        dead = self.successResultOf(self.store.dead_letters())
        self.assertEqual([d.delivery.destination_id for d in dead], ["slow"])


class SendPendingOutputTests(SynchronousTestCase):
    """An emergency's request leaves within the turn that started it, not on the reactor's next pass."""

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        self.reactor = MemoryReactorClock()
        self.store = MemoryStore()
        self.target = RecordingDestination("target")
        self.dispatcher = Dispatcher(self.store, {"target": self.target}, self.reactor, SETTINGS)
        self.successResultOf(self.dispatcher.start())
        self.addCleanup(lambda: self.successResultOf(self.dispatcher.stop()))
        self.written = []

        class Buffered:
            def doWrite(writer):
                self.written.append(writer)

        class Broken:
            def doWrite(writer):
                raise OSError("the connection is gone")
        self.buffered = Buffered()
        self.reactor.addWriter(Broken())
        self.reactor.addWriter(self.buffered)

    def submit(self, priority):
        accepted = self.successResultOf(self.store.accept(
            [intake_for(priority=priority, destinations=("target",), received_at=self.reactor.seconds())]))
        self.dispatcher.submit(accepted)

    def test_emergency_sends_buffered_output_at_once(self):
        self.submit(EMERGENCY)
        self.assertEqual(len(self.target.delivered), 1)
        self.assertEqual(self.written, [self.buffered], "sent now; a failing writer is left to the reactor")

    def test_ordinary_reports_leave_it_to_the_reactor(self):
        self.submit(NORMAL)
        self.assertEqual(len(self.target.delivered), 1)
        self.assertEqual(self.written, [])

    def test_a_clock_without_descriptors_is_left_alone(self):
        from gateway.dispatch import send_pending_output
        send_pending_output(task.Clock())  # no getWriters: nothing to do, no error
        self.assertEqual(self.written, [])


class SaturationTests(SynchronousTestCase):
    def test_normal_lanes_hold_back_while_reactor_is_late(self):
        clock = task.Clock()
        store = MemoryStore()
        target = RecordingDestination("target")
        dispatcher = Dispatcher(store, {"target": target}, clock, dict(SETTINGS, lag_threshold=0.05, lag_interval=0.1))
        self.successResultOf(dispatcher.start())
        clock.advance(0.5)  # the lag probe, due every 0.1 s, ran 0.4 s late
        self.assertTrue(dispatcher.saturated)
        accepted = self.successResultOf(store.accept([intake_for(priority=NORMAL, destinations=("target",), received_at=0),
                                                      intake_for(priority=EMERGENCY, destinations=("target",), received_at=0)]))
        dispatcher.submit(accepted)
        self.assertEqual([d.priority for d in target.delivered], [EMERGENCY])
        clock.advance(0.1)  # on time again
        self.assertFalse(dispatcher.saturated)
        self.assertEqual(sorted(d.priority for d in target.delivered), [EMERGENCY, NORMAL])
        self.successResultOf(dispatcher.stop())


    def test_a_stall_of_its_own_is_not_lag(self):
        clock = task.Clock()
        dispatcher = Dispatcher(MemoryStore(), {}, clock, dict(SETTINGS, lag_threshold=0.05, lag_interval=0.1))
        self.successResultOf(dispatcher.start())
        clock.rightNow += 0.5  # start-up's work held the reactor: no timer ran meanwhile
        dispatcher.reset_lag()
        clock.advance(0)  # the overdue lag probe runs
        self.assertEqual(dispatcher.lag, 0.0)
        self.assertFalse(dispatcher.saturated)
        clock.rightNow += 0.5  # a stall nobody accounted for
        clock.advance(0.1)
        self.assertTrue(dispatcher.saturated)
        self.successResultOf(dispatcher.stop())


class PolicyTests(SynchronousTestCase):
    def test_jitter_between_half_and_full_backoff(self):
        from gateway.testing import sample_delivery
        delivery = sample_delivery(priority=NORMAL)
        low = RetryPolicy({"base_delay": 4.0}, lambda: 0.0).next_attempt(delivery, TemporaryDeliveryError("x"), 0.0)
        high = RetryPolicy({"base_delay": 4.0}, lambda: 1.0).next_attempt(delivery, TemporaryDeliveryError("x"), 0.0)
        self.assertEqual((low, high), (2.0, 4.0))

    def test_breaker_states(self):
        clock = task.Clock()
        breaker = CircuitBreaker(clock, threshold=2, reset_after=10)
        breaker.failed()
        self.assertEqual(breaker.state, "closed")
        breaker.failed()
        self.assertEqual(breaker.state, "open")
        self.assertFalse(breaker.allow())
        clock.advance(10)
        self.assertEqual(breaker.state, "half-open")
        self.assertTrue(breaker.allow())
        self.assertFalse(breaker.allow(), "one probe at a time")
        breaker.failed()
        self.assertEqual(breaker.state, "open")
        clock.advance(10)
        self.assertTrue(breaker.allow())
        breaker.succeeded()
        self.assertEqual(breaker.state, "closed")


class BatchDispatchTests(SynchronousTestCase):
    """
    A destination providing IBatchDestination (batch_size 3, concurrency 2): batches in the
    other lanes, one outcome per batch for its breaker, emergencies one by one.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = MemoryStore()
        self.target = RecordingBatchDestination("target", {"batch_size": 3})
        self.other = RecordingDestination("other")
        self.dispatcher = self.make({"target": self.target, "other": self.other})

    def make(self, destinations, **settings):
        dispatcher = Dispatcher(self.store, destinations, self.clock, dict(SETTINGS, **settings),
                                random_fraction=lambda: 1.0)
        self.successResultOf(dispatcher.start())
        self.addCleanup(lambda: self.successResultOf(dispatcher.stop()))
        return dispatcher

    def stage(self, priority=NORMAL, count=1):
        """Accept ``count`` messages into the store; the dispatcher has not seen them yet."""
        return self.successResultOf(self.store.accept(
            [intake_for(priority=priority, destinations=("target",), received_at=self.clock.seconds())
             for _ in range(count)]))

    def accept(self, priority=NORMAL, count=1, dispatcher=None, staged=None):
        """Accept (or take ``staged``) and hand to the dispatcher; returns the deliveries."""
        accepted = staged if staged is not None else self.stage(priority, count)
        (dispatcher or self.dispatcher).submit(accepted)
        return [delivery for item in accepted for delivery in item.deliveries]

    def deliveries_of(self, accepted):
        return [delivery for item in accepted for delivery in item.deliveries]

    def sizes(self, target=None):
        return [len(batch) for batch in (target or self.target).batches]

    def states(self):
        return sorted(row.state for row in self.store.rows.values())

    def row(self, delivery):
        return self.store.rows[delivery.id]

    def release_held(self, target=None):
        target = target or self.target
        while any(not d.called for d in target.pending):
            for d in [d for d in target.pending if not d.called]:
                d.callback(None)

    def test_one_at_a_time_goes_at_once(self):
        self.accept()
        self.assertEqual(self.sizes(), [1], "a batch never waits to fill")
        self.accept()
        self.assertEqual(self.sizes(), [1, 1])
        self.assertEqual(self.target.batches[0][0].priority, NORMAL)
        self.assertEqual(self.states(), ["delivered"] * 2)

    def test_one_partial_batch_in_flight_at_a_time(self):
        self.target.hold = True
        self.accept()
        self.assertEqual(self.sizes(), [1], "an idle destination gets the lone delivery at once")
        self.accept()
        self.assertEqual(self.sizes(), [1], "while a partial batch is on its way, the next one waits")
        self.accept(count=2)
        self.assertEqual(self.sizes(), [1, 3], "a full batch goes whenever there is room")
        self.accept()
        self.assertEqual(self.sizes(), [1, 3])
        self.target.pending[0].callback(None)
        self.assertEqual(self.sizes(), [1, 3, 1], "the partial batch ended: what waited goes")
        self.release_held()
        self.assertEqual(self.states(), ["delivered"] * 5)
        self.assertEqual(self.dispatcher.partial_active["target"], 0)

    def test_batches_formed_from_what_waits(self):
        self.target.hold = True
        self.accept(count=7)
        self.assertEqual(self.sizes(), [3, 3], "two batches in flight (concurrency 2), full ones")
        self.assertEqual(len(self.dispatcher.waiting["target"]), 1)
        self.target.pending[0].callback(None)
        self.assertEqual(self.sizes(), [3, 3, 1], "the next attempt takes what waits")
        self.release_held()
        self.assertEqual(self.states(), ["delivered"] * 7)
        self.assertEqual(sorted(d.id for d in self.target.delivered), sorted(self.store.rows))

    def test_concurrency_counts_batches(self):
        self.target.hold = True
        self.accept(count=20)
        # Room for concurrency x batch_size deliveries of the batching destination (2 x 3) and
        # concurrency of the other (2): the lane claims 8, starts two batches, keeps 2 waiting.
        self.assertEqual(self.dispatcher.active["target"], 2)
        self.assertEqual(self.dispatcher.lane_active[NORMAL], 6)
        self.assertEqual(len(self.dispatcher.waiting["target"]), 2)
        self.assertEqual(self.states().count("in_flight"), 8)
        self.target.pending[0].callback(None)
        self.assertEqual(self.dispatcher.active["target"], 2, "one batch ended, the next one started")
        self.assertEqual(len(self.target.batches), 3)
        self.release_held()
        self.assertEqual(self.states(), ["delivered"] * 20)
        self.assertEqual(max(self.sizes()), 3)
        self.assertEqual((self.dispatcher.active["target"], self.dispatcher.lane_active[NORMAL]), (0, 0))
        self.assertEqual(len(self.dispatcher.waiting["target"]), 0)

    def test_room_is_concurrency_times_batch_size(self):
        target = RecordingBatchDestination("target", {"batch_size": 50})
        target.hold = True
        dispatcher = self.make({"target": target}, concurrency=4)
        self.accept(count=250, dispatcher=dispatcher)
        self.assertEqual(self.states().count("in_flight"), 200)
        self.assertEqual(self.sizes(target), [50] * 4)
        self.release_held(target)
        self.assertEqual(self.states(), ["delivered"] * 250)

    def test_a_batch_is_recorded_in_one_store_operation(self):
        calls = []
        for name in ("delivered", "delivered_many"):
            original = getattr(self.store, name)

            def recording(*args, _name=name, _original=original):
                calls.append(_name)
                return _original(*args)
            setattr(self.store, name, recording)
        told = []
        self.dispatcher.on_delivered = lambda delivery, receipt: told.append((delivery.id, receipt.reference))
        deliveries = self.accept(count=3)
        self.assertEqual(self.sizes(), [3])
        self.assertEqual(calls, ["delivered_many"])
        self.assertEqual(self.states(), ["delivered"] * 3)
        self.assertEqual(sorted(told), sorted((d.id, f"R-{d.id}") for d in deliveries))

    def test_claims_in_chunks_without_splitting_batches(self):
        target = RecordingBatchDestination("target", {"batch_size": 50})
        target.hold = True
        limits = []
        claim = self.store.claim

        def recording_claim(priority, limit, now):
            limits.append(limit)
            return claim(priority, limit, now)
        self.store.claim = recording_claim
        dispatcher = self.make({"target": target}, concurrency=4, claim_chunk=64)
        self.accept(count=230, dispatcher=dispatcher)
        self.assertLessEqual(max(limits), 64, "no claim takes more than a chunk")
        self.assertEqual(self.sizes(target), [50] * 4, "full batches although each claim brought 64")
        self.release_held(target)
        self.assertEqual(self.states(), ["delivered"] * 230)
        self.assertEqual(self.sizes(target)[-1], 30, "the rest goes out once the lane is drained")

    def test_partial_failures(self):
        staged = self.stage(count=3)
        temporary, permanent, fine = self.deliveries_of(staged)
        self.target.item_failures = {temporary.id: TemporaryDeliveryError("busy"),
                                     permanent.id: PermanentDeliveryError("bad payload")}
        self.accept(staged=staged)
        self.assertEqual(self.sizes(), [3])
        self.assertEqual(self.row(fine).state, "delivered")
        self.assertEqual(self.row(fine).receipt.reference, f"R-{fine.id}")
        self.assertEqual((self.row(permanent).state, self.row(permanent).error), ("dead", "bad payload"))
        retried = self.row(temporary)
        self.assertEqual((retried.state, retried.error, retried.attempts), ("pending", "busy", 1))
        self.assertEqual(retried.next_attempt_at, self.clock.seconds() + 1.0)
        self.assertEqual(self.dispatcher.breakers["target"].failures, 0, "the request got through")
        self.target.item_failures = {}
        self.clock.advance(1.0)
        self.assertEqual([d.id for d in self.target.batches[-1]], [temporary.id])
        self.assertEqual((retried.state, retried.attempts), ("delivered", 2))

    def test_any_exception_in_results_is_temporary(self):
        staged = self.stage()
        broken, = self.deliveries_of(staged)
        self.target.item_failures = {broken.id: RuntimeError("bug")}
        self.accept(staged=staged)
        self.assertEqual((self.row(broken).state, self.row(broken).error), ("pending", "RuntimeError: bug"))

    def test_whole_batch_failure_retried(self):
        self.target.hold = True
        deliveries = self.accept(count=3)
        self.assertEqual(self.sizes(), [3])
        self.target.pending[0].errback(TemporaryDeliveryError("HTTP 503", retry_after=5.0))
        rows = [self.row(d) for d in deliveries]
        self.assertEqual({(r.state, r.attempts, r.error) for r in rows}, {("pending", 1, "HTTP 503")})
        self.assertEqual({r.next_attempt_at for r in rows}, {self.clock.seconds() + 5.0})
        self.assertEqual(self.dispatcher.breakers["target"].failures, 1, "one failure per request")
        self.assertEqual((self.dispatcher.active["target"], self.dispatcher.lane_active[NORMAL]), (0, 0))
        self.target.hold = False
        self.clock.advance(4.9)
        self.assertEqual(self.sizes(), [3])
        self.clock.advance(0.1)
        self.assertEqual(self.sizes(), [3, 3])
        self.assertEqual({(r.state, r.attempts) for r in rows}, {("delivered", 2)})

    def test_whole_batch_permanent_failure_dead_letters_each(self):
        self.target.failure = PermanentDeliveryError("HTTP 400: bad")
        self.accept(count=2)
        self.assertEqual(self.sizes(), [2])
        dead = self.successResultOf(self.store.dead_letters())
        self.assertEqual([d.error for d in dead], ["HTTP 400: bad"] * 2)

    def test_retry_policy_per_delivery(self):
        self.dispatcher.policies["target"].max_attempts = 2
        staged = self.stage(count=2)
        old, new = self.deliveries_of(staged)
        self.store.rows[old.id].attempts = 1  # tried once before
        self.target.failure = TemporaryDeliveryError("down")
        self.accept(staged=staged)
        self.assertEqual(self.sizes(), [2], "one batch, two deliveries at different attempts")
        self.assertEqual((self.row(old).state, self.row(old).attempts), ("dead", 2))
        self.assertEqual((self.row(new).state, self.row(new).attempts), ("pending", 1))

    def test_wrong_number_of_results_fails_the_batch(self):
        self.target.deliver_batch = lambda deliveries: defer.succeed([Receipt("only-one")])
        self.accept(count=2)
        self.assertEqual(self.states(), ["pending"] * 2)
        self.assertIn("1 results for 2 deliveries", next(iter(self.store.rows.values())).error)
        self.assertEqual(self.dispatcher.breakers["target"].failures, 1)

    def test_breaker_counts_requests(self):
        breaker = self.dispatcher.breakers["target"]
        self.target.failure = TemporaryDeliveryError("down")
        self.target.hold = True
        self.accept(count=6)  # two requests of three: two failures, not six
        self.assertEqual(self.sizes(), [3, 3])
        self.assertEqual((breaker.failures, breaker.state), (2, "closed"))
        self.accept()
        self.assertEqual((breaker.failures, breaker.state), (3, "open"))

    def test_all_items_failing_counts_as_a_failed_request(self):
        breaker = self.dispatcher.breakers["target"]
        staged = self.stage(count=2)
        self.target.item_failures = {d.id: TemporaryDeliveryError("no") for d in self.deliveries_of(staged)}
        self.accept(staged=staged)
        self.assertEqual(breaker.failures, 1)
        staged = self.stage(count=2)
        self.target.item_failures = {self.deliveries_of(staged)[0].id: TemporaryDeliveryError("no")}
        self.accept(staged=staged)
        self.assertEqual(breaker.failures, 0, "one delivery taken: the target answers")

    def test_breaker_refusal_releases_the_whole_batch(self):
        breaker = self.dispatcher.breakers["target"]
        for _ in range(3):
            breaker.failed()
        self.assertEqual(breaker.state, "open")
        self.accept(count=4)
        self.assertEqual(self.target.batches, [], "nothing sent while the breaker is open")
        self.assertEqual({(r.state, r.attempts, r.next_attempt_at) for r in self.store.rows.values()},
                         {("pending", 0, self.clock.seconds())}, "left on disk, never claimed")
        self.target.hold = True
        self.clock.advance(30.0)
        self.assertEqual(self.sizes(), [3], "the half-open probe is one request; the rest go back")
        self.assertEqual(self.states(), ["in_flight"] * 3 + ["pending"])
        self.target.hold = False
        self.release_held()
        self.assertEqual(breaker.state, "closed")
        self.clock.advance(1.0)
        self.assertEqual(self.states(), ["delivered"] * 4)
        self.assertEqual(self.sizes(), [3, 1])

    def test_emergency_stays_single(self):
        self.target.hold = True
        self.accept(count=3)
        self.accept(EMERGENCY, count=3)
        emergencies = [d for d in self.target.delivered if d.priority == EMERGENCY]
        self.assertEqual(len(emergencies), 3)
        self.assertEqual(self.sizes(), [3], "emergencies go through deliver, one each")
        self.assertTrue(all(d.priority == NORMAL for batch in self.target.batches for d in batch))
        self.release_held()

    def test_emergency_retry_stays_single(self):
        self.target.failure = TemporaryDeliveryError("down")
        self.accept(EMERGENCY, count=2)
        self.target.failure = None
        self.clock.advance(2.0)
        self.assertEqual(self.states(), ["delivered"] * 2)
        self.assertEqual(self.target.batches, [])

    def test_batch_size_one_is_single_delivery(self):
        target = RecordingBatchDestination("target", {"batch_size": 1})
        target.hold = True
        dispatcher = self.make({"target": target}, concurrency=2)
        self.accept(count=5, dispatcher=dispatcher)
        self.assertEqual(target.batches, [], "batch_size 1 uses deliver")
        self.assertEqual(len(target.pending), 2)
        self.assertEqual(self.states().count("in_flight"), 2, "room is concurrency, as without batching")
        self.release_held(target)
        self.assertEqual(self.states(), ["delivered"] * 5)

    def test_lanes_share_a_batch(self):
        self.target.hold = True
        self.accept(count=6)
        self.accept(HIGH)
        self.accept(NORMAL)
        self.target.pending[0].callback(None)
        self.assertEqual(sorted(d.priority for d in self.target.batches[-1]), [HIGH, NORMAL])
        self.release_held()
        self.assertEqual(self.states(), ["delivered"] * 8)
        self.assertEqual(sum(self.dispatcher.lane_active.values()), 0)

    def test_rate_limit_counts_batches(self):
        target = RecordingBatchDestination("target", {"batch_size": 3})
        dispatcher = self.make({"target": target}, rate_limit=1.0)
        self.accept(count=6, dispatcher=dispatcher)
        self.assertEqual(self.sizes(target), [3], "one request in the first second")
        self.clock.advance(1.0)
        self.assertEqual(self.sizes(target), [3, 3])

    def test_outcomes_recorded_per_delivery(self):
        calls = []

        class Hook:
            def siaga_delivered(self, delivery, receipt):
                calls.append(receipt.reference)

            def siaga_dead_lettered(self, delivery, error):
                calls.append(error)
        self.dispatcher.hook = Hook()
        staged = self.stage(count=2)
        first, second = self.deliveries_of(staged)
        self.target.item_failures = {second.id: PermanentDeliveryError("gone")}
        self.accept(staged=staged)
        self.assertEqual(sorted(calls), sorted([f"R-{first.id}", "gone"]))
        stats = self.dispatcher.metrics.destinations["target"]
        self.assertEqual((stats.delivered, stats.dead_lettered, stats.in_flight), (1, 1, 0))

    def test_stop_waits_for_batches(self):
        self.target.hold = True
        self.accept(count=2)
        stopped = self.dispatcher.stop()
        self.assertNoResult(stopped)
        self.target.pending[0].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.states(), ["delivered"] * 2)

    def test_bad_batch_size_refused(self):
        target = RecordingBatchDestination("broken")
        for size in (0, "3", 2.0, True):
            target.batch_size = size
            with self.assertRaises(ValueError) as raised:
                Dispatcher(self.store, {"broken": target}, self.clock, SETTINGS)
            self.assertIn("'broken'", str(raised.exception))

    def test_batching_without_deliver_batch_refused(self):
        target = RecordingBatchDestination("broken")
        target.deliver_batch = None
        with self.assertRaises(ValueError) as raised:
            Dispatcher(self.store, {"broken": target}, self.clock, SETTINGS)
        self.assertIn("no deliver_batch", str(raised.exception))
