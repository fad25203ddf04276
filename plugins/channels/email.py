"""
The ``email`` channel: citizens write to an address of the agency, and the mail reaches Siaga in
one of two ways (``mode``):

- ``smtp``: the mail exchanger (or a relay) hands the mail to Siaga's SMTP listener, which
  answers ``250`` only once the mail is stored, and ``451`` (try again later) when it could not be;
- ``imap``: Siaga polls a mailbox over IMAP for unseen mail, hands what it finds to the core's
  ``ingest`` and flags it ``\\Seen`` (or moves it to ``processed_mailbox``) only once it is
  stored. The loop is :class:`gateway.polling.CursorPoller`; its cursor,
  ``<UIDVALIDITY>:<last UID>``, is kept in ``<state_dir>/<name>.imap-cursor``.

Either way a mail is read by :func:`plugins.channels._mail_read.read_mail`. Replies go back by
SMTP through a smarthost, threaded to the citizen's mail with ``In-Reply-To`` and ``References``.

The channel has no HTTP webhook: ``verify`` refuses every webhook request and ``render_get``
has nothing to serve.
"""

from __future__ import annotations

import os
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from twisted.internet import defer, error
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.mail import smtp
from zope.interface import implementer

from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.hookspecs import hookimpl
from gateway.interfaces import IChannel
from gateway.message import Receipt
from gateway.options import Option, positive
from gateway.polling import CursorPoller
from plugins.channels._mail_imap import DEFAULT_PORTS, ImapAccount, ImapMailbox
from plugins.channels._mail_read import MailUnreadable, envelope_sender, read_mail
from plugins.channels._mail_smtp import MailListenerFactory


def _recipient_list(value):
    if not value or not all(isinstance(v, str) and "@" in v for v in value):
        return "expected a non-empty list of addresses ('lapor@example.go.id') or domains ('@example.go.id')"
    return None


def _host_port(value):
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return f"expected 'host:port', got {value!r}"
    return None


def _port(value):
    return None if 0 < value < 65536 else f"expected a port number 1-65535, got {value!r}"


def read_cursor(text: str) -> tuple[int, int] | None:
    """The IMAP poll cursor ``"<UIDVALIDITY>:<last UID>"`` as two integers (ValueError if not)."""
    validity, _, last = text.strip().partition(":")
    return int(validity), int(last)


def mask(address: str | None) -> str:
    """An address for the log: the domain and the last characters of the local part only."""
    if not address:
        return "-"
    local, _, domain = address.rpartition("@")
    return "*" * max(0, len(local) - 2) + local[-2:] + "@" + domain


@implementer(IChannel)
class EmailChannel:
    """One inbound e-mail service: an SMTP listener, and replies through a smarthost."""

    channel_type = "email"
    log = Logger()

    options = (
        Option("recipients", list, default=None, check=_recipient_list,
               doc="Addresses ('pengaduan@kutaitimurkab.go.id') or whole domains ('@kutaitimurkab.go.id') "
                   "mail is taken for; any other recipient is refused with 550. Required in 'smtp' mode."),
        Option("from_address", str, doc="The From address of replies."),
        Option("from_name", str, default=None, doc="The display name on the From of replies."),
        Option("mode", str, default="smtp", choices=("smtp", "imap"),
               doc="How mail arrives: 'smtp' (a listener the mail exchanger delivers to) or "
                   "'imap' (Siaga polls a mailbox)."),
        Option("listen", str, default="tcp:2525:interface=127.0.0.1",
               doc="Twisted endpoint the SMTP listener binds, e.g. 'tcp:25' or 'tcp:2525:interface=10.0.0.5'."),
        Option("hostname", str, default=None,
               doc="The name the listener gives in its greeting; the machine's name when not set."),
        Option("max_bytes", int, default=10 * 1024 * 1024, check=positive,
               doc="Largest mail taken, in bytes; bigger ones are refused with 552."),
        Option("idle_timeout", float, default=300.0, check=positive,
               doc="Seconds an idle SMTP connection is kept."),
        Option("smarthost", str, default="localhost:25", check=_host_port,
               doc="The 'host:port' of the mail server replies are handed to."),
        Option("username", str, default=None,
               doc="SMTP AUTH user at the smarthost, if it needs one; in 'imap' mode also the mailbox login."),
        Option("password", str, default=None, secret=True,
               doc="SMTP AUTH password at the smarthost; in 'imap' mode also the mailbox password."),
        Option("require_tls", bool, default=False,
               doc="Refuse to send replies unless the smarthost offers STARTTLS."),
        Option("subject", str, default="Laporan Anda",
               doc="Subject of a reply when the citizen's mail had none ('Re: ' is put before it)."),
        Option("send_timeout", float, default=60.0, check=positive,
               doc="Seconds a reply may take to hand over to the smarthost."),
        Option("imap_host", str, default=None, doc="The IMAP server ('imap' mode)."),
        Option("imap_port", int, default=None, check=_port,
               doc="Its port: 993 with imap_tls 'tls', else 143."),
        Option("imap_tls", str, default="tls", choices=("none", "starttls", "tls"),
               doc="'tls' (implicit TLS), 'starttls' (upgrade, refused if not offered) or 'none'."),
        Option("imap_username", str, default=None,
               doc="The mailbox login, when it is not 'username' (the smarthost's)."),
        Option("imap_password", str, default=None, secret=True,
               doc="The mailbox password, when it is not 'password' (the smarthost's)."),
        Option("mailbox", str, default="INBOX", doc="The mailbox polled for unseen mail."),
        Option("processed_mailbox", str, default=None,
               doc="Move stored mail here (COPY, \\Deleted, EXPUNGE) instead of only flagging it \\Seen."),
        Option("poll_interval", float, default=60.0, check=positive,
               doc="Seconds between two polls of the mailbox."),
        Option("imap_timeout", float, default=60.0, check=positive,
               doc="Seconds the IMAP server may take to connect or to answer a command."),
    )

    #: The first wait after a failed poll (doubling up to ``max_backoff``), in seconds.
    min_backoff = 5.0
    max_backoff = 300.0

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.clock = context.reactor
        opts = {o.name: o.default for o in self.options if not o.required}
        opts.update(options or {})
        self.opts = opts
        self.mode = opts["mode"]
        if self.mode == "smtp" and not opts["recipients"]:
            raise ValueError(f"channel {name!r}: 'recipients' is required in smtp mode")
        self.recipients = tuple(opts["recipients"] or ())
        self.media_dir = os.path.join(context.state_dir, name, "media")
        #: The mailbox and its poll loop ('imap' mode, once started).
        self.imap: ImapMailbox | None = None
        self.poller: CursorPoller | None = None
        self._batch: list[int] = []
        if self.mode == "imap":
            self.imap = ImapMailbox(self.clock, self._imap_account(name, opts))
        self.factory = MailListenerFactory(
            self.receive, self.recipients, opts["max_bytes"], self.clock,
            domain=opts["hostname"], timeout=opts["idle_timeout"])
        #: The listening port once started (``port.getHost().port`` is the bound port number).
        self.port = None

    # -- the SMTP listener

    def start(self):
        if self.mode == "imap":
            return self._start_polling()
        endpoint = serverFromString(self.clock, self.opts["listen"])
        d = endpoint.listen(self.factory)

        def listening(port):
            self.port = port
            address = port.getHost()
            self.log.info("channel {name}: taking mail over SMTP on {host}:{port}", name=self.name,
                          host=getattr(address, "host", "?"), port=getattr(address, "port", "?"))

        return d.addCallback(listening)

    def stop(self):
        """
        Stop listening and close open SMTP connections, or stop polling (waiting for a batch
        being stored and marked) and log out; fires once all is done.
        """
        if self.mode == "imap":
            return self._stop_polling()
        port, self.port = self.port, None
        waits = [self.factory.close_connections()]
        if port is not None:
            waits.append(defer.maybeDeferred(port.stopListening))
        return defer.gatherResults(waits).addCallback(lambda _: None)

    def receive(self, raw: bytes, envelope_from: str, recipients: tuple):
        """
        Take one mail as received over SMTP: fires once it is stored (``250``); fails with an
        SMTP error for a mail that can never be read (``554``), and otherwise (store down,
        disk full) so that the sending server tries again (``451``).
        """
        try:
            reading = read_mail(raw, channel_id=self.name, channel_type=self.channel_type,
                                envelope_from=envelope_from, recipients=recipients,
                                media_dir=self.media_dir, now=self.clock.seconds())
        except MailUnreadable as e:
            self.log.warn("channel {name}: unreadable mail refused: {error}", name=self.name, error=e)  # noqa: G010
            return defer.fail(smtp.SMTPServerError(554, b"5.6.0 Message could not be read"))
        except OSError as e:
            return defer.fail(e)
        if reading.message is None:
            self.log.info("channel {name}: mail skipped ({why})", name=self.name, why=reading.skipped)
            return defer.succeed(None)
        if self.context.ingest is None:
            return defer.fail(RuntimeError(f"channel {self.name}: the core gave no ingest"))
        message = reading.message
        self.log.info("channel {name}: mail {message_id} from {sender} received", name=self.name,
                      message_id=message.external_id, sender=mask(message.sender))
        return defer.maybeDeferred(self.context.ingest, [message]).addCallback(lambda accepted: None)

    # -- the IMAP poll loop

    @staticmethod
    def _imap_account(name, opts) -> ImapAccount:
        host = opts["imap_host"]
        username = opts["imap_username"] or opts["username"]
        password = opts["imap_password"] or opts["password"]
        if not host:
            raise ValueError(f"channel {name!r}: 'imap_host' is required in imap mode")
        if not username or not password:
            raise ValueError(f"channel {name!r}: imap mode needs a login: 'username' and 'password' "
                             "(or 'imap_username' and 'imap_password')")
        if opts["processed_mailbox"] and opts["processed_mailbox"].upper() == opts["mailbox"].upper():
            raise ValueError(f"channel {name!r}: 'processed_mailbox' must differ from 'mailbox'")
        return ImapAccount(host=host, port=opts["imap_port"] or DEFAULT_PORTS[opts["imap_tls"]],
                           tls=opts["imap_tls"], username=username, password=password,
                           mailbox=opts["mailbox"], processed_mailbox=opts["processed_mailbox"],
                           timeout=opts["imap_timeout"])

    def _start_polling(self):
        if self.context.ingest is None:
            raise ValueError(f"channel {self.name!r}: imap mode needs the core's ingest")
        account = self.imap.account
        self.poller = CursorPoller(
            self.poll_mailbox, self._store_and_mark, self.clock,
            cursor_path=os.path.join(self.context.state_dir, f"{self.name}.imap-cursor"), read_cursor=str,
            interval=self.opts["poll_interval"], min_backoff=self.min_backoff, max_backoff=self.max_backoff,
            label=f"email channel {self.name} (IMAP {account.host}:{account.port} {account.mailbox})")
        self.poller.start()
        self.log.info("channel {name}: polling {mailbox} at {host}:{port} every {interval:.0f} s as {user}",
                      name=self.name, mailbox=account.mailbox, host=account.host, port=account.port,
                      interval=self.opts["poll_interval"], user=mask(account.username))
        return None

    def _stop_polling(self):
        poller, self.poller = self.poller, None
        stopped = poller.stop() if poller is not None else defer.succeed(None)
        return stopped.addCallback(lambda _: self.imap.close())

    def poll_mailbox(self, cursor):
        """
        The poller's ``fetch``: log in, read the unseen mail after ``cursor`` and fire with
        ``(messages, next_cursor)``. The connection stays open for :meth:`_store_and_mark` when
        there are messages to store; otherwise the round ends here. Cancelling drops the
        connection (what was read comes again next time).
        """
        result = defer.Deferred(lambda _: self.imap.abort())
        round_ = self._poll_round(cursor)

        def forward(outcome, fire):
            if not result.called:
                fire(outcome)

        round_.addCallbacks(forward, forward, callbackArgs=(result.callback,), errbackArgs=(result.errback,))
        return result

    @defer.inlineCallbacks
    def _poll_round(self, cursor):
        try:
            saved_validity, after = read_cursor(cursor) if cursor else (None, 0)
        except ValueError:
            saved_validity, after = None, 0
        try:
            validity = yield self.imap.open()
            if saved_validity is not None and validity != saved_validity:
                self.log.warn("channel {name}: the mailbox's UIDVALIDITY changed ({old} -> {new}); "  # noqa: G010
                              "reading all its unseen mail again", name=self.name, old=saved_validity,
                              new=validity)
                after = 0
            mails = yield self.imap.new_mail(after, self.opts["max_bytes"])
            messages, done = self._read_batch(mails)
        except Exception:
            yield self.imap.abort()
            raise
        last = max([after] + [uid for uid, _ in mails])
        next_cursor = f"{validity}:{last}"
        if not messages:
            try:
                yield self.imap.mark_done(done)
            finally:
                yield self.imap.close()
            return [], next_cursor
        self._batch = done
        self.imap.hold(True)
        return messages, next_cursor

    def _read_batch(self, mails):
        """The messages in ``[(uid, raw)]``, and the UIDs to mark done once they are stored."""
        messages, done = [], []
        recipients = self.recipients
        login = self.imap.account.username
        if not recipients and "@" in login:
            recipients = (login,)
        for uid, raw in mails:
            if raw is None:
                self.log.warn("channel {name}: mail UID {uid} is over max_bytes ({limit}); "  # noqa: G010
                              "left unread in the mailbox", name=self.name, uid=uid, limit=self.opts["max_bytes"])
                continue
            try:
                reading = read_mail(raw, channel_id=self.name, channel_type=self.channel_type,
                                    envelope_from=envelope_sender(raw), recipients=recipients,
                                    media_dir=self.media_dir, now=self.clock.seconds())
            except MailUnreadable as e:
                self.log.warn("channel {name}: mail UID {uid} could not be read ({error}); "  # noqa: G010
                              "left unread in the mailbox", name=self.name, uid=uid, error=e)
                continue
            done.append(uid)
            if reading.message is None:
                self.log.info("channel {name}: mail UID {uid} skipped ({why})", name=self.name, uid=uid,
                              why=reading.skipped)
                continue
            message = reading.message
            self.log.info("channel {name}: mail {message_id} from {sender} read from the mailbox",
                          name=self.name, message_id=message.external_id, sender=mask(message.sender))
            messages.append(message)
        return messages, done

    def _store_and_mark(self, messages):
        """
        The poller's ``ingest``: the core's ingest, then (only once it has fired) the mail is
        flagged \\Seen or moved; the connection is closed either way. A failure leaves the mail
        unseen and the cursor where it was, so the next poll reads it again.
        """
        done, self._batch = self._batch, []
        d = defer.maybeDeferred(self.context.ingest, list(messages))

        def stored(_):
            self.imap.hold(False)
            return self.imap.mark_done(done)

        def closed(result):
            return self.imap.close().addCallback(lambda _: result)

        d.addCallback(stored)
        d.addBoth(closed)
        return d

    # -- no webhook

    def verify(self, request, body):
        raise RequestRefused(f"e-mail channel takes mail over {self.mode.upper()}")

    def parse(self, request, body):
        raise MalformedRequest(f"the e-mail channel has no webhook: mail is taken over {self.mode.upper()}")

    def acknowledge(self, request, accepted):
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return b"{}"

    def render_get(self, request):
        raise NotHandled()

    def page(self):
        return None

    # -- replies

    def compose(self, reply) -> EmailMessage:
        """The reply as a MIME message, threaded to the citizen's mail when there is one."""
        original = reply.in_reply_to
        extra = original.extra if original is not None else {}
        subject = (extra.get("subject") or self.opts["subject"]).strip()
        if not subject.lower().startswith("re:"):
            subject = "Re: " + subject
        from_address = self.opts["from_address"]
        mail = EmailMessage(policy=policy.default)
        mail["From"] = (f'{self.opts["from_name"]} <{from_address}>' if self.opts["from_name"]
                        else from_address)
        mail["To"] = reply.recipient
        mail["Subject"] = subject
        mail["Date"] = formatdate(self.clock.seconds(), usegmt=True)
        mail["Message-ID"] = make_msgid(idstring=reply.id, domain=from_address.rpartition("@")[2] or None)
        cited = original.external_id if original is not None else None
        if cited and cited.startswith("<"):
            mail["In-Reply-To"] = cited
            references = " ".join(r for r in (extra.get("references"), cited) if r)
            mail["References"] = references
        mail["Auto-Submitted"] = "auto-replied"
        mail.set_content(reply.text, charset="utf-8", cte="quoted-printable")
        return mail

    def send(self, reply):
        try:
            mail = self.compose(reply)
        except (ValueError, TypeError) as e:
            return defer.fail(PermanentDeliveryError(f"the reply could not be composed: {e}"))
        message_id = mail["Message-ID"]
        host, _, port = self.opts["smarthost"].rpartition(":")
        d = smtp.sendmail(
            host, self.opts["from_address"], [reply.recipient], mail.as_bytes(),
            port=int(port), reactor=self.clock,
            username=self.opts["username"], password=self.opts["password"],
            requireAuthentication=bool(self.opts["username"]),
            requireTransportSecurity=self.opts["require_tls"])
        d.addTimeout(self.opts["send_timeout"], self.clock)
        d.addCallbacks(lambda result: Receipt(reference=message_id), self._send_failed)
        return d

    def _send_failed(self, failure):
        value = failure.value
        code = getattr(value, "code", None)
        if failure.check(smtp.SMTPClientError) and isinstance(code, int) and 500 <= code < 600:
            reason = f"the smarthost refused the reply: {code} {_text(value.resp)}"
            self.log.warn("channel {name}: {reason}", name=self.name, reason=reason)  # noqa: G010
            raise PermanentDeliveryError(reason)
        if failure.check(smtp.SMTPClientError) and isinstance(code, int) and code > 0:
            raise TemporaryDeliveryError(f"the smarthost deferred the reply: {code} {_text(value.resp)}")
        if failure.check(defer.TimeoutError, defer.CancelledError):
            raise TemporaryDeliveryError(f"the smarthost took longer than {self.opts['send_timeout']:.0f} s")
        if failure.check(error.ConnectError, smtp.SMTPClientError):
            raise TemporaryDeliveryError(f"the smarthost could not be reached: {failure.getErrorMessage()}")
        raise TemporaryDeliveryError(f"the reply could not be sent: {failure.getErrorMessage()}")


def _text(resp) -> str:
    return resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)


@hookimpl
def siaga_register_channels(register):
    register("email", EmailChannel)
