"""Small pieces every resource of the HTTP side uses: JSON answers and bearer tokens."""

from __future__ import annotations

import hmac
import json
from typing import Optional

from twisted.web.resource import Resource


def json_body(request, code: int, value) -> bytes:
    """Set ``code`` and a JSON content type on ``request``; return ``value`` encoded."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")


def error_body(request, code: int, error: str) -> bytes:
    """A JSON error answer: ``{"error": error}``."""
    return json_body(request, code, {"error": error})


def finish_with(request, body: bytes) -> None:
    """
    Finish a request deferred with NOT_DONE_YET with ``body``, unless the client left. The
    answer carries its ``Content-Length``, as one rendered at once does (not chunked).
    """
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def write_json(request, code: int, value) -> None:
    """Finish a request deferred with NOT_DONE_YET with a JSON answer, unless the client left."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    finish_with(request, json_body(request, code, value))


def bearer_ok(request, token: Optional[str]) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (always true when token is None)."""
    if token is None:
        return True
    header = request.getHeader("authorization") or ""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class Unauthorized(Resource):
    """Answers 401 with a ``WWW-Authenticate: Bearer`` challenge."""

    isLeaf = True

    def render(self, request):
        request.setHeader(b"www-authenticate", b'Bearer realm="siaga"')
        return error_body(request, 401, "a valid 'Authorization: Bearer <token>' header is required")
