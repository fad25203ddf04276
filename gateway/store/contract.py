"""
The contract every :class:`~gateway.interfaces.IStore` passes.

Mix :class:`StoreContractTests` into a ``twisted.trial.unittest.TestCase`` (not a
``SynchronousTestCase``: the tests are ``inlineCallbacks`` and a real store fires its Deferreds
from a thread through the reactor) and provide:

- ``make_store()`` -> a new, unstarted store; the suite starts it in ``setUp`` and stops it in a
  cleanup;
- optionally ``reopen_store()`` -> a new unstarted store over the same data (after the first one
  was stopped), for stores that keep their data on disk; the default ``None`` skips that test;
- optionally ``set_writable(store, writable)`` -> ``None`` or a Deferred, making writes fail (and
  succeed again) as a full disk would; the default skips that test;
- optionally ``quarantined(store)`` -> a list (or a Deferred of a list) of dicts with
  ``channel_id``, ``reason``, ``body`` and ``headers``; the default ``None`` checks less.

A store with a ``prune(older_than_seconds, now)`` method is also checked for retention.

Times in these tests are small explicit numbers (messages are received at 1000.0), never the
wall clock, so a store must take ``now`` from its arguments and may use its own clock only where
the interface gives none.
"""

from __future__ import annotations

import dataclasses

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from gateway.errors import StoreUnavailable
from gateway.interfaces import IStore
from gateway.message import (
    EMERGENCY,
    HIGH,
    LOW,
    NORMAL,
    PRIORITIES,
    Intake,
    Message,
    Receipt,
    Reply,
    StatusUpdate,
    Triage,
)

T0 = 1000.0


def _intake(text="Jalan rusak di Sangatta", priority=NORMAL, destinations=("lapor",), channel_id="web",
            external_id=None, received_at=T0, sender="+6281200000001"):
    message = Message(channel_id=channel_id, channel_type="web", sender=sender, text=text, sender_name="Warga",
                      external_id=external_id, received_at=received_at)
    category = "fire" if priority == EMERGENCY else "complaint"
    return Intake(message, Triage(priority, category, confidence=0.8, reasons=("rule:test",)), tuple(destinations))


def _without_case(message):
    return dataclasses.replace(message, case_id=None)


class StoreContractTests:
    """The :class:`~gateway.interfaces.IStore` contract, as a mixin for trial's ``TestCase``."""

    def make_store(self):
        raise NotImplementedError("provide make_store() returning an unstarted store")

    def reopen_store(self):
        return None

    def set_writable(self, store, writable):
        raise unittest.SkipTest("this store has no way to make writes fail")

    def quarantined(self, store):
        return None

    # -- set-up ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def setUp(self):
        if not isinstance(self, unittest.TestCase):
            raise TypeError("StoreContractTests needs twisted.trial.unittest.TestCase, not SynchronousTestCase: "
                            "its tests return Deferreds")
        yield defer.maybeDeferred(super().setUp)
        self.store = self.make_store()
        yield self.store.start()
        self.addCleanup(self.store.stop)

    def accept(self, *intakes):
        return self.store.accept(list(intakes))

    @defer.inlineCallbacks
    def accept_one(self, **kwargs):
        accepted = yield self.accept(_intake(**kwargs))
        return accepted[0]

    @defer.inlineCallbacks
    def claim_all(self, priority=NORMAL, now=T0, limit=100):
        claimed = yield self.store.claim(priority, limit, now)
        return claimed

    # -- interface ---------------------------------------------------------------------------

    def test_provides_interface(self):
        self.assertTrue(verifyObject(IStore, self.store))

    # -- accept ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_accept_fires_with_one_accepted_per_intake_in_order(self):
        first = _intake("Jalan rusak", NORMAL, ("lapor", "webhook"), external_id="e1")
        second = _intake("Lampu mati", HIGH, ("lapor",), external_id="e2")
        accepted = yield self.accept(first, second)
        self.assertEqual(len(accepted), 2)
        self.assertEqual(_without_case(accepted[0].message), first.message)
        self.assertEqual(accepted[0].triage, first.triage)
        self.assertFalse(accepted[0].duplicate)
        self.assertEqual([d.destination_id for d in accepted[0].deliveries], ["lapor", "webhook"])
        self.assertEqual(_without_case(accepted[1].message), second.message)
        self.assertEqual([d.destination_id for d in accepted[1].deliveries], ["lapor"])
        deliveries = accepted[0].deliveries + accepted[1].deliveries
        self.assertEqual(len({d.id for d in deliveries}), 3, "delivery ids must be unique")
        for accepted_one in accepted:
            for delivery in accepted_one.deliveries:
                self.assertEqual(delivery.message, accepted_one.message)
                self.assertEqual(delivery.triage, accepted_one.triage)
                self.assertEqual(delivery.attempt, 1)
        self.assertEqual(accepted[1].deliveries[0].priority, HIGH)

    @defer.inlineCallbacks
    def test_accept_nothing(self):
        accepted = yield self.store.accept([])
        self.assertEqual(list(accepted), [])

    @defer.inlineCallbacks
    def test_message_without_destinations_is_stored(self):
        accepted = yield self.accept_one(destinations=(), external_id="lonely")
        self.assertEqual(accepted.deliveries, ())
        again = yield self.accept_one(destinations=(), external_id="lonely", text="lagi")
        self.assertTrue(again.duplicate)
        self.assertEqual(again.message.id, accepted.message.id)

    @defer.inlineCallbacks
    def test_accepted_message_keeps_every_field(self):
        from gateway.message import Location, Media
        message = Message(channel_id="wa", channel_type="whatsapp", sender="+6281211112222", text="Banjir di Bengalon",
                          external_id="wamid.X", sender_name="Ani", received_at=T0 + 0.25,
                          location=Location(lat=0.5, lon=117.5, name="Bengalon"),
                          media=(Media("image", "media-1", "image/jpeg", "foto"),), public=True,
                          reply_to="wamid.W", permalink="https://example.invalid/p/1", extra={"k": [1, "dua"]})
        triage = Triage(HIGH, "flood", 0.75, ("rule:banjir",), Location(name="Bengalon", source="gazetteer"))
        yield self.store.accept([Intake(message, triage, ("lapor",))])
        again = yield self.store.accept([Intake(message, triage, ("lapor",))])
        self.assertTrue(again[0].duplicate)
        self.assertEqual(again[0].message, dataclasses.replace(message, case_id=message.id))
        self.assertEqual(again[0].triage, triage)
        claimed = yield self.claim_all(HIGH, now=T0 + 1)
        self.assertEqual(claimed[0].message, again[0].message)
        self.assertEqual(claimed[0].triage, triage)

    # -- dedupe ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_duplicate_returns_first_message_and_no_deliveries(self):
        first = yield self.accept_one(text="Pertama", external_id="same")
        again = yield self.accept_one(text="Kedua", external_id="same", destinations=("lapor", "webhook"))
        self.assertTrue(again.duplicate)
        self.assertEqual(again.message.id, first.message.id)
        self.assertEqual(again.message.ticket, first.message.ticket)
        self.assertEqual(again.message.text, "Pertama")
        self.assertEqual(again.triage, first.triage)
        self.assertEqual(again.deliveries, ())
        depth = yield self.store.depth()
        self.assertEqual(depth[NORMAL], 1)

    @defer.inlineCallbacks
    def test_duplicate_within_one_batch(self):
        accepted = yield self.accept(_intake("Satu", external_id="x"), _intake("Dua", external_id="x"))
        self.assertFalse(accepted[0].duplicate)
        self.assertTrue(accepted[1].duplicate)
        self.assertEqual(accepted[1].message.id, accepted[0].message.id)
        self.assertEqual(accepted[1].deliveries, ())

    @defer.inlineCallbacks
    def test_same_external_id_on_another_channel_is_not_a_duplicate(self):
        yield self.accept_one(channel_id="wa-1", external_id="m1")
        other = yield self.accept_one(channel_id="wa-2", external_id="m1")
        self.assertFalse(other.duplicate)
        self.assertEqual(len(other.deliveries), 1)

    @defer.inlineCallbacks
    def test_messages_without_external_id(self):
        first = yield self.accept_one(text="a")
        second = yield self.accept_one(text="a")
        self.assertFalse(first.duplicate)
        self.assertFalse(second.duplicate)
        self.assertNotEqual(first.message.id, second.message.id)
        intake = _intake("b")
        yield self.accept(intake)
        again = yield self.accept(intake)
        self.assertTrue(again[0].duplicate, "the same message accepted twice is a duplicate")

    # -- emergencies and pending deliveries --------------------------------------------------

    @defer.inlineCallbacks
    def test_emergency_deliveries_come_back_in_flight(self):
        accepted = yield self.accept_one(text="Kebakaran!", priority=EMERGENCY, destinations=("cad112", "notify"))
        self.assertEqual([d.attempt for d in accepted.deliveries], [1, 1])
        claimed = yield self.claim_all(EMERGENCY, now=T0 + 3600)
        self.assertEqual(claimed, [], "an emergency delivery is already claimed by its accept")
        due = yield self.store.next_due(EMERGENCY)
        self.assertIsNone(due)
        depth = yield self.store.depth()
        self.assertEqual(depth[EMERGENCY], 2)

    @defer.inlineCallbacks
    def test_other_deliveries_are_pending_and_due_now(self):
        for priority in (HIGH, NORMAL, LOW):
            accepted = yield self.accept_one(priority=priority)
            due = yield self.store.next_due(priority)
            self.assertIsNotNone(due)
            self.assertLessEqual(due, T0)
            claimed = yield self.claim_all(priority, now=T0)
            self.assertEqual([d.id for d in claimed], [accepted.deliveries[0].id])
            self.assertEqual(claimed[0].attempt, 1)
            self.assertEqual(claimed[0].message, accepted.message)

    # -- claim -------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_claim_respects_priority(self):
        normal = yield self.accept_one(priority=NORMAL)
        high = yield self.accept_one(priority=HIGH)
        claimed = yield self.claim_all(HIGH)
        self.assertEqual([d.id for d in claimed], [high.deliveries[0].id])
        claimed = yield self.claim_all(LOW)
        self.assertEqual(claimed, [])
        claimed = yield self.claim_all(NORMAL)
        self.assertEqual([d.id for d in claimed], [normal.deliveries[0].id])

    @defer.inlineCallbacks
    def test_claim_and_next_due_for_one_destination(self):
        both = yield self.accept(_intake("untuk dua", destinations=("lapor", "bpbd"), received_at=T0))
        later = yield self.accept(_intake("nanti", destinations=("bpbd",), received_at=T0 + 5))
        ids = {d.destination_id: d.id for d in both[0].deliveries}
        due = yield self.store.next_due(NORMAL, destination_id="bpbd")
        self.assertEqual(due, T0)
        claimed = yield self.store.claim(NORMAL, 10, T0 + 10, destination_id="bpbd")
        self.assertEqual([d.id for d in claimed], [ids["bpbd"], later[0].deliveries[0].id])
        nothing = yield self.store.next_due(NORMAL, destination_id="bpbd")
        self.assertIsNone(nothing)
        rest = yield self.store.claim(NORMAL, 10, T0 + 10)
        self.assertEqual([d.id for d in rest], [ids["lapor"]])

    @defer.inlineCallbacks
    def test_claim_respects_limit(self):
        accepted = yield self.accept(*[_intake(f"pesan {i}", received_at=T0 + i) for i in range(5)])
        seen = []
        for expected in (2, 2, 1, 0):
            claimed = yield self.store.claim(NORMAL, 2, T0 + 10)
            self.assertEqual(len(claimed), expected)
            seen.extend(d.id for d in claimed)
        self.assertEqual(sorted(seen), sorted(a.deliveries[0].id for a in accepted))

    @defer.inlineCallbacks
    def test_claim_oldest_first(self):
        late = yield self.accept_one(text="late", received_at=T0 + 3)
        early = yield self.accept_one(text="early", received_at=T0 + 1)
        middle = yield self.accept_one(text="middle", received_at=T0 + 2)
        claimed = yield self.claim_all(now=T0 + 5)
        self.assertEqual([d.message.text for d in claimed], ["early", "middle", "late"])
        self.assertEqual([d.id for d in claimed],
                         [early.deliveries[0].id, middle.deliveries[0].id, late.deliveries[0].id])

    @defer.inlineCallbacks
    def test_claim_respects_due_time(self):
        accepted = yield self.accept_one()
        claimed = yield self.claim_all(now=T0)
        delivery_id = accepted.deliveries[0].id
        yield self.store.retry_later(delivery_id, "HTTP 503", T0 + 60)
        due = yield self.store.next_due(NORMAL)
        self.assertEqual(due, T0 + 60)
        claimed = yield self.claim_all(now=T0 + 59.9)
        self.assertEqual(claimed, [])
        claimed = yield self.claim_all(now=T0 + 60)
        self.assertEqual([d.id for d in claimed], [delivery_id])

    @defer.inlineCallbacks
    def test_claimed_delivery_is_never_claimed_twice(self):
        yield self.accept(*[_intake(f"pesan {i}", received_at=T0 + i) for i in range(6)])
        results = yield defer.gatherResults([self.store.claim(NORMAL, 4, T0 + 10) for _ in range(3)])
        ids = [d.id for claimed in results for d in claimed]
        self.assertEqual(len(ids), 6)
        self.assertEqual(len(set(ids)), 6)
        again = yield self.claim_all(now=T0 + 10)
        self.assertEqual(again, [])

    @defer.inlineCallbacks
    def test_attempt_numbers_count_claims(self):
        accepted = yield self.accept_one()
        delivery_id = accepted.deliveries[0].id
        for attempt in (1, 2, 3):
            claimed = yield self.claim_all(now=T0 + attempt * 10)
            self.assertEqual([(d.id, d.attempt) for d in claimed], [(delivery_id, attempt)])
            yield self.store.retry_later(delivery_id, f"timeout {attempt}", T0 + attempt * 10 + 5)

    @defer.inlineCallbacks
    def test_next_due_is_the_earliest(self):
        due = yield self.store.next_due(NORMAL)
        self.assertIsNone(due)
        first = yield self.accept_one(received_at=T0)
        yield self.accept_one(received_at=T0 + 1)
        claimed = yield self.claim_all(now=T0)
        self.assertEqual([d.id for d in claimed], [first.deliveries[0].id])
        due = yield self.store.next_due(NORMAL)
        self.assertEqual(due, T0 + 1)
        yield self.store.retry_later(first.deliveries[0].id, "busy", T0 + 0.5)
        due = yield self.store.next_due(NORMAL)
        self.assertEqual(due, T0 + 0.5)

    # -- outcomes ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_delivered(self):
        accepted = yield self.accept_one()
        yield self.claim_all()
        yield self.store.delivered(accepted.deliveries[0].id, Receipt(reference="LAPOR-1", url="https://x.invalid/1"),
                                   T0 + 1)
        claimed = yield self.claim_all(now=T0 + 3600)
        self.assertEqual(claimed, [])
        depth = yield self.store.depth()
        self.assertEqual(depth[NORMAL], 0)
        dead = yield self.store.dead_letters()
        self.assertEqual(dead, [])
        due = yield self.store.next_due(NORMAL)
        self.assertIsNone(due)

    @defer.inlineCallbacks
    def test_delivered_many(self):
        accepted = yield self.accept(*[_intake(f"pesan {i}", received_at=T0 + i) for i in range(3)])
        claimed = yield self.claim_all(now=T0 + 10)
        self.assertEqual(len(claimed), 3)
        ids = [item.deliveries[0].id for item in accepted]
        missing = yield self.store.delivered_many(
            [(ids[0], Receipt(reference="L-0")), ("no-such-delivery", Receipt()), (ids[2], Receipt(reference="L-2"))],
            T0 + 5)
        self.assertEqual(missing, ["no-such-delivery"])
        tracked = yield self.store.tracked("lapor")
        self.assertEqual(sorted((t.delivery.id, t.reference) for t in tracked),
                         sorted([(ids[0], "L-0"), (ids[2], "L-2")]))
        claimed = yield self.claim_all(now=T0 + 3600)
        self.assertEqual(claimed, [], "the one not marked is still in flight, the others are done")
        depth = yield self.store.depth()
        self.assertEqual(depth[NORMAL], 1)

    @defer.inlineCallbacks
    def test_release_does_not_count_an_attempt(self):
        accepted = yield self.accept_one(external_id="rel")
        [claimed] = yield self.claim_all()
        self.assertEqual(claimed.attempt, 1)
        yield self.store.release(claimed.id, T0 + 30)
        nothing = yield self.claim_all(now=T0 + 29)
        self.assertEqual(nothing, [])
        [again] = yield self.claim_all(now=T0 + 30)
        self.assertEqual((again.id, again.attempt), (accepted.deliveries[0].id, 1))

    @defer.inlineCallbacks
    def test_tracked_and_status(self):
        filed = yield self.accept_one(external_id="t1", destinations=("lapor", "outbox"))
        unfiled = yield self.accept_one(external_id="t2", destinations=("lapor",))
        waiting = yield self.accept_one(external_id="t3", destinations=("lapor",))
        claimed = {d.id: d for d in (yield self.claim_all())}
        lapor, outbox = filed.deliveries
        yield self.store.delivered(lapor.id, Receipt(reference="TRK-1"), T0 + 1)
        yield self.store.delivered(outbox.id, Receipt(reference="line-1"), T0 + 1)
        yield self.store.delivered(unfiled.deliveries[0].id, Receipt(), T0 + 1)
        self.assertIn(waiting.deliveries[0].id, claimed)
        tracked = yield self.store.tracked("lapor")
        self.assertEqual([(t.delivery.id, t.reference, t.status) for t in tracked], [(lapor.id, "TRK-1", None)])
        self.assertEqual(tracked[0].delivery.message.text, filed.message.text)
        changed = yield self.store.record_status(lapor.id, "Diproses", False, T0 + 2)
        self.assertTrue(changed)
        again = yield self.store.record_status(lapor.id, "Diproses", False, T0 + 3)
        self.assertFalse(again)
        [still] = yield self.store.tracked("lapor")
        self.assertEqual(still.status, "Diproses")
        yield self.store.record_status(lapor.id, "Selesai", True, T0 + 4)
        done = yield self.store.tracked("lapor")
        self.assertEqual(done, [])

    @defer.inlineCallbacks
    def test_dead_letter(self):
        accepted = yield self.accept_one(destinations=("lapor",))
        yield self.claim_all()
        delivery_id = accepted.deliveries[0].id
        yield self.store.dead_letter(delivery_id, "HTTP 400: bad payload", T0 + 2)
        dead = yield self.store.dead_letters()
        self.assertEqual(len(dead), 1)
        letter = dead[0]
        self.assertEqual(letter.delivery.id, delivery_id)
        self.assertEqual(letter.delivery.destination_id, "lapor")
        self.assertEqual(letter.delivery.message, accepted.message)
        self.assertEqual(letter.delivery.triage, accepted.triage)
        self.assertEqual(letter.error, "HTTP 400: bad payload")
        self.assertEqual(letter.attempts, 1)
        self.assertEqual(letter.failed_at, T0 + 2)
        claimed = yield self.claim_all(now=T0 + 3600)
        self.assertEqual(claimed, [])
        depth = yield self.store.depth()
        self.assertEqual(depth[NORMAL], 0)

    @defer.inlineCallbacks
    def test_dead_letters_filter_and_order(self):
        accepted = yield self.accept_one(destinations=("a", "b", "c"))
        ids = {d.destination_id: d.id for d in accepted.deliveries}
        yield self.claim_all()
        yield self.store.dead_letter(ids["a"], "a failed", T0 + 1)
        yield self.store.dead_letter(ids["b"], "b failed", T0 + 3)
        yield self.store.dead_letter(ids["c"], "c failed", T0 + 2)
        dead = yield self.store.dead_letters()
        self.assertEqual([d.delivery.destination_id for d in dead], ["b", "c", "a"], "newest first")
        dead = yield self.store.dead_letters(destination_id="c")
        self.assertEqual([d.delivery.id for d in dead], [ids["c"]])
        dead = yield self.store.dead_letters(limit=2)
        self.assertEqual([d.delivery.destination_id for d in dead], ["b", "c"])
        dead = yield self.store.dead_letters(destination_id="nowhere")
        self.assertEqual(dead, [])

    # -- replay and recover ------------------------------------------------------------------

    @defer.inlineCallbacks
    def _three_dead(self):
        accepted = yield self.accept_one(destinations=("a", "b", "a2"))
        yield self.claim_all()
        yield self.store.retry_later(accepted.deliveries[0].id, "again", T0)
        yield self.claim_all()
        ids = {}
        for delivery in accepted.deliveries:
            ids[delivery.destination_id] = delivery.id
            yield self.store.dead_letter(delivery.id, "gave up", T0 + 5)
        return ids

    @defer.inlineCallbacks
    def test_replay_by_ids(self):
        ids = yield self._three_dead()
        count = yield self.store.replay([ids["a"]], now=T0 + 100)
        self.assertEqual(count, 1)
        dead = yield self.store.dead_letters()
        self.assertEqual(sorted(d.delivery.id for d in dead), sorted([ids["b"], ids["a2"]]))
        claimed = yield self.claim_all(now=T0 + 100)
        self.assertEqual([(d.id, d.attempt) for d in claimed], [(ids["a"], 1)], "attempts start again")
        count = yield self.store.replay([], now=T0 + 100)
        self.assertEqual(count, 0)

    @defer.inlineCallbacks
    def test_replay_by_destination(self):
        ids = yield self._three_dead()
        count = yield self.store.replay(destination_id="b", now=T0 + 100)
        self.assertEqual(count, 1)
        claimed = yield self.claim_all(now=T0 + 100)
        self.assertEqual([d.id for d in claimed], [ids["b"]])

    @defer.inlineCallbacks
    def test_replay_all(self):
        ids = yield self._three_dead()
        count = yield self.store.replay(now=T0 + 100)
        self.assertEqual(count, 3)
        dead = yield self.store.dead_letters()
        self.assertEqual(dead, [])
        claimed = yield self.claim_all(now=T0 + 100)
        self.assertEqual(sorted(d.id for d in claimed), sorted(ids.values()))
        self.assertEqual({d.attempt for d in claimed}, {1})

    @defer.inlineCallbacks
    def test_replay_leaves_live_deliveries_alone(self):
        accepted = yield self.accept_one(destinations=("a", "b"))
        count = yield self.store.replay([d.id for d in accepted.deliveries], now=T0 + 100)
        self.assertEqual(count, 0)
        yield self.store.claim(NORMAL, 1, T0)
        count = yield self.store.replay(now=T0 + 100)
        self.assertEqual(count, 0)

    @defer.inlineCallbacks
    def test_recover_makes_in_flight_pending(self):
        emergency = yield self.accept_one(priority=EMERGENCY, destinations=("cad112",))
        normal = yield self.accept_one(destinations=("lapor", "webhook"))
        yield self.claim_all()
        count = yield self.store.recover(T0 + 50)
        self.assertEqual(count, 3)
        claimed = yield self.claim_all(EMERGENCY, now=T0 + 50)
        self.assertEqual([(d.id, d.attempt) for d in claimed], [(emergency.deliveries[0].id, 2)])
        claimed = yield self.claim_all(NORMAL, now=T0 + 50)
        self.assertEqual(sorted(d.id for d in claimed), sorted(d.id for d in normal.deliveries))
        self.assertEqual({d.attempt for d in claimed}, {2})
        count = yield self.store.recover(T0 + 60)
        self.assertEqual(count, 3)
        count = yield self.store.recover(T0 + 70)
        self.assertEqual(count, 0)

    # -- depth -------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_depth_counts_pending_and_in_flight(self):
        depth = yield self.store.depth()
        self.assertEqual(depth, {priority: 0 for priority in PRIORITIES})
        yield self.accept_one(priority=EMERGENCY, destinations=("cad112", "notify"))
        high = yield self.accept_one(priority=HIGH, destinations=("lapor", "webhook"))
        yield self.accept_one(priority=LOW, destinations=("lapor",))
        yield self.claim_all(HIGH)
        depth = yield self.store.depth()
        self.assertEqual(depth, {EMERGENCY: 2, HIGH: 2, NORMAL: 0, LOW: 1})
        yield self.store.delivered(high.deliveries[0].id, Receipt(reference="r"), T0 + 1)
        yield self.store.dead_letter(high.deliveries[1].id, "no", T0 + 1)
        depth = yield self.store.depth()
        self.assertEqual(depth, {EMERGENCY: 2, HIGH: 0, NORMAL: 0, LOW: 1})

    # -- replies -----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_reply_status_updates(self):
        accepted = yield self.accept_one(channel_id="wa", external_id="wamid.in")
        reply = Reply(channel_id="wa", recipient="+6281200000001", text="Laporan diterima: SGA-1",
                      in_reply_to=accepted.message)
        yield self.store.record_reply(reply, Receipt(reference="wamid.out"), "sent", T0 + 1)
        matched = yield self.store.update_reply_status(StatusUpdate("wa", "wamid.out", "delivered"))
        self.assertIs(matched, True)
        matched = yield self.store.update_reply_status(StatusUpdate("wa", "wamid.out", "read"))
        self.assertIs(matched, True)
        matched = yield self.store.update_reply_status(StatusUpdate("wa", "wamid.unknown", "read"))
        self.assertIs(matched, False)
        matched = yield self.store.update_reply_status(StatusUpdate("other", "wamid.out", "read"))
        self.assertIs(matched, False)

    @defer.inlineCallbacks
    def test_failed_reply_is_recorded(self):
        reply = Reply(channel_id="wa", recipient="+6281200000001", text="Laporan diterima")
        result = yield self.store.record_reply(reply, None, "failed", T0)
        self.assertIsNone(result)

    # -- quarantine and health ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_quarantine(self):
        result = yield self.store.quarantine("web", "body is not JSON", b"{not json\xff",
                                             {"content-type": "text/plain", "x-request-id": "r1"})
        self.assertIsNone(result)
        kept = yield defer.maybeDeferred(self.quarantined, self.store)
        if kept is not None:
            self.assertEqual(len(kept), 1)
            self.assertEqual(kept[0]["channel_id"], "web")
            self.assertEqual(kept[0]["reason"], "body is not JSON")
            self.assertEqual(kept[0]["body"], b"{not json\xff")
            self.assertEqual(kept[0]["headers"], {"content-type": "text/plain", "x-request-id": "r1"})

    @defer.inlineCallbacks
    def test_check_writable(self):
        result = yield self.store.check_writable()
        self.assertIsNone(result)

    @defer.inlineCallbacks
    def test_unwritable_store_fails_writes_and_recovers(self):
        yield defer.maybeDeferred(self.set_writable, self.store, False)
        try:
            yield self.assertFailure(self.accept(_intake(external_id="during")), StoreUnavailable)
            yield self.assertFailure(self.store.check_writable(), StoreUnavailable)
            yield self.assertFailure(self.store.quarantine("web", "bad", b"x", {}), StoreUnavailable)
        finally:
            yield defer.maybeDeferred(self.set_writable, self.store, True)
        yield self.store.check_writable()
        accepted = yield self.accept_one(external_id="during")
        self.assertFalse(accepted.duplicate, "a failed accept must leave nothing behind")
        claimed = yield self.claim_all()
        self.assertEqual([d.id for d in claimed], [accepted.deliveries[0].id])

    # -- persistence -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_survives_restart(self):
        emergency = yield self.accept_one(priority=EMERGENCY, destinations=("cad112",), external_id="sos")
        normal = yield self.accept_one(destinations=("lapor", "webhook"), external_id="n1")
        claimed = yield self.claim_all()
        self.assertEqual(len(claimed), 2)
        yield self.store.dead_letter(normal.deliveries[1].id, "HTTP 422", T0 + 9)
        reply = Reply(channel_id="web", recipient="+6281200000001", text="Diterima")
        yield self.store.record_reply(reply, Receipt(reference="out-1"), "sent", T0 + 1)
        yield self.store.stop()
        reopened = self.reopen_store()
        if reopened is None:
            raise unittest.SkipTest("this store keeps nothing across a restart")
        self.store = reopened
        yield self.store.start()
        self.addCleanup(self.store.stop)
        again = yield self.accept_one(external_id="sos", priority=EMERGENCY, destinations=("cad112",))
        self.assertTrue(again.duplicate)
        self.assertEqual(again.message, emergency.message)
        dead = yield self.store.dead_letters()
        self.assertEqual([(d.delivery.id, d.error) for d in dead], [(normal.deliveries[1].id, "HTTP 422")])
        count = yield self.store.recover(T0 + 20)
        self.assertEqual(count, 2)
        claimed = yield self.claim_all(EMERGENCY, now=T0 + 20)
        self.assertEqual([(d.id, d.attempt) for d in claimed], [(emergency.deliveries[0].id, 2)])
        matched = yield self.store.update_reply_status(StatusUpdate("web", "out-1", "read"))
        self.assertTrue(matched)

    # -- retention ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_cases_join_by_sender_channel_and_category(self):
        first = yield self.accept_one(text="Tolong kebakaran", external_id="c1", received_at=T0, priority=EMERGENCY)
        more = yield self.accept_one(text="apinya makin besar", external_id="c2", received_at=T0 + 600,
                                     priority=EMERGENCY)
        other_sender = yield self.accept_one(text="kebakaran", external_id="c3", received_at=T0 + 700,
                                             sender="+6281299990000", priority=EMERGENCY)
        other_matter = yield self.accept_one(text="jalan rusak", external_id="c4", received_at=T0 + 800,
                                             priority=NORMAL)
        self.assertEqual(first.message.case_id, first.message.id)
        self.assertEqual(more.message.case_id, first.message.id)
        self.assertEqual(more.message.ticket, first.message.ticket)
        self.assertEqual(other_sender.message.case_id, other_sender.message.id)
        self.assertEqual(other_matter.message.case_id, other_matter.message.id)
        again = yield self.accept_one(text="ulang", external_id="c2", priority=EMERGENCY)
        self.assertEqual((again.duplicate, again.message.case_id), (True, first.message.id))
        claimed = yield self.claim_all(NORMAL, now=T0 + 1000)
        self.assertEqual({d.message.case_id for d in claimed}, {other_matter.message.id})

    @defer.inlineCallbacks
    def test_case_closes_after_the_window(self):
        first = yield self.accept_one(text="Tolong kebakaran", external_id="w1", received_at=T0)
        later = yield self.accept_one(text="kebakaran lagi", external_id="w2", received_at=T0 + 5 * 3600)
        much_later = yield self.accept_one(text="kebakaran lagi", external_id="w3", received_at=T0 + 12 * 3600)
        self.assertEqual(later.message.case_id, first.message.id)
        self.assertEqual(much_later.message.case_id, much_later.message.id, "6 hours after the case's last message")

    @defer.inlineCallbacks
    def test_prune_blanks_finished_old_messages(self):
        if not hasattr(self.store, "prune"):
            raise unittest.SkipTest("this store has no retention")
        day = 86400.0
        done = yield self.accept_one(text="selesai", external_id="done", received_at=T0)
        waiting = yield self.accept_one(text="menunggu", external_id="waiting", received_at=T0)
        recent = yield self.accept_one(text="baru", external_id="recent", received_at=T0 + 30 * day)
        dead = yield self.accept_one(text="gagal", external_id="dead", received_at=T0, destinations=("a", "b"))
        yield self.claim_all(now=T0 + 30 * day)
        yield self.store.delivered(done.deliveries[0].id, Receipt(reference="L-1"), T0 + 1)
        yield self.store.retry_later(waiting.deliveries[0].id, "busy", T0 + 31 * day)
        yield self.store.delivered(recent.deliveries[0].id, Receipt(reference="L-2"), T0 + 30 * day)
        yield self.store.delivered(dead.deliveries[0].id, Receipt(reference="L-3"), T0 + 1)
        yield self.store.dead_letter(dead.deliveries[1].id, "HTTP 400", T0 + 2)

        result = yield self.store.prune(7 * day, T0 + 30 * day + 1)
        self.assertEqual(result["messages"], 2)

        by_key = {}
        for key in ("done", "waiting", "recent", "dead"):
            again = yield self.accept_one(external_id=key, text="ulang")
            self.assertTrue(again.duplicate)
            by_key[key] = again.message
        for key, original in (("done", done), ("dead", dead)):
            pruned = by_key[key]
            self.assertEqual((pruned.text, pruned.sender, pruned.sender_name), ("", "", None))
            self.assertEqual(pruned.id, original.message.id)
            self.assertEqual(pruned.ticket, original.message.ticket)
            self.assertEqual(pruned.channel_id, original.message.channel_id)
            self.assertEqual(pruned.received_at, original.message.received_at)
        self.assertEqual(by_key["waiting"].text, "menunggu")
        self.assertEqual(by_key["recent"].text, "baru")
        letters = yield self.store.dead_letters()
        self.assertEqual([(d.delivery.id, d.delivery.message.text) for d in letters], [(dead.deliveries[1].id, "")])
        again = yield self.store.prune(7 * day, T0 + 30 * day + 1)
        self.assertEqual(again["messages"], 0)
