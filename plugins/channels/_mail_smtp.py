"""
The SMTP side of the ``email`` channel, built on ``twisted.mail.smtp``: a listener that takes
mail for an allow-list of recipients and answers the sending server only once the mail is
stored.

- ``RCPT TO`` an address not on the list: ``550``.
- A mail larger than ``max_bytes``: ``552`` (refused already at ``MAIL FROM`` when the client
  declares a ``SIZE`` above it; the limit is advertised in ``EHLO``).
- End of data: the mail is handed to ``receive(raw, envelope_from, recipients)``, which returns
  a Deferred. ``250`` is sent only when it fires; a failure carrying an SMTP code
  (``SMTPServerError``) is answered with that code, any other failure with ``451`` so that the
  sending server keeps the mail and tries again later.

A mail for several allowed recipients is received once, not once per recipient.

This module is not a plugin (its name starts with ``_``).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import smtp
from zope.interface import implementer

log = Logger()


def allowed(address: str, allow_list) -> bool:
    """Whether ``address`` is on ``allow_list``: full addresses, or domains written ``@domain``."""
    address = address.lower()
    domain = "@" + address.rpartition("@")[2]
    for entry in allow_list:
        entry = entry.lower()
        if entry == address or (entry.startswith("@") and entry == domain):
            return True
    return False


class _Transaction:
    """One ``MAIL FROM`` ... end of data: the envelope and the bytes received."""

    def __init__(self, receive, envelope_from: str, max_bytes: int):
        self.receive = receive
        self.envelope_from = envelope_from
        self.max_bytes = max_bytes
        self.recipients: list[str] = []
        self.taken = False

    def message(self):
        """The IMessage for the next recipient: the first collects the mail, the others echo it."""
        if self.taken:
            return _Echo()
        self.taken = True
        return _Collected(self)


@implementer(smtp.IMessage)
class _Collected:
    def __init__(self, transaction: _Transaction):
        self.transaction = transaction
        self.lines: list[bytes] = []
        self.size = 0

    def lineReceived(self, line):
        self.size += len(line) + 2
        if self.size > self.transaction.max_bytes:
            self.lines = []
            raise smtp.SMTPServerError(
                552, b"5.3.4 Message exceeds the fixed maximum message size of %d bytes" % self.transaction.max_bytes)
        self.lines.append(line)

    def eomReceived(self):
        raw = b"\n".join(self.lines) + b"\n"
        self.lines = []
        t = self.transaction
        return defer.maybeDeferred(t.receive, raw, t.envelope_from, tuple(t.recipients))

    def connectionLost(self):
        self.lines = []


@implementer(smtp.IMessage)
class _Echo:
    """The second and later recipients of a mail: the first one's collector takes it for all."""

    def lineReceived(self, line):
        pass

    def eomReceived(self):
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class MailDelivery:
    """Checks the envelope of each mail on one connection against the allow-list."""

    def __init__(self, receive, recipients, max_bytes: int):
        self.receive = receive
        self.recipients = tuple(recipients)
        self.max_bytes = max_bytes
        self.transaction: _Transaction | None = None

    def receivedHeader(self, helo, origin, recipients):
        # The mail is read, not relayed: no Received line, so that the bytes (and their hash,
        # the dedupe key of a mail without Message-ID) are the same on every delivery attempt.
        return None

    def validateFrom(self, helo, origin):
        self.transaction = _Transaction(self.receive, str(origin), self.max_bytes)
        return origin

    def validateTo(self, user):
        address = str(user.dest)
        if self.transaction is None:
            raise smtp.SMTPBadRcpt(user, 503, "5.5.1 Need MAIL before RCPT")
        if not allowed(address, self.recipients):
            raise smtp.SMTPBadRcpt(user, 550, "5.1.1 No such recipient here")
        self.transaction.recipients.append(address)
        return self.transaction.message


class MailServer(smtp.ESMTP):
    """ESMTP with ``SIZE`` and ``8BITMIME``, and a ``451`` for a mail that could not be stored."""

    max_bytes = 10 * 1024 * 1024

    def connectionMade(self):
        super().connectionMade()
        self.closed = defer.Deferred()
        self.factory.connections.add(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.connections.discard(self)
        self.closed.callback(None)

    def extensions(self):
        ext = super().extensions()
        ext[b"SIZE"] = [str(self.max_bytes).encode("ascii")]
        ext[b"8BITMIME"] = None
        return ext

    def do_MAIL(self, rest):
        match = self.mail_re.match(rest)
        for option in ((match.group("opts") or b"").split() if match else ()):
            key, _, value = option.partition(b"=")
            if key.upper() == b"SIZE" and value.isdigit() and int(value) > self.max_bytes:
                self.sendCode(552, b"5.3.4 Message size exceeds fixed maximum message size")
                return
        super().do_MAIL(rest)

    def _messageHandled(self, resultList):
        # twisted.mail answers 550 to every failure; a mail that could not be stored must be
        # retried by the sending server, so only failures that carry their own code keep it.
        if not isinstance(resultList, list):
            self.sendCode(250, b"2.0.0 Message accepted")
            return
        for success, result in resultList:
            if success:
                continue
            if result.check(smtp.SMTPServerError):
                resp = result.value.resp
                self.sendCode(result.value.code, resp if isinstance(resp, bytes) else resp.encode("utf-8"))
            else:
                log.failure("A received mail could not be stored", result)
                self.sendCode(451, b"4.3.0 Message not stored, try again later")
            return
        self.sendCode(250, b"2.0.0 Message accepted")


class MailListenerFactory(smtp.SMTPFactory):
    """
    Builds a :class:`MailServer` per connection. ``receive(raw, envelope_from, recipients)``
    takes each mail; ``clock`` runs the idle timeouts; ``domain`` is the name in the greeting.
    """

    protocol = MailServer

    def __init__(self, receive, recipients, max_bytes: int, clock, domain: str | None = None,
                 timeout: float = 300.0):
        super().__init__()
        self.receive = receive
        self.recipients = tuple(recipients)
        self.max_bytes = max_bytes
        self.clock = clock
        if domain:
            self.domain = domain.encode("idna") if isinstance(domain, str) else domain
        self.timeout = timeout
        self.connections: set[MailServer] = set()

    def close_connections(self) -> defer.Deferred:
        """Drop every open connection; fires once all of them are closed."""
        connections = list(self.connections)
        for connection in connections:
            connection.transport.loseConnection()
        return defer.gatherResults([c.closed for c in connections])

    def buildProtocol(self, addr):
        server = super().buildProtocol(addr)
        server.delivery = MailDelivery(self.receive, self.recipients, self.max_bytes)
        server.max_bytes = self.max_bytes
        server.timeout = self.timeout
        server.callLater = self.clock.callLater
        return server
