"""Tests of the instagram channel (DMs, comments, mentions) with payloads from tests/data/meta/."""

import json

from twisted.trial.unittest import SynchronousTestCase

from gateway.errors import (
    MalformedRequest,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from gateway.message import Media, Reply
from gateway.testing import ChannelContractTests, make_request
from plugins.channels.instagram import InstagramChannel
from tests.plugins.channels.test_meta_common import (
    ACCESS_TOKEN,
    ACCOUNT_ID,
    INSTAGRAM_OPTIONS,
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

PERSON = "1234567890123456"
SENT = b'{"recipient_id": "1234567890123456", "message_id": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjSENT"}'


class InstagramContractTests(MetaContract, ChannelContractTests, SynchronousTestCase):
    channel_name = "ig-kutim"
    channel_class = InstagramChannel
    options = INSTAGRAM_OPTIONS
    payload = "instagram_messages.json"

    def refused_request(self):
        body = load("instagram_messages.json")
        return {b"X-Hub-Signature-256": b"sha256=" + b"0" * 64}, body

    def malformed_request(self):
        body = b'{"object": "instagram", "entry": "not a list"}'
        return signed(body), body


class DirectMessageTests(SynchronousTestCase):
    def setUp(self):
        self.channel = build(InstagramChannel, INSTAGRAM_OPTIONS)[0]
        self.parsed = parse_file(self.channel, "instagram_messages.json")

    def test_messages(self):
        text, story_reply = self.parsed.messages
        self.assertEqual(text.sender, PERSON)
        self.assertEqual(text.text, "Min, ada pohon tumbang menutup jalan poros Sangatta-Bontang")
        self.assertEqual(text.received_at, 1767225600.321)
        self.assertFalse(text.public)
        self.assertEqual(story_reply.text, "Ini lokasinya")
        self.assertEqual(story_reply.media[0].kind, "image")
        self.assertEqual(story_reply.extra["story"]["id"], "17900000000000001")

    def test_deleted_and_echo_are_skipped(self):
        self.assertEqual(self.parsed.ignored, ("deleted", "echo"))

    def test_last_seen(self):
        self.assertEqual(self.channel.last_seen(PERSON), 1767225600.321)

    def test_malformed(self):
        for body in (load("malformed_truncated.json"), load("messenger_messages.json"), b"null"):
            self.assertRaises(MalformedRequest, self.channel.parse, make_request(body=body), body)


class PublicTests(SynchronousTestCase):
    def setUp(self):
        self.channel = build(InstagramChannel, INSTAGRAM_OPTIONS)[0]

    def test_comment(self):
        parsed = parse_file(self.channel, "instagram_comment.json")
        (comment,) = parsed.messages
        self.assertTrue(comment.public)
        self.assertEqual(comment.external_id, "17987654321098765")
        self.assertEqual(comment.sender, "3456789012345678")
        self.assertEqual(comment.sender_name, "warga_sangatta")
        self.assertEqual(comment.text, "@kutimsiaga air PDAM mati 3 hari di Teluk Lingga")
        self.assertEqual(comment.extra["media_id"], "18012345678901234")
        self.assertEqual(comment.permalink, "https://graph.facebook.com/v25.0/17987654321098765")
        self.assertEqual(comment.received_at, 1767226200.0)
        self.assertEqual(parsed.ignored, ("own",))

    def test_mention(self):
        (mention,) = parse_file(self.channel, "instagram_mention.json").messages
        self.assertTrue(mention.public)
        self.assertEqual(mention.external_id, "17894227972186120")
        self.assertEqual(mention.sender, "mention:17894227972186120")
        self.assertEqual(mention.media, (Media(kind="post", ref="17918195224117851"),))
        self.assertTrue(mention.extra["mention"])
        self.assertEqual(mention.permalink, "https://graph.facebook.com/v25.0/17894227972186120")

    def test_caption_mention(self):
        body = load("instagram_mention.json").replace(b',\n            "comment_id": "17894227972186120"', b"")
        (mention,) = self.channel.parse(make_request(body=body), body).messages
        self.assertEqual(mention.external_id, "mention:17918195224117851")
        self.assertIsNone(mention.extra["comment_id"])

    def test_unknown_field(self):
        parsed = parse_file(self.channel, "instagram_unknown_field.json")
        self.assertEqual((parsed.messages, parsed.ignored), ((), ("unknown:story_insights",)))

    def test_other_account_is_skipped(self):
        body = load("instagram_comment.json").replace(b'"id": "17841400000000001",\n      "time"',
                                                       b'"id": "17841499999999999",\n      "time"')
        parsed = self.channel.parse(make_request(body=body), body)
        self.assertEqual((parsed.messages, parsed.ignored), ((), ("other-account",)))


class SendTests(SynchronousTestCase):
    def channel(self, code=200, body=SENT, now=PAYLOAD_TIME + 60, **options):
        return sending(InstagramChannel, dict(INSTAGRAM_OPTIONS, **options), code, body, now)

    def dm_reply(self, channel, text="Tiket SGA-ABCD1234"):
        original = citizen_message(channel, PERSON, PAYLOAD_TIME)
        return Reply(channel_id=channel.name, recipient=PERSON, text=text, in_reply_to=original)

    def test_dm_with_facebook_login(self):
        channel, target, _, stub = self.channel()
        d = channel.send(self.dm_reply(channel))
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjSENT")
        _method, path, headers, body = last_json(target)
        self.assertEqual((path, headers["host"]), (b"/v25.0/me/messages", ["graph.facebook.com"]))
        self.assertEqual(headers["authorization"], [f"Bearer {ACCESS_TOKEN}"])
        self.assertEqual(body, {"recipient": {"id": PERSON}, "messaging_type": "RESPONSE",
                                "message": {"text": "Tiket SGA-ABCD1234"}})

    def test_dm_with_instagram_login(self):
        channel, target, _, stub = self.channel(api="instagram")
        d = channel.send(self.dm_reply(channel))
        stub.flush()
        self.successResultOf(d)
        _method, path, headers, _body = last_json(target)
        self.assertEqual((path, headers["host"]), (b"/v25.0/me/messages", ["graph.instagram.com"]))
        self.assertEqual(headers["authorization"], [f"Bearer {ACCESS_TOKEN}"])

    def test_dm_text_cut_to_1000_bytes(self):
        channel, target, _, stub = self.channel()
        channel.send(self.dm_reply(channel, text="\u00e9" * 900))
        stub.flush()
        text = last_json(target)[3]["message"]["text"]
        self.assertLessEqual(len(text.encode("utf-8")), 1000)
        self.assertTrue(text.endswith("\u2026"))

    def test_outside_the_window(self):
        channel, _target, clock, _stub = self.channel()
        clock.advance(25 * 3600)
        self.failureResultOf(channel.send(self.dm_reply(channel)), PermanentDeliveryError)
        tagged, tagged_target, tagged_clock, tagged_stub = self.channel(human_agent_tag=True)
        tagged_clock.advance(25 * 3600)
        d = tagged.send(self.dm_reply(tagged))
        tagged_stub.flush()
        self.successResultOf(d)
        self.assertEqual(last_json(tagged_target)[3]["tag"], "HUMAN_AGENT")

    def test_comment_reply(self):
        channel, target, _, stub = self.channel(body=b'{"id": "17999999999999999"}')
        original = citizen_message(channel, "3456789012345678", PAYLOAD_TIME, external_id="17987654321098765",
                                   public=True)
        reply = Reply(channel_id=channel.name, recipient=original.sender, text="Sudah kami teruskan, SGA-ABCD1234",
                      in_reply_to=original)
        d = channel.send(reply)
        stub.flush()
        self.assertEqual(self.successResultOf(d).reference, "17999999999999999")
        _method, path, _headers, body = last_json(target)
        self.assertEqual(path, b"/v25.0/17987654321098765/replies")
        self.assertEqual(body, {"message": "Sudah kami teruskan, SGA-ABCD1234"})

    def test_mention_reply(self):
        channel, target, _, stub = self.channel(body=b'{"id": "17888888888888888"}')
        (mention,) = parse_file(channel, "instagram_mention.json").messages
        d = channel.send(Reply(channel_id=channel.name, recipient=mention.sender, text="Terima kasih",
                               in_reply_to=mention))
        stub.flush()
        self.successResultOf(d)
        _method, path, _headers, body = last_json(target)
        self.assertEqual(path, f"/v25.0/{ACCOUNT_ID}/mentions".encode())
        self.assertEqual(body, {"media_id": "17918195224117851", "comment_id": "17894227972186120",
                                "message": "Terima kasih"})

    def test_error_mapping(self):
        def error(code):
            return json.dumps({"error": {"message": "x", "type": "IGApiException", "code": code}}).encode()
        for code, body, expected in [(400, error(4), TemporaryDeliveryError), (500, b"", TemporaryDeliveryError),
                                     (400, error(100), PermanentDeliveryError),
                                     (400, error(190), PermanentDeliveryError)]:
            channel, _, _, stub = self.channel(code=code, body=body)
            d = channel.send(self.dm_reply(channel))
            stub.flush()
            self.failureResultOf(d, expected)
