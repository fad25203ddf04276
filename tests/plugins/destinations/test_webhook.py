"""The webhook destination: contract, signature, reference, batches, and a real server on loopback."""

import hashlib
import hmac
import json

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.context import PluginContext
from gateway.dispatch import Dispatcher
from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError
from gateway.message import NORMAL, Receipt
from gateway.testing import (
    BatchDestinationContractTests,
    DestinationContractTests,
    MemoryStore,
    RecordingTarget,
    intake_for,
    sample_delivery,
)
from plugins.destinations.webhook import MAX_BATCH_SIZE, WebhookDestination, batch_key, delivery_json, signature

from ._support import Silent


class WebhookContractTests(DestinationContractTests, SynchronousTestCase):
    success_body = b'{"reference": "INC-1"}'

    def make_destination(self, context):
        return WebhookDestination("hook", {"url": "https://cad.example/alerts", "timeout": 2.0}, context)


class WebhookTests(SynchronousTestCase):
    def deliver(self, options, code=200, body=b"{}"):
        from treq.testing import StubTreq
        from twisted.internet import task
        self.clock = task.Clock()
        self.clock.advance(1_790_000_000)
        self.target = RecordingTarget(code, body)
        context = PluginContext(reactor=self.clock, http_client=StubTreq(self.target))
        destination = WebhookDestination("hook", dict({"url": "http://t/in", "timeout": 2.0}, **options), context)
        self.delivery = sample_delivery()
        return destination.deliver(self.delivery)

    def test_signed_request(self):
        receipt = self.successResultOf(self.deliver({"secret": "k3y", "token": "tok", "headers": {"X-Agency": "kutim"}},
                                                    body=b'{"id": 991}'))
        self.assertEqual(receipt.reference, "991")
        method, path, headers, body = self.target.requests[0]
        self.assertEqual((method, path), (b"POST", b"/in"))
        self.assertEqual(headers["x-siaga-timestamp"], ["1790000000"])
        expected = hmac.new(b"k3y", b"1790000000." + body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["x-siaga-signature"], ["sha256=" + expected])
        self.assertEqual(signature("k3y", "1790000000", body), "sha256=" + expected)
        self.assertEqual(headers["authorization"], ["Bearer tok"])
        self.assertEqual(headers["x-agency"], ["kutim"])
        document = json.loads(body)
        self.assertEqual(document["delivery_id"], self.delivery.id)
        self.assertEqual(document["message"]["text"], self.delivery.message.text)
        self.assertEqual(document["triage"]["priority"], "emergency")

    def test_unsigned_without_secret(self):
        self.successResultOf(self.deliver({}))
        headers = self.target.requests[0][2]
        self.assertNotIn("x-siaga-signature", headers)
        self.assertNotIn("authorization", headers)

    def test_non_json_answer_has_no_reference(self):
        self.assertIsNone(self.successResultOf(self.deliver({}, body=b"OK")).reference)

    def test_error_answers(self):
        self.failureResultOf(self.deliver({}, code=404, body=b"no such path"), PermanentDeliveryError)
        failure = self.failureResultOf(self.deliver({}, code=502, body=b"bad gateway"), TemporaryDeliveryError)
        self.assertEqual(failure.value.reason, "HTTP 502: bad gateway")


class WebhookBatchContractTests(BatchDestinationContractTests, SynchronousTestCase):
    def make_batch_destination(self, context):
        return WebhookDestination("hook", {"url": "https://dashboard.example/in", "batch_size": 5}, context)


def batch(count=3):
    return [sample_delivery(priority=NORMAL, text=f"Lampu jalan mati di RT {i}") for i in range(count)]


class Echo(Resource):
    """A receiver that takes batches and answers a reference per delivery (``REF-<id>``)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.bodies = []

    def render_POST(self, request):
        body = json.loads(request.content.read())
        self.bodies.append(body)
        if "deliveries" in body:
            return json.dumps({"results": [{"delivery_id": item["delivery_id"], "reference": "REF-" + item["delivery_id"]}
                                           for item in body["deliveries"]]}).encode()
        return json.dumps({"reference": "ONE-" + body["delivery_id"]}).encode()


class FailingHttp:
    """An HTTP client whose every request fails with ``error``."""

    def __init__(self, error):
        self.error = error

    def post(self, url, **kwargs):
        return defer.fail(self.error)


class WebhookBatchTests(SynchronousTestCase):
    def destination(self, options=None, code=200, body=b"{}", headers=None, http=None):
        self.clock = task.Clock()
        self.clock.advance(1_790_000_000)
        self.target = RecordingTarget(code, body, headers)
        context = PluginContext(reactor=self.clock, http_client=http or StubTreq(self.target))
        return WebhookDestination("hook", dict({"url": "http://t/in", "timeout": 2.0, "batch_size": 10},
                                               **(options or {})), context)

    def test_batch_size_option(self):
        option = {o.name: o for o in WebhookDestination.options}["batch_size"]
        self.assertEqual(option.default, 1)
        self.assertEqual(self.destination({"batch_size": 1}).batch_size, 1)
        for good in (1, 50, MAX_BATCH_SIZE):
            self.assertIsNone(option.problem(good))
        for bad in (0, -1, MAX_BATCH_SIZE + 1, "5", 2.5, True):
            self.assertIsNotNone(option.problem(bad), bad)

    def test_batch_body_and_headers(self):
        destination = self.destination({"secret": "k3y", "token": "tok", "headers": {"X-Agency": "kutim"}})
        deliveries = batch()
        results = self.successResultOf(destination.deliver_batch(deliveries))
        self.assertEqual(results, [Receipt(reference=None)] * 3)
        self.assertEqual(len(self.target.requests), 1, "one request for the batch")
        method, path, headers, body = self.target.requests[0]
        self.assertEqual((method, path), (b"POST", b"/in"))
        self.assertEqual(json.loads(body), {"deliveries": [delivery_json(d) for d in deliveries]})
        key = headers["idempotency-key"][0]
        self.assertRegex(key, r"^batch-[0-9a-f]{32}$")
        self.assertEqual(key, batch_key(d.id for d in deliveries))
        self.assertEqual(headers["content-type"], ["application/json"])
        self.assertEqual(headers["x-siaga-timestamp"], ["1790000000"])
        expected = hmac.new(b"k3y", b"1790000000." + body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["x-siaga-signature"], ["sha256=" + expected])
        self.assertEqual(headers["authorization"], ["Bearer tok"])
        self.assertEqual(headers["x-agency"], ["kutim"])

    def test_batch_key_is_stable(self):
        ids = ["agrcgd5zgmfpelqcxa7u2xp3je", "agrcgd5zfsdjhworxabbm4lieq"]
        expected = "batch-" + hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:32]
        self.assertEqual(batch_key(ids), expected)
        self.assertEqual(batch_key(reversed(ids)), expected, "the order of the batch does not matter")
        self.assertNotEqual(batch_key(ids[:1]), expected)

    def test_results_per_delivery(self):
        deliveries = batch(5)
        first, second, refused, unlisted, odd = deliveries
        answer = {"results": [
            {"delivery_id": first.id, "reference": "INC-1"},
            {"delivery_id": second.id, "id": 7},
            {"delivery_id": refused.id, "error": "ticket queue full"},
            {"delivery_id": odd.id, "error": None, "reference": "INC-5"},
            {"delivery_id": "not-in-this-batch", "error": "ignored"},
            "not an item",
        ]}
        destination = self.destination(body=json.dumps(answer).encode())
        results = self.successResultOf(destination.deliver_batch(deliveries))
        self.assertEqual(len(results), 5)
        self.assertEqual(results[0], Receipt(reference="INC-1"))
        self.assertEqual(results[1], Receipt(reference="7"))
        self.assertIsInstance(results[2], TemporaryDeliveryError)
        self.assertIn("ticket queue full", results[2].reason)
        self.assertEqual(results[3], Receipt(reference=None), "a 2xx takes what the results do not list")
        self.assertEqual(results[4], Receipt(reference="INC-5"))

    def test_structured_item_error(self):
        deliveries = batch(1)
        answer = {"results": [{"delivery_id": deliveries[0].id, "error": {"code": "E42"}}]}
        destination = self.destination(body=json.dumps(answer).encode())
        result, = self.successResultOf(destination.deliver_batch(deliveries))
        self.assertIsInstance(result, TemporaryDeliveryError)
        self.assertIn("E42", result.reason)

    def test_answer_without_results_delivers_all(self):
        for body in (b"OK", b'{"reference": "one-for-all?"}', b'{"results": "no"}', b"[]"):
            destination = self.destination(body=body)
            self.assertEqual(self.successResultOf(destination.deliver_batch(batch(2))), [Receipt(reference=None)] * 2,
                             body)

    def test_error_answer_fails_the_whole_batch(self):
        destination = self.destination(code=503, body=b"busy", headers={b"Retry-After": b"12"})
        failure = self.failureResultOf(destination.deliver_batch(batch()), TemporaryDeliveryError)
        self.assertEqual((failure.value.reason, failure.value.retry_after), ("HTTP 503: busy", 12.0))
        destination = self.destination(code=422, body=b"schema")
        self.failureResultOf(destination.deliver_batch(batch()), PermanentDeliveryError)

    def test_no_answer_fails_the_whole_batch(self):
        cases = [(ConnectionRefusedError(), "connection failed"),
                 (defer.CancelledError(), "no answer within 2.0s"),
                 (ResponseNeverReceived([Failure(ConnectionRefusedError())]), "connection failed"),
                 (ResponseNeverReceived([Failure(defer.CancelledError())]), "no answer within 2.0s")]
        for error, reason in cases:
            destination = self.destination(http=FailingHttp(error))
            failure = self.failureResultOf(destination.deliver_batch(batch()), TemporaryDeliveryError)
            self.assertIn(reason, failure.value.reason)
            failure = self.failureResultOf(destination.deliver(sample_delivery()), TemporaryDeliveryError)
            self.assertIn(reason, failure.value.reason)

    def test_single_delivery_unchanged_when_batching(self):
        destination = self.destination({"secret": "k3y"}, body=b'{"reference": "CAD-9"}')
        delivery = sample_delivery()
        self.assertEqual(self.successResultOf(destination.deliver(delivery)), Receipt(reference="CAD-9"))
        method, path, headers, body = self.target.requests[0]
        self.assertEqual(json.loads(body), delivery_json(delivery))
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        expected = hmac.new(b"k3y", b"1790000000." + body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["x-siaga-signature"], ["sha256=" + expected])

    def test_single_body_is_the_same_bytes(self):
        delivery = sample_delivery()
        for size in (1, 10):
            destination = self.destination({"batch_size": size})
            self.successResultOf(destination.deliver(delivery))
            body = self.target.requests[0][3]
            self.assertEqual(body, json.dumps(delivery_json(delivery), ensure_ascii=False).encode("utf-8"))


class WebhookDispatchTests(SynchronousTestCase):
    """The dispatcher and a batching webhook together, on StubTreq."""

    def run_dispatch(self, batch_size):
        clock = task.Clock()
        clock.advance(1000)
        store = MemoryStore()
        receiver = Echo()
        hook = WebhookDestination("hook", {"url": "http://t/in", "batch_size": batch_size},
                                  PluginContext(reactor=clock, http_client=StubTreq(receiver)))
        dispatcher = Dispatcher(store, {"hook": hook}, clock, {"concurrency": 2, "lag_threshold": 1e9})
        self.successResultOf(dispatcher.start())
        accepted = self.successResultOf(store.accept(
            [intake_for(priority=NORMAL, destinations=("hook",), received_at=1000) for _ in range(5)]
            + [intake_for(priority="emergency", destinations=("hook",), received_at=1000)]))
        dispatcher.submit(accepted)
        self.successResultOf(dispatcher.stop())
        return store, receiver

    def test_batches_and_references(self):
        store, receiver = self.run_dispatch(batch_size=3)
        self.assertEqual(sorted(len(body.get("deliveries", [None])) for body in receiver.bodies), [1, 2, 3])
        self.assertEqual(sum(1 for body in receiver.bodies if "delivery_id" in body), 1, "the emergency alone")
        rows = list(store.rows.values())
        self.assertEqual({row.state for row in rows}, {"delivered"})
        for row in rows:
            prefix = "ONE-" if row.delivery.priority == "emergency" else "REF-"
            self.assertEqual(row.receipt.reference, prefix + row.delivery.id)

    def test_batch_size_one_sends_singles(self):
        store, receiver = self.run_dispatch(batch_size=1)
        self.assertEqual(len(receiver.bodies), 6)
        self.assertTrue(all("delivery_id" in body for body in receiver.bodies))
        self.assertEqual({row.receipt.reference[:4] for row in store.rows.values()}, {"ONE-"})


class LoopbackTests(TestCase):
    """Against real servers on 127.0.0.1."""

    def setUp(self):
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))

    def serve(self, resource):
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/hook"

    def destination(self, url, timeout=5.0):
        return WebhookDestination("hook", {"url": url, "timeout": timeout, "secret": "s"},
                                  PluginContext(reactor=reactor, http_client=self.http))

    @defer.inlineCallbacks
    def test_delivered(self):
        target = RecordingTarget(201, b'{"reference": "CAD-5"}')
        receipt = yield self.destination(self.serve(target)).deliver(sample_delivery())
        self.assertEqual(receipt.reference, "CAD-5")
        self.assertEqual(len(target.requests), 1)

    @defer.inlineCallbacks
    def test_batch_delivered(self):
        receiver = Echo()
        url = self.serve(receiver)
        destination = WebhookDestination("hook", {"url": url, "timeout": 5.0, "secret": "s", "batch_size": 10},
                                         PluginContext(reactor=reactor, http_client=self.http))
        deliveries = batch()
        results = yield destination.deliver_batch(deliveries)
        self.assertEqual(results, [Receipt(reference="REF-" + d.id) for d in deliveries])
        self.assertEqual(len(receiver.bodies), 1)

    @defer.inlineCallbacks
    def test_timeout_is_temporary(self):
        silent = Silent()
        url = self.serve(silent)
        try:
            yield self.destination(url, timeout=0.3).deliver(sample_delivery())
        except TemporaryDeliveryError as e:
            self.assertIn("no answer within 0.3s", e.reason)
        else:
            self.fail("a silent target must time out")
        for request in silent.pending:
            request.channel.transport.loseConnection()

    @defer.inlineCallbacks
    def test_refused_connection_is_temporary(self):
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        yield port.stopListening()
        try:
            yield self.destination(url).deliver(sample_delivery())
        except TemporaryDeliveryError as e:
            self.assertIn("connection failed", e.reason)
        else:
            self.fail("a refused connection must be a temporary failure")
