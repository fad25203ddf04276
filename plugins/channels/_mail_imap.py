"""
The IMAP side of the e-mail channel's ``imap`` mode: one connection at a time to one mailbox,
with ``twisted.mail.imap4.IMAP4Client`` over a Twisted endpoint (never a blocking ``imaplib``).

A poll with :class:`ImapMailbox` goes::

    open()                 connect (plain, STARTTLS or implicit TLS), LOGIN, SELECT the mailbox
    new_mail(after, max)   UID SEARCH UID <after+1>:* UNSEEN, the sizes, then each mail whole
                           with BODY.PEEK[] (reading a mail does not mark it \\Seen)
    mark_done(uids)        STORE +FLAGS (\\Seen), or COPY to the processed mailbox, then
                           STORE +FLAGS (\\Deleted) and EXPUNGE
    close()                LOGOUT; fires once the connection is gone

The caller marks mail done only once it is stored; :meth:`ImapMailbox.abort` drops the
connection at once (for a stop in the middle of a poll). Every command is bounded by the idle
``timeout``, except while :meth:`ImapMailbox.hold` lets the connection wait for the store.

Errors come out as :class:`MailboxError` with a ``reason`` that names the step and never holds
the password. This module is not a plugin (its name starts with ``_``).
"""

from __future__ import annotations

import dataclasses

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.mail import imap4

#: The default port of each ``imap_tls`` setting.
DEFAULT_PORTS = {"none": 143, "starttls": 143, "tls": 993}


class MailboxError(Exception):
    """A step of the IMAP conversation failed; ``reason`` says which and why (no secrets)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ImapAccount:
    """Where the mailbox is and how to log in. ``repr`` hides the password."""

    host: str
    port: int
    tls: str  # "none" | "starttls" | "tls"
    username: str
    password: str = dataclasses.field(repr=False)
    mailbox: str = "INBOX"
    processed_mailbox: str | None = None
    timeout: float = 60.0


class _Client(imap4.IMAP4Client):
    """An IMAP4 client that says when the greeting came and when the connection is gone."""

    #: Set once the connection is being closed or dropped.
    dropping = False

    def __init__(self, clock, timeout: float):
        super().__init__()
        self.clock = clock
        self.timeout = timeout
        self.greeted = defer.Deferred()
        self.lost = defer.Deferred()

    def callLater(self, period, func):
        return self.clock.callLater(period, func)

    def serverGreeting(self, caps):
        if not self.greeted.called:
            self.greeted.callback(caps)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if not self.greeted.called:
            self.greeted.errback(reason)
        if not self.lost.called:
            self.lost.callback(None)


class _ClientFactory(protocol.Factory):
    def __init__(self, clock, timeout):
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr):
        client = _Client(self.clock, self.timeout)
        client.factory = self
        return client


def quoted(text: str) -> bytes:
    """``text`` as an IMAP quoted string (UTF-8); raises ValueError for CR, LF or NUL."""
    if any(c in text for c in "\r\n\0"):
        raise ValueError("an IMAP string cannot hold CR, LF or NUL")
    return b'"' + text.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _why(failure) -> str:
    value = failure.value
    args = getattr(value, "args", ())
    if len(args) == 1 and isinstance(args[0], bytes):
        text = args[0].decode("utf-8", "replace")
    else:
        text = str(value)
    return " ".join(text.split())[:200] or type(value).__name__


class ImapMailbox:
    """
    One mailbox of ``account``, reached over ``reactor`` (which provides the clock and TCP).
    ``endpoint`` may replace the endpoint built from the account (for a test double).
    """

    log = Logger()

    def __init__(self, reactor, account: ImapAccount, endpoint=None):
        self.reactor = reactor
        self.account = account
        self._endpoint = endpoint
        self._client: _Client | None = None
        self._connecting: defer.Deferred | None = None
        #: The mailbox's UIDVALIDITY once open().
        self.validity: int | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def endpoint(self):
        """The Twisted endpoint of the server: TCP, or TLS over TCP for ``tls``."""
        if self._endpoint is not None:
            return self._endpoint
        account = self.account
        tcp = HostnameEndpoint(self.reactor, account.host, account.port, timeout=account.timeout)
        if account.tls == "tls":
            return wrapClientTLS(optionsForClientTLS(account.host), tcp)
        return tcp

    # -- one session -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def open(self):
        """Connect, secure, log in and SELECT the mailbox; fires with its UIDVALIDITY."""
        if self._client is not None:
            raise MailboxError("already connected")
        account = self.account
        where = f"{account.host}:{account.port}"
        self._connecting = self.endpoint().connect(_ClientFactory(self.reactor, account.timeout))
        try:
            client = yield self._connecting
        except Exception as e:
            raise MailboxError(f"could not connect to the IMAP server {where}: {type(e).__name__}: {e}") from e
        finally:
            self._connecting = None
        self._client = client
        client.lost.addCallback(lambda _: self._gone(client))
        try:
            validity = yield self._begin(client, where)
        except Exception:
            yield self.abort()
            raise
        return validity

    @defer.inlineCallbacks
    def _begin(self, client, where: str):
        account = self.account
        yield self._step(client.greeted, f"no greeting from {where}")
        if account.tls == "starttls":
            yield self._step(client.getCapabilities(), "CAPABILITY")
            yield self._step(client.startTLS(optionsForClientTLS(account.host)), f"STARTTLS with {where}")
        try:
            login = quoted(account.username) + b" " + quoted(account.password)
        except ValueError as e:
            raise MailboxError("the IMAP user name or password holds a line break") from e
        yield self._step(client.sendCommand(imap4.Command(b"LOGIN", login)), f"login at {where} refused")
        selected = yield self._step(client.select(account.mailbox), f"SELECT {account.mailbox!r}")
        validity = selected.get("UIDVALIDITY")
        if not isinstance(validity, int):
            raise MailboxError(f"SELECT {account.mailbox!r}: the server gave no UIDVALIDITY")
        if not selected.get("READ-WRITE", True):
            raise MailboxError(f"SELECT {account.mailbox!r}: the mailbox is read-only")
        self.validity = validity
        return validity

    @defer.inlineCallbacks
    def new_mail(self, after_uid: int, max_bytes: int):
        """
        The unseen mail with a UID above ``after_uid``, oldest first, as ``[(uid, bytes or
        None)]``; ``None`` stands for a mail over ``max_bytes``, which is not downloaded.
        """
        client = self._connected()
        found = yield self._step(client.search(f"UID {after_uid + 1}:*", "UNSEEN", uid=True), "UID SEARCH")
        # "n:*" always matches the newest mail, even below n (RFC 3501 6.4.8): filter here.
        uids = sorted({uid for uid in found if uid > after_uid})
        if not uids:
            return []
        sizes = yield self._step(client.fetchSize(_uid_set(uids), uid=True), "UID FETCH RFC822.SIZE")
        size_of = {}
        for item in sizes.values():
            try:
                size_of[int(item["UID"])] = int(item["RFC822.SIZE"])
            except (KeyError, TypeError, ValueError):
                continue
        mails = []
        for uid in uids:
            if size_of.get(uid, 0) > max_bytes:
                mails.append((uid, None))
                continue
            raw = yield self._fetch_whole(client, uid)
            if raw is not None:
                mails.append((uid, raw))
        return mails

    @defer.inlineCallbacks
    def _fetch_whole(self, client, uid: int):
        answer = yield self._step(client.fetchSpecific(str(uid), uid=True, peek=True), f"UID FETCH {uid} BODY.PEEK[]")
        for item in answer.values():
            parts = item[0] if item and isinstance(item[0], list) else item
            if _uid_in(parts) != uid:
                continue
            for i, part in enumerate(parts[:-2]):
                if part == "BODY" and isinstance(parts[i + 1], list) and not parts[i + 1]:
                    body = parts[i + 2]
                    # IMAP4Client hands literals over decoded with "charmap": one char per byte.
                    return body.encode("charmap") if isinstance(body, str) else body
        return None  # expunged meanwhile

    @defer.inlineCallbacks
    def mark_done(self, uids):
        """Flag ``uids`` \\Seen, and move them to the processed mailbox when there is one."""
        uids = sorted(set(uids))
        if not uids:
            return None
        client = self._connected()
        which = _uid_set(uids)
        yield self._step(client.addFlags(which, ["\\Seen"], silent=True, uid=True), "UID STORE +FLAGS (\\Seen)")
        target = self.account.processed_mailbox
        if target:
            yield self._step(client.copy(which, target, uid=True), f"UID COPY to {target!r}")
            yield self._step(client.addFlags(which, ["\\Deleted"], silent=True, uid=True),
                             "UID STORE +FLAGS (\\Deleted)")
            yield self._step(client.expunge(), "EXPUNGE")
        return None

    def hold(self, holding: bool) -> None:
        """Suspend the idle timeout (while the caller stores what was fetched), or restore it."""
        if self._client is not None:
            self._client.setTimeout(None if holding else self._client.timeout)

    def close(self) -> defer.Deferred:
        """LOGOUT and wait until the connection is gone; never fails. At once if not connected."""
        client = self._client
        if client is None:
            return self.abort()
        if client.transport is None or client.lost.called or getattr(client, "dropping", False):
            return client.lost
        client.dropping = True
        client.setTimeout(client.timeout)
        logout = client.logout()
        logout.addErrback(lambda _: self._drop(client))
        return client.lost

    def abort(self) -> defer.Deferred:
        """Drop the connection (or the attempt to make one) now; fires once it is gone."""
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        client = self._client
        if client is None:
            return defer.succeed(None)
        self._drop(client)
        return client.lost

    # -- helpers -----------------------------------------------------------------------------

    def _connected(self) -> _Client:
        if self._client is None:
            raise MailboxError("not connected")
        return self._client

    def _drop(self, client) -> None:
        client.dropping = True
        transport = client.transport
        if transport is not None and not client.lost.called:
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()

    def _step(self, d: defer.Deferred, what: str) -> defer.Deferred:
        """``d``, with a failure turned into a MailboxError naming ``what``."""

        def failed(failure):
            if failure.check(MailboxError):
                return failure
            raise MailboxError(f"{what}: {_why(failure)}")

        return d.addErrback(failed)

    def _gone(self, client) -> None:
        if self._client is client:
            self._client = None
            self.validity = None


def _uid_in(parts) -> int | None:
    for i, part in enumerate(parts[:-1]):
        if part == "UID":
            try:
                return int(parts[i + 1])
            except (TypeError, ValueError):
                return None
    return None


def _uid_set(uids) -> imap4.MessageSet:
    which = imap4.MessageSet()
    for uid in uids:
        which.add(uid)
    return which
