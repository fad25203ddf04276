"""Tests of the messenger channel (Messenger conversations and Page feed) with payloads from tests/data/meta/."""

import json

from twisted.trial.unittest import SynchronousTestCase

from gateway.errors import (
    MalformedRequest,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from gateway.message import Reply
from gateway.testing import ChannelContractTests, make_request
from plugins.channels.messenger import MessengerChannel
from tests.plugins.channels.test_meta_common import (
    ACCESS_TOKEN,
    MESSENGER_OPTIONS,
    PAGE_ID,
    PAYLOAD_TIME,
    MetaContract,
    build,
    citizen_message,
    last_json,
    load,
    parse_file,
    sending,
    signed,
)

PERSON = "7012345678901234"
SENT = b'{"recipient_id": "7012345678901234", "message_id": "m_SentSentSent0001"}'


class MessengerContractTests(MetaContract, ChannelContractTests, SynchronousTestCase):
    channel_name = "fb-kutim"
    channel_class = MessengerChannel
    options = MESSENGER_OPTIONS
    payload = "messenger_messages.json"

    def refused_request(self):
        return {}, load("messenger_messages.json")

    def malformed_request(self):
        body = load("malformed_truncated.json")
        return signed(body), body


class MessagingTests(SynchronousTestCase):
    def setUp(self):
        self.channel = build(MessengerChannel, MESSENGER_OPTIONS)[0]
        self.parsed = parse_file(self.channel, "messenger_messages.json")

    def test_messages_and_echo(self):
        text, image = self.parsed.messages
        self.assertEqual(text.sender, PERSON)
        self.assertEqual(text.text, "Lampu jalan di Jl. APT Pranoto mati sejak seminggu")
        self.assertTrue(text.external_id.startswith("m_AbCd"))
        self.assertEqual(text.received_at, 1767225600.123)
        self.assertFalse(text.public)
        self.assertEqual(image.media[0].kind, "image")
        self.assertTrue(image.media[0].ref.startswith("https://scontent.xx.fbcdn.net/"))
        self.assertEqual(image.reply_to, "m_EchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEcho0001")

    def test_skipped_events_are_named(self):
        self.assertEqual(self.parsed.ignored, ("echo", "read", "unknown:postback"))

    def test_delivery_is_a_status_update(self):
        (update,) = self.parsed.statuses
        self.assertEqual((update.status, update.external_id),
                         ("delivered", "m_EchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEchoEcho0001"))

    def test_last_seen(self):
        self.assertEqual(self.channel.last_seen(PERSON), 1767225600.123)
        self.assertIsNone(self.channel.last_seen(PAGE_ID))

    def test_location_and_sticker_attachments(self):
        body = json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": 1767225600000, "messaging": [
            {"sender": {"id": PERSON}, "recipient": {"id": PAGE_ID}, "timestamp": 1767225600000,
             "message": {"mid": "m_loc", "attachments": [
                 {"type": "location", "title": "Pasar Induk Sangatta",
                  "payload": {"coordinates": {"lat": 0.51, "long": 117.65}}}]}},
            {"sender": {"id": PERSON}, "recipient": {"id": PAGE_ID}, "timestamp": 1767225601000,
             "message": {"mid": "m_sticker", "sticker_id": 369239263222822, "attachments": [
                 {"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/sticker.png",
                                               "sticker_id": 369239263222822}}]}},
        ]}]}).encode()
        location, sticker = self.channel.parse(make_request(body=body), body).messages
        self.assertEqual((location.location.lat, location.location.lon, location.location.name),
                         (0.51, 117.65, "Pasar Induk Sangatta"))
        self.assertEqual(sticker.media[0].kind, "sticker")

    def test_other_page_is_skipped(self):
        body = load("messenger_messages.json").replace(f'"id": "{PAGE_ID}",\n      "time"'.encode(),
                                                        b'"id": "555",\n      "time"')
        parsed = self.channel.parse(make_request(body=body), body)
        self.assertEqual((parsed.messages, parsed.ignored), ((), ("other-page",)))

    def test_malformed(self):
        for name in ("malformed_truncated.json", "instagram_messages.json", "whatsapp_batch.json"):
            body = load(name)
            self.assertRaises(MalformedRequest, self.channel.parse, make_request(body=body), body)


class FeedTests(SynchronousTestCase):
    def setUp(self):
        self.channel = build(MessengerChannel, MESSENGER_OPTIONS)[0]
        self.parsed = parse_file(self.channel, "messenger_feed_comment.json")

    def test_visitor_comment_is_public(self):
        comment = self.parsed.messages[0]
        self.assertTrue(comment.public)
        self.assertEqual(comment.external_id, "1122334455667788_998877665544332")
        self.assertEqual(comment.sender, "6543210987654321")
        self.assertEqual(comment.sender_name, "Budi Santoso")
        self.assertEqual(comment.text, "Pak, sampah di TPS Jl. Pendidikan sudah seminggu tidak diangkut")
        self.assertEqual(comment.received_at, 1767225900.0)
        self.assertEqual(comment.permalink, "https://www.facebook.com/permalink.php?story_fbid=pfbid02abcDEF"
                                            "&id=109876543210987&comment_id=998877665544332")
        self.assertEqual(comment.extra["post_id"], "109876543210987_1122334455667788")

    def test_visitor_post_with_built_permalink(self):
        post = self.parsed.messages[1]
        self.assertTrue(post.public)
        self.assertEqual(post.external_id, "109876543210987_2233445566778899")
        self.assertEqual(post.permalink, "https://www.facebook.com/109876543210987_2233445566778899")

    def test_built_comment_permalink(self):
        body = load("messenger_feed_comment.json").replace(b'"permalink_url"', b'"other_url"')
        comment = self.channel.parse(make_request(body=body), body).messages[0]
        self.assertEqual(comment.permalink,
                         "https://www.facebook.com/109876543210987_1122334455667788?comment_id=998877665544332")

    def test_page_comment_and_reaction_skipped(self):
        self.assertEqual(len(self.parsed.messages), 2)
        self.assertEqual(self.parsed.ignored, ("own", "unknown:feed-reaction-add"))

    def test_comments_do_not_open_the_messaging_window(self):
        self.assertIsNone(self.channel.last_seen("6543210987654321"))


class SendTests(SynchronousTestCase):
    def channel(self, code=200, body=SENT, now=PAYLOAD_TIME + 60, **options):
        return sending(MessengerChannel, dict(MESSENGER_OPTIONS, **options), code, body, now)

    def reply(self, channel, **kw):
        original = citizen_message(channel, PERSON, PAYLOAD_TIME, external_id="m_in", **kw)
        return Reply(channel_id=channel.name, recipient=original.sender, text="Tiket SGA-ABCD1234",
                     in_reply_to=original)

    def test_inside_the_window(self):
        channel, target, _, stub = self.channel()
        reply = self.reply(channel)
        d = channel.send(reply)
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, "m_SentSentSent0001")
        method, path, headers, body = last_json(target)
        self.assertEqual((method, path), (b"POST", b"/v25.0/me/messages"))
        self.assertEqual(headers["host"], ["graph.facebook.com"])
        self.assertEqual(headers["authorization"], [f"Bearer {ACCESS_TOKEN}"])
        self.assertEqual(body, {"recipient": {"id": PERSON}, "messaging_type": "RESPONSE",
                                "message": {"text": "Tiket SGA-ABCD1234", "metadata": reply.id}})

    def test_long_text_is_cut_to_messenger_limit(self):
        channel, target, _, stub = self.channel()
        reply = Reply(channel_id=channel.name, recipient=PERSON, text="x" * 3000,
                      in_reply_to=citizen_message(channel, PERSON, PAYLOAD_TIME))
        channel.send(reply)
        stub.flush()
        self.assertEqual(len(last_json(target)[3]["message"]["text"]), 2000)

    def test_human_agent_tag_outside_the_window(self):
        channel, target, clock, stub = self.channel(human_agent_tag=True)
        clock.advance(3 * 24 * 3600)
        d = channel.send(self.reply(channel))
        stub.flush()
        self.successResultOf(d)
        body = last_json(target)[3]
        self.assertEqual((body["messaging_type"], body["tag"]), ("MESSAGE_TAG", "HUMAN_AGENT"))

    def test_outside_the_window_without_tag_is_permanent(self):
        channel, target, clock, _ = self.channel()
        clock.advance(24 * 3600 + 1)
        failure = self.failureResultOf(channel.send(self.reply(channel)), PermanentDeliveryError)
        self.assertIn("24-hour window", failure.value.reason)
        self.assertEqual(target.requests, [])

    def test_past_seven_days_even_the_tag_is_permanent(self):
        channel, target, clock, _ = self.channel(human_agent_tag=True)
        clock.advance(8 * 24 * 3600)
        self.failureResultOf(channel.send(self.reply(channel)), PermanentDeliveryError)
        self.assertEqual(target.requests, [])

    def test_public_comment_reply(self):
        channel, target, clock, stub = self.channel(body=b'{"id": "1122334455667788_998877665544999"}')
        clock.advance(30 * 24 * 3600)  # comment replies have no 24-hour window
        original = citizen_message(channel, "6543210987654321", PAYLOAD_TIME,
                                   external_id="1122334455667788_998877665544332", public=True)
        reply = Reply(channel_id=channel.name, recipient=original.sender, text="Terima kasih, tiket SGA-ABCD1234",
                      in_reply_to=original)
        d = channel.send(reply)
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, "1122334455667788_998877665544999")
        _method, path, headers, body = last_json(target)
        self.assertEqual(path, b"/v25.0/1122334455667788_998877665544332/comments")
        self.assertEqual(headers["authorization"], [f"Bearer {ACCESS_TOKEN}"])
        self.assertEqual(body, {"message": "Terima kasih, tiket SGA-ABCD1234"})

    def test_error_mapping(self):
        def error(code, subcode=None):
            return json.dumps({"error": {"message": "x", "type": "OAuthException", "code": code,
                                         "error_subcode": subcode, "fbtrace_id": "F"}}).encode()
        cases = [(400, error(613), TemporaryDeliveryError), (400, error(32), TemporaryDeliveryError),
                 (400, error(2, None), TemporaryDeliveryError), (503, b"", TemporaryDeliveryError),
                 (400, error(10, 2018278), PermanentDeliveryError), (400, error(551, 1545041), PermanentDeliveryError),
                 (400, error(200), PermanentDeliveryError), (400, error(190, 463), PermanentDeliveryError)]
        for code, body, expected in cases:
            channel, _, _, stub = self.channel(code=code, body=body)
            d = channel.send(self.reply(channel))
            stub.flush()
            self.failureResultOf(d, expected)
