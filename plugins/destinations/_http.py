"""
What the HTTP destinations share: authentication options, one outbound request with a deadline
and its answer mapped to Siaga's delivery errors, and a few small helpers for payloads.

Contract of :func:`send`: it fires with an :class:`Answer` for any HTTP status (the caller
decides what a status means, usually through :func:`raise_for_status`), and fails with
:class:`~gateway.errors.TemporaryDeliveryError` when no answer came: a refused connection, a
timeout, a connection dropped mid-request.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.web.client import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from gateway.errors import DeliveryError, TemporaryDeliveryError, error_for_status
from gateway.options import Option

#: The authentication keys every HTTP destination accepts. At most one scheme is used, in this
#: order: bearer ``token``, then basic ``username``/``password``, then ``api_key``.
AUTH_OPTIONS = (
    Option("token", str, default=None, secret=True,
           doc="Bearer token: sent as 'Authorization: Bearer <token>'."),
    Option("username", str, default=None, doc="User name for HTTP basic authentication."),
    Option("password", str, default=None, secret=True, doc="Password for HTTP basic authentication."),
    Option("api_key", str, default=None, secret=True,
           doc="An API key sent in the header named by api_key_header."),
    Option("api_key_header", str, default="X-API-Key", doc="The header that carries api_key."),
)

USER_AGENT = b"Siaga/0.1 (+citizen report gateway)"

#: Failures of a connection that was open when the request started: typically a kept-alive
#: connection the server had closed meanwhile. ``send`` marks them ``connection_lost``.
_LOST = (RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived)


def auth_headers(options: Mapping[str, Any], token: str | None = None) -> dict[bytes, bytes]:
    """
    The authentication header for ``options`` (see :data:`AUTH_OPTIONS`); ``token`` (a
    per-target bearer token) takes precedence. Empty when nothing is configured.
    """
    token = token or options.get("token")
    if token:
        return {b"Authorization": b"Bearer " + token.encode("utf-8")}
    if options.get("username") is not None:
        pair = f"{options['username']}:{options.get('password') or ''}".encode()
        return {b"Authorization": b"Basic " + base64.b64encode(pair)}
    if options.get("api_key"):
        header = (options.get("api_key_header") or "X-API-Key").encode("ascii")
        return {header: options["api_key"].encode("utf-8")}
    return {}


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer: its status ``code``, raw ``body`` and ``headers`` (lower-case names)."""

    code: int
    body: bytes
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def send(client, reactor, method: str, url: str, headers: Mapping[bytes, bytes], body: bytes | None,
         timeout: float) -> defer.Deferred:
    """
    Make one request with ``client`` (a treq ``HTTPClient`` or ``StubTreq``) and read the whole
    answer within ``timeout`` seconds of ``reactor``'s time. Fires with an :class:`Answer`;
    fails with :class:`TemporaryDeliveryError` when there is none.
    """
    raw = Headers({b"User-Agent": [USER_AGENT]})
    for name, value in headers.items():
        raw.setRawHeaders(name, [value])

    def read(response):
        d = response.content()
        d.addCallback(lambda content: Answer(
            response.code, content,
            {k.decode("latin-1").lower(): vs[-1].decode("latin-1")
             for k, vs in response.headers.getAllRawHeaders()}))
        return d

    def too_late(result, seconds):
        raise TemporaryDeliveryError(f"no answer from {origin(url)} within {seconds:g} s")

    def no_answer(failure):
        if failure.check(DeliveryError):
            return failure
        error = TemporaryDeliveryError(f"no answer from {origin(url)}: {describe(failure.value)}")
        error.connection_lost = failure.check(*_LOST) is not None
        raise error

    d = defer.maybeDeferred(client.request, method, url, headers=raw, data=body, allow_redirects=False)
    d.addCallback(read)
    d.addTimeout(timeout, reactor, onTimeoutCancel=too_late)
    d.addErrback(no_answer)
    return d


def raise_for_status(answer: Answer) -> Answer:
    """Return a 2xx ``answer`` as it is; raise the :class:`DeliveryError` any other code means."""
    if answer.ok:
        return answer
    raise error_for_status(answer.code, answer.body, answer.headers.get("retry-after"))


def combined_error(errors) -> DeliveryError:
    """
    One error for several failed attempts: temporary if any of them may pass later (with the
    longest ``retry_after`` given), permanent only when every one is.
    """
    errors = list(errors)
    reason = "; ".join(e.reason if isinstance(e, DeliveryError) else describe(e) for e in errors)
    temporary = [e for e in errors if not isinstance(e, DeliveryError) or e.retryable]
    if not errors or temporary:
        delays = [e.retry_after for e in temporary if getattr(e, "retry_after", None) is not None]
        return TemporaryDeliveryError(reason or "no attempt made", retry_after=max(delays) if delays else None)
    from gateway.errors import PermanentDeliveryError
    return PermanentDeliveryError(reason)


def describe(error: BaseException) -> str:
    """A short text for an exception, without its arguments when they could be long."""
    text = str(error).strip()
    name = type(error).__name__
    return f"{name}: {text[:200]}" if text else name


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what logs and errors name, never a path or query with secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def mask(address: str | None) -> str:
    """A phone number or address for logs: all but the last 4 characters hidden."""
    if not address:
        return "-"
    return "*" * max(0, len(address) - 4) + address[-4:]


_PHONE = re.compile(r"\+?\d[\d\s-]{5,18}\d")


def is_phone(address: str | None) -> bool:
    """True when ``address`` looks like a telephone number (E.164 or a local one)."""
    return bool(address) and bool(_PHONE.fullmatch(address.strip()))


def callback_uri(channel_type: str, address: str | None) -> str | None:
    """
    A URI to reach the citizen back: ``tel:+62...`` for a telephone number, otherwise
    ``<channel type>:<address>`` (a Telegram user id, an e-mail address ...).
    """
    if not address:
        return None
    if is_phone(address):
        digits = re.sub(r"[\s-]", "", address.strip())
        if digits.startswith("0"):
            digits = "+62" + digits[1:]
        elif not digits.startswith("+"):
            digits = "+" + digits
        return "tel:" + digits
    if "@" in address and channel_type in ("email", "mail", "smtp"):
        return "mailto:" + address
    return f"{channel_type}:{address}"


def dig(data: Any, path: str | None) -> Any:
    """
    The value at a dotted ``path`` in decoded JSON (``"data.tracking_id"``, ``"0.token"``), or
    None. A list is indexed by number; an empty path is the data itself.
    """
    if not path:
        return data
    for part in path.split("."):
        if isinstance(data, list):
            if not part.lstrip("-").isdigit() or not -len(data) <= int(part) < len(data):
                return None
            data = data[int(part)]
        elif isinstance(data, dict):
            if part not in data:
                return None
            data = data[part]
        else:
            return None
    return data


class Taken:
    """
    Which parts of a delivery (targets, recipients) already took it, remembered for the last
    ``size`` deliveries, so that a retry of the same delivery only goes to the rest. Process
    memory only: after a restart the idempotency key is what prevents duplicates.
    """

    def __init__(self, size: int = 1000):
        self.size = size
        self._taken: OrderedDict[str, set[str]] = OrderedDict()

    def of(self, delivery_id: str) -> set[str]:
        return set(self._taken.get(delivery_id, ()))

    def add(self, delivery_id: str, part: str) -> None:
        self._taken.setdefault(delivery_id, set()).add(part)
        self._taken.move_to_end(delivery_id)
        while len(self._taken) > self.size:
            self._taken.popitem(last=False)

    def forget(self, delivery_id: str) -> None:
        self._taken.pop(delivery_id, None)


def with_defaults(declared, given: Mapping[str, Any] | None, owner: str) -> dict[str, Any]:
    """
    ``given`` options completed with the declared defaults and checked against ``declared``
    (a tuple of Option). The core checks a configuration before building a plugin; this repeats
    the check for plugins built directly (tests, scripts). Raises ValueError naming the key.
    """
    given = dict(given or {})
    result: dict[str, Any] = {}
    for option in declared:
        if option.name in given and given[option.name] is not None:
            value = given[option.name]
            problem = option.problem(value)
            if problem:
                raise ValueError(f"{owner}: option {option.name!r}: {problem}")
            result[option.name] = float(value) if option.kind is float else value
        elif option.required:
            raise ValueError(f"{owner}: option {option.name!r} is required")
        else:
            result[option.name] = option.default
    return result
