"""The webhook destination: contract, signature, reference, and a real server on loopback."""

import hashlib
import hmac
import json

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway.context import PluginContext
from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError
from gateway.testing import DestinationContractTests, RecordingTarget, sample_delivery
from plugins.destinations.webhook import WebhookDestination, signature


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


class Silent(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_POST(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


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
    def test_timeout_is_temporary(self):
        silent = Silent()
        url = self.serve(silent)
        try:
            yield self.destination(url, timeout=0.3).deliver(sample_delivery())
        except TemporaryDeliveryError as e:
            self.assertIn("no answer within 0.3s", e.reason)
        else:
            self.fail("a silent target must time out")
        for request in silent.requests:
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
