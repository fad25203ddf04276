"""
The HTTP destinations against real HTTP servers on 127.0.0.1, through a real treq HTTPClient and
the real reactor: error answers, a target that never answers, a refused connection, failover,
the dedicated keep-alive pool of cad112, and CAP validation of what the server received.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from lxml import etree
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from gateway.context import PluginContext
from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError
from gateway.testing import RecordingTarget, sample_delivery
from plugins.destinations.cad112 import Cad112Destination
from plugins.destinations.lapor import LaporDestination
from plugins.destinations.open311 import Open311Destination

from ._support import PHONE, Silent, full_delivery
from .test_cad112 import cap_schema


class Tracking(WrappingFactory):
    """Wraps a Site and knows its open connections, so a test can close them all before it ends."""

    def __init__(self, site):
        super().__init__(site)
        self.lost = {}

    def registerProtocol(self, protocol):
        super().registerProtocol(protocol)
        self.lost[protocol] = defer.Deferred()

    def unregisterProtocol(self, protocol):
        super().unregisterProtocol(protocol)
        lost = self.lost.pop(protocol, None)
        if lost is not None:
            lost.callback(None)

    def close_all(self):
        waiting = []
        for protocol, lost in list(self.lost.items()):
            protocol.transport.abortConnection()
            waiting.append(lost)
        return defer.gatherResults(waiting)


class LoopbackCase(TestCase):
    timeout = 20

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=5))
        self.addCleanup(pool.closeCachedConnections)

    def serve(self, resource) -> str:
        """Serve ``resource`` on a free loopback port until the test ends; returns its base URL."""
        factory = Tracking(Site(resource))
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")

        def stop():
            return defer.gatherResults([defer.maybeDeferred(port.stopListening), factory.close_all()])

        self.addCleanup(stop)
        return f"http://127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def closed_port_url(self):
        """The URL of a loopback port that nothing listens on any more (connections are refused)."""
        port = self.reactor.listenTCP(0, Site(RecordingTarget()), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        return f"http://127.0.0.1:{number}/alerts"

    def context(self):
        return PluginContext(reactor=self.reactor, http_client=self.client)


class Cad112LoopbackTests(LoopbackCase):
    def cad(self, targets, **options):
        destination = Cad112Destination("command-centre", dict(targets=targets, **options), self.context())
        self.addCleanup(destination.stop)
        return destination

    @defer.inlineCallbacks
    def test_cap_over_a_dedicated_warm_pool(self):
        target = RecordingTarget(body=b'{"incident": "112-0001"}')
        base = self.serve(target)
        destination = self.cad([base + "/alerts"], token="cad-token", warm_path="/health",
                               max_persistent_per_host=2, reference_path="incident")
        yield destination.start()
        self.assertIsNotNone(destination.pool, "a real reactor and client get their own pool")
        self.assertEqual(destination.pool.maxPersistentPerHost, 2)
        self.assertEqual([(r[0], r[1]) for r in target.requests], [(b"HEAD", b"/health")])
        delivery = full_delivery()
        receipt = yield destination.deliver(delivery)
        self.assertEqual(receipt.reference, "112-0001")
        method, path, headers, body = target.requests[-1]
        self.assertEqual((method, path), (b"POST", b"/alerts"))
        self.assertEqual(headers["authorization"], ["Bearer cad-token"])
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        schema = cap_schema()
        document = etree.fromstring(body)
        self.assertTrue(schema.validate(document), str(schema.error_log))
        self.assertIn(PHONE.encode(), body)
        second = yield destination.deliver(full_delivery())
        self.assertEqual(second.reference, "112-0001")
        yield destination.stop()
        self.assertIsNone(destination.pool)

    @defer.inlineCallbacks
    def test_client_error_is_permanent(self):
        base = self.serve(RecordingTarget(code=422, body=b"bad CAP"))
        destination = self.cad([base + "/alerts"], warm=False)
        with self.assertRaises(PermanentDeliveryError) as caught:
            yield destination.deliver(sample_delivery())
        self.assertIn("422", caught.exception.reason)

    @defer.inlineCallbacks
    def test_server_error_is_temporary_with_retry_after(self):
        base = self.serve(RecordingTarget(code=503, body=b"busy", headers={b"Retry-After": b"4"}))
        destination = self.cad([base + "/alerts"], format="eido")
        yield destination.start()
        with self.assertRaises(TemporaryDeliveryError) as caught:
            yield destination.deliver(sample_delivery())
        self.assertEqual(caught.exception.retry_after, 4.0)

    @defer.inlineCallbacks
    def test_a_target_that_never_answers_times_out(self):
        silent = Silent()
        base = self.serve(silent)
        destination = self.cad([base + "/alerts"], timeout=0.3, warm=False)
        yield destination.start()
        with self.assertRaises(TemporaryDeliveryError) as caught:
            yield destination.deliver(sample_delivery())
        self.assertIn("0.3 s", caught.exception.reason)
        self.assertEqual(len(silent.pending), 1, "the request reached the server")

    @defer.inlineCallbacks
    def test_refused_connection_is_temporary(self):
        url = yield self.closed_port_url()
        destination = self.cad([url], warm=False)
        with self.assertRaises(TemporaryDeliveryError):
            yield destination.deliver(sample_delivery())

    @defer.inlineCallbacks
    def test_first_success_fails_over_to_the_second_target(self):
        refused = yield self.closed_port_url()
        failing, taking = RecordingTarget(code=500), RecordingTarget()
        silent = Silent()
        targets = [refused, self.serve(failing) + "/a", self.serve(silent) + "/b", self.serve(taking) + "/c"]
        destination = self.cad(targets, mode="first-success", timeout=0.5, format="json")
        yield destination.start()
        delivery = sample_delivery()
        receipt = yield destination.deliver(delivery)
        self.assertEqual(receipt.detail, "taken by 1 of 4 target(s)")
        self.assertEqual(len([r for r in failing.requests if r[0] == b"POST"]), 1)
        self.assertEqual(len(silent.pending), 2, "the warm-up and the alert reached the silent one")
        posted = [r for r in taking.requests if r[0] == b"POST"]
        self.assertEqual(json.loads(posted[0][3])["delivery_id"], delivery.id)

    @defer.inlineCallbacks
    def test_all_mode_with_one_target_down(self):
        taking = RecordingTarget()
        refused = yield self.closed_port_url()
        destination = self.cad([self.serve(taking) + "/a", refused], warm=False)
        delivery = sample_delivery()
        with self.assertRaises(TemporaryDeliveryError):
            yield destination.deliver(delivery)
        self.assertEqual(len(taking.requests), 1)
        with self.assertRaises(TemporaryDeliveryError):
            yield destination.deliver(delivery)
        self.assertEqual(len(taking.requests), 1, "the target that took it is not sent it again")


class LaporLoopbackTests(LoopbackCase):
    @defer.inlineCallbacks
    def test_legacy_xml(self):
        target = RecordingTarget(body=b"<hasil><trackingid>9876543</trackingid><transaksiid>55</transaksiid></hasil>")
        base = self.serve(target)
        destination = LaporDestination("lapor", {"url": base + "/api/stream/addstream", "stream_token": "tkn",
                                                 "username": "kutim", "password": "pw"}, self.context())
        delivery = full_delivery(category="complaint", text="Pungli di pelabuhan #anonim")
        receipt = yield destination.deliver(delivery)
        self.assertEqual((receipt.reference, receipt.url), ("9876543", "https://www.lapor.go.id/pengaduan/9876543"))
        _, path, headers, body = target.requests[-1]
        self.assertEqual(path, b"/api/stream/addstream")
        self.assertTrue(headers["authorization"][0].startswith("Basic "))
        root = ET.fromstring(body)
        self.assertEqual(root.get("token"), "tkn")
        self.assertEqual(root.find("laporan").get("anonim"), "1")
        self.assertNotIn(b"#anonim", body)

    @defer.inlineCallbacks
    def test_http_profile_errors(self):
        base = self.serve(RecordingTarget(code=401, body=b'{"error": "unauthorized"}'))
        destination = LaporDestination("lapor", {"url": base + "/laporan", "profile": "http"}, self.context())
        with self.assertRaises(PermanentDeliveryError):
            yield destination.deliver(sample_delivery())
        base = self.serve(RecordingTarget(code=502))
        destination = LaporDestination("lapor", {"url": base + "/laporan", "profile": "http"}, self.context())
        with self.assertRaises(TemporaryDeliveryError):
            yield destination.deliver(sample_delivery())

    @defer.inlineCallbacks
    def test_timeout(self):
        base = self.serve(Silent())
        destination = LaporDestination("lapor", {"url": base + "/x", "timeout": 0.3}, self.context())
        with self.assertRaises(TemporaryDeliveryError):
            yield destination.deliver(sample_delivery())


class Open311LoopbackTests(LoopbackCase):
    @defer.inlineCallbacks
    def test_service_request(self):
        target = RecordingTarget(body=b'[{"service_request_id": "42"}]')
        base = self.serve(target)
        destination = Open311Destination("open311", {"endpoint": base + "/v2", "service_codes": {"default": "001"},
                                                     "api_key": "key"}, self.context())
        delivery = sample_delivery(priority="normal", text="Sampah belum diangkut")
        receipt = yield destination.deliver(delivery)
        self.assertEqual((receipt.reference, receipt.url), ("42", base + "/v2/requests/42.json"))
        _, path, headers, body = target.requests[-1]
        self.assertEqual(path, b"/v2/requests.json")
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        self.assertIn(b"service_code=001", body)

    @defer.inlineCallbacks
    def test_errors(self):
        base = self.serve(RecordingTarget(code=404, body=b'[{"code": 404, "description": "not found"}]'))
        destination = Open311Destination("open311", {"endpoint": base, "service_codes": {"default": "1"}},
                                         self.context())
        with self.assertRaises(PermanentDeliveryError):
            yield destination.deliver(sample_delivery())
        base = self.serve(RecordingTarget(code=500))
        destination = Open311Destination("open311", {"endpoint": base, "service_codes": {"default": "1"}},
                                         self.context())
        with self.assertRaises(TemporaryDeliveryError):
            yield destination.deliver(sample_delivery())
