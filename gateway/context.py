"""
What the core hands every channel and destination it builds: the reactor, the HTTP client and
the ways back into the core. Plugins take everything from here instead of importing globals, so
that tests can give them a ``task.Clock`` and a ``treq.testing.StubTreq``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class PluginContext:
    """
    ``reactor``: the reactor (or a ``task.Clock`` / ``MemoryReactorClock`` in tests).
    ``http_client``: a ``treq.client.HTTPClient``-like object (``treq.testing.StubTreq`` in tests).
    ``ingest``: for messages that arrive outside a webhook (polling, SMTP): called with a list
    of :class:`gateway.message.Message`, returns a Deferred firing with their
    :class:`gateway.message.Accepted` once they are durably stored.
    ``channel``: looks up a configured channel by name (for destinations that alert people
    through a channel's ``send``); raises ``KeyError`` for an unknown name.
    ``state_dir``: a directory the plugin may keep files in.
    """

    reactor: Any
    http_client: Any
    ingest: Optional[Callable[[Any], Any]] = None
    channel: Optional[Callable[[str], Any]] = None
    state_dir: str = "var"
