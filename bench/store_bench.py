"""
Accepts per second of the SQLite store with 1, 10 and 100 accepts in flight at once.

With one accept in flight every accept is its own commit; with more, the writer thread takes
everything queued into one transaction (group commit), so one commit carries many accepts.

    .venv/bin/python bench/store_bench.py [--seconds 3] [--dir /tmp] [--synchronous NORMAL FULL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from twisted.internet import defer, task

from gateway.message import EMERGENCY, NORMAL, Intake, Message, Triage
from gateway.store.sqlite import SQLiteStore


def _intake(n: int) -> Intake:
    priority = EMERGENCY if n % 50 == 0 else NORMAL
    message = Message(channel_id="bench", channel_type="web", sender="+6281200000001",
                      text=f"Jalan rusak parah di Sangatta Utara, laporan nomor {n}", external_id=f"b{n}")
    return Intake(message, Triage(priority, "complaint", 0.8, ("rule:jalan",)), ("lapor", "webhook"))


@defer.inlineCallbacks
def _measure(reactor, directory, synchronous, concurrency, seconds):
    path = os.path.join(directory, f"bench-{synchronous}-{concurrency}.db")
    store = SQLiteStore(path, reactor, synchronous=synchronous)
    yield store.start()
    counter = iter(range(10**9))
    done = 0
    deadline = reactor.seconds() + seconds
    started = time.perf_counter()
    commits_before = store.commits

    @defer.inlineCallbacks
    def worker():
        nonlocal done
        while reactor.seconds() < deadline:
            yield store.accept([_intake(next(counter))])
            done += 1
    yield defer.gatherResults([worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    commits = store.commits - commits_before
    yield store.stop()
    return done / elapsed, done / max(commits, 1)


@defer.inlineCallbacks
def main(reactor, argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--synchronous", nargs="+", default=["NORMAL", "FULL"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 10, 100])
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="siaga-store-bench-", dir=args.dir)
    try:
        print(f"{'synchronous':<12}{'in flight':>10}{'accepts/s':>12}{'accepts/commit':>16}")
        for synchronous in args.synchronous:
            for concurrency in args.concurrency:
                rate, per_commit = yield _measure(reactor, directory, synchronous, concurrency, args.seconds)
                print(f"{synchronous:<12}{concurrency:>10}{rate:>12.0f}{per_commit:>16.1f}", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    task.react(main)
