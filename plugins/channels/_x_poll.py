"""
Polling the v2 mentions timeline of an X account, for accounts without Account Activity
webhook access.

The loop asks ``GET {api}/2/users/{user_id}/mentions`` for posts newer than ``since_id``, hands
them to ``ingest`` and moves ``since_id`` on only once ingest has fired (the posts are stored),
so a crash or a store failure means the same posts are asked for again and deduplicated, never
lost. Failures back off exponentially, honouring X's ``x-rate-limit-reset``.

This module is not a plugin (its name starts with ``_``); :mod:`plugins.channels.x` uses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from urllib.parse import urlencode

import treq
from twisted.internet import defer
from twisted.logger import Logger

from gateway.errors import TemporaryDeliveryError, error_for_status
from gateway.message import Message

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
    retry_after = (response.headers.getRawHeaders(b"retry-after") or [None])[0]
    return error_for_status(response.code, body, retry_after.decode() if retry_after else None)


class SinceIdFile:
    """The newest mention seen, kept in a one-line file so a restart does not read old posts again."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> str | None:
        try:
            with open(self.path, encoding="ascii") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def save(self, since_id: str) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        partial = self.path + ".new"
        with open(partial, "w", encoding="ascii") as f:
            f.write(since_id + "\n")
        os.replace(partial, self.path)


class MentionPoller:
    """
    ``clock`` schedules the polls; ``http_client`` is a treq client; ``read_page(page, now)``
    turns one decoded page into ``(messages, skipped)``; ``ingest(messages)`` returns a Deferred
    that fires once they are stored. ``since_file`` (a :class:`SinceIdFile`) remembers progress.
    """

    log = Logger()

    def __init__(self, *, clock, http_client, api: str, user_id: str, bearer_token: str,
                 read_page: Callable, ingest: Callable, interval: float, max_backoff: float,
                 timeout: float = 30.0, since_file: SinceIdFile | None = None, name: str = "x"):
        self.clock = clock
        self.http = http_client
        self.api = api.rstrip("/")
        self.user_id = user_id
        self.bearer_token = bearer_token
        self.read_page = read_page
        self.ingest = ingest
        self.interval = interval
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.since_file = since_file
        self.name = name
        self.since_id: str | None = None
        self.failures = 0
        self.running = False
        self._call = None
        self._polling: defer.Deferred | None = None

    def start(self) -> None:
        """Load the saved progress and poll now, then every ``interval`` seconds."""
        if self.since_file is not None and self.since_id is None:
            self.since_id = self.since_file.load()
        self.running = True
        self._schedule(0)

    def stop(self) -> None:
        """Cancel the next poll and the one in progress, if any."""
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._polling is not None:
            polling, self._polling = self._polling, None
            polling.cancel()

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._polling = self.poll()
        self._polling.addCallbacks(self._polled, self._failed)

    def _polled(self, count: int) -> None:
        self._polling = None
        self.failures = 0
        self._schedule(self.interval)

    def _failed(self, failure) -> None:
        self._polling = None
        if failure.check(defer.CancelledError) and not self.running:
            return
        self.failures += 1
        delay = min(self.interval * (2 ** self.failures), self.max_backoff)
        retry_after = getattr(failure.value, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.log.warn("channel {name}: polling X mentions failed ({error}); next try in {delay:.0f} s",  # noqa: G010
                      name=self.name, error=failure.getErrorMessage(), delay=delay)
        self._schedule(delay)

    def url(self, pagination_token: str | None = None) -> str:
        query = [("max_results", str(PAGE_SIZE)), ("expansions", "author_id"),
                 ("tweet.fields", "created_at,author_id,referenced_tweets"), ("user.fields", "name,username")]
        if self.since_id:
            query.append(("since_id", self.since_id))
        if pagination_token:
            query.append(("pagination_token", pagination_token))
        return f"{self.api}/2/users/{self.user_id}/mentions?{urlencode(query)}"

    @defer.inlineCallbacks
    def poll(self):
        """
        One poll: fetch the new mentions (following pages up to :data:`MAX_PAGES`), ingest them
        and, once ingest has fired, move ``since_id`` on. Fires with the number ingested.
        """
        messages: list[Message] = []
        newest = None
        token = None
        for _ in range(MAX_PAGES):
            page = yield self._get(self.url(token))
            meta = page.get("meta") if isinstance(page.get("meta"), dict) else {}
            newest = newest or meta.get("newest_id")
            found, _skipped = self.read_page(page, self.clock.seconds())
            messages[:0] = found
            token = meta.get("next_token")
            if not token or self.since_id is None:
                break
        if messages:
            yield self.ingest(messages)
        if newest and newest != self.since_id:
            self.since_id = str(newest)
            if self.since_file is not None:
                self.since_file.save(self.since_id)
        return len(messages)

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
