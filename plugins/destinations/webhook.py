"""
The ``webhook`` destination: POST each delivery as JSON to a URL, or several in one request.

The body is ``{"delivery_id", "destination", "attempt", "message": {...}, "triage": {...}}``.
Every request carries ``Idempotency-Key: <delivery id>``; with a ``secret``, also
``X-Siaga-Timestamp: <unix seconds>`` and ``X-Siaga-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>`` with the secret, so the receiver can check both origin and
freshness. A 2xx answer is a delivery; its JSON ``reference`` or ``id`` (if any) becomes the
receipt's reference.

With ``batch_size`` above 1 the destination takes batches
(:class:`gateway.interfaces.IBatchDestination`): the high, normal and low lanes POST up to
``batch_size`` deliveries at once as ``{"deliveries": [<the document above>, ...]}``, with
``Idempotency-Key: batch-<hex>`` (:func:`batch_key`) and the same signature over the batch's
body. A 2xx answer delivers all of them; if its JSON is ``{"results": [{"delivery_id",
"reference" or "id", "error"}, ...]}`` each listed delivery gets its reference, or fails alone
(retried) when its item has an ``error``. Any other answer, a timeout or a connection failure
fails every delivery of the batch as it would fail one. Emergencies still go one per request, in
the single-delivery body.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.error import ConnectError, TimeoutError
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gateway.errors import TemporaryDeliveryError, error_for_status
from gateway.hookspecs import hookimpl
from gateway.interfaces import IBatchDestination
from gateway.message import Receipt
from gateway.options import Option, http_url, positive

#: The largest ``batch_size`` the option takes.
MAX_BATCH_SIZE = 1000


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Siaga-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def batch_key(delivery_ids) -> str:
    """
    The ``Idempotency-Key`` of a batch: ``batch-`` and the first 32 hex digits of the SHA-256 of
    the delivery ids, sorted and joined with commas. The same deliveries give the same key in
    any order; a batch formed differently on a later attempt gets another one, so a receiver
    drops repeats by each item's ``delivery_id``.
    """
    joined = ",".join(sorted(delivery_ids)).encode("ascii")
    return "batch-" + hashlib.sha256(joined).hexdigest()[:32]


def delivery_json(delivery) -> dict:
    """The JSON document a webhook (and the outbox) receives for a delivery."""
    return {
        "delivery_id": delivery.id,
        "destination": delivery.destination_id,
        "attempt": delivery.attempt,
        "message": delivery.message.to_json(),
        "triage": delivery.triage.to_json(),
    }


def _batch_size(value) -> str | None:
    if 1 <= value <= MAX_BATCH_SIZE:
        return None
    return f"expected an integer from 1 to {MAX_BATCH_SIZE}, got {value!r}"


@implementer(IBatchDestination)
class WebhookDestination:
    destination_type = "webhook"
    options = (
        Option("url", str, check=http_url, doc="Where to POST."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for an answer."),
        Option("secret", str, default=None, secret=True, doc="Signs each request (X-Siaga-Signature)."),
        Option("token", str, default=None, secret=True, doc="Sent as 'Authorization: Bearer <token>'."),
        Option("headers", dict, default={}, doc="Extra request headers."),
        Option("batch_size", int, default=1, check=_batch_size,
               doc="Deliveries per request in the non-emergency lanes; 1 sends each on its own."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.url = options["url"]
        self._url = EncodedURL.from_text(self.url)  # parsed once, not on every delivery
        self.timeout = options.get("timeout", 10.0)
        self.secret = options.get("secret")
        self.token = options.get("token")
        self.batch_size = options.get("batch_size", 1)
        self.extra_headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        self.reactor = context.reactor
        self.http = context.http_client
        # The headers every request shares, built once; Siaga's own win over the extra ones.
        self._headers = Headers()
        for key, value in self.extra_headers.items():
            self._headers.setRawHeaders(key, [value])
        self._headers.setRawHeaders(b"Content-Type", [b"application/json"])
        if self.token:
            self._headers.setRawHeaders(b"Authorization", [f"Bearer {self.token}"])

    def start(self):
        return None

    def stop(self):
        return None

    def deliver(self, delivery):
        body = json.dumps(delivery_json(delivery), ensure_ascii=False).encode("utf-8")
        return self._post(body, delivery.id).addCallback(lambda content: Receipt(reference=_reference(content)))

    def deliver_batch(self, deliveries):
        deliveries = list(deliveries)
        body = json.dumps({"deliveries": [delivery_json(d) for d in deliveries]}, ensure_ascii=False).encode("utf-8")
        d = self._post(body, batch_key(delivery.id for delivery in deliveries))
        return d.addCallback(_batch_results, deliveries)

    @defer.inlineCallbacks
    def _post(self, body: bytes, key: str):
        """
        POST ``body`` with idempotency ``key``: fire with the body of a 2xx answer; fail with the
        DeliveryError that any other answer, a timeout or a connection failure means.
        """
        headers = self._headers.copy()
        headers.setRawHeaders(b"Idempotency-Key", [key.encode("ascii")])
        if self.secret:
            timestamp = str(int(self.reactor.seconds()))
            headers.setRawHeaders(b"X-Siaga-Timestamp", [timestamp.encode("ascii")])
            headers.setRawHeaders(b"X-Siaga-Signature", [signature(self.secret, timestamp, body).encode("ascii")])
        try:
            response = yield self.http.post(self._url, data=body, headers=headers, timeout=self.timeout,
                                            reactor=self.reactor, allow_redirects=False)
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
        return content


def _reference(content: bytes):
    try:
        answer = json.loads(content)
    except ValueError:
        return None
    if isinstance(answer, dict):
        value = answer.get("reference", answer.get("id"))
        return str(value) if value is not None else None
    return None


def _batch_results(content: bytes, deliveries) -> list:
    """
    One Receipt or TemporaryDeliveryError per delivery, from a 2xx answer to a batch: the items of
    its ``results`` by ``delivery_id``; a delivery the answer does not list was taken.
    """
    try:
        answer = json.loads(content)
    except ValueError:
        answer = None
    items = answer.get("results") if isinstance(answer, dict) else None
    by_id = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("delivery_id") is not None:
                by_id[str(item["delivery_id"])] = item
    results = []
    for delivery in deliveries:
        item = by_id.get(delivery.id)
        if item is None:
            results.append(Receipt(reference=None))
            continue
        error = item.get("error")
        if error is not None and error is not False and error != "":
            text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
            results.append(TemporaryDeliveryError(f"refused in a batch: {text[:200]}"))
            continue
        value = item.get("reference", item.get("id"))
        results.append(Receipt(reference=str(value) if value is not None else None))
    return results


@hookimpl
def siaga_register_destinations(register):
    register("webhook", WebhookDestination)
