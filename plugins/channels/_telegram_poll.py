"""
The long-polling loop of a Telegram channel, for sites without a public HTTPS address.

:class:`UpdatePoller` asks for updates, hands the messages in them to the core's ``ingest`` and
only then moves its offset past them, so an update is never confirmed to Telegram before it is
stored. The offset is kept in memory and in a small file, so a restart does not fetch again what
was already stored (and the core drops duplicates anyway).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger


class UpdatePoller:
    """
    Runs ``fetch(offset) -> Deferred[list of update dicts]`` in a loop on ``clock``.

    ``to_messages(updates)`` turns a batch of updates into Messages (skipping the ones it cannot
    use); ``ingest(messages)`` stores them and fires when they are durable. The offset becomes
    the last ``update_id`` + 1 only after that. A failed fetch or ingest waits ``min_backoff``
    seconds, doubling on each further failure up to ``max_backoff``; a success resets it.
    """

    log = Logger()

    def __init__(self, fetch: Callable, to_messages: Callable, ingest: Callable, clock,
                 offset_path: str | None, label: str = "telegram",
                 min_backoff: float = 1.0, max_backoff: float = 60.0):
        self._fetch = fetch
        self._to_messages = to_messages
        self._ingest = ingest
        self._clock = clock
        self._offset_path = offset_path
        self._label = label
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.offset: int | None = None
        self.failures = 0
        self.running = False
        self._call = None
        self._request = None
        self._ingesting: defer.Deferred | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Load the saved offset and begin polling on the next turn of the clock."""
        if self.running:
            return
        self.running = True
        self.offset = self._load_offset()
        self._call = self._clock.callLater(0, self._poll)

    def stop(self) -> defer.Deferred:
        """
        Stop polling: cancel the wait or the open request. Fires once a batch being stored
        has been stored and its offset saved (an unfinished request is simply dropped: its
        updates come again next time).
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
        request = self._request = defer.maybeDeferred(self._fetch, self.offset)
        request.addCallbacks(self._fetched, self._fetch_failed, callbackArgs=(request,), errbackArgs=(request,))

    def _fetched(self, updates: list[dict], request) -> None:
        if self._request is not request:
            return  # stopped meanwhile: these updates come again next time
        self._request = None
        if not self.running:
            return
        updates = [u for u in updates or () if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
        if not updates:
            self._succeeded()
            return
        next_offset = max(u["update_id"] for u in updates) + 1
        messages = self._to_messages(updates)
        stored = defer.maybeDeferred(self._ingest, messages) if messages else defer.succeed([])
        self._ingesting = stored
        stored.addCallback(lambda _: self._advance(next_offset, len(messages)))
        stored.addCallbacks(lambda _: self._succeeded(), self._ingest_failed)
        stored.addBoth(self._ingest_done)

    def _ingest_done(self, result):
        self._ingesting = None
        return result

    def _advance(self, offset: int, count: int) -> None:
        self.offset = offset
        self._save_offset(offset)
        if count:
            self.log.debug("{label}: stored {count} polled message(s), offset now {offset}",
                           label=self._label, count=count, offset=offset)

    def _succeeded(self) -> None:
        self.failures = 0
        self._next(0)

    def _fetch_failed(self, failure, request) -> None:
        if self._request is not request:
            return  # cancelled by stop()
        self._request = None
        self._failed(failure, "fetching updates")

    def _ingest_failed(self, failure) -> None:
        self._failed(failure, "storing polled messages")

    def _failed(self, failure, what: str) -> None:
        if not self.running:
            return
        self.failures += 1
        delay = min(self._max_backoff, self._min_backoff * 2 ** (self.failures - 1))
        self.log.error("{label}: {what} failed ({error}); trying again in {delay:.0f} s",
                      label=self._label, what=what, error=_describe(failure), delay=delay)
        self._next(delay)

    def _next(self, delay: float) -> None:
        if self.running:
            self._call = self._clock.callLater(delay, self._poll)

    # -- the offset file ---------------------------------------------------------------------

    def _load_offset(self) -> int | None:
        if not self._offset_path:
            return None
        try:
            with open(self._offset_path, encoding="ascii") as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self.log.error("{label}: ignoring unreadable offset file {path}: {error}",
                          label=self._label, path=self._offset_path, error=e)
            return None

    def _save_offset(self, offset: int) -> None:
        if not self._offset_path:
            return
        partial = self._offset_path + ".partial"
        try:
            directory = os.path.dirname(self._offset_path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with open(partial, "w", encoding="ascii") as f:
                f.write(f"{offset}\n")
            os.replace(partial, self._offset_path)
        except OSError as e:
            self.log.error("{label}: could not save offset to {path}: {error}",
                          label=self._label, path=self._offset_path, error=e)


def _describe(failure) -> str:
    value = failure.value
    return getattr(value, "reason", None) or f"{type(value).__name__}: {value}"
