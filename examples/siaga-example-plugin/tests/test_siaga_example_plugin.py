"""The example destination against Siaga's destination contract, plus its own behaviour."""

import json

from siaga_example_plugin import EchoDestination
from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from gateway.errors import TemporaryDeliveryError
from gateway.testing import DestinationContractTests, RecordingTarget, sample_delivery

OPTIONS = {"url": "http://receiver.test/siaga", "token": "t0ken", "timeout": 5.0}


class EchoContractTests(DestinationContractTests, SynchronousTestCase):
    """Siaga's own checks: interface, receipt, idempotency key, 5xx/4xx/429 handling."""

    success_body = b'{"id": "R-1"}'

    def make_destination(self, context):
        return EchoDestination("echo", dict(OPTIONS), context)


class EchoTests(SynchronousTestCase):
    def setUp(self):
        self.target = RecordingTarget(200, b'{"id": 42}')
        context = PluginContext(reactor=task.Clock(), http_client=StubTreq(self.target))
        self.destination = EchoDestination("echo", dict(OPTIONS), context)

    def test_body_headers_and_reference(self):
        delivery = sample_delivery()
        receipt = self.successResultOf(self.destination.deliver(delivery))
        self.assertEqual(receipt.reference, "42")
        method, path, headers, body = self.target.requests[-1]
        self.assertEqual((method, path), (b"POST", b"/siaga"))
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        self.assertEqual(headers["authorization"], ["Bearer t0ken"])
        self.assertEqual(json.loads(body)["ticket"], delivery.message.ticket)

    def test_unknown_answer_has_no_reference(self):
        self.target.body = b"thanks"
        receipt = self.successResultOf(self.destination.deliver(sample_delivery()))
        self.assertIsNone(receipt.reference)

    def test_bad_gateway_is_retried(self):
        self.target.code = 502
        failure = self.failureResultOf(self.destination.deliver(sample_delivery()), TemporaryDeliveryError)
        self.assertIn("502", failure.value.reason)
