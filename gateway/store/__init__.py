"""
Siaga's durable stores: implementations of :class:`gateway.interfaces.IStore`.

:func:`make_store` builds one from the ``store:`` block of the configuration.
``gateway.store.contract.StoreContractTests`` is the test suite every implementation passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BACKENDS = ("sqlite", "memory")

#: Seconds after a case's last message during which a new message from the same sender about
#: the same kind of matter (triage category) joins it instead of opening a new case.
DEFAULT_CASE_WINDOW = 6 * 3600.0

#: Keys of the ``store:`` configuration block that the core uses itself (retention is run by the
#: service, which calls ``prune``); ``make_store`` ignores them.
_NOT_FOR_THE_STORE = frozenset({"backend", "retention_days"})


def make_store(backend: str, options: Mapping[str, Any], reactor):
    """
    An unstarted store. ``backend`` ``"sqlite"`` takes ``options`` ``{"path": ..., "synchronous":
    "NORMAL" | "FULL"}`` (and optionally ``busy_timeout`` seconds, ``max_batch``, ``min_free_bytes``,
    ``case_window`` seconds, ``writer``, ``checkpoint_interval``, ``batch_delay`` and
    ``flush_slice`` seconds; the whole ``store:`` block may be passed, ``backend`` and
    ``retention_days`` are ignored);
    ``"memory"`` keeps everything in memory (tests, demos: nothing survives a restart).
    Raises ``ValueError`` for an unknown backend or a bad option.
    """
    options = {key: value for key, value in dict(options or {}).items() if key not in _NOT_FOR_THE_STORE}
    if backend == "sqlite":
        from gateway.store.sqlite import SQLiteStore
        if not options.get("path"):
            raise ValueError("the sqlite store needs a 'path'")
        known = {"path", "synchronous", "busy_timeout", "max_batch", "min_free_bytes", "case_window", "writer",
                 "checkpoint_interval", "batch_delay", "flush_slice"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown sqlite store option(s): {', '.join(unknown)}")
        return SQLiteStore(options.pop("path"), reactor, **options)
    if backend == "memory":
        from gateway.testing import MemoryStore
        return MemoryStore(clock=reactor, case_window=options.get("case_window", DEFAULT_CASE_WINDOW))
    raise ValueError(f"unknown store backend {backend!r}: expected one of {', '.join(BACKENDS)}")
