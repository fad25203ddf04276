"""
Which destinations a message goes to: pure, from the ``routes:`` table of the configuration.

Routes are tried in order. The first route whose ``when`` matches decides, unless it says
``continue: true``: then its destinations are kept and the following routes are tried too.
A route without ``when`` matches every message.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from gateway.config import Route
from gateway.message import Message, Triage


def matches(route: Route, message: Message, triage: Triage) -> bool:
    """Whether every condition of ``route.when`` holds for this message and triage."""
    facts = {"priority": triage.priority, "category": triage.category, "channel": message.channel_id}
    return all(facts[key] in values for key, values in route.when.items())


def route(message: Message, triage: Triage, routes: Sequence[Route]) -> Tuple[str, ...]:
    """The destination names for ``message``, each once, in the order the routes name them."""
    chosen: dict = {}
    for candidate in routes:
        if matches(candidate, message, triage):
            chosen.update(dict.fromkeys(candidate.to))
            if not candidate.continue_:
                break
    return tuple(chosen)
