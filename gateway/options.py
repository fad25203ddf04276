"""
How a plugin declares its configuration keys, so that the core can check a channel's or a
destination's block of ``gateway.yaml`` before anything starts.

A plugin class lists its keys in a class attribute::

    options = (
        Option("url", str, doc="Where to POST."),
        Option("timeout", float, default=10.0, check=positive),
        Option("secret", str, default=None, secret=True),
    )

A ``secret`` option may also be given as ``<name>_file: PATH`` (the file's content, stripped of
the final newline). Any string value may use ``${ENV_VAR}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of an option that must be given.
REQUIRED: Any = _Required()

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


@dataclasses.dataclass(frozen=True)
class Option:
    """
    One configuration key of a plugin. ``kind`` is ``str``, ``int``, ``float``, ``bool``,
    ``list`` or ``dict``; ``choices`` limits the values; ``check`` returns an error text for a
    bad value (or None). An ``int`` is accepted where a ``float`` is expected.
    """

    name: str
    kind: type = str
    default: Any = REQUIRED
    secret: bool = False
    doc: str = ""
    choices: Tuple[Any, ...] = ()
    check: Optional[Callable[[Any], Optional[str]]] = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return _TYPE_NAMES.get(self.kind, self.kind.__name__)

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is not acceptable for this option, or None if it is."""
        if value is None and self.default is None:
            return None
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            return f"expected {self.expected()}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"expected {self.expected()}, got {value!r}"
        if self.check is not None:
            return self.check(value)
        return None


def positive(value: Any) -> Optional[str]:
    """A ``check`` for numbers that must be above zero."""
    return None if value > 0 else f"expected a number above 0, got {value!r}"


def http_url(value: Any) -> Optional[str]:
    """A ``check`` for ``http://`` or ``https://`` URLs."""
    if isinstance(value, str) and value.startswith(("http://", "https://")) and "://" in value[:8]:
        return None
    return f"expected an http:// or https:// URL, got {value!r}"
