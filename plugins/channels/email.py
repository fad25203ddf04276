"""
The ``email`` channel: citizens write to an address of the agency; the mail exchanger (or a
relay) hands the mail to Siaga's SMTP listener, which answers ``250`` only once the mail is
stored, and ``451`` (try again later) when it could not be. Replies go back by SMTP through a
smarthost, threaded to the citizen's mail with ``In-Reply-To`` and ``References``.

The channel has no HTTP webhook: ``verify`` refuses every webhook request and ``render_get``
has nothing to serve. Fetching mail from an IMAP mailbox is not implemented (``mode`` has the
single value ``smtp``).
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
from plugins.channels._mail_read import MailUnreadable, read_mail
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
        Option("recipients", list, check=_recipient_list,
               doc="Addresses ('pengaduan@kutaitimurkab.go.id') or whole domains ('@kutaitimurkab.go.id') "
                   "mail is taken for; any other recipient is refused with 550."),
        Option("from_address", str, doc="The From address of replies."),
        Option("from_name", str, default=None, doc="The display name on the From of replies."),
        Option("mode", str, default="smtp", choices=("smtp",),
               doc="How mail arrives: 'smtp' (a listener the mail exchanger delivers to)."),
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
        Option("username", str, default=None, doc="SMTP AUTH user at the smarthost, if it needs one."),
        Option("password", str, default=None, secret=True, doc="SMTP AUTH password at the smarthost."),
        Option("require_tls", bool, default=False,
               doc="Refuse to send replies unless the smarthost offers STARTTLS."),
        Option("subject", str, default="Laporan Anda",
               doc="Subject of a reply when the citizen's mail had none ('Re: ' is put before it)."),
        Option("send_timeout", float, default=60.0, check=positive,
               doc="Seconds a reply may take to hand over to the smarthost."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.clock = context.reactor
        opts = {o.name: o.default for o in self.options if not o.required}
        opts.update(options or {})
        self.opts = opts
        self.recipients = tuple(opts["recipients"])
        self.media_dir = os.path.join(context.state_dir, name, "media")
        self.factory = MailListenerFactory(
            self.receive, self.recipients, opts["max_bytes"], self.clock,
            domain=opts["hostname"], timeout=opts["idle_timeout"])
        #: The listening port once started (``port.getHost().port`` is the bound port number).
        self.port = None

    # -- the SMTP listener

    def start(self):
        endpoint = serverFromString(self.clock, self.opts["listen"])
        d = endpoint.listen(self.factory)

        def listening(port):
            self.port = port
            address = port.getHost()
            self.log.info("channel {name}: taking mail over SMTP on {host}:{port}", name=self.name,
                          host=getattr(address, "host", "?"), port=getattr(address, "port", "?"))

        return d.addCallback(listening)

    def stop(self):
        """Stop listening and close open SMTP connections; fires once both are done."""
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

    # -- no webhook

    def verify(self, request, body):
        raise RequestRefused("e-mail channel takes mail over SMTP")

    def parse(self, request, body):
        raise MalformedRequest("the e-mail channel has no webhook: mail is taken over SMTP")

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
