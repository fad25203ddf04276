"""
A cursor-based polling loop, for a channel whose platform is asked for new messages instead of
posting them to a webhook (Telegram's ``getUpdates``, X's mentions timeline, ...).

:class:`CursorPoller` owns the loop; the channel supplies one ``fetch(cursor)`` that asks the
platform for what came after ``cursor``. A message is never confirmed to the platform (the cursor
never moves past it) before the core's ``ingest`` has stored it, so a crash or a store failure
means it is fetched again (and deduplicated by the core), never lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure


class CursorPoller:
    """
    Polls ``fetch`` in a loop on ``clock`` and hands what it finds to ``ingest``.

    ``fetch(cursor)`` returns (or fires a Deferred with) ``(messages, next_cursor)``: the
    :class:`gateway.message.Message` objects found after ``cursor`` (``None`` on the very first
    poll) and the cursor to ask from next time, or ``None`` to keep the current one. A failure
    (for example a :class:`gateway.errors.TemporaryDeliveryError`) counts as a failed poll.

    ``ingest(messages)`` is the core's ``context.ingest``: a Deferred that fires once the messages
    are stored. Only then does ``cursor`` become ``next_cursor`` (and is saved); with no messages
    the cursor moves on at once (the platform sent only things the channel skips).

    Timing: the first poll runs on the next turn of the clock; after a successful poll the next
    one waits ``interval`` seconds (0 for a long poll, which waits at the platform). A failed
    fetch or ingest waits ``min_backoff`` seconds, doubling with each further failure up to
    ``max_backoff``, or longer when the failure carries a ``retry_after``; a success resets it.

    ``cursor_path``, if given, is a one-line text file holding the cursor, replaced atomically on
    each move, so a restart goes on from where the last poller stopped. ``read_cursor`` turns the
    file's text back into a cursor (``int`` for a numeric offset); a file it cannot read is
    ignored with an error in the log. ``str(cursor)`` is what is written.

    ``label`` names the loop in log lines (for example ``"telegram channel tg"``); it must hold
    no secret.

    Attributes for the channel (and its tests): ``cursor``, ``failures`` (polls failed in a
    row) and ``running``.
    """

    log = Logger()

    def __init__(self, fetch: Callable[[Any], Any], ingest: Callable[[list], Any], clock, *,
                 cursor_path: str | None = None, interval: float = 0.0, min_backoff: float = 1.0,
                 max_backoff: float = 60.0, label: str = "poller",
                 read_cursor: Callable[[str], Any] = str):
        self._fetch = fetch
        self._ingest = ingest
        self._clock = clock
        self._cursor_path = cursor_path
        self._interval = interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._label = label
        self._read_cursor = read_cursor
        self.cursor: Any = None
        self.failures = 0
        self.running = False
        self._call = None
        self._request: defer.Deferred | None = None
        self._ingesting: defer.Deferred | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Load the saved cursor and poll on the next turn of the clock. Starting twice is a no-op."""
        if self.running:
            return
        self.running = True
        if self.cursor is None:
            self.cursor = self._load_cursor()
        self._call = self._clock.callLater(0, self._poll)

    def stop(self) -> defer.Deferred:
        """
        Stop polling: cancel the wait for the next poll, or the open fetch (what it would have
        returned comes again next time). Returns a Deferred that fires once a batch being stored
        has been stored and its cursor saved; at once if there is none.
        """
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._request is not None:
            request, self._request = self._request, None
            request.cancel()
        if self._ingesting is not None:
            done = defer.Deferred()
            self._ingesting.addBoth(lambda result: (done.callback(None), result)[1])
            return done
        return defer.succeed(None)

    # -- one round ---------------------------------------------------------------------------

    def _poll(self) -> None:
        self._call = None
        if not self.running:
            return
        request = self._request = defer.maybeDeferred(self._fetch, self.cursor)
        request.addCallbacks(self._fetched, self._fetch_failed, callbackArgs=(request,), errbackArgs=(request,))

    def _fetched(self, result, request) -> None:
        if self._request is not request:
            return  # stopped meanwhile: these messages come again next time
        self._request = None
        if not self.running:
            return
        try:
            messages, next_cursor = result
            messages = list(messages or ())
        except (TypeError, ValueError):
            self._failed(Failure(), "reading what fetch returned")
            return
        stored = defer.maybeDeferred(self._ingest, messages) if messages else defer.succeed(None)
        self._ingesting = stored
        stored.addCallback(lambda _: self._advance(next_cursor, len(messages)))
        stored.addCallbacks(lambda _: self._succeeded(), self._ingest_failed)
        stored.addBoth(self._ingest_done)

    def _ingest_done(self, result):
        self._ingesting = None
        return result

    def _advance(self, cursor, count: int) -> None:
        if cursor is not None and cursor != self.cursor:
            self.cursor = cursor
            self._save_cursor(cursor)
        if count:
            self.log.debug("{label}: stored {count} polled message(s), cursor now {cursor}",
                           label=self._label, count=count, cursor=self.cursor)

    def _succeeded(self) -> None:
        self.failures = 0
        self._next(self._interval)

    def _fetch_failed(self, failure, request) -> None:
        if self._request is not request:
            return  # cancelled by stop()
        self._request = None
        self._failed(failure, "polling")

    def _ingest_failed(self, failure) -> None:
        self._failed(failure, "storing polled messages")

    def _failed(self, failure, what: str) -> None:
        if not self.running:
            return
        self.failures += 1
        delay = min(self._max_backoff, self._min_backoff * 2 ** (self.failures - 1))
        retry_after = getattr(failure.value, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.log.error("{label}: {what} failed ({error}); trying again in {delay:.0f} s",
                       label=self._label, what=what, error=_describe(failure), delay=delay)
        self._next(delay)

    def _next(self, delay: float) -> None:
        if self.running:
            self._call = self._clock.callLater(delay, self._poll)

    # -- the cursor file ---------------------------------------------------------------------

    def _load_cursor(self):
        if not self._cursor_path:
            return None
        try:
            with open(self._cursor_path, encoding="ascii") as f:
                text = f.read().strip()
            return self._read_cursor(text) if text else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            self.log.error("{label}: ignoring unreadable cursor file {path}: {error}",
                           label=self._label, path=self._cursor_path, error=e)
            return None

    def _save_cursor(self, cursor) -> None:
        if not self._cursor_path:
            return
        partial = self._cursor_path + ".partial"
        try:
            directory = os.path.dirname(self._cursor_path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with open(partial, "w", encoding="ascii") as f:
                f.write(f"{cursor}\n")
            os.replace(partial, self._cursor_path)
        except OSError as e:
            self.log.error("{label}: could not save the cursor to {path}: {error}",
                           label=self._label, path=self._cursor_path, error=e)


def _describe(failure) -> str:
    value = failure.value
    return getattr(value, "reason", None) or f"{type(value).__name__}: {value}"
