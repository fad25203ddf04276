"""
Small pieces the channels share: completing an options mapping with its declared defaults,
reading a request header as text, masking an address for a log line, reading what an HTTP API
answered to a send, and downloading a body with a size limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import treq
from twisted.internet import defer

from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError, error_for_status
from gateway.options import REQUIRED, Option


def settings(declared: Iterable[Option], given: Mapping[str, Any] | None) -> dict:
    """The options ``given``, completed with the declared defaults; a missing required one raises ValueError."""
    given = given or {}
    values = {}
    for option in declared:
        if option.name in given:
            values[option.name] = given[option.name]
        elif option.default is REQUIRED:
            raise ValueError(f"option {option.name!r} is required")
        else:
            values[option.name] = option.default
    return values


def header(request, name: bytes) -> str | None:
    """A request header as text, or None."""
    value = request.getHeader(name)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value


def media_type(request) -> str:
    """The request's Content-Type without parameters, lower-case ("" when absent)."""
    return (header(request, b"content-type") or "").split(";")[0].strip().lower()


def masked(address: Any) -> str:
    """An address with all but its last four characters hidden, for logs."""
    text = str(address or "")
    return "*" * max(0, len(text) - 4) + text[-4:]


def retry_after(response) -> str | None:
    """A response's raw ``Retry-After`` header as text, or None."""
    value = (response.headers.getRawHeaders(b"retry-after") or [None])[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value


def json_answer(request: defer.Deferred, service: str) -> defer.Deferred:
    """
    What an HTTP API answered to a send. ``request`` is a treq request Deferred; the result fires
    with the decoded JSON body of a 2xx answer (None when it is not JSON), or fails with
    :class:`TemporaryDeliveryError` ``"<service>: no answer (...)"`` when no answer came, and with
    :func:`gateway.errors.error_for_status` (honouring ``Retry-After``) for any other status.
    """

    def unreachable(failure):
        raise TemporaryDeliveryError(f"{service}: no answer ({type(failure.value).__name__})")

    def answered(response):
        d = response.content()
        d.addCallback(decode, response)
        return d

    def decode(body, response):
        if not 200 <= response.code < 300:
            raise error_for_status(response.code, body, retry_after(response))
        try:
            return json.loads(body)
        except ValueError:
            return None

    return request.addCallbacks(answered, unreachable)


class _Discard:
    """A body protocol that drops what it is given (for a response we refuse to read)."""

    def makeConnection(self, transport):
        stop = getattr(transport, "stopProducing", None)
        if stop is not None:
            stop()

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        pass


def discard(response) -> None:
    """Stop reading ``response``'s body (one we refuse)."""
    response.deliverBody(_Discard())


def read_at_most(response, limit: int, what: str) -> defer.Deferred:
    """
    The body of a 2xx ``response`` (from an ``unbuffered`` treq request), refusing more than
    ``limit`` bytes: a declared ``Content-Length`` over it is refused before reading, and the
    reading stops as soon as it goes over. Fails with :class:`PermanentDeliveryError` naming
    ``what`` ("media", "Telegram file"...).
    """
    length = response.length if isinstance(response.length, int) else None
    if length is not None and length > limit:
        discard(response)
        return defer.fail(PermanentDeliveryError(f"{what} is {length} bytes, over the limit of {limit}"))
    chunks = []
    size = 0

    def collect(data):
        nonlocal size
        size += len(data)
        if size > limit:
            raise PermanentDeliveryError(f"{what} is over the limit of {limit} bytes")
        chunks.append(data)

    return treq.collect(response, collect).addCallback(lambda _: b"".join(chunks))
