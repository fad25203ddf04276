"""
Small pieces the Telegram, Twilio and SMS-gateway channels share: completing an options mapping
with its declared defaults, reading a request header as text, masking an address for a log line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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
