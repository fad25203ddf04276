"""
The ``webhook`` destination: POST each delivery as JSON to a URL.

The body is ``{"delivery_id", "destination", "attempt", "message": {...}, "triage": {...}}``.
Every request carries ``Idempotency-Key: <delivery id>``; with a ``secret``, also
``X-Siaga-Timestamp: <unix seconds>`` and ``X-Siaga-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>`` with the secret, so the receiver can check both origin and
freshness. A 2xx answer is a delivery; its JSON ``reference`` or ``id`` (if any) becomes the
receipt's reference.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.error import ConnectError, TimeoutError
from twisted.web.client import ResponseFailed
from zope.interface import implementer

from gateway.errors import TemporaryDeliveryError, error_for_status
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.message import Receipt
from gateway.options import Option, http_url, positive


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Siaga-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def delivery_json(delivery) -> dict:
    """The JSON document a webhook (and the outbox) receives for a delivery."""
    return {
        "delivery_id": delivery.id,
        "destination": delivery.destination_id,
        "attempt": delivery.attempt,
        "message": delivery.message.to_json(),
        "triage": delivery.triage.to_json(),
    }


@implementer(IDestination)
class WebhookDestination:
    destination_type = "webhook"
    options = (
        Option("url", str, check=http_url, doc="Where to POST."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for an answer."),
        Option("secret", str, default=None, secret=True, doc="Signs each request (X-Siaga-Signature)."),
        Option("token", str, default=None, secret=True, doc="Sent as 'Authorization: Bearer <token>'."),
        Option("headers", dict, default={}, doc="Extra request headers."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.url = options["url"]
        self._url = EncodedURL.from_text(self.url)  # parsed once, not on every delivery
        self.timeout = options.get("timeout", 10.0)
        self.secret = options.get("secret")
        self.token = options.get("token")
        self.extra_headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        self.reactor = context.reactor
        self.http = context.http_client

    def start(self):
        return None

    def stop(self):
        return None

    @defer.inlineCallbacks
    def deliver(self, delivery):
        body = json.dumps(delivery_json(delivery), ensure_ascii=False).encode("utf-8")
        headers = dict(self.extra_headers)
        headers.update({"Content-Type": "application/json", "Idempotency-Key": delivery.id})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.secret:
            timestamp = str(int(self.reactor.seconds()))
            headers["X-Siaga-Timestamp"] = timestamp
            headers["X-Siaga-Signature"] = signature(self.secret, timestamp, body)
        try:
            response = yield self.http.post(self._url, data=body, headers={k: [v] for k, v in headers.items()},
                                            timeout=self.timeout, reactor=self.reactor, allow_redirects=False)
            content = yield response.content()
        except (defer.CancelledError, TimeoutError) as e:
            raise TemporaryDeliveryError(f"no answer within {self.timeout}s") from e
        except ResponseFailed as e:
            if any(reason.check(defer.CancelledError) for reason in e.reasons):
                raise TemporaryDeliveryError(f"no answer within {self.timeout}s") from e
            reasons = "; ".join(reason.getErrorMessage() for reason in e.reasons)
            raise TemporaryDeliveryError(f"connection failed: {reasons}") from e
        except ConnectError as e:
            raise TemporaryDeliveryError(f"connection failed: {e}") from e
        if not 200 <= response.code < 300:
            retry_after = response.headers.getRawHeaders(b"retry-after", [None])[0]
            raise error_for_status(response.code, content, retry_after.decode() if retry_after else None)
        return Receipt(reference=_reference(content))


def _reference(content: bytes):
    try:
        answer = json.loads(content)
    except ValueError:
        return None
    if isinstance(answer, dict):
        value = answer.get("reference", answer.get("id"))
        return str(value) if value is not None else None
    return None


@hookimpl
def siaga_register_destinations(register):
    register("webhook", WebhookDestination)
