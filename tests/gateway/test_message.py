"""The values that travel through the gateway."""

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from gateway.message import Location, Message, ticket_for


class InCaseTests(SynchronousTestCase):
    def setUp(self):
        self.message = Message(channel_id="wa", channel_type="whatsapp", sender="+6281211112222", text="Banjir",
                               external_id="wamid.1", location=Location(lat=0.5, lon=117.5), extra={"k": 1})

    def test_same_as_replacing_the_case(self):
        joined = self.message.in_case("case-1")
        self.assertEqual(joined, dataclasses.replace(self.message, case_id="case-1"))
        self.assertIs(type(joined), Message)

    def test_the_original_is_unchanged(self):
        self.message.in_case("case-1")
        self.assertIsNone(self.message.case_id)

    def test_the_ticket_is_the_cases(self):
        joined = self.message.in_case("agrcgfv4dlgrmhper2d2b5wh5a")
        self.assertEqual(joined.ticket, ticket_for("agrcgfv4dlgrmhper2d2b5wh5a"))
        self.assertEqual(joined.to_json()["case_id"], "agrcgfv4dlgrmhper2d2b5wh5a")

    def test_still_frozen(self):
        with self.assertRaises(dataclasses.FrozenInstanceError):
            self.message.in_case("case-1").text = "diubah"
