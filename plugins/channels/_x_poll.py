"""
Polling the v2 mentions timeline of an X account, for accounts without Account Activity
webhook access.

:class:`MentionsTimeline` asks ``GET {api}/2/users/{user_id}/mentions`` for posts newer than
``since_id``; the loop around it is a :class:`gateway.polling.CursorPoller`, which hands them to
``ingest`` and moves ``since_id`` on only once ingest has fired (the posts are stored), so a crash
or a store failure means the same posts are asked for again and deduplicated, never lost.
Failures back off exponentially, honouring X's ``x-rate-limit-reset`` (the ``retry_after`` of
the error).

This module is not a plugin (its name starts with ``_``); :mod:`plugins.channels.x` uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlencode

import treq
from twisted.internet import defer

from gateway.errors import TemporaryDeliveryError, error_for_status
from gateway.message import Message
from plugins.channels._channel_kit import retry_after

#: Posts asked for per page (X allows 5 to 100).
PAGE_SIZE = 100
#: Pages followed in one poll when many mentions arrived at once.
MAX_PAGES = 5


def rate_limit_delay(response, now: float) -> float | None:
    """Seconds until X's rate-limit window resets, from ``x-rate-limit-reset`` (epoch seconds)."""
    values = response.headers.getRawHeaders(b"x-rate-limit-reset") or []
    try:
        return max(0.0, float(values[0]) - now)
    except (IndexError, ValueError):
        return None


def answer_error(response, body: bytes, now: float):
    """The :class:`gateway.errors.DeliveryError` an unsuccessful X API answer means."""
    if response.code == 429:
        return TemporaryDeliveryError("X rate limit reached (HTTP 429)", retry_after=rate_limit_delay(response, now))
    return error_for_status(response.code, body, retry_after(response))


class MentionsTimeline:
    """
    The ``fetch`` of a :class:`gateway.polling.CursorPoller` over one account's mentions.

    ``http_client`` is a treq client, ``clock`` times out requests after ``timeout`` seconds;
    ``read_page(page, now)`` turns one decoded page into ``(messages, skipped)``. The cursor is
    the ``since_id``: the id of the newest mention already stored (a string).
    """

    def __init__(self, *, clock, http_client, api: str, user_id: str, bearer_token: str,
                 read_page: Callable, timeout: float = 30.0):
        self.clock = clock
        self.http = http_client
        self.api = api.rstrip("/")
        self.user_id = user_id
        self.bearer_token = bearer_token
        self.read_page = read_page
        self.timeout = timeout

    def url(self, since_id: str | None, pagination_token: str | None = None) -> str:
        query = [("max_results", str(PAGE_SIZE)), ("expansions", "author_id"),
                 ("tweet.fields", "created_at,author_id,referenced_tweets"), ("user.fields", "name,username")]
        if since_id:
            query.append(("since_id", since_id))
        if pagination_token:
            query.append(("pagination_token", pagination_token))
        return f"{self.api}/2/users/{self.user_id}/mentions?{urlencode(query)}"

    @defer.inlineCallbacks
    def fetch(self, since_id: str | None):
        """
        The mentions newer than ``since_id``, following pages up to :data:`MAX_PAGES` (only the
        first page when there is no ``since_id`` yet). Fires with ``(messages, newest_id)``,
        oldest page first; ``newest_id`` is ``None`` when nothing new came.
        """
        messages: list[Message] = []
        newest = None
        token = None
        for _ in range(MAX_PAGES):
            page = yield self._get(self.url(since_id, token))
            meta = page.get("meta") if isinstance(page.get("meta"), dict) else {}
            newest = newest or meta.get("newest_id")
            found, _skipped = self.read_page(page, self.clock.seconds())
            messages[:0] = found
            token = meta.get("next_token")
            if not token or since_id is None:
                break
        return messages, (str(newest) if newest else None)

    @defer.inlineCallbacks
    def _get(self, url: str):
        request = self.http.get(url, headers={b"Authorization": b"Bearer " + self.bearer_token.encode()})
        request.addTimeout(self.timeout, self.clock)
        response = yield request
        body = yield treq.content(response)
        if response.code != 200:
            raise answer_error(response, body, self.clock.seconds())
        try:
            page = json.loads(body)
        except ValueError as e:
            raise TemporaryDeliveryError(f"X answered a mentions page that is not JSON: {e}") from e
        if not isinstance(page, dict):
            raise TemporaryDeliveryError("X answered a mentions page that is not a JSON object")
        return page
