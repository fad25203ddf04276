"""Unit tests of the open311 destination (StubTreq, task.Clock)."""

from __future__ import annotations

from urllib.parse import parse_qs

from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from gateway.errors import PermanentDeliveryError
from gateway.message import Location
from gateway.testing import DestinationContractTests, RecordingTarget, sample_delivery
from plugins.destinations import open311
from plugins.destinations.open311 import Open311Destination

from ._support import PHONE, full_delivery

ENDPOINT = "https://311.example/open311/v2/"
CREATED = b'[{"service_request_id": "638344", "service_notice": "Ditangani dalam 3 hari"}]'


def make(target, **options):
    options.setdefault("endpoint", ENDPOINT)
    options.setdefault("service_codes", {"complaint": "JALAN", "default": "UMUM"})
    context = PluginContext(reactor=task.Clock(), http_client=StubTreq(target))
    return Open311Destination("open311", options, context)


class Open311ContractTests(DestinationContractTests, SynchronousTestCase):
    success_body = CREATED

    def make_destination(self, context):
        return Open311Destination("open311", {"endpoint": ENDPOINT, "service_codes": {"default": "UMUM"},
                                              "api_key": "k"}, context)


class Open311Tests(SynchronousTestCase):
    def post(self, delivery, answer=CREATED, **options):
        target = RecordingTarget(body=answer)
        receipt = self.successResultOf(make(target, **options).deliver(delivery))
        method, path, headers, body = target.requests[-1]
        self.assertEqual((method, path), (b"POST", b"/open311/v2/requests.json"))
        self.assertEqual(headers["content-type"], ["application/x-www-form-urlencoded"])
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        return receipt, {k: v[0] for k, v in parse_qs(body.decode()).items()}

    def test_registers(self):
        registered = {}
        open311.siaga_register_destinations(register=registered.__setitem__)
        self.assertIs(registered["open311"], Open311Destination)

    def test_form_with_coordinates(self):
        delivery = full_delivery(category="complaint", text="Lampu jalan mati")
        receipt, form = self.post(delivery, api_key="key-1", jurisdiction_id="kutaitimurkab.go.id")
        self.assertEqual(form, {"service_code": "JALAN", "jurisdiction_id": "kutaitimurkab.go.id", "api_key": "key-1",
                                "lat": "0.512300", "long": "117.543200", "description": "Lampu jalan mati",
                                "media_url": "https://cdn.example/foto.jpg"})
        self.assertEqual(receipt.reference, "638344")
        self.assertEqual(receipt.url, "https://311.example/open311/v2/requests/638344.json")
        self.assertEqual(receipt.detail, "Ditangani dalam 3 hari")

    def test_address_string_without_coordinates_and_default_code(self):
        delivery = full_delivery(category="aspiration", location=Location(name="Kecamatan Bengalon"), media=())
        _, form = self.post(delivery)
        self.assertEqual(form["service_code"], "UMUM")
        self.assertEqual(form["address_string"], "Kecamatan Bengalon")
        self.assertNotIn("lat", form)
        self.assertNotIn("media_url", form)
        self.assertNotIn("api_key", form)

    def test_no_place_at_all(self):
        _, form = self.post(full_delivery(location=None))
        self.assertNotIn("address_string", form)
        self.assertNotIn("lat", form)

    def test_personal_data_only_when_configured(self):
        _, form = self.post(full_delivery())
        for key in ("first_name", "last_name", "phone", "email"):
            self.assertNotIn(key, form)
        _, form = self.post(full_delivery(), send_personal_data=True)
        self.assertEqual((form["first_name"], form["last_name"], form["phone"]), ("Budi", "Santoso", PHONE))
        self.assertNotIn("email", form)

    def test_token_answer(self):
        receipt, _ = self.post(sample_delivery(), answer=b'[{"token": "abc-123"}]')
        self.assertEqual(receipt.reference, "abc-123")
        self.assertEqual(receipt.url, "https://311.example/open311/v2/tokens/abc-123.json")

    def test_answer_without_id_is_permanent(self):
        destination = make(RecordingTarget(body=b"[]"))
        self.failureResultOf(destination.deliver(sample_delivery()), PermanentDeliveryError)

    def test_unmapped_category_is_permanent(self):
        destination = make(RecordingTarget(body=CREATED), service_codes={"complaint": "JALAN"})
        failure = self.failureResultOf(destination.deliver(full_delivery(category="fire")), PermanentDeliveryError)
        self.assertIn("fire", failure.value.reason)

    def test_georeport_error_list(self):
        destination = make(RecordingTarget(code=400, body=b'[{"code": 400, "description": "service_code not found"}]'))
        failure = self.failureResultOf(destination.deliver(sample_delivery()), PermanentDeliveryError)
        self.assertIn("service_code not found", failure.value.reason)

    def test_long_text_is_cut(self):
        _, form = self.post(full_delivery(text="x" * 5000))
        self.assertEqual(len(form["description"]), 4000)

    def test_bearer_header_auth_as_well(self):
        target = RecordingTarget(body=CREATED)
        self.successResultOf(make(target, token="gw").deliver(sample_delivery()))
        self.assertEqual(target.requests[-1][2]["authorization"], ["Bearer gw"])
