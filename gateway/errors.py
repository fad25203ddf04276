"""
The exceptions that cross a plugin boundary. Each one tells the core what to do next.
"""

from __future__ import annotations

from typing import Optional


class RequestRefused(Exception):
    """
    A webhook request failed verification (bad or missing signature, wrong token). The core
    answers ``code`` (401 or 403), stores nothing and counts the refusal for the channel.
    ``reason`` is logged; it never reaches the caller and must not contain a secret.
    """

    def __init__(self, reason: str, code: int = 403):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class MalformedRequest(Exception):
    """
    A verified webhook request whose body cannot be parsed. The core answers ``400
    {"error": reason}``, keeps the body in quarantine and counts it. ``reason`` goes back to the
    caller: say what is wrong in words a person integrating the platform understands.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NotHandled(Exception):
    """
    A channel has nothing to serve for this request (an unknown GET, say): the core answers 404.
    """


class DeliveryError(Exception):
    """
    A destination or a channel's ``send`` could not hand a message over.

    Raise :class:`TemporaryDeliveryError` when trying again later may work (5xx, timeout, refused
    connection, rate limit) and :class:`PermanentDeliveryError` when it never will (4xx other than
    408, 425 and 429, a payload the target refuses). Any other exception is treated as temporary.
    """

    retryable = True

    def __init__(self, reason: str, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TemporaryDeliveryError(DeliveryError):
    """Try again later; ``retry_after`` (seconds) is honoured when the target gave one."""

    retryable = True


class PermanentDeliveryError(DeliveryError):
    """Never retry: the delivery goes to dead letters at once."""

    retryable = False


class StoreUnavailable(Exception):
    """
    The store cannot write (disk full, database locked or gone). Ingest answers 503 so that the
    platform retries later; readiness fails.
    """


class Overloaded(Exception):
    """
    The gateway is too busy to take an ordinary report now (its reactor runs late): ingest
    answers 503 with ``Retry-After`` so the platform sends it again later, keeping room for
    emergencies, which are always taken. Nothing was stored.
    """


_RETRYABLE_4XX = frozenset({408, 425, 429})


def error_for_status(code: int, body: bytes = b"", retry_after: Optional[str] = None) -> DeliveryError:
    """
    The :class:`DeliveryError` that an HTTP status ``code`` means for a delivery: 4xx other than
    408, 425 and 429 is permanent, everything else temporary. ``retry_after`` is the raw
    ``Retry-After`` header (seconds), if any.
    """
    snippet = body[:200].decode("utf-8", "replace")
    reason = f"HTTP {code}: {snippet}" if snippet else f"HTTP {code}"
    if 400 <= code < 500 and code not in _RETRYABLE_4XX:
        return PermanentDeliveryError(reason)
    delay = None
    if retry_after:
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = None
    return TemporaryDeliveryError(reason, retry_after=delay)
