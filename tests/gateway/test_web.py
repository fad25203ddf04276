"""The HTTP side, end to end in memory: webhooks, health, status, metrics, admin API."""

import gc
import json
import textwrap
import time

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gateway.config import parse_config
from gateway.errors import PermanentDeliveryError
from gateway.plugins import collect, make_plugin_manager
from gateway.service import GatewayService
from gateway.testing import FakeChannel, MemoryStore, RecordingDestination

CONFIG = """\
listen: ["tcp:0:interface=127.0.0.1"]
store: {backend: memory}
admin: {token: admintoken}
channels:
  web: {type: web}
  private: {type: web, token: webtoken}
  fake: {type: fake, token: faketoken}
destinations:
  cad: {type: recording}
  lapor:
    type: recording
    reference: LAPOR-1
    citizen_update: "Laporan {ticket} diteruskan ke LAPOR!, nomor pelacakan {reference}"
routes:
  - when: {priority: emergency}
    to: [cad]
  - to: [lapor]
"""


def registry():
    pm = make_plugin_manager(disabled=(), entry_points=False)

    class Extra:
        from gateway.hookspecs import hookimpl

        @hookimpl
        def siaga_register_channels(self, register):
            register("fake", FakeChannel)

        @hookimpl
        def siaga_register_destinations(self, register):
            register("recording", RecordingDestination)
    pm.register(Extra(), name="test-fakes")
    return collect(pm), pm


class GatewayFixture:
    """A started GatewayService on a memory reactor and store, spoken to through StubTreq."""

    def make_gateway(self, text=CONFIG, plugins=()):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())  # messages are stamped with the wall clock
        reg, pm = registry()
        for plugin in plugins:
            pm.register(plugin)
        config = parse_config(textwrap.dedent(text), "test.yaml", reg, {})
        self.store = MemoryStore(clock=self.reactor)
        self.gateway = GatewayService(config, self.reactor, reg, hook=pm.hook, store=self.store,
                                      http_client_factory=lambda name: StubTreq(None))
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.http = StubTreq(self.gateway.root)
        return self.gateway

    def request(self, method, path, body=None, headers=None, as_json=True):
        headers = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault(b"content-type", b"application/json")
        response = self.successResultOf(self.http.request(method, "http://siaga.test" + path, data=body,
                                                          headers=headers))
        content = self.successResultOf(response.content())
        return response.code, (json.loads(content) if as_json and content else content)


class WebhookTests(GatewayFixture, SynchronousTestCase):
    def setUp(self):
        self.make_gateway()

    def test_emergency_flows_to_its_destination(self):
        code, answer = self.request("POST", "/channels/web/webhook",
                                    {"sender": "+6281234567890", "text": "Tolong! Kebakaran rumah di Sangatta"})
        self.assertEqual(code, 202)
        self.assertEqual(set(answer), {"message_id", "ticket"})
        delivered = self.gateway.destinations["cad"].delivered
        self.assertEqual(len(delivered), 1)
        self.assertEqual(delivered[0].message.id, answer["message_id"])
        self.assertEqual(delivered[0].triage.priority, "emergency")
        self.assertEqual(self.gateway.destinations["lapor"].delivered, [])

    def test_answers_carry_their_length_and_are_not_chunked(self):
        for body in ({"sender": "0812", "text": "Jalan rusak"}, b"{not json"):
            response = self.successResultOf(self.http.post(
                "http://siaga.test/channels/web/webhook", data=body if isinstance(body, bytes) else json.dumps(body),
                headers={b"content-type": b"application/json"}))
            content = self.successResultOf(response.content())
            self.assertIn(response.code, (202, 400))
            # The client keeps Content-Length as the response's length (UNKNOWN_LENGTH when chunked).
            self.assertEqual(response.original.length, len(content))

    def test_complaint_flows_to_the_other_route(self):
        code, answer = self.request("POST", "/channels/web/webhook",
                                    {"sender": "0812", "text": "Jalan di depan rumah rusak, mohon diperbaiki"})
        self.assertEqual(code, 202)
        self.assertEqual(len(self.gateway.destinations["lapor"].delivered), 1)

    def test_form_post(self):
        code, answer = self.request("POST", "/channels/web/webhook",
                                    b"sender=0812&text=Lampu+jalan+mati&lat=0.5&lon=117.5",
                                    {b"content-type": b"application/x-www-form-urlencoded"})
        self.assertEqual(code, 202)
        message, _ = self.store.messages[answer["message_id"]]
        self.assertEqual((message.location.lat, message.location.lon), (0.5, 117.5))

    def test_same_id_stored_once(self):
        body = {"sender": "0812", "text": "Sampah menumpuk", "id": "form-42"}
        first = self.request("POST", "/channels/web/webhook", body)
        again = self.request("POST", "/channels/web/webhook", body)
        self.assertEqual(first, again)
        self.assertEqual(len(self.store.messages), 1)
        self.assertEqual(len(self.gateway.destinations["lapor"].delivered), 1)

    def test_malformed_is_400_and_quarantined(self):
        code, answer = self.request("POST", "/channels/web/webhook", b"{nope", {b"content-type": b"application/json"})
        self.assertEqual(code, 400)
        self.assertIn("not valid JSON", answer["error"])
        self.assertEqual(self.store.quarantined[0]["body"], b"{nope")
        self.assertEqual(self.gateway.metrics.channels["web"].malformed, 1)

    def test_each_bad_body_named(self):
        cases = [
            ({"sender": "1"}, "'text' is missing or empty"),
            ({"sender": "1", "text": "   "}, "'text' is missing or empty"),
            ({"text": "halo"}, "'sender' is missing or empty: give a phone number or an e-mail address"),
            ({"sender": "1", "text": "x" * 4001}, "'text' is longer than 4000 characters"),
            ({"sender": "1", "text": "a", "location": {"lat": 91, "lon": 0}},
             "'location' is outside -90..90 latitude or -180..180 longitude"),
            ([1, 2], "body must be a JSON object with 'sender' and 'text'"),
        ]
        for body, error in cases:
            self.assertEqual(self.request("POST", "/channels/web/webhook", body), (400, {"error": error}))

    def test_wrong_content_type(self):
        code, answer = self.request("POST", "/channels/web/webhook", b"hello", {b"content-type": b"text/plain"})
        self.assertEqual(code, 400)
        self.assertEqual(answer["error"], "Content-Type must be application/json or "
                                          "application/x-www-form-urlencoded, got text/plain")

    def test_bearer_token_channel(self):
        body = {"sender": "1", "text": "banjir"}
        self.assertEqual(self.request("POST", "/channels/private/webhook", body)[0], 401)
        self.assertEqual(self.request("POST", "/channels/private/webhook", body,
                                      {b"authorization": b"Bearer wrong"})[0], 401)
        self.assertEqual(self.request("POST", "/channels/private/webhook", body,
                                      {b"authorization": b"Bearer webtoken"})[0], 202)
        self.assertEqual(self.gateway.metrics.channels["private"].refused, 2)
        self.assertEqual(len(self.store.messages), 1)

    def test_refused_stores_nothing(self):
        code, _ = self.request("POST", "/channels/fake/webhook", {"sender": "1", "text": "x"},
                               {b"x-fake-token": b"wrong"})
        self.assertEqual(code, 403)
        self.assertEqual(self.store.messages, {})

    def test_acknowledgement_sent_on_the_channel(self):
        code, _ = self.request("POST", "/channels/fake/webhook", [{"sender": "628111", "text": "kebakaran!", "id": "a"},
                                                                  {"sender": "628222", "text": "jalan rusak", "id": "b"}],
                               {b"x-fake-token": b"faketoken"})
        self.assertEqual(code, 200)
        sent = {(r.recipient, r.text) for r in self.gateway.channels["fake"].sent}
        fire, road = (m for m, _ in sorted(self.store.messages.values(), key=lambda pair: pair[0].sender))
        self.assertEqual(sent, {
            ("628111", f"Laporan darurat Anda sudah diteruskan ke 112. Nomor tiket: {fire.ticket}. "
                       "Jika nyawa terancam, telepon 112."),
            ("628222", f"Terima kasih, laporan Anda sudah kami terima. Nomor tiket: {road.ticket}."),
            ("628222", f"Laporan {road.ticket} diteruskan ke LAPOR!, nomor pelacakan LAPOR-1"),
        })
        self.assertEqual(len(self.store.replies), 3)

    def test_store_unavailable_is_503(self):
        self.store.writable = False
        code, answer = self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "banjir"})
        self.assertEqual(code, 503)
        self.assertIn("try again later", answer["error"])
        self.assertEqual(self.store.messages, {})

    def test_unknown_channel(self):
        self.assertEqual(self.request("POST", "/channels/nope/webhook", {}, as_json=False)[0], 404)

    def test_form_page(self):
        code, page = self.request("GET", "/channels/web/", as_json=False)
        self.assertEqual(code, 200)
        self.assertIn(b'<html lang="id">', page)
        self.assertIn(b'action="webhook"', page)
        self.assertIn(b'<label for="text">', page)

    def test_get_on_webhook_without_handshake(self):
        self.assertEqual(self.request("GET", "/channels/web/webhook")[0], 404)


class StatusTests(GatewayFixture, SynchronousTestCase):
    def setUp(self):
        self.make_gateway()

    def test_live(self):
        self.assertEqual(self.request("GET", "/health/live"), (200, {"status": "live"}))

    def test_ready(self):
        self.assertEqual(self.request("GET", "/health/ready"), (200, {"status": "ready"}))

    def test_not_ready_when_store_cannot_write(self):
        self.store.writable = False
        code, answer = self.request("GET", "/health/ready")
        self.assertEqual(code, 503)
        self.assertIn("store", answer["problems"])

    def test_not_ready_while_a_plugin_fails(self):
        self.gateway.state["channel:web"] = "failed: boom"
        code, answer = self.request("GET", "/health/ready")
        self.assertEqual((code, answer["problems"]), (503, {"channel:web": "failed: boom"}))

    def test_degraded_with_open_breaker(self):
        self.gateway.destinations["cad"].failure = PermanentDeliveryError("no")
        for _ in range(5):
            self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "kebakaran"})
        code, answer = self.request("GET", "/health/ready")
        self.assertEqual((code, answer), (200, {"status": "degraded",
                                               "degraded": {"destination:cad": "circuit breaker open"}}))

    def test_status(self):
        self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "kebakaran"})
        self.request("POST", "/channels/web/webhook", {"sender": "1"})
        code, status = self.request("GET", "/status")
        self.assertEqual(code, 200)
        self.assertEqual(status["channels"]["web"]["received"], 1)
        self.assertEqual(status["channels"]["web"]["malformed"], 1)
        self.assertEqual(status["channels"]["web"]["last_received"], self.reactor.seconds())
        self.assertEqual(status["destinations"]["cad"]["delivered"], 1)
        self.assertEqual(status["destinations"]["cad"]["in_flight"], 0)
        self.assertEqual(status["lanes"]["emergency"], {"depth": 0})
        self.assertEqual(status["version"], "0.1.0")

    def test_metrics(self):
        self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "kebakaran"})
        code, text = self.request("GET", "/metrics", as_json=False)
        self.assertEqual(code, 200)
        self.assertIn(b'siaga_messages_received_total{channel="web"} 1.0', text)
        self.assertIn(b'siaga_deliveries_total{destination="cad",lane="emergency",outcome="delivered"} 1.0', text)
        self.assertIn(b'siaga_lane_depth{lane="normal"} 0.0', text)


class AdminTests(GatewayFixture, SynchronousTestCase):
    def setUp(self):
        self.make_gateway()
        self.auth = {b"authorization": b"Bearer admintoken"}

    def test_needs_token(self):
        self.assertEqual(self.request("GET", "/admin/dead-letters")[0], 401)
        self.assertEqual(self.request("GET", "/admin/dead-letters", headers={b"authorization": b"Bearer x"})[0], 401)

    def test_dead_letters_and_replay(self):
        self.gateway.destinations["lapor"].failure = PermanentDeliveryError("HTTP 400: bad topic")
        self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "jalan rusak"})
        code, answer = self.request("GET", "/admin/dead-letters", headers=self.auth)
        self.assertEqual(code, 200)
        [dead] = answer["dead_letters"]
        self.assertEqual((dead["destination"], dead["error"]), ("lapor", "HTTP 400: bad topic"))
        code, one = self.request("GET", f"/admin/dead-letters/{dead['delivery_id']}", headers=self.auth)
        self.assertEqual(one["message"]["text"], "jalan rusak")
        self.gateway.destinations["lapor"].failure = None
        code, answer = self.request("POST", "/admin/replay", {"ids": [dead["delivery_id"]]}, self.auth)
        self.assertEqual((code, answer), (200, {"replayed": 1}))
        self.assertEqual(len(self.gateway.destinations["lapor"].delivered), 1)

    def test_replay_bad_body(self):
        code, answer = self.request("POST", "/admin/replay", {"everything": True}, self.auth)
        self.assertEqual(code, 400)


class ProtectedStatusTests(GatewayFixture, SynchronousTestCase):
    def test_status_behind_token(self):
        self.make_gateway(CONFIG.replace("admin: {token: admintoken}", "admin: {token: t, protect_status: true}"))
        self.assertEqual(self.request("GET", "/status")[0], 401)
        self.assertEqual(self.request("GET", "/metrics", as_json=False)[0], 401)
        self.assertEqual(self.request("GET", "/status", headers={b"authorization": b"Bearer t"})[0], 200)
        self.assertEqual(self.request("GET", "/health/live")[0], 200)


class RetentionTests(GatewayFixture, SynchronousTestCase):
    def test_old_personal_data_pruned_hourly(self):
        self.make_gateway(CONFIG.replace("store: {backend: memory}", "store: {backend: memory, retention_days: 1}"))
        self.request("POST", "/channels/web/webhook", {"sender": "+6281299998888", "text": "Jalan rusak parah"})
        [(message, _)] = self.store.messages.values()
        self.reactor.advance(3600)
        self.assertEqual(list(self.store.messages.values())[0][0].text, "Jalan rusak parah")
        self.reactor.advance(86400)
        [(pruned, _)] = self.store.messages.values()
        self.assertEqual((pruned.id, pruned.text, pruned.sender), (message.id, "", ""))


class ObserverHookTests(GatewayFixture, SynchronousTestCase):
    def test_observer_hooks_called(self):
        from gateway.hookspecs import hookimpl
        calls = []

        class Recorder:
            @hookimpl
            def siaga_message_triaged(self, message, triage):
                calls.append(("triaged", triage.priority))

            @hookimpl
            def siaga_message_accepted(self, message, triage):
                calls.append(("accepted", message.text))

            @hookimpl
            def siaga_delivered(self, delivery, receipt):
                calls.append(("delivered", delivery.destination_id, receipt.reference))

            @hookimpl
            def siaga_dead_lettered(self, delivery, error):
                calls.append(("dead", delivery.destination_id, error))

        self.make_gateway(plugins=[Recorder()])
        self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "Jalan rusak", "id": "x"})
        self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "Jalan rusak", "id": "x"})
        self.gateway.destinations["cad"].failure = PermanentDeliveryError("refused")
        self.request("POST", "/channels/web/webhook", {"sender": "2", "text": "Kebakaran! tolong"})
        self.assertEqual(calls[:4], [
            ("triaged", "normal"), ("accepted", "Jalan rusak"), ("delivered", "lapor", "LAPOR-1"),
            ("triaged", "normal"),  # the duplicate is triaged, not accepted again
        ])
        # An emergency is handed to dispatch before the bookkeeping: here (in memory) it fails first.
        self.assertEqual(calls[4:], [("triaged", "emergency"), ("dead", "cad", "refused"),
                                     ("accepted", "Kebakaran! tolong")])


class SheddingTests(GatewayFixture, SynchronousTestCase):
    def test_ordinary_reports_shed_while_late_emergencies_taken(self):
        self.make_gateway()
        self.gateway.dispatcher.lag = 0.8  # above the default shed_lag of 0.1 s
        response = self.successResultOf(self.http.post("http://siaga.test/channels/web/webhook",
                                                       json={"sender": "1", "text": "Jalan rusak"}))
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"10"])
        self.assertIn("too busy", self.successResultOf(response.json())["error"])
        code, _ = self.request("POST", "/channels/web/webhook", {"sender": "2", "text": "Tolong kebakaran rumah!"})
        self.assertEqual(code, 202)
        self.assertEqual([m.text for m, _ in self.store.messages.values()], ["Tolong kebakaran rumah!"])
        self.gateway.dispatcher.lag = 0.0
        self.assertEqual(self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "Jalan rusak"})[0], 202)
        code, status = self.request("GET", "/status")
        self.assertEqual(status["channels"]["web"]["shed"], 1)

    def test_shedding_can_be_turned_off(self):
        self.make_gateway(CONFIG + "dispatch: {shed_lag: 0}\n")
        self.gateway.dispatcher.lag = 5.0
        self.assertEqual(self.request("POST", "/channels/web/webhook", {"sender": "1", "text": "Jalan rusak"})[0], 202)

    def test_ordinary_reports_shed_while_accepts_pile_up(self):
        self.make_gateway(CONFIG + "dispatch: {max_pending: 2}\n")
        held = []
        store_accept = self.store.accept

        def slow_accept(intakes):
            d = defer.Deferred()
            held.append((d, intakes))
            return d
        self.store.accept = slow_accept
        waiting = [self.http.post("http://siaga.test/channels/web/webhook", json={"sender": "1", "text": f"jalan {i}"})
                   for i in range(2)]
        self.assertEqual(self.gateway.ingest.pending, 2)
        shed = self.successResultOf(self.http.post("http://siaga.test/channels/web/webhook",
                                                   json={"sender": "1", "text": "lampu mati"}))
        self.assertEqual(shed.code, 503)
        emergency = self.http.post("http://siaga.test/channels/web/webhook",
                                   json={"sender": "2", "text": "Tolong kebakaran rumah!"})
        self.assertEqual(len(held), 3, "an emergency is taken however many accepts wait")
        for d, intakes in held:
            store_accept(intakes).chainDeferred(d)
        self.http.flush()
        self.assertEqual([self.successResultOf(r).code for r in waiting + [emergency]], [202, 202, 202])
        self.assertEqual(self.gateway.ingest.pending, 0)


class FreezeStartupObjectsTests(GatewayFixture, SynchronousTestCase):
    """``freeze_gc`` (set by the twistd plugin) puts startup objects out of the collector's reach."""

    def setUp(self):
        gc.unfreeze()
        self.addCleanup(gc.unfreeze)

    def test_not_frozen_by_default(self):
        self.make_gateway()
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_frozen_once_started(self):
        self.make_gateway()
        self.gateway.freeze_gc = True
        self.gateway.stopService()
        self.gateway.startService()
        self.assertEqual(self.gateway.state["store"], "ready")
        self.assertGreater(gc.get_freeze_count(), 1000)
