"""
Fakes and contract tests for Siaga and for the people who write plugins for it.

- :class:`MemoryStore`: an :class:`~gateway.interfaces.IStore` in memory, with the same
  semantics as the real stores (it runs the same contract suite).
- :class:`RecordingDestination`, :class:`RecordingBatchDestination`, :class:`FakeChannel`: plugins
  that remember what they were given.
- :class:`RecordingTarget`: a ``twisted.web`` resource standing in for an outbound HTTP target,
  for use with ``treq.testing.StubTreq``.
- :class:`ChannelContractTests`, :class:`DestinationContractTests`,
  :class:`BatchDestinationContractTests`: mixins for a
  ``twisted.trial.unittest.SynchronousTestCase`` that check a plugin against its interface.
  ``StoreContractTests`` (from :mod:`gateway.store.contract`) does the same for stores.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Dict, List, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.context import PluginContext
from gateway.errors import (
    MalformedRequest,
    PermanentDeliveryError,
    RequestRefused,
    StoreUnavailable,
    TemporaryDeliveryError,
)
from gateway.interfaces import IBatchDestination, IChannel, IDestination, IStore
from gateway.message import (
    EMERGENCY,
    NORMAL,
    PRIORITIES,
    Accepted,
    DeadLetter,
    Delivery,
    Message,
    Parsed,
    Receipt,
    Tracked,
    Triage,
    new_id,
)
from gateway.options import Option
from gateway.store import DEFAULT_CASE_WINDOW


@dataclasses.dataclass
class _Row:
    delivery: Delivery
    state: str
    next_attempt_at: float
    attempts: int = 0
    error: Optional[str] = None
    receipt: Optional[Receipt] = None
    failed_at: Optional[float] = None
    status: Optional[str] = None
    status_final: bool = False
    status_checked: float = 0.0


@implementer(IStore)
class MemoryStore:
    """
    An in-memory :class:`~gateway.interfaces.IStore`. Set ``writable = False`` to make every
    write fail with :class:`~gateway.errors.StoreUnavailable`, as a full disk would.
    """

    def __init__(self, clock=None, case_window: float = DEFAULT_CASE_WINDOW):
        self.clock = clock
        self.case_window = case_window
        self.cases: Dict[Tuple[str, str, str], Tuple[str, float]] = {}
        self.writable = True
        self.messages: Dict[str, Tuple[Message, Triage]] = {}
        self.by_key: Dict[Tuple[str, str], str] = {}
        self.rows: Dict[str, _Row] = {}
        self.quarantined: List[dict] = []
        self.replies: Dict[Tuple[str, str], dict] = {}
        self.pruned: set = set()

    def _write(self):
        if not self.writable:
            raise StoreUnavailable("memory store made read-only")

    def start(self):
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)

    def accept(self, intakes):
        return defer.maybeDeferred(self._accept, list(intakes))

    def _accept(self, intakes):
        self._write()
        results = []
        for intake in intakes:
            message = intake.message
            existing = self.by_key.get(message.dedupe_key)
            if existing is not None:
                first, triage = self.messages[existing]
                results.append(Accepted(first, triage, duplicate=True))
                continue
            message = dataclasses.replace(message, case_id=self._case_for(message, intake.triage))
            self.messages[message.id] = (message, intake.triage)
            self.by_key[message.dedupe_key] = message.id
            deliveries = []
            # Due now, as the SQLite store does: a platform's timestamp may run ahead of our clock.
            due = min(message.received_at, self.clock.seconds()) if self.clock else message.received_at
            for destination_id in intake.destinations:
                delivery = Delivery(new_id(), destination_id, message, intake.triage, attempt=1)
                direct = intake.triage.priority == EMERGENCY
                self.rows[delivery.id] = _Row(
                    delivery, "in_flight" if direct else "pending", due, attempts=1 if direct else 0)
                deliveries.append(delivery)
            results.append(Accepted(message, intake.triage, deliveries=tuple(deliveries)))
        return results

    def _case_for(self, message, triage) -> str:
        key = (message.channel_id, message.sender, triage.category)
        case = self.cases.get(key)
        if case is not None and self.case_window > 0 and message.received_at - case[1] <= self.case_window:
            case_id = case[0]
        else:
            case_id = message.id
        self.cases[key] = (case_id, max(message.received_at, case[1]) if case and case[0] == case_id
                           else message.received_at)
        return case_id

    def quarantine(self, channel_id, reason, body, headers):
        return defer.maybeDeferred(self._quarantine, channel_id, reason, body, headers)

    def _now(self):
        return self.clock.seconds() if self.clock is not None else time.time()

    def _quarantine(self, channel_id, reason, body, headers):
        self._write()
        self.quarantined.append({"channel_id": channel_id, "reason": reason, "body": body, "headers": headers,
                                 "received_at": self._now()})

    def claim(self, priority, limit, now, destination_id=None):
        return defer.maybeDeferred(self._claim, priority, limit, now, destination_id)

    def _claim(self, priority, limit, now, destination_id=None):
        self._write()
        due = sorted(
            (r for r in self.rows.values()
             if r.state == "pending" and r.delivery.priority == priority and r.next_attempt_at <= now
             and destination_id in (None, r.delivery.destination_id)),
            key=lambda r: (r.next_attempt_at, r.delivery.id))[:limit]
        claimed = []
        for row in due:
            row.state = "in_flight"
            row.attempts += 1
            row.delivery = dataclasses.replace(row.delivery, attempt=row.attempts)
            claimed.append(row.delivery)
        return claimed

    def next_due(self, priority, destination_id=None):
        times = [r.next_attempt_at for r in self.rows.values()
                 if r.state == "pending" and r.delivery.priority == priority
                 and destination_id in (None, r.delivery.destination_id)]
        return defer.succeed(min(times) if times else None)

    def _row(self, delivery_id) -> _Row:
        self._write()
        return self.rows[delivery_id]

    def delivered(self, delivery_id, receipt, now):
        def mark():
            row = self._row(delivery_id)
            row.state, row.receipt = "delivered", receipt
        return defer.maybeDeferred(mark)

    def delivered_many(self, outcomes, now):
        def mark():
            self._write()
            missing = []
            for delivery_id, receipt in outcomes:
                row = self.rows.get(delivery_id)
                if row is None:
                    missing.append(delivery_id)
                else:
                    row.state, row.receipt = "delivered", receipt
            return missing
        return defer.maybeDeferred(mark)

    def retry_later(self, delivery_id, error, at):
        def mark():
            row = self._row(delivery_id)
            row.state, row.error, row.next_attempt_at = "pending", error, at
        return defer.maybeDeferred(mark)

    def release(self, delivery_id, at):
        def mark():
            row = self._row(delivery_id)
            row.state, row.next_attempt_at, row.attempts = "pending", at, max(row.attempts - 1, 0)
        return defer.maybeDeferred(mark)

    def dead_letter(self, delivery_id, error, now):
        def mark():
            row = self._row(delivery_id)
            row.state, row.error, row.failed_at = "dead", error, now
        return defer.maybeDeferred(mark)

    def tracked(self, destination_id, limit=100):
        rows = [r for r in self.rows.values()
                if r.state == "delivered" and r.delivery.destination_id == destination_id
                and r.receipt is not None and r.receipt.reference and not r.status_final]
        rows.sort(key=lambda r: (r.status_checked, r.delivery.id))
        return defer.succeed([Tracked(r.delivery, r.receipt.reference, r.status) for r in rows[:limit]])

    def record_status(self, delivery_id, status, final, now):
        def record():
            row = self._row(delivery_id)
            changed = status != row.status
            row.status, row.status_final, row.status_checked = status, bool(final), now
            return changed
        return defer.maybeDeferred(record)

    def dead_letters(self, destination_id=None, limit=100):
        rows = [r for r in self.rows.values() if r.state == "dead"
                and (destination_id is None or r.delivery.destination_id == destination_id)]
        rows.sort(key=lambda r: (r.failed_at, r.delivery.id), reverse=True)
        return defer.succeed([DeadLetter(r.delivery, r.error, r.attempts, r.failed_at) for r in rows[:limit]])

    def replay(self, delivery_ids=None, destination_id=None, now=None):
        def replay():
            self._write()
            count = 0
            for row in self.rows.values():
                if row.state != "dead":
                    continue
                if delivery_ids is not None and row.delivery.id not in delivery_ids:
                    continue
                if destination_id is not None and row.delivery.destination_id != destination_id:
                    continue
                row.state, row.attempts, row.next_attempt_at = "pending", 0, now or 0.0
                count += 1
            return count
        return defer.maybeDeferred(replay)

    def recover(self, now):
        def recover():
            self._write()
            rows = [r for r in self.rows.values() if r.state == "in_flight"]
            for row in rows:
                row.state, row.next_attempt_at = "pending", now
            return len(rows)
        return defer.maybeDeferred(recover)

    def depth(self):
        counts = {p: 0 for p in PRIORITIES}
        for row in self.rows.values():
            if row.state in ("pending", "in_flight"):
                counts[row.delivery.priority] = counts.get(row.delivery.priority, 0) + 1
        return defer.succeed(counts)

    def record_reply(self, reply, receipt, status, now):
        def record():
            self._write()
            reference = receipt.reference if receipt else None
            self.replies[(reply.channel_id, reference or reply.id)] = {
                "reply": reply, "receipt": receipt, "status": status, "at": now}
        return defer.maybeDeferred(record)

    def update_reply_status(self, update):
        def apply():
            self._write()
            entry = self.replies.get((update.channel_id, update.external_id))
            if entry is None:
                return False
            entry["status"] = update.status
            return True
        return defer.maybeDeferred(apply)

    def check_writable(self):
        return defer.maybeDeferred(self._write)

    def prune(self, older_than_seconds, now):
        """
        Retention, as the SQLite store does it: blank the personal data of messages older than
        the limit whose deliveries are all delivered or dead, blank old replies, drop old
        quarantined bodies. Fires with ``{"messages": n, "replies": n, "quarantine": n}``.
        """
        def prune():
            self._write()
            cutoff = now - older_than_seconds
            live = {r.delivery.message.id for r in self.rows.values() if r.state in ("pending", "in_flight")}
            counts = {"messages": 0, "replies": 0, "quarantine": 0}
            for message_id, (message, triage) in list(self.messages.items()):
                if message_id in self.pruned or message_id in live or message.received_at >= cutoff:
                    continue
                blank = dataclasses.replace(message, sender="", sender_name=None, text="", location=None, media=(),
                                            reply_to=None, permalink=None, extra={})
                blank_triage = dataclasses.replace(triage, location=None)
                self.messages[message_id] = (blank, blank_triage)
                for row in self.rows.values():
                    if row.delivery.message.id == message_id:
                        row.delivery = dataclasses.replace(row.delivery, message=blank, triage=blank_triage)
                self.pruned.add(message_id)
                counts["messages"] += 1
            for entry in self.replies.values():
                if not entry.get("pruned") and entry["at"] < cutoff:
                    entry["reply"] = dataclasses.replace(entry["reply"], recipient="", text="", in_reply_to=None)
                    entry["pruned"] = True
                    counts["replies"] += 1
            kept = [q for q in self.quarantined if q["received_at"] >= cutoff]
            counts["quarantine"] = len(self.quarantined) - len(kept)
            self.quarantined[:] = kept
            return counts
        return defer.maybeDeferred(prune)


@implementer(IDestination)
class RecordingDestination:
    """
    A destination that keeps every delivery in ``delivered``. Make it fail by setting
    ``failure`` to an exception instance; ``pending`` (a list of Deferreds) holds deliveries
    when ``hold`` is true, until the test fires them.
    """

    destination_type = "recording"
    options = (Option("reference", str, default=None, doc="The reference every receipt carries."),)

    def __init__(self, name="recording", options=None, context=None):
        self.name = name
        self.options = options or {}
        self.delivered: List[Delivery] = []
        self.failure: Optional[Exception] = None
        self.hold = False
        self.pending: List[defer.Deferred] = []
        self.started = False

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def deliver(self, delivery):
        if self.failure is not None:
            return defer.fail(self.failure)
        self.delivered.append(delivery)
        return self._answer(Receipt(reference=self.options.get("reference") or f"R-{delivery.id}"))

    def _answer(self, value):
        """``value`` now, or with ``hold`` once the test fires the Deferred left in ``pending``."""
        if not self.hold:
            return defer.succeed(value)
        d = defer.Deferred()
        self.pending.append(d)
        d.addCallback(lambda _: value)
        return d


@implementer(IBatchDestination)
class RecordingBatchDestination(RecordingDestination):
    """
    A :class:`RecordingDestination` that also takes batches
    (:class:`~gateway.interfaces.IBatchDestination`). ``batches`` keeps the deliveries of every
    ``deliver_batch`` call, one list per call; ``deliver`` still takes single ones (emergencies).
    ``failure`` fails a whole batch; ``item_failures`` maps a delivery id to the exception that
    stands for it in the results (that delivery alone fails). With ``hold``, a batch's Deferred
    waits in ``pending`` until the test fires it (``errback`` fails the whole batch).
    """

    destination_type = "recording-batch"
    options = RecordingDestination.options + (
        Option("batch_size", int, default=10, check=lambda n: None if n >= 1 else "expected 1 or more",
               doc="The most deliveries one batch takes."),)

    def __init__(self, name="recording", options=None, context=None):
        super().__init__(name, options, context)
        self.batch_size = self.options.get("batch_size", 10)
        self.batches: List[List[Delivery]] = []
        self.item_failures: Dict[str, Exception] = {}

    def deliver_batch(self, deliveries):
        deliveries = list(deliveries)
        self.batches.append(deliveries)
        if self.failure is not None:
            return defer.fail(self.failure)
        results = []
        for delivery in deliveries:
            error = self.item_failures.get(delivery.id)
            if error is not None:
                results.append(error)
                continue
            self.delivered.append(delivery)
            results.append(Receipt(reference=self.options.get("reference") or f"R-{delivery.id}"))
        return self._answer(results)


@implementer(IChannel)
class FakeChannel:
    """
    A channel whose webhook body is ``{"sender": ..., "text": ..., "id": ...}`` JSON (or a
    list of them), refused when the ``X-Fake-Token`` header differs from its ``token``; its
    replies are kept in ``sent``.
    """

    channel_type = "fake"
    options = (Option("token", str, default=None, secret=True),)

    def __init__(self, name="fake", options=None, context=None):
        self.name = name
        self.token = (options or {}).get("token")
        self.sent = []

    def start(self):
        return None

    def stop(self):
        return None

    def verify(self, request, body):
        if self.token is not None and request.getHeader(b"x-fake-token") != self.token.encode():
            raise RequestRefused("wrong X-Fake-Token")

    def parse(self, request, body):
        try:
            items = json.loads(body)
        except ValueError as e:
            raise MalformedRequest(f"body is not JSON: {e}") from e
        if isinstance(items, dict):
            items = [items]
        messages = []
        for item in items:
            if not isinstance(item, dict) or not item.get("text"):
                raise MalformedRequest("each item needs a non-empty 'text'")
            messages.append(Message(channel_id=self.name, channel_type=self.channel_type,
                                    sender=str(item.get("sender", "anon")), text=item["text"],
                                    external_id=item.get("id")))
        return Parsed(messages=tuple(messages))

    def acknowledge(self, request, accepted):
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"tickets": [a.message.ticket for a in accepted]}).encode()

    def render_get(self, request):
        from gateway.errors import NotHandled
        raise NotHandled()

    def page(self):
        return None

    def send(self, reply):
        self.sent.append(reply)
        return defer.succeed(Receipt(reference=f"sent-{len(self.sent)}"))


class RecordingTarget(Resource):
    """
    A ``twisted.web`` resource standing in for an HTTP target. It answers every request with
    ``code`` and ``body`` (and ``headers``) and keeps ``(method, path, headers, body)`` in
    ``requests``. Wrap it in ``StubTreq`` for unit tests or serve it on loopback.
    """

    isLeaf = True

    def __init__(self, code=200, body=b"{}", headers=None):
        super().__init__()
        self.code = code
        self.body = body
        self.headers = dict(headers or {})
        self.requests: List[Tuple[bytes, bytes, dict, bytes]] = []

    def render(self, request):
        headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((request.method, request.uri, headers, request.content.read()))
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


def make_request(method=b"POST", path=b"/", headers=None, body=b"", args=None) -> DummyRequest:
    """A ``DummyRequest`` with a method, headers, a body and query arguments, for channel tests."""
    import io
    request = DummyRequest([segment for segment in path.split(b"/") if segment])
    request.method = method
    request.uri = path
    request.path = path
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.content = io.BytesIO(body)
    request.args = {k: list(v) for k, v in (args or {}).items()}
    return request


def sample_delivery(priority=EMERGENCY, destination_id="target", text="Tolong ada kebakaran di Sangatta") -> Delivery:
    """A delivery of a realistic message, for destination tests."""
    message = Message(channel_id="web", channel_type="web", sender="+6281234567890", text=text,
                      sender_name="Warga", external_id="ext-1")
    triage = Triage(priority=priority, category="fire" if priority == EMERGENCY else "complaint",
                    confidence=0.9, reasons=("test",))
    return Delivery(id=new_id(), destination_id=destination_id, message=message, triage=triage)


class ChannelContractTests:
    """
    Mix into a ``SynchronousTestCase`` and provide:

    - ``make_channel(context)`` -> the channel under test (its name is used as ``channel_id``);
    - ``valid_request()`` -> ``(headers, body)``: a genuine webhook POST with at least one message;
    - ``refused_request()`` -> ``(headers, body)`` that must fail verification, or ``None`` when
      the channel type has no verification;
    - ``malformed_request()`` -> ``(headers, body)`` that verifies but cannot be parsed.
    """

    def contract_channel(self):
        self.clock = task.Clock()
        self.target = RecordingTarget()
        context = PluginContext(reactor=self.clock, http_client=StubTreq(self.target))
        return self.make_channel(context)

    def test_provides_interface(self):
        self.assertTrue(verifyObject(IChannel, self.contract_channel()))

    def _parse(self, channel, headers, body):
        request = make_request(headers=headers, body=body)
        channel.verify(request, body)
        return channel.parse(request, body)

    def test_valid_request_parses_to_messages(self):
        channel = self.contract_channel()
        parsed = self._parse(channel, *self.valid_request())
        self.assertIsInstance(parsed, Parsed)
        self.assertTrue(parsed.messages, "a valid request should carry at least one message")
        for message in parsed.messages:
            self.assertEqual(message.channel_id, channel.name)
            self.assertEqual(message.channel_type, channel.channel_type)
            self.assertTrue(message.sender)
            self.assertTrue(message.text or message.media or message.location)

    def test_external_ids_are_stable(self):
        channel = self.contract_channel()
        first = self._parse(channel, *self.valid_request())
        again = self._parse(channel, *self.valid_request())
        self.assertEqual([m.dedupe_key for m in first.messages], [m.dedupe_key for m in again.messages])
        self.assertTrue(all(m.external_id for m in first.messages), "a platform message needs its id")

    def test_refused_request(self):
        refused = self.refused_request()
        if refused is None:
            return
        channel = self.contract_channel()
        headers, body = refused
        self.assertRaises(RequestRefused, channel.verify, make_request(headers=headers, body=body), body)

    def test_malformed_request(self):
        channel = self.contract_channel()
        self.assertRaises(MalformedRequest, self._parse, channel, *self.malformed_request())

    def test_acknowledge_is_2xx(self):
        channel = self.contract_channel()
        headers, body = self.valid_request()
        request = make_request(headers=headers, body=body)
        parsed = channel.parse(request, body)
        accepted = [Accepted(m, Triage("normal", "complaint")) for m in parsed.messages]
        answer = channel.acknowledge(request, accepted)
        self.assertIsInstance(answer, bytes)
        self.assertTrue(200 <= (request.responseCode or 200) < 300)


class DestinationContractTests:
    """
    Mix into a ``SynchronousTestCase`` and provide ``make_destination(context)``. Set
    ``http = False`` for destinations that do not speak HTTP, and ``success_body`` to what the
    real target answers when it takes a delivery.
    """

    http = True
    success_body = b"{}"

    def contract_destination(self, code=200, body=None, headers=None):
        return self.make_destination(_answering_context(self, code, self.success_body if body is None else body,
                                                        headers))

    def test_provides_interface(self):
        self.assertTrue(verifyObject(IDestination, self.contract_destination()))

    def test_delivers_with_receipt(self):
        destination = self.contract_destination()
        self.successResultOf(defer.maybeDeferred(destination.start))
        receipt = self.successResultOf(destination.deliver(sample_delivery()))
        self.assertIsInstance(receipt, Receipt)

    def test_idempotency_key(self):
        if not self.http:
            return
        destination = self.contract_destination()
        delivery = sample_delivery()
        self.successResultOf(destination.deliver(delivery))
        self.assertTrue(self.target.requests, "the destination sent no request")
        method, path, headers, body = self.target.requests[-1]
        self.assertIn(delivery.id, json.dumps(headers) + body.decode("utf-8", "replace"),
                      "every request must carry the delivery id as idempotency key")

    def test_server_error_is_temporary(self):
        if not self.http:
            return
        destination = self.contract_destination(code=503, body=b"busy")
        self.failureResultOf(destination.deliver(sample_delivery()), TemporaryDeliveryError)

    def test_client_error_is_permanent(self):
        if not self.http:
            return
        destination = self.contract_destination(code=400, body=b"bad")
        self.failureResultOf(destination.deliver(sample_delivery()), PermanentDeliveryError)

    def test_too_many_requests_honours_retry_after(self):
        if not self.http:
            return
        destination = self.contract_destination(code=429, body=b"slow down", headers={b"Retry-After": b"7"})
        failure = self.failureResultOf(destination.deliver(sample_delivery()), TemporaryDeliveryError)
        self.assertEqual(failure.value.retry_after, 7.0)


class BatchDestinationContractTests:
    """
    Mix into a ``SynchronousTestCase`` (next to :class:`DestinationContractTests`) for a
    destination that provides :class:`~gateway.interfaces.IBatchDestination`, and provide
    ``make_batch_destination(context)``: the destination configured with a ``batch_size`` above
    1. Set ``http = False`` for destinations that do not speak HTTP, and ``batch_success_body``
    to what the real target answers when it takes a batch.
    """

    http = True
    batch_success_body = b"{}"

    def contract_batch_destination(self, code=200, body=None, headers=None):
        return self.make_batch_destination(
            _answering_context(self, code, self.batch_success_body if body is None else body, headers))

    def contract_batch(self, count=3):
        return [sample_delivery(priority=NORMAL, text=f"Jalan rusak di RT {i}") for i in range(count)]

    def test_provides_batch_interface(self):
        destination = self.contract_batch_destination()
        self.assertTrue(verifyObject(IBatchDestination, destination))
        self.assertIsInstance(destination.batch_size, int)
        self.assertGreater(destination.batch_size, 1, "make_batch_destination should configure batching")

    def test_batch_results_one_per_delivery(self):
        destination = self.contract_batch_destination()
        self.successResultOf(defer.maybeDeferred(destination.start))
        results = self.successResultOf(destination.deliver_batch(self.contract_batch()))
        self.assertEqual(len(results), 3, "one result per delivery, in order")
        for result in results:
            self.assertIsInstance(result, Receipt)

    def test_batch_carries_every_delivery_id(self):
        if not self.http:
            return
        destination = self.contract_batch_destination()
        deliveries = self.contract_batch()
        self.successResultOf(destination.deliver_batch(deliveries))
        self.assertTrue(self.target.requests, "the destination sent no request")
        sent = "".join(json.dumps(headers) + body.decode("utf-8", "replace")
                       for method, path, headers, body in self.target.requests)
        for delivery in deliveries:
            self.assertIn(delivery.id, sent, "every delivery of a batch must carry its id")

    def _batch_errors(self, code, body, headers=None):
        """The errors a batch answered with ``code`` gives: the whole batch's, or each item's."""
        destination = self.contract_batch_destination(code=code, body=body, headers=headers)
        d = destination.deliver_batch(self.contract_batch())
        results = []
        d.addBoth(results.append)
        self.assertTrue(results, "deliver_batch did not finish against an answering target")
        outcome = results[0]
        if isinstance(outcome, list):
            self.assertEqual(len(outcome), 3)
            return [_error_of(item) for item in outcome]
        return [outcome.value] * 3

    def test_batch_server_error_is_temporary(self):
        if not self.http:
            return
        for error in self._batch_errors(503, b"busy"):
            self.assertIsInstance(error, TemporaryDeliveryError)

    def test_batch_client_error_is_permanent(self):
        if not self.http:
            return
        for error in self._batch_errors(400, b"bad"):
            self.assertIsInstance(error, PermanentDeliveryError)

    def test_batch_too_many_requests_honours_retry_after(self):
        if not self.http:
            return
        for error in self._batch_errors(429, b"slow down", headers={b"Retry-After": b"7"}):
            self.assertIsInstance(error, TemporaryDeliveryError)
            self.assertEqual(error.retry_after, 7.0)


def _answering_context(test, code, body, headers) -> PluginContext:
    """
    A plugin context whose HTTP client reaches a :class:`RecordingTarget` answering ``code`` and
    ``body``; sets ``test.clock`` and ``test.target`` for the contract tests to inspect.
    """
    test.clock = task.Clock()
    test.target = RecordingTarget(code, body, headers)
    return PluginContext(reactor=test.clock, http_client=StubTreq(test.target))


def _error_of(item):
    return item.value if isinstance(item, Failure) else item


def intake_for(text="Ada kebakaran", priority="normal", destinations=("target",), channel_id="web",
               external_id=None, received_at=1000.0):
    """An :class:`~gateway.message.Intake` for store tests."""
    from gateway.message import Intake
    message = Message(channel_id=channel_id, channel_type="web", sender="+6281200000001", text=text,
                      external_id=external_id, received_at=received_at)
    return Intake(message, Triage(priority, "fire" if priority == EMERGENCY else "complaint"), tuple(destinations))

