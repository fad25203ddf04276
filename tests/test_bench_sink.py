"""bench/sink.py counts each delivery of a batch body and stamps each emergency in it."""

import importlib.util
import json
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from gateway.message import EMERGENCY, Delivery, Message, Triage
from gateway.testing import make_request
from plugins.destinations.webhook import delivery_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_sink():
    spec = importlib.util.spec_from_file_location("bench_sink", os.path.join(ROOT, "bench", "sink.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def document(external_id):
    message = Message(channel_id="web", channel_type="web", sender="+6281200000001", text="Kebakaran",
                      external_id=external_id)
    return delivery_json(Delivery("d-" + external_id, "cad112", message, Triage(EMERGENCY, "fire")))


class SinkTests(SynchronousTestCase):
    def setUp(self):
        self.sink_module = load_sink()

    def post(self, sink, body, path=b"/normal"):
        return sink.render_POST(make_request(path=path, body=json.dumps(body).encode()))

    def stats(self, sink):
        return json.loads(sink.render_GET(make_request(method=b"GET", path=b"/stats")))

    def test_batch_counts_each_delivery(self):
        sink = self.sink_module.Sink("normal")
        self.post(sink, document("a"))
        self.post(sink, {"deliveries": [document("b"), document("c"), document("d")]})
        stats = self.stats(sink)
        self.assertEqual((stats["count"], stats["requests"]), (4, 2))
        self.assertEqual(set(stats), {"count", "requests", "refused", "first_ns", "last_ns", "latencies_us",
                                      "unstamped"})
        self.assertLessEqual(stats["first_ns"], stats["last_ns"])

    def test_refused_batch_counts_each_delivery(self):
        sink = self.sink_module.Sink("normal")
        sink.render_POST(make_request(path=b"/refuse"))
        request = make_request(path=b"/normal", body=json.dumps({"deliveries": [document("a"), document("b")]}).encode())
        sink.render_POST(request)
        self.assertEqual(request.responseCode, 503)
        self.assertEqual((self.stats(sink)["refused"], self.stats(sink)["count"]), (2, 0))

    def test_emergency_latency_per_item(self):
        sink = self.sink_module.Sink("emergency")
        sent = time.monotonic_ns() - 5_000_000
        self.post(sink, document(f"E1-1-{sent}"), path=b"/emergency")
        self.post(sink, {"deliveries": [document(f"E1-2-{sent}"), document("no-stamp"), document(f"E1-3-{sent}")]},
                  path=b"/emergency")
        stats = self.stats(sink)
        self.assertEqual((stats["count"], stats["unstamped"], len(stats["latencies_us"])), (4, 1, 3))
        self.assertTrue(all(latency >= 5000 for latency in stats["latencies_us"]))
