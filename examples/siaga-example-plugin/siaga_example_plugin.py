"""
An example Siaga plugin: the ``example-echo`` destination POSTs every delivery as JSON to a URL.

Configuration (under ``destinations:`` in ``gateway.yaml``)::

    destinations:
      echo:
        type: example-echo
        url: https://receiver.example.org/siaga
        token: ${ECHO_TOKEN}          # or token_file: secrets/echo-token
        timeout: 5

Contract with the receiver: the body is ``{"delivery_id", "ticket", "priority", "category",
"text", "sender"}``; every request carries ``Idempotency-Key: <delivery id>`` (a delivery may be
attempted more than once); a 2xx answer is a delivery and its JSON ``id`` becomes the receipt's
reference; 4xx (other than 408, 425, 429) is permanent, anything else is retried.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.error import ConnectError, TimeoutError
from twisted.web.client import ResponseFailed
from zope.interface import implementer

from gateway.errors import TemporaryDeliveryError, error_for_status
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.message import Receipt
from gateway.options import Option, http_url, positive


@implementer(IDestination)
class EchoDestination:
    """POSTs each delivery as a small JSON document, with an idempotency key."""

    destination_type = "example-echo"
    options = (
        Option("url", str, check=http_url, doc="Where to POST each delivery."),
        Option("token", str, default=None, secret=True, doc="Sent as 'Authorization: Bearer <token>'."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for an answer."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.url = options["url"]
        self.token = options.get("token")
        self.timeout = options.get("timeout", 10.0)
        self.reactor = context.reactor
        self.http = context.http_client

    def start(self):
        return None

    def stop(self):
        return None

    @defer.inlineCallbacks
    def deliver(self, delivery):
        message, triage = delivery.message, delivery.triage
        body = json.dumps({
            "delivery_id": delivery.id,
            "ticket": message.ticket,
            "priority": triage.priority,
            "category": triage.category,
            "text": message.text,
            "sender": message.sender,
        }, ensure_ascii=False).encode("utf-8")
        headers = {b"Content-Type": [b"application/json"], b"Idempotency-Key": [delivery.id.encode()]}
        if self.token:
            headers[b"Authorization"] = [b"Bearer " + self.token.encode()]
        try:
            response = yield self.http.post(self.url, data=body, headers=headers,
                                            timeout=self.timeout, reactor=self.reactor)
            content = yield response.content()
        except (defer.CancelledError, TimeoutError) as e:
            raise TemporaryDeliveryError(f"no answer within {self.timeout}s") from e
        except (ConnectError, ResponseFailed) as e:
            raise TemporaryDeliveryError(f"connection failed: {e}") from e
        if not 200 <= response.code < 300:
            retry_after = response.headers.getRawHeaders(b"retry-after", [None])[0]
            raise error_for_status(response.code, content, retry_after.decode() if retry_after else None)
        return Receipt(reference=_reference(content))


def _reference(content: bytes):
    """The receiver's ``id`` for the delivery, if it answered JSON with one."""
    try:
        answer = json.loads(content)
    except ValueError:
        return None
    value = answer.get("id") if isinstance(answer, dict) else None
    return str(value) if value is not None else None


@hookimpl
def siaga_register_destinations(register):
    register("example-echo", EchoDestination)
