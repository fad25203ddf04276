"""
Log output: human-readable (twistd's own) or one JSON object per line, and a filter in front of
either that masks phone numbers and secrets, whatever a log call passed in.
"""

from __future__ import annotations

import re
import sys
from typing import Callable

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher, jsonFileLogObserver
from zope.interface import implementer

_PHONE = re.compile(r"(?<![\w])(\+?\d[\d\- ]{6,}\d)(?![\w])")
_SECRET_FIELD = re.compile(r"(secret|token|password|authorization|api_key|apikey)", re.IGNORECASE)


def mask_phone_numbers(text: str) -> str:
    """Replace every run that looks like a phone number with stars and its last 4 digits."""
    def mask(match):
        digits = re.sub(r"\D", "", match.group(1))
        return "*" * (len(digits) - 4) + digits[-4:]
    return _PHONE.sub(mask, text)


def scrub(event: dict) -> dict:
    """A copy of a log event with secret-named fields hidden and phone numbers masked."""
    clean = {}
    for key, value in event.items():
        if key.startswith("log_") and key != "log_format":
            clean[key] = value
        elif _SECRET_FIELD.search(key):
            clean[key] = "***"
        elif isinstance(value, str):
            clean[key] = mask_phone_numbers(value)
        else:
            clean[key] = value
    return clean


@implementer(ILogObserver)
class ScrubbingObserver:
    """Passes each event at ``level`` or above, scrubbed, to ``observer``."""

    def __init__(self, observer: Callable[[dict], None], level: LogLevel = LogLevel.info):
        self.observer = observer
        self.level = level

    def __call__(self, event):
        level = event.get("log_level")
        if level is not None and level < self.level:
            return
        self.observer(scrub(event))


#: The level ``install`` set (None before it ran: then every event counts as wanted).
_installed_level = None


def wanted(level: LogLevel) -> bool:
    """Whether an event at ``level`` would be written: lets a hot path skip building it."""
    return _installed_level is None or level >= _installed_level


def install(log_format: str = "text", publisher=globalLogPublisher, stream=None, level: str = "info") -> None:
    """
    Put the scrubbing filter in front of every observer already on ``publisher`` (twistd's
    output), and with ``log_format="json"`` replace them with one JSON object per line on
    ``stream`` (the process's standard output by default, as under ``twistd -n`` and systemd).
    Events below ``level`` (``debug``, ``info``, ``warn``, ``error``) are dropped before any
    work is done on them. Called once, when the gateway starts.
    """
    current = list(getattr(publisher, "_observers", ()))
    for observer in current:
        if isinstance(observer, ScrubbingObserver):
            return
        publisher.removeObserver(observer)
    if log_format == "json":
        # Not sys.stdout: under twistd that is redirected into the log itself, and writing the log
        # to it would feed every line back in as a new event.
        current = [jsonFileLogObserver(stream or sys.__stdout__, recordSeparator="")]
    global _installed_level
    _installed_level = LogLevel.levelWithName(level)
    for observer in current:
        publisher.addObserver(ScrubbingObserver(observer, _installed_level))
