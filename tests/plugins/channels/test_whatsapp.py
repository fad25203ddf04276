"""Tests of the whatsapp channel with WhatsApp Cloud API payloads from tests/data/meta/."""

import json

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from gateway.errors import (
    MalformedRequest,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from gateway.message import Accepted, Media, Reply, Triage
from gateway.testing import ChannelContractTests, make_request
from plugins.channels.whatsapp import WhatsAppChannel
from tests.plugins.channels.test_meta_common import (
    ACCESS_TOKEN,
    PAYLOAD_TIME,
    PHONE_NUMBER_ID,
    WHATSAPP_OPTIONS,
    MetaContract,
    SequenceTarget,
    build,
    citizen_message,
    last_json,
    load,
    parse_file,
    sending,
    signed,
)

RAHMAT = "6281254001234"
SITI = "6281355009876"
SENT = b'{"messaging_product": "whatsapp", "contacts": [{"input": "6281254001234", "wa_id": "6281254001234"}], ' \
       b'"messages": [{"id": "wamid.HBgNNjI4MTI1NDAwMTIzNBUCABEYEkRFQURCRUVGMDAxAA=="}]}'
SENT_ID = "wamid.HBgNNjI4MTI1NDAwMTIzNBUCABEYEkRFQURCRUVGMDAxAA=="


def graph_error(code, message="error"):
    return json.dumps({"error": {"message": message, "type": "OAuthException", "code": code,
                                 "fbtrace_id": "AbCdEf"}}).encode()


class WhatsAppContractTests(MetaContract, ChannelContractTests, SynchronousTestCase):
    channel_name = "wa-kutim"
    channel_class = WhatsAppChannel
    options = WHATSAPP_OPTIONS
    payload = "whatsapp_batch.json"

    def refused_request(self):
        body = load("whatsapp_batch.json")
        return signed(body, secret="not-the-app-secret"), body

    def malformed_request(self):
        body = load("whatsapp_wrong_object.json")
        return signed(body), body


class ParseTests(SynchronousTestCase):
    def setUp(self):
        self.channel = build(WhatsAppChannel, WHATSAPP_OPTIONS)[0]
        self.parsed = parse_file(self.channel, "whatsapp_batch.json")
        self.by_id = {m.external_id[-10:]: m for m in self.parsed.messages}

    def test_every_message_of_the_batch(self):
        self.assertEqual(len(self.parsed.messages), 5)
        self.assertEqual([m.sender for m in self.parsed.messages], [RAHMAT, SITI, SITI, RAHMAT, SITI])
        self.assertTrue(all(m.external_id.startswith("wamid.") for m in self.parsed.messages))
        self.assertTrue(all(m.channel_type == "whatsapp" and not m.public for m in self.parsed.messages))

    def test_contact_names(self):
        names = {m.sender: m.sender_name for m in self.parsed.messages}
        self.assertEqual(names, {RAHMAT: "Rahmat Hidayat", SITI: "Siti Aminah"})

    def test_text(self):
        first = self.parsed.messages[0]
        self.assertEqual(first.text, "Jalan di depan pasar Sangatta rusak parah, banyak lubang")
        self.assertEqual(first.received_at, PAYLOAD_TIME)

    def test_image_with_caption(self):
        image = self.parsed.messages[1]
        self.assertEqual(image.media, (Media(kind="image", ref="1003383421387256", mime_type="image/jpeg",
                                             caption="Banjir di Jl. Yos Sudarso, air sudah selutut"),))
        self.assertEqual(image.text, "Banjir di Jl. Yos Sudarso, air sudah selutut")

    def test_location(self):
        pin = self.parsed.messages[2]
        self.assertEqual(pin.location.lat, 0.5128)
        self.assertEqual(pin.location.lon, 117.6523)
        self.assertEqual(pin.location.source, "channel")
        self.assertEqual(pin.location.name, "Masjid Agung Al-Faruq, Jl. Yos Sudarso, Sangatta Utara")

    def test_reply_to(self):
        self.assertEqual(self.parsed.messages[3].reply_to,
                         "wamid.HBgNNjI4NTI1MDAwMTExMhUCABEYEjA5OEY3RTZENUM0QjNBMkExAA==")
        self.assertIsNone(self.parsed.messages[0].reply_to)

    def test_voice_note(self):
        voice = self.parsed.messages[4]
        self.assertEqual(voice.media[0].kind, "voice")
        self.assertEqual(voice.media[0].ref, "1488437012011934")
        self.assertEqual(voice.text, "")

    def test_button_reply_and_reaction_are_named_unknown(self):
        self.assertEqual(self.parsed.ignored, ("unknown:interactive", "unknown:reaction"))

    def test_last_seen_from_payload_timestamps(self):
        self.assertEqual(self.channel.last_seen(RAHMAT), PAYLOAD_TIME + 30)
        self.assertEqual(self.channel.last_seen(SITI), PAYLOAD_TIME + 60)

    def test_statuses(self):
        parsed = parse_file(self.channel, "whatsapp_statuses.json")
        self.assertEqual(parsed.messages, ())
        delivered, failed = parsed.statuses
        self.assertEqual((delivered.status, delivered.external_id),
                         ("delivered", "wamid.HBgNNjI4MTI1NDAwMTIzNBUCABEYEjQ0QjU3RjkyMzY0RDk4RTFBOQA="))
        self.assertIsNone(delivered.detail)
        self.assertEqual(failed.status, "failed")
        self.assertIn("131047", failed.detail)

    def test_unknown_field(self):
        parsed = parse_file(self.channel, "whatsapp_unknown_field.json")
        self.assertEqual(parsed.messages, ())
        self.assertEqual(parsed.ignored, ("unknown:message_template_status_update",))

    def test_another_number_of_the_account_is_skipped(self):
        body = load("whatsapp_batch.json").replace(PHONE_NUMBER_ID.encode(), b"999999999999999")
        parsed = self.channel.parse(make_request(body=body), body)
        self.assertEqual((parsed.messages, parsed.ignored), ((), ("other-number",)))

    def test_unexpected_shapes_are_not_errors(self):
        body = json.dumps({"object": "whatsapp_business_account", "entry": [
            {"id": "1", "changes": [{"field": "messages", "value": {"messages": [
                {"from": RAHMAT, "id": "wamid.X", "timestamp": "1", "type": "text"},
                {"id": "wamid.Y", "type": "text", "text": {"body": "no sender"}},
                {"from": RAHMAT, "id": "wamid.Z", "type": "hologram"},
                "not an object"]}}, {"field": "messages"}, 7]}]}).encode()
        parsed = self.channel.parse(make_request(body=body), body)
        self.assertEqual(parsed.messages, ())
        self.assertEqual(len(parsed.ignored), 4)
        self.assertTrue(all(name.startswith("unknown:") for name in parsed.ignored))

    def test_username_user_without_phone_number(self):
        # Users with a WhatsApp username may come with a business-scoped user id (BSUID) only.
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "6285250001112", "phone_number_id": PHONE_NUMBER_ID},
                "contacts": [{"profile": {"name": "Andi", "username": "@andi"}, "user_id": "ID.1410018717833190"}],
                "messages": [{"from_user_id": "ID.1410018717833190", "id": "wamid.BSUID1",
                              "timestamp": "1767225600", "type": "text", "text": {"body": "Halo"}}]}}]}]}).encode()
        (message,) = self.channel.parse(make_request(body=body), body).messages
        self.assertEqual((message.sender, message.sender_name), ("ID.1410018717833190", "Andi"))

    def test_malformed_bodies(self):
        for name in ("malformed_truncated.json", "whatsapp_wrong_object.json", "messenger_messages.json"):
            body = load(name)
            self.assertRaises(MalformedRequest, self.channel.parse, make_request(body=body), body)

    def test_acknowledge(self):
        request = make_request()
        accepted = [Accepted(m, Triage("normal", "complaint")) for m in self.parsed.messages]
        self.assertEqual(self.channel.acknowledge(request, accepted), b"EVENT_RECEIVED")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])


class SendTests(SynchronousTestCase):
    def channel(self, code=200, body=SENT, now=PAYLOAD_TIME + 60, **options):
        return sending(WhatsAppChannel, dict(WHATSAPP_OPTIONS, **options), code, body, now)

    def reply(self, channel, received_at=PAYLOAD_TIME, text="Laporan diterima, tiket SGA-ABCD1234"):
        original = citizen_message(channel, RAHMAT, received_at, external_id="wamid.IN1")
        return Reply(channel_id=channel.name, recipient=RAHMAT, text=text, in_reply_to=original)

    def test_text_inside_the_window(self):
        channel, target, _, stub = self.channel()
        reply = self.reply(channel)
        d = channel.send(reply)
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, SENT_ID)
        method, path, headers, body = last_json(target)
        self.assertEqual((method, path), (b"POST", f"/v25.0/{PHONE_NUMBER_ID}/messages".encode()))
        self.assertEqual(headers["host"], ["graph.facebook.com"])
        self.assertEqual(headers["authorization"], [f"Bearer {ACCESS_TOKEN}"])
        self.assertEqual(headers["content-type"], ["application/json"])
        self.assertEqual(body["messaging_product"], "whatsapp")
        self.assertEqual(body["to"], RAHMAT)
        self.assertEqual(body["type"], "text")
        self.assertEqual(body["text"]["body"], "Laporan diterima, tiket SGA-ABCD1234")
        self.assertEqual(body["context"], {"message_id": "wamid.IN1"})
        self.assertEqual(body["biz_opaque_callback_data"], reply.id)

    def test_reply_to_a_username_user_goes_to_recipient(self):
        channel, target, _, stub = self.channel()
        original = citizen_message(channel, "ID.1410018717833190", PAYLOAD_TIME)
        d = channel.send(Reply(channel_id=channel.name, recipient=original.sender, text="Tiket SGA-ABCD1234",
                               in_reply_to=original))
        stub.flush()
        self.successResultOf(d)
        body = last_json(target)[3]
        self.assertEqual(body["recipient"], "ID.1410018717833190")
        self.assertNotIn("to", body)

    def test_graph_url_and_version_are_options(self):
        channel, target, _, stub = self.channel(graph_url="http://127.0.0.1:9/graph/", api_version="v23.0")
        d = channel.send(self.reply(channel))
        stub.flush()
        self.successResultOf(d)
        self.assertEqual(target.requests[0][1], f"/graph/v23.0/{PHONE_NUMBER_ID}/messages".encode())

    def test_window_from_parsed_messages_without_in_reply_to(self):
        channel, target, _, stub = self.channel()
        parse_file(channel, "whatsapp_batch.json")
        d = channel.send(Reply(channel_id=channel.name, recipient=SITI, text="Status: diproses"))
        stub.flush()
        self.successResultOf(d)
        body = last_json(target)[3]
        self.assertEqual(body["type"], "text")
        self.assertNotIn("context", body)

    def test_in_reply_to_survives_a_restart(self):
        # A fresh channel has no memory; the stored message's received_at still opens the window.
        channel, target, _, stub = self.channel(now=PAYLOAD_TIME + 23 * 3600)
        d = channel.send(self.reply(channel))
        stub.flush()
        self.successResultOf(d)
        self.assertEqual(last_json(target)[3]["type"], "text")

    def test_template_outside_the_window(self):
        channel, target, clock, stub = self.channel(template_name="tiket_laporan", template_language="id")
        clock.advance(24 * 3600 + 1)
        reply = self.reply(channel)
        d = channel.send(reply)
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, SENT_ID)
        body = last_json(target)[3]
        self.assertEqual(body["type"], "template")
        self.assertEqual(body["to"], RAHMAT)
        template = body["template"]
        self.assertEqual(template["name"], "tiket_laporan")
        self.assertEqual(template["language"], {"code": "id"})
        ticket = reply.in_reply_to.ticket
        self.assertEqual(template["components"], [{"type": "body", "parameters": [{"type": "text", "text": ticket}]}])

    def test_template_ticket_from_the_text_when_no_original(self):
        channel, target, _, stub = self.channel(template_name="tiket_laporan")
        d = channel.send(Reply(channel_id=channel.name, recipient=RAHMAT, text="Tiket SGA-ZX12CV34 selesai"))
        stub.flush()
        self.successResultOf(d)
        parameters = last_json(target)[3]["template"]["components"][0]["parameters"]
        self.assertEqual(parameters, [{"type": "text", "text": "SGA-ZX12CV34"}])

    def test_outside_the_window_without_template_is_permanent(self):
        channel, target, clock, _ = self.channel()
        clock.advance(24 * 3600 + 1)
        failure = self.failureResultOf(channel.send(self.reply(channel)), PermanentDeliveryError)
        self.assertIn("outside the 24-hour window", failure.value.reason)
        self.assertEqual(target.requests, [])

    def test_never_heard_from_without_template_is_permanent(self):
        channel, target, _, _ = self.channel()
        reply = Reply(channel_id=channel.name, recipient=RAHMAT, text="Halo")
        self.failureResultOf(channel.send(reply), PermanentDeliveryError)
        self.assertEqual(target.requests, [])

    def test_window_closed_answer_falls_back_to_the_template(self):
        target = SequenceTarget([(400, graph_error(131047, "Re-engagement message")), (200, SENT)])
        channel, _, _, stub = build(WhatsAppChannel, dict(WHATSAPP_OPTIONS, template_name="tiket_laporan"),
                                    target, now=PAYLOAD_TIME + 60)
        d = channel.send(self.reply(channel))
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, SENT_ID)
        self.assertEqual([json.loads(r[2])["type"] for r in target.requests], ["text", "template"])

    def test_error_mapping(self):
        cases = [
            (500, b"upstream", TemporaryDeliveryError),
            (400, graph_error(130429, "Rate limit hit"), TemporaryDeliveryError),
            (400, graph_error(131056, "pair rate limit"), TemporaryDeliveryError),
            (400, graph_error(4, "Application request limit reached"), TemporaryDeliveryError),
            (401, graph_error(190, "Error validating access token"), PermanentDeliveryError),
            (403, graph_error(10, "Permission denied"), PermanentDeliveryError),
            (400, graph_error(100, "Invalid parameter"), PermanentDeliveryError),
            (400, graph_error(131047, "Re-engagement message"), PermanentDeliveryError),
            (400, graph_error(131026, "Message undeliverable"), PermanentDeliveryError),
        ]
        for code, body, expected in cases:
            channel, _, _, stub = self.channel(code=code, body=body)
            d = channel.send(self.reply(channel))
            stub.flush()
            failure = self.failureResultOf(d, expected)
            self.assertNotIn(ACCESS_TOKEN, failure.value.reason)

    def test_unreachable_graph_is_temporary(self):
        class Unreachable:
            def post(self, url, **kwargs):
                return defer.fail(ConnectionRefusedError("connection refused"))

        channel = build(WhatsAppChannel, WHATSAPP_OPTIONS, now=PAYLOAD_TIME + 60)[0]
        channel.http = Unreachable()
        self.failureResultOf(channel.send(self.reply(channel)), TemporaryDeliveryError)


class MediaTarget(Resource):
    """The Graph API media endpoint and the media host in one: GET /v25.0/<id> and GET /media/<id>."""

    isLeaf = True

    def __init__(self, content=b"\xff\xd8jpeg", file_size=None):
        super().__init__()
        self.content = content
        self.file_size = len(content) if file_size is None else file_size
        self.requests = []

    def render(self, request):
        self.requests.append((request.uri, request.getHeader(b"authorization")))
        if request.uri.startswith(b"/v25.0/"):
            media_id = request.uri.rsplit(b"/", 1)[-1].decode()
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"messaging_product": "whatsapp", "url": f"https://lookaside.fbsbx.com/media/{media_id}",
                               "mime_type": "image/jpeg", "sha256": "abc", "file_size": self.file_size,
                               "id": media_id}).encode()
        return self.content


class FetchMediaTests(SynchronousTestCase):
    def test_two_steps_with_the_token(self):
        target = MediaTarget()
        channel, _, _, stub = build(WhatsAppChannel, WHATSAPP_OPTIONS, target)
        d = channel.fetch_media(Media(kind="image", ref="1003383421387256", mime_type="image/jpeg"), 1024)
        stub.flush()
        self.assertEqual(self.successResultOf(d), b"\xff\xd8jpeg")
        bearer = f"Bearer {ACCESS_TOKEN}".encode()
        self.assertEqual(target.requests, [(b"/v25.0/1003383421387256", bearer), (b"/media/1003383421387256", bearer)])

    def test_refused_by_announced_size(self):
        target = MediaTarget(file_size=10 * 1024 * 1024)
        channel, _, _, stub = build(WhatsAppChannel, WHATSAPP_OPTIONS, target)
        d = channel.fetch_media(Media(kind="video", ref="42"), 1024)
        stub.flush()
        self.failureResultOf(d, PermanentDeliveryError)
        self.assertEqual(len(target.requests), 1)

    def test_refused_by_actual_size(self):
        target = MediaTarget(content=b"x" * 5000, file_size=10)
        channel, _, _, stub = build(WhatsAppChannel, dict(WHATSAPP_OPTIONS, media_max_bytes=1000), target)
        d = channel.fetch_media(Media(kind="document", ref="43"))
        stub.flush()
        self.failureResultOf(d, PermanentDeliveryError)
