"""
Tests for the ``email`` channel.

The HTTP webhook contract (``ChannelContractTests``) does not fit a channel that takes mail over
SMTP; the interface is checked with ``verifyObject`` instead, and the mail path with real SMTP
conversations on loopback (``twisted.trial.unittest.TestCase``): mail is sent with
``twisted.mail.smtp.sendmail`` to the channel's listener, and replies go to a small recording
SMTP server started by the test.
"""

import email
import hashlib
import os
import shutil
import tempfile
from email import policy

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from gateway.context import PluginContext
from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    StoreUnavailable,
    TemporaryDeliveryError,
)
from gateway.interfaces import IChannel
from gateway.message import Accepted, Message, Reply, Triage
from gateway.testing import make_request
from plugins.channels import email as email_module
from plugins.channels._mail_html import html_to_text
from plugins.channels._mail_read import read_mail
from plugins.channels._mail_smtp import MailListenerFactory, allowed
from plugins.channels.email import EmailChannel

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "email")
INBOX = "pengaduan@kutaitimurkab.go.id"


def load(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def temporary_dir(case):
    path = tempfile.mkdtemp(prefix="siaga-email-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def options(**more):
    opts = {"recipients": [INBOX, "@bpbd.kutaitimurkab.go.id"], "from_address": "siaga@kutaitimurkab.go.id",
            "listen": "tcp:0:interface=127.0.0.1"}
    opts.update(more)
    return opts


class InterfaceTests(SynchronousTestCase):
    """The webhook half of IChannel, for a channel that has no webhook."""

    def setUp(self):
        self.channel = EmailChannel("surel", options(), PluginContext(reactor=reactor, http_client=None))

    def test_provides_ichannel(self):
        self.assertTrue(verifyObject(IChannel, self.channel))
        self.assertTrue(verifyClass(IChannel, EmailChannel))
        self.assertIsInstance(EmailChannel.options, tuple)
        self.assertEqual(self.channel.channel_type, "email")

    def test_registers_type_email(self):
        registered = {}
        email_module.siaga_register_channels(register=lambda name, cls: registered.setdefault(name, cls))
        self.assertEqual(registered, {"email": EmailChannel})

    def test_stdlib_email_not_shadowed(self):
        self.assertTrue(hasattr(email, "message_from_bytes"))
        self.assertIsNot(email, email_module)

    def test_webhook_refused(self):
        request = make_request(body=load("plain.eml"))
        error = self.assertRaises(RequestRefused, self.channel.verify, request, load("plain.eml"))
        self.assertIn("SMTP", error.reason)
        self.assertRaises(MalformedRequest, self.channel.parse, request, load("plain.eml"))
        self.assertRaises(NotHandled, self.channel.render_get, make_request(method=b"GET"))
        self.assertIsNone(self.channel.page())

    def test_acknowledge_is_2xx(self):
        request = make_request()
        message = Message(channel_id="surel", channel_type="email", sender="a@b.example", text="x")
        body = self.channel.acknowledge(request, [Accepted(message, Triage("normal", "complaint"))])
        self.assertIsInstance(body, bytes)
        self.assertEqual(request.responseCode, 200)

    def test_recipient_option_checked(self):
        option = {o.name: o for o in EmailChannel.options}["recipients"]
        self.assertIsNone(option.problem(["@kutaitimurkab.go.id"]))
        self.assertIsNotNone(option.problem([]))
        self.assertIsNotNone(option.problem(["kutaitimurkab.go.id"]))
        self.assertIsNotNone({o.name: o for o in EmailChannel.options}["smarthost"].problem("mail.example"))


class AllowListTests(SynchronousTestCase):
    def test_addresses_and_domains(self):
        allow = [INBOX, "@bpbd.kutaitimurkab.go.id"]
        self.assertTrue(allowed("Pengaduan@KutaiTimurKab.go.id", allow))
        self.assertTrue(allowed("posko@bpbd.kutaitimurkab.go.id", allow))
        self.assertFalse(allowed("admin@kutaitimurkab.go.id", allow))
        self.assertFalse(allowed("x@evil-bpbd.kutaitimurkab.go.id", allow))
        self.assertFalse(allowed("pengaduan@kutaitimurkab.go.id.evil.example", allow))


class HtmlToTextTests(SynchronousTestCase):
    def test_breaks_entities_and_hidden(self):
        text = html_to_text(load("html_only.eml").split(b"\n\n", 1)[1].decode())
        self.assertEqual(text, "Yth. Dinas PU & Perumahan,\n\nLampu jalan di Jl. Pendidikan RT 05 mati sejak 3 "
                               "hari.\nSangat gelap <berbahaya> di malam hari.\n\nSalam,\nAhmad")

    def test_fragment_and_lists(self):
        self.assertEqual(html_to_text("<ul><li>satu</li><li>dua &#8211; tiga</li></ul>"), "satu\n\ndua \u2013 tiga")
        self.assertEqual(html_to_text("a<br>b<br/>c"), "a\nb\nc")
        self.assertEqual(html_to_text(""), "")


class ReadMailTests(SynchronousTestCase):
    def read(self, name, envelope_from="warga@example.org", raw=None):
        self.media_dir = os.path.join(temporary_dir(self), "surel", "media")
        return read_mail(raw if raw is not None else load(name), channel_id="surel", channel_type="email",
                         envelope_from=envelope_from, recipients=(INBOX,), media_dir=self.media_dir, now=1000.0)

    def test_plain(self):
        message = self.read("plain.eml").message
        self.assertEqual(message.sender, "siti.aminah@gmail.example")
        self.assertEqual(message.sender_name, "Siti Aminah")
        self.assertEqual(message.external_id, "<CAF1xK9q3v=Zp8@mail.gmail.example>")
        self.assertTrue(message.text.startswith("Jalan rusak di Desa Sepaso\n\nSelamat pagi Bapak/Ibu,"))
        self.assertIn("sejak hujan minggu lalu.", message.text)
        self.assertIn("Terima kasih \u2013 Siti", message.text)
        self.assertEqual(message.extra["subject"], "Jalan rusak di Desa Sepaso")
        self.assertIsNone(message.reply_to)
        self.assertEqual(message.received_at, 1000.0)

    def test_without_message_id_hash_is_stable(self):
        raw = load("plain.eml").replace(b"Message-ID: <CAF1xK9q3v=Zp8@mail.gmail.example>\n", b"")
        first, again = self.read(None, raw=raw).message, self.read(None, raw=raw).message
        self.assertEqual(first.external_id, "sha256:" + hashlib.sha256(raw).hexdigest())
        self.assertEqual(first.dedupe_key, again.dedupe_key)

    def test_missing_from_uses_envelope(self):
        raw = load("plain.eml").replace(b'From: "Siti Aminah" <siti.aminah@gmail.example>\n', b"")
        message = self.read(None, envelope_from="siti@relay.example", raw=raw).message
        self.assertEqual((message.sender, message.sender_name), ("siti@relay.example", None))

    def test_bounce_and_auto_reply_skipped(self):
        self.assertEqual(self.read("plain.eml", envelope_from="").skipped, "bounce")
        self.assertEqual(self.read("auto_reply.eml").skipped, "auto-submitted")


@implementer(smtp.IMessage)
class _Recorded:
    def __init__(self, sink, envelope):
        self.sink, self.envelope, self.lines = sink, envelope, []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.sink.append((self.envelope, b"\n".join(self.lines) + b"\n"))
        return defer.succeed(None)

    def connectionLost(self):
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Smarthost:
    """A tiny SMTP server's delivery: records every mail, or refuses recipients with ``refuse``."""

    def __init__(self, received, refuse=None):
        self.received, self.refuse = received, refuse

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        self.origin = str(origin)
        return origin

    def validateTo(self, user):
        if self.refuse:
            raise smtp.SMTPBadRcpt(user, *self.refuse)
        return lambda: _Recorded(self.received, (self.origin, str(user.dest)))


class _SmarthostServer(smtp.ESMTP):
    def connectionMade(self):
        super().connectionMade()
        self.closed = defer.Deferred()
        self.factory.connections.append(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed.callback(None)


class _SmarthostFactory(smtp.SMTPFactory):
    protocol = _SmarthostServer

    def __init__(self, received, refuse=None):
        super().__init__()
        self.received, self.refuse = received, refuse
        self.connections = []

    def buildProtocol(self, addr):
        server = super().buildProtocol(addr)
        server.delivery = _Smarthost(self.received, self.refuse)
        return server

    def closed(self):
        """Fires once every connection made to this server is closed (and the client saw it)."""
        for server in self.connections:
            server.transport.loseConnection()
        d = defer.gatherResults([server.closed for server in self.connections])
        return d.addCallback(lambda _: deferLater(0.01))


class SmtpListenerTests(TestCase):
    """Mail delivered to the channel over a real SMTP conversation on loopback."""

    def setUp(self):
        self.state_dir = temporary_dir(self)
        self.ingested = []
        self.ingest_result = lambda messages: defer.succeed([])
        context = PluginContext(reactor=reactor, http_client=None, ingest=self.ingest, state_dir=self.state_dir)
        self.channel = EmailChannel("surel", options(max_bytes=64 * 1024), context)
        d = self.channel.start()
        self.addCleanup(lambda: self.channel.stop().addCallback(lambda _: deferLater(0.01)))
        return d

    def ingest(self, messages):
        self.ingested.append(list(messages))
        return self.ingest_result(messages)

    def deliver(self, raw, to=(INBOX,), sender="siti.aminah@gmail.example"):
        port = self.channel.port.getHost().port
        return smtp.sendmail("127.0.0.1", sender, list(to), raw, port=port, reactor=reactor)

    @defer.inlineCallbacks
    def test_plain_mail_ingested(self):
        result = yield self.deliver(load("plain.eml"))
        self.assertEqual(result[0], 1)
        [[message]] = self.ingested
        self.assertEqual(message.channel_id, "surel")
        self.assertEqual(message.channel_type, "email")
        self.assertEqual(message.sender, "siti.aminah@gmail.example")
        self.assertEqual(message.sender_name, "Siti Aminah")
        self.assertEqual(message.external_id, "<CAF1xK9q3v=Zp8@mail.gmail.example>")
        self.assertTrue(message.text.startswith("Jalan rusak di Desa Sepaso\n\nSelamat pagi"))
        self.assertEqual(message.extra["to"], [INBOX])
        self.assertEqual(message.media, ())

    @defer.inlineCallbacks
    def test_html_only_mail_made_plain(self):
        yield self.deliver(load("html_only.eml"), sender="ahmad.fauzi@yahoo.example")
        [[message]] = self.ingested
        self.assertEqual(message.sender_name, "Ahmad Fauzi")
        self.assertEqual(
            message.text,
            "Lampu jalan mati \u2013 Sangatta Selatan\n\nYth. Dinas PU & Perumahan,\n\nLampu jalan di Jl. Pendidikan "
            "RT 05 mati sejak 3 hari.\nSangat gelap <berbahaya> di malam hari.\n\nSalam,\nAhmad")
        self.assertNotIn("alert", message.text)

    @defer.inlineCallbacks
    def test_attachments_stored_by_content(self):
        raw = load("attachment.eml")
        yield self.deliver(raw, sender="rahmat.h@outlook.example")
        [[message]] = self.ingested
        self.assertEqual(message.text, "Banjir di Sangatta Utara, foto terlampir\n\nAir sudah masuk rumah warga di "
                                       "Gang Mawar, setinggi 50 cm. Foto dan surat RT terlampir.")
        self.assertEqual([(m.kind, m.mime_type, m.caption) for m in message.media],
                         [("image", "image/png", "banjir.png"), ("document", "application/pdf", "surat-rt.pdf")])
        parsed = email.message_from_bytes(raw, policy=policy.default)
        expected = [p.get_payload(decode=True) for p in parsed.iter_attachments()]
        for media, data in zip(message.media, expected):
            digest = hashlib.sha256(data).hexdigest()
            self.assertEqual(media.ref, os.path.join(self.state_dir, "surel", "media", digest))
            with open(media.ref, "rb") as f:
                self.assertEqual(f.read(), data)

    @defer.inlineCallbacks
    def test_reply_threaded(self):
        yield self.deliver(load("reply.eml"))
        [[message]] = self.ingested
        self.assertEqual(message.reply_to, "<176735.1234.01jg5siaga@kutaitimurkab.go.id>")
        self.assertEqual(message.external_id, "<CAF1xK9q3v=Zp9@mail.gmail.example>")
        self.assertTrue(message.text.startswith("Re: Jalan rusak di Desa Sepaso\n\nTerima kasih, tiketnya"))

    @defer.inlineCallbacks
    def test_domain_recipient_and_one_ingest_for_two_recipients(self):
        result = yield self.deliver(load("plain.eml"), to=(INBOX, "posko@bpbd.kutaitimurkab.go.id"))
        self.assertEqual(result[0], 2)
        [[message]] = self.ingested
        self.assertEqual(message.extra["to"], [INBOX, "posko@bpbd.kutaitimurkab.go.id"])

    @defer.inlineCallbacks
    def test_250_only_after_ingest_fires(self):
        held = defer.Deferred()
        self.ingest_result = lambda messages: held
        events = []
        d = self.deliver(load("plain.eml"))
        d.addCallback(lambda result: events.append("250"))
        while not self.ingested:
            yield deferLater(0.01)
        yield deferLater(0.2)
        self.assertEqual(events, [], "the sending server was answered before the mail was stored")
        events.append("stored")
        held.callback([])
        yield d
        self.assertEqual(events, ["stored", "250"])

    @defer.inlineCallbacks
    def test_ingest_failure_is_temporary(self):
        self.ingest_result = lambda messages: defer.fail(StoreUnavailable("disk full"))
        failure = yield self.assertFailure(self.deliver(load("plain.eml")), smtp.SMTPDeliveryError)
        self.assertEqual(failure.code, 451)
        self.assertEqual(len(self.ingested), 1)
        self.flushLoggedErrors(StoreUnavailable)

    @defer.inlineCallbacks
    def test_attachment_not_written_is_temporary(self):
        blocker = os.path.join(self.state_dir, "not-a-directory")
        with open(blocker, "w") as f:
            f.write("x")
        self.channel.media_dir = os.path.join(blocker, "media")
        failure = yield self.assertFailure(self.deliver(load("attachment.eml")), smtp.SMTPDeliveryError)
        self.assertEqual(failure.code, 451)
        self.assertEqual(self.ingested, [])
        self.flushLoggedErrors(OSError)

    @defer.inlineCallbacks
    def test_unknown_recipient_refused(self):
        failure = yield self.assertFailure(self.deliver(load("plain.eml"), to=("admin@kutaitimurkab.go.id",)),
                                           smtp.SMTPDeliveryError)
        self.assertEqual(failure.code, 550)
        self.assertEqual(self.ingested, [])

    @defer.inlineCallbacks
    def test_oversize_refused(self):
        raw = load("plain.eml") + (b"x" * 76 + b"\n") * 1000
        failure = yield self.assertFailure(self.deliver(raw), smtp.SMTPDeliveryError)
        self.assertEqual(failure.code, 552)
        self.assertEqual(self.ingested, [])

    @defer.inlineCallbacks
    def test_bounce_accepted_not_ingested(self):
        result = yield self.deliver(load("plain.eml"), sender="")
        self.assertEqual(result[0], 1)
        self.assertEqual(self.ingested, [])


def deferLater(seconds):
    from twisted.internet.task import deferLater as later
    return later(reactor, seconds, lambda: None)


class SmtpProtocolTests(SynchronousTestCase):
    """EHLO and MAIL FROM details, on a StringTransport."""

    def server(self):
        from twisted.internet.task import Clock
        factory = MailListenerFactory(lambda *a: defer.succeed(None), [INBOX], 1000, Clock(), domain="mx.example")
        server = factory.buildProtocol(None)
        self.transport = StringTransport()
        server.makeConnection(self.transport)
        self.transport.clear()
        return server

    def test_ehlo_advertises_size(self):
        server = self.server()
        server.dataReceived(b"EHLO client.example\r\n")
        self.assertIn(b"250-SIZE 1000\r\n", self.transport.value())
        self.assertIn(b"8BITMIME", self.transport.value())

    def test_declared_size_too_big(self):
        server = self.server()
        server.dataReceived(b"EHLO client.example\r\nMAIL FROM:<a@b.example> SIZE=1001\r\n")
        self.assertTrue(self.transport.value().endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"))
        self.transport.clear()
        server.dataReceived(b"MAIL FROM:<a@b.example> SIZE=999\r\n")
        self.assertTrue(self.transport.value().startswith(b"250 "))


class SendTests(TestCase):
    """Replies handed to a recording SMTP server on loopback."""

    def smarthost(self, refuse=None):
        self.received = []
        from twisted.internet.endpoints import TCP4ServerEndpoint
        factory = _SmarthostFactory(self.received, refuse)
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

        def listening(port):
            self.addCleanup(port.stopListening)
            self.addCleanup(factory.closed)
            return port.getHost().port
        return d.addCallback(listening)

    def channel(self, port, **more):
        context = PluginContext(reactor=reactor, http_client=None, state_dir=temporary_dir(self))
        return EmailChannel("surel", options(smarthost=f"127.0.0.1:{port}", from_name="Kutim Siaga", **more), context)

    def citizen_mail(self):
        return Message(channel_id="surel", channel_type="email", sender="siti.aminah@gmail.example",
                       sender_name="Siti Aminah", text="Jalan rusak di Desa Sepaso\n\n...",
                       external_id="<CAF1xK9q3v=Zp8@mail.gmail.example>",
                       extra={"subject": "Jalan rusak di Desa Sepaso", "references": "<older@gmail.example>"})

    @defer.inlineCallbacks
    def test_reply_threaded_to_citizen_mail(self):
        port = yield self.smarthost()
        reply = Reply(channel_id="surel", recipient="siti.aminah@gmail.example",
                      text="Laporan Anda kami terima. Nomor tiket: SGA-AB12CD34 \u2013 terima kasih.",
                      in_reply_to=self.citizen_mail())
        receipt = yield self.channel(port).send(reply)
        [((envelope_from, envelope_to), raw)] = self.received
        self.assertEqual((envelope_from, envelope_to), ("siaga@kutaitimurkab.go.id", "siti.aminah@gmail.example"))
        mail = email.message_from_bytes(raw, policy=policy.default)
        self.assertEqual(mail["Subject"], "Re: Jalan rusak di Desa Sepaso")
        self.assertEqual(mail["In-Reply-To"], "<CAF1xK9q3v=Zp8@mail.gmail.example>")
        self.assertEqual(mail["References"], "<older@gmail.example> <CAF1xK9q3v=Zp8@mail.gmail.example>")
        self.assertEqual(mail["From"].addresses[0].addr_spec, "siaga@kutaitimurkab.go.id")
        self.assertEqual(mail["From"].addresses[0].display_name, "Kutim Siaga")
        self.assertEqual(mail["To"], "siti.aminah@gmail.example")
        self.assertEqual(mail["Auto-Submitted"], "auto-replied")
        self.assertEqual(mail.get_content().strip(), reply.text)
        self.assertEqual(receipt.reference, mail["Message-ID"])
        self.assertTrue(receipt.reference.endswith("@kutaitimurkab.go.id>"))

    @defer.inlineCallbacks
    def test_reply_without_original_subject(self):
        port = yield self.smarthost()
        reply = Reply(channel_id="surel", recipient="warga@example.org", text="Tiket SGA-AB12CD34")
        yield self.channel(port).send(reply)
        [(_, raw)] = self.received
        mail = email.message_from_bytes(raw, policy=policy.default)
        self.assertEqual(mail["Subject"], "Re: Laporan Anda")
        self.assertIsNone(mail["In-Reply-To"])

    def test_header_injection_refused(self):
        channel = self.channel(25)
        reply = Reply(channel_id="surel", recipient="warga@example.org\nBcc: all@example.org", text="x")
        self.failureResultOf(channel.send(reply), PermanentDeliveryError)

    @defer.inlineCallbacks
    def test_refused_permanently(self):
        port = yield self.smarthost(refuse=(550, "5.1.1 User unknown"))
        reply = Reply(channel_id="surel", recipient="nobody@example.org", text="x")
        failure = yield self.assertFailure(self.channel(port).send(reply), PermanentDeliveryError)
        self.assertIn("550", failure.reason)

    @defer.inlineCallbacks
    def test_deferred_temporarily(self):
        port = yield self.smarthost(refuse=(451, "4.7.1 Greylisted, try again"))
        reply = Reply(channel_id="surel", recipient="warga@example.org", text="x")
        failure = yield self.assertFailure(self.channel(port).send(reply), TemporaryDeliveryError)
        self.assertIn("451", failure.reason)

    @defer.inlineCallbacks
    def test_connection_refused_temporary(self):
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.protocol import ServerFactory
        listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(ServerFactory())
        port = listening.getHost().port
        yield listening.stopListening()
        reply = Reply(channel_id="surel", recipient="warga@example.org", text="x")
        yield self.assertFailure(self.channel(port).send(reply), TemporaryDeliveryError)
