"""
Tests for the ``email`` channel's ``imap`` mode against a real IMAP server on loopback.

The server is Twisted's own ``IMAP4Server`` with a portal, a username/password checker and a small
in-memory mailbox (below) holding the mails of ``tests/data/email/``; the channel logs in over TCP
on 127.0.0.1, so every test is a ``twisted.trial.unittest.TestCase`` on the real reactor (which
also catches a connection or a timer left behind).
"""

import io
import os
import shutil
import tempfile
from email import policy
from email.parser import BytesParser

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, protocol, reactor, task
from twisted.logger import globalLogPublisher
from twisted.mail import imap4
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from gateway.context import PluginContext
from gateway.errors import StoreUnavailable
from plugins.channels._mail_imap import ImapAccount, ImapMailbox, MailboxError, quoted
from plugins.channels.email import EmailChannel

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "email")
INBOX = "pengaduan@kutaitimurkab.go.id"
USER = "pengaduan@kutaitimurkab.go.id"
PASSWORD = "rahasia imap-2026"


def load(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# -- a small IMAP server ---------------------------------------------------------------------


@implementer(imap4.IMessage, imap4.IMessageFile)
class StoredMail:
    """One mail in a :class:`MemoryMailbox`: its UID, flags and RFC 822 bytes."""

    def __init__(self, uid, raw, flags=()):
        self.uid = uid
        self.raw = raw
        self.flags = list(flags)
        self.parsed = BytesParser(policy=policy.compat32).parsebytes(raw)

    def getUID(self):
        return self.uid

    def getFlags(self):
        return list(self.flags)

    def getInternalDate(self):
        return "Fri, 02 Jan 2026 08:12:45 +0800"

    def getHeaders(self, negate, *names):
        wanted = {n.lower() for n in names}
        return {k.lower(): v for k, v in self.parsed.items()
                if not names or ((k.lower() in wanted) != bool(negate))}

    def getBodyFile(self):
        return io.BytesIO(self.raw.split(b"\r\n\r\n", 1)[-1])

    def getSize(self):
        return len(self.raw)

    def isMultipart(self):
        return False

    def getSubPart(self, part):
        raise IndexError(part)

    def open(self):
        return io.BytesIO(self.raw)


@implementer(imap4.IMailbox)
class MemoryMailbox:
    """A mailbox in memory that records every flag change (``events``) in order."""

    def __init__(self, validity=1001, events=None):
        self.validity = validity
        self.mails = []
        self.next_uid = 1
        self.listeners = []
        self.events = events if events is not None else []

    def add(self, raw, flags=()):
        mail = StoredMail(self.next_uid, raw, flags)
        self.next_uid += 1
        self.mails.append(mail)
        return mail.uid

    def flags_of(self, uid):
        return next(m.getFlags() for m in self.mails if m.uid == uid)

    def uids(self):
        return [m.uid for m in self.mails]

    # IMailboxInfo / IMailbox
    def getFlags(self):
        return ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]

    def getHierarchicalDelimiter(self):
        return "/"

    def getUIDValidity(self):
        return self.validity

    def getUIDNext(self):
        return self.next_uid

    def getUID(self, message):
        return self.mails[message - 1].uid

    def getMessageCount(self):
        return len(self.mails)

    def getRecentCount(self):
        return 0

    def getUnseenCount(self):
        return sum("\\Seen" not in m.flags for m in self.mails)

    def isWriteable(self):
        return True

    def destroy(self):
        pass

    def requestStatus(self, names):
        return {}

    def addListener(self, listener):
        self.listeners.append(listener)

    def removeListener(self, listener):
        self.listeners.remove(listener)

    def addMessage(self, message, flags, date=None):
        self.add(message.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), flags)
        return defer.succeed(None)

    def expunge(self):
        gone = [seq for seq, m in enumerate(self.mails, 1) if "\\Deleted" in m.flags]
        self.events.append(("expunge", [self.mails[seq - 1].uid for seq in gone]))
        self.mails = [m for m in self.mails if "\\Deleted" not in m.flags]
        return list(reversed(gone))

    def fetch(self, messages, uid):
        messages.last = (self.mails[-1].uid if uid else len(self.mails)) if self.mails else 0
        return [(seq, m) for seq, m in enumerate(self.mails, 1) if (m.uid if uid else seq) in messages]

    def store(self, messages, flags, mode, uid):
        changed = {}
        for seq, mail in self.fetch(messages, uid):
            if mode == 1:
                mail.flags.extend(f for f in flags if f not in mail.flags)
            elif mode == -1:
                mail.flags = [f for f in mail.flags if f not in flags]
            else:
                mail.flags = list(flags)
            self.events.append(("store", mail.uid, mode, tuple(flags)))
            changed[seq] = mail.getFlags()
        return changed


class Account(imap4.MemoryAccount):
    def __init__(self, name, events):
        super().__init__(name)
        self.events = events

    def _emptyMailbox(self, name, id):
        return MemoryMailbox(validity=2000 + id, events=self.events)


@implementer(IRealm)
class Realm:
    def __init__(self, account):
        self.account = account

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert imap4.IAccount in interfaces
        return imap4.IAccount, self.account, lambda: None


class RecordingServer(imap4.IMAP4Server):
    def connectionMade(self):
        self.factory.connections.append(self)
        self.closed = defer.Deferred()
        super().connectionMade()

    def lineReceived(self, line):
        self.factory.lines.append(line)
        if self.factory.silent:
            return
        super().lineReceived(line)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed.callback(None)


class ServerFactory(protocol.Factory):
    def __init__(self, portal):
        self.portal = portal
        self.lines = []
        self.connections = []
        self.silent = False

    def buildProtocol(self, addr):
        server = RecordingServer()
        server.factory = self
        server.portal = self.portal
        return server


class ImapServer:
    """The server of one test: ``inbox`` holds the mails, ``events`` the flag changes in order."""

    def __init__(self, case):
        self.events = []
        self.account = Account(USER.encode(), self.events)
        self.inbox = MemoryMailbox(events=self.events)
        self.account.addMailbox("INBOX", self.inbox)
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(USER.encode(), PASSWORD.encode())
        portal = Portal(Realm(self.account), [checker])
        self.factory = ServerFactory(portal)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        case.addCleanup(self.shut)

    @property
    def port_number(self):
        return self.port.getHost().port

    def logins(self):
        return [line for line in self.factory.lines if b" LOGIN " in line.upper()]

    def shut(self):
        waits = [defer.maybeDeferred(self.port.stopListening)]
        for server in self.factory.connections:
            if server.transport is not None and not server.closed.called:
                server.transport.abortConnection()
            waits.append(server.closed)
        return defer.gatherResults(waits)


def wait_for(condition, timeout=10.0, step=0.01):
    """Fires once ``condition()`` is true; fails after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout

    def check(_=None):
        if condition():
            return None
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        return task.deferLater(reactor, step, check)

    return check()


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


# -- the IMAP client on its own -----------------------------------------------------------------


class MailboxTests(TestCase):
    """ImapMailbox against the loopback server: one session, step by step."""

    def setUp(self):
        self.server = ImapServer(self)
        self.uids = [self.server.inbox.add(load(name)) for name in ("plain.eml", "html_only.eml")]

    def mailbox(self, **changes):
        fields = dict(host="127.0.0.1", port=self.server.port_number, tls="none", username=USER,
                      password=PASSWORD, timeout=5.0)
        fields.update(changes)
        box = ImapMailbox(reactor, ImapAccount(**fields))
        self.addCleanup(box.abort)
        return box

    @defer.inlineCallbacks
    def test_session(self):
        box = self.mailbox()
        validity = yield box.open()
        self.assertEqual(validity, 1001)
        mails = yield box.new_mail(0, 1024 * 1024)
        self.assertEqual([uid for uid, _ in mails], self.uids)
        self.assertEqual(mails[0][1], load("plain.eml"))
        self.assertEqual(self.server.events, [], "reading marks nothing")
        self.assertTrue(any(b"BODY.PEEK[]" in line for line in self.server.factory.lines))
        yield box.mark_done([self.uids[0]])
        self.assertEqual(self.server.inbox.flags_of(self.uids[0]), ["\\Seen"])
        self.assertEqual(self.server.inbox.flags_of(self.uids[1]), [])
        again = yield box.new_mail(0, 1024 * 1024)
        self.assertEqual([uid for uid, _ in again], [self.uids[1]])
        after = yield box.new_mail(self.uids[1], 1024 * 1024)
        self.assertEqual(after, [])
        yield box.close()
        self.assertFalse(box.connected)
        self.assertTrue(self.server.factory.lines[-1].endswith(b"LOGOUT"))


# -- the channel in imap mode -------------------------------------------------------------------

MAILS = ("plain.eml", "html_only.eml", "attachment.eml", "reply.eml", "auto_reply.eml")


class ImapChannelTests(TestCase):
    """The channel polling the loopback server through CursorPoller."""

    def setUp(self):
        self.server = ImapServer(self)
        self.uids = [self.server.inbox.add(load(name)) for name in MAILS]
        self.state_dir = tempfile.mkdtemp(prefix="siaga-imap-")
        self.addCleanup(shutil.rmtree, self.state_dir, True)
        self.ingested = []
        self.answers = []  # what ingest answers, in order; a fresh Deferred when empty
        self.pending = []
        self.log = []
        globalLogPublisher.addObserver(self.log.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log.append)

    def ingest(self, messages):
        self.ingested.append(list(messages))
        if self.answers:
            answer = self.answers.pop(0)
        else:
            answer = defer.Deferred()
            self.pending.append(answer)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        if isinstance(answer, defer.Deferred):
            answer.addCallback(lambda result: (self.server.events.append(("stored",)), result)[1])
            return answer
        self.server.events.append(("stored",))
        return defer.succeed(answer)

    def channel(self, start=True, **more):
        opts = {"mode": "imap", "from_address": "siaga@kutaitimurkab.go.id", "imap_host": "127.0.0.1",
                "imap_port": self.server.port_number, "imap_tls": "none", "username": USER,
                "password": PASSWORD, "poll_interval": 0.05, "imap_timeout": 5.0}
        opts.update(more)
        context = PluginContext(reactor=reactor, http_client=None, ingest=self.ingest, state_dir=self.state_dir)
        channel = EmailChannel("surel", opts, context)
        channel.min_backoff = 0.05
        channel.max_backoff = 0.2
        if start:
            self.assertIsNone(channel.start())
            self.addCleanup(self.stopped, channel)
        return channel

    def stopped(self, channel):
        for d in self.pending:
            if not d.called:
                d.callback([])
        return channel.stop()

    def seen(self, uid):
        return "\\Seen" in self.server.inbox.flags_of(uid)

    def cursor_file(self):
        with open(os.path.join(self.state_dir, "surel.imap-cursor")) as f:
            return f.read().strip()

    def cursor_saved(self):
        """Whether the poller has written its cursor (it does so after marking the mail seen)."""
        return os.path.exists(os.path.join(self.state_dir, "surel.imap-cursor"))

    def logged(self, needle):
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.log if needle in formatEvent(e)]

    @defer.inlineCallbacks
    def test_unseen_mail_ingested_and_flagged_seen_only_after_ingest_fires(self):
        self.channel()
        yield wait_for(lambda: self.ingested)
        [batch] = self.ingested
        by_id = {m.external_id: m for m in batch}
        self.assertEqual(sorted(by_id), sorted(["<CAF1xK9q3v=Zp8@mail.gmail.example>", "<1735818002.88213@yahoo.example>",
                                                "<PH0PR11MB5000A1B2C3D4E5F6@outlook.example>",
                                                "<CAF1xK9q3v=Zp9@mail.gmail.example>"]), "the auto-reply is skipped")
        plain = by_id["<CAF1xK9q3v=Zp8@mail.gmail.example>"]
        self.assertEqual((plain.channel_id, plain.channel_type), ("surel", "email"))
        self.assertEqual((plain.sender, plain.sender_name), ("siti.aminah@gmail.example", "Siti Aminah"))
        self.assertTrue(plain.text.startswith("Jalan rusak di Desa Sepaso\n\nSelamat pagi"))
        self.assertEqual(plain.extra["to"], [USER])
        self.assertEqual(plain.extra["envelope_from"], "siti.aminah@gmail.example")
        html = by_id["<1735818002.88213@yahoo.example>"]
        self.assertIn("Lampu jalan di Jl. Pendidikan RT 05 mati sejak 3 hari.", html.text)
        self.assertNotIn("<p>", html.text)
        attached = by_id["<PH0PR11MB5000A1B2C3D4E5F6@outlook.example>"]
        self.assertTrue(attached.media)
        for media in attached.media:
            self.assertTrue(os.path.exists(media.ref))
            self.assertTrue(media.ref.startswith(os.path.join(self.state_dir, "surel", "media")))
        reply = by_id["<CAF1xK9q3v=Zp9@mail.gmail.example>"]
        self.assertEqual(reply.reply_to, "<176735.1234.01jg5siaga@kutaitimurkab.go.id>")

        yield sleep(0.2)
        self.assertEqual(self.server.events, [], "nothing is marked while the batch is being stored")
        self.assertFalse(any(self.seen(uid) for uid in self.uids))
        self.assertEqual(len(self.ingested), 1, "no new poll while the batch is being stored")

        self.pending[0].callback([])
        yield wait_for(lambda: all(self.seen(uid) for uid in self.uids) and self.cursor_saved())
        self.assertEqual(self.server.events[0], ("stored",))
        self.assertEqual(self.cursor_file(), f"1001:{self.uids[-1]}")
        yield sleep(0.2)
        self.assertEqual(len(self.ingested), 1, "seen mail is not read again")

    @defer.inlineCallbacks
    def test_ingest_failure_leaves_mail_unseen_and_retries(self):
        self.answers = [StoreUnavailable("disk full"), []]
        channel = self.channel()
        yield wait_for(lambda: len(self.ingested) == 2)
        self.assertEqual([m.external_id for m in self.ingested[0]], [m.external_id for m in self.ingested[1]])
        yield wait_for(lambda: all(self.seen(uid) for uid in self.uids))
        stores = [i for i, e in enumerate(self.server.events) if e[0] == "store"]
        self.assertGreater(min(stores), self.server.events.index(("stored",)))
        self.assertTrue(self.logged("storing polled messages failed"))
        yield wait_for(lambda: channel.poller.failures == 0)

    @defer.inlineCallbacks
    def test_failed_ingest_marks_nothing(self):
        self.answers = [StoreUnavailable("disk full")]
        channel = self.channel()
        yield wait_for(lambda: len(self.ingested) == 1 and channel.poller.failures == 1)
        self.assertEqual(self.server.events, [])
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "surel.imap-cursor")))

    @defer.inlineCallbacks
    def test_wrong_password_is_logged_and_backs_off(self):
        channel = self.channel(password="salah")
        yield wait_for(lambda: len(self.server.logins()) >= 3)
        self.assertEqual(self.ingested, [])
        failures = [e for e in self.log if e.get("what") == "polling"]
        self.assertGreaterEqual(len(failures), 2)
        self.assertIn("login at 127.0.0.1", failures[0]["error"])
        self.assertIn("refused", failures[0]["error"])
        self.assertEqual([e["delay"] for e in failures[:2]], [0.05, 0.1], "the wait doubles")
        self.assertGreaterEqual(channel.poller.failures, 2)
        from twisted.logger import formatEvent
        for event in self.log:
            self.assertNotIn("salah", formatEvent(event))
            self.assertNotIn(PASSWORD, formatEvent(event))

    @defer.inlineCallbacks
    def test_restart_does_not_fetch_stored_mail_again(self):
        self.answers = [[]]
        channel = self.channel()
        yield wait_for(lambda: all(self.seen(uid) for uid in self.uids))
        yield channel.stop()
        # A mail is marked unread again by a person: the saved cursor still knows it is stored.
        self.server.inbox.mails[0].flags = []
        new_uid = self.server.inbox.add(load("plain.eml").replace(b"Zp8@", b"Zp10@"))
        lines = len(self.server.factory.lines)
        self.answers = [[]]
        self.channel()
        yield wait_for(lambda: len(self.ingested) == 2)
        self.assertEqual([m.external_id for m in self.ingested[1]], ["<CAF1xK9q3v=Zp10@mail.gmail.example>"])
        searches = [line for line in self.server.factory.lines[lines:] if b"SEARCH" in line]
        self.assertIn(f"UID SEARCH UID {self.uids[-1] + 1}:* UNSEEN".encode(), searches[0])
        yield wait_for(lambda: self.seen(new_uid))
        self.assertFalse(self.seen(self.uids[0]))

    @defer.inlineCallbacks
    def test_changed_uidvalidity_reads_all_unseen_mail(self):
        with open(os.path.join(self.state_dir, "surel.imap-cursor"), "w") as f:
            f.write("999:4\n")
        self.answers = [[]]
        self.channel()
        yield wait_for(lambda: self.ingested)
        self.assertEqual(len(self.ingested[0]), 4)
        self.assertTrue(self.logged("UIDVALIDITY changed"))
        yield wait_for(lambda: self.cursor_file() == "1001:5")

    @defer.inlineCallbacks
    def test_processed_mailbox(self):
        self.server.account.addMailbox("Processed")
        processed = self.server.account.select("Processed")
        self.answers = [[]]
        self.channel(processed_mailbox="Processed")
        yield wait_for(lambda: not self.server.inbox.mails)
        self.assertEqual(len(processed.mails), len(MAILS))
        self.assertTrue(all("\\Seen" in m.flags for m in processed.mails))
        self.assertEqual(sorted(m.raw for m in processed.mails), sorted(load(name) for name in MAILS))

    @defer.inlineCallbacks
    def test_mail_over_max_bytes_is_left_unread(self):
        big = load("attachment.eml")
        self.answers = [[]]
        self.channel(max_bytes=len(big) - 1)
        yield wait_for(lambda: self.ingested and self.seen(self.uids[0]) and self.cursor_saved())
        ids = [m.external_id for m in self.ingested[0]]
        self.assertNotIn("<PH0PR11MB5000A1B2C3D4E5F6@outlook.example>", ids)
        self.assertFalse(self.seen(self.uids[2]))
        self.assertTrue(self.logged("over max_bytes"))
        self.assertEqual(self.cursor_file(), "1001:5")

    @defer.inlineCallbacks
    def test_only_skipped_mail_is_marked_without_ingest(self):
        self.server.inbox.mails = [m for m in self.server.inbox.mails if m.uid == self.uids[-1]]
        self.channel()
        yield wait_for(lambda: self.seen(self.uids[-1]))
        self.assertEqual(self.ingested, [])

    @defer.inlineCallbacks
    def test_stop_while_the_server_does_not_answer(self):
        self.server.factory.silent = True
        channel = self.channel()
        yield wait_for(lambda: self.server.factory.lines)
        yield channel.stop()
        self.assertFalse(channel.imap.connected)
        self.assertEqual(self.ingested, [])

    @defer.inlineCallbacks
    def test_stop_waits_for_the_batch_being_stored(self):
        channel = self.channel()
        yield wait_for(lambda: self.ingested)
        stopping = channel.stop()
        yield sleep(0.05)
        self.assertFalse(stopping.called)
        self.pending[0].callback([])
        yield stopping
        self.assertTrue(all(self.seen(uid) for uid in self.uids))
        self.assertFalse(channel.imap.connected)

    @defer.inlineCallbacks
    def test_starttls_not_offered_is_refused_before_login(self):
        channel = self.channel(imap_tls="starttls")
        yield wait_for(lambda: channel.poller.failures >= 1)
        self.assertEqual(self.server.logins(), [], "the password is never sent in clear")
        self.assertTrue(self.logged("STARTTLS"))


# -- configuration and small pieces, without a server ------------------------------------------


def imap_options(**more):
    opts = {"mode": "imap", "from_address": "siaga@kutaitimurkab.go.id", "imap_host": "imap.kutaitimurkab.go.id",
            "username": USER, "password": PASSWORD}
    opts.update(more)
    return opts


class ImapConfigTests(SynchronousTestCase):
    def build(self, **more):
        return EmailChannel("surel", imap_options(**more), PluginContext(reactor=task.Clock(), http_client=None))

    def test_defaults(self):
        account = self.build().imap.account
        self.assertEqual((account.host, account.port, account.tls), ("imap.kutaitimurkab.go.id", 993, "tls"))
        self.assertEqual((account.mailbox, account.processed_mailbox), ("INBOX", None))
        self.assertEqual(self.build(imap_tls="starttls").imap.account.port, 143)
        self.assertEqual(self.build(imap_tls="none", imap_port=1143).imap.account.port, 1143)

    def test_imap_login_may_differ_from_the_smarthost_login(self):
        account = self.build(imap_username="kotak", imap_password="lain").imap.account
        self.assertEqual((account.username, account.password), ("kotak", "lain"))

    def test_password_is_not_in_the_account_repr(self):
        self.assertNotIn(PASSWORD, repr(self.build().imap.account))

    def test_required_in_imap_mode(self):
        self.assertRaises(ValueError, self.build, imap_host=None)
        self.assertRaises(ValueError, self.build, password=None)
        self.assertRaises(ValueError, self.build, processed_mailbox="inbox")

    def test_recipients_required_in_smtp_mode_only(self):
        context = PluginContext(reactor=task.Clock(), http_client=None)
        self.assertRaises(ValueError, EmailChannel, "surel", {"from_address": "siaga@kutaitimurkab.go.id"}, context)
        self.assertEqual(self.build().recipients, ())

    def test_options_checked(self):
        options = {o.name: o for o in EmailChannel.options}
        self.assertIsNone(options["mode"].problem("imap"))
        self.assertIsNotNone(options["mode"].problem("pop3"))
        self.assertIsNotNone(options["imap_tls"].problem("ssl"))
        self.assertIsNotNone(options["imap_port"].problem(70000))
        self.assertTrue(options["imap_password"].secret and options["password"].secret)

    def test_needs_ingest(self):
        channel = self.build()
        self.assertRaises(ValueError, channel.start)

    def test_webhook_names_the_mode(self):
        from gateway.errors import RequestRefused
        from gateway.testing import make_request
        error = self.assertRaises(RequestRefused, self.build().verify, make_request(), b"")
        self.assertIn("IMAP", error.reason)

    def test_tls_endpoint(self):
        from twisted.internet.endpoints import HostnameEndpoint

        def endpoint(**more):
            context = PluginContext(reactor=reactor, http_client=None)
            return EmailChannel("surel", imap_options(**more), context).imap.endpoint()

        self.assertIsInstance(endpoint(imap_tls="starttls"), HostnameEndpoint)
        self.assertNotIsInstance(endpoint(), HostnameEndpoint)  # implicit TLS wraps the TCP endpoint


class PiecesTests(SynchronousTestCase):
    def test_quoted(self):
        self.assertEqual(quoted('a "b" \\c'), b'"a \\"b\\" \\\\c"')
        self.assertEqual(quoted("sandi-ü"), '"sandi-ü"'.encode())
        self.assertRaises(ValueError, quoted, "a\r\nb")

    def test_mailbox_error_has_a_reason(self):
        self.assertEqual(MailboxError("SELECT 'INBOX': no").reason, "SELECT 'INBOX': no")

    def test_envelope_sender(self):
        from plugins.channels._mail_read import envelope_sender
        self.assertEqual(envelope_sender(load("plain.eml")), "siti.aminah@gmail.example")
        self.assertEqual(envelope_sender(load("html_only.eml")), "ahmad.fauzi@yahoo.example")
        self.assertEqual(envelope_sender(b"Return-Path: <>\r\nFrom: MAILER-DAEMON@x.example\r\n\r\nbounce"), "")
        self.assertEqual(envelope_sender(b"Subject: none\r\n\r\n?"), "unknown")

    def test_bounce_in_the_mailbox_is_skipped(self):
        from plugins.channels._mail_read import envelope_sender, read_mail
        raw = b"Return-Path: <>\r\nFrom: MAILER-DAEMON@x.example\r\nSubject: Undelivered\r\n\r\nbounce"
        reading = read_mail(raw, channel_id="surel", channel_type="email", envelope_from=envelope_sender(raw),
                            recipients=(INBOX,), media_dir="unused", now=0.0)
        self.assertEqual(reading.skipped, "bounce")

    def test_read_cursor(self):
        from plugins.channels.email import read_cursor
        self.assertEqual(read_cursor("1001:42\n"), (1001, 42))
        self.assertRaises(ValueError, read_cursor, "42")
