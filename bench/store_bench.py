"""
Accepts per second of the SQLite store with 1, 10 and 100 accepts in flight at once.

With one accept in flight every accept is its own commit; with more, the writer takes
everything queued into one transaction (group commit), so one commit carries many accepts.

``--lifecycle`` measures instead the store's whole share of a report: accepts from 32 callers,
while a dispatcher loop claims what is due (64 at a time) and records it delivered
(``delivered_many``); it prints CPU microseconds per delivered report.

    .venv/bin/python bench/store_bench.py [--seconds 3] [--dir /tmp] [--synchronous NORMAL FULL]
    .venv/bin/python bench/store_bench.py --lifecycle [--synchronous NORMAL]
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


def _intake(n: int, emergencies: bool = True) -> Intake:
    priority = EMERGENCY if emergencies and n % 50 == 0 else NORMAL
    message = Message(channel_id="bench", channel_type="web", sender="+6281200000001",
                      text=f"Jalan rusak parah di Sangatta Utara, laporan nomor {n}", external_id=f"b{n}")
    return Intake(message, Triage(priority, "complaint", 0.8, ("rule:jalan",)), ("lapor", "webhook"))


@defer.inlineCallbacks
def _started_store(reactor, path, synchronous):
    store = SQLiteStore(path, reactor, synchronous=synchronous)
    yield store.start()
    return store


@defer.inlineCallbacks
def _measure(reactor, directory, synchronous, concurrency, seconds):
    store = yield _started_store(reactor, os.path.join(directory, f"bench-{synchronous}-{concurrency}.db"), synchronous)
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
def _lifecycle(reactor, directory, synchronous, seconds, callers=32):
    """Reports accepted, claimed and delivered per second, and CPU us per report."""
    store = yield _started_store(reactor, os.path.join(directory, f"lifecycle-{synchronous}.db"), synchronous)
    counter = iter(range(10**9))
    delivered = 0
    deadline = reactor.seconds() + seconds
    started, cpu_started = time.perf_counter(), time.process_time()

    @defer.inlineCallbacks
    def caller():
        while reactor.seconds() < deadline:
            yield store.accept([_intake(next(counter), emergencies=False)])

    @defer.inlineCallbacks
    def dispatcher():
        nonlocal delivered
        while reactor.seconds() < deadline:
            claimed = yield store.claim(NORMAL, 64, reactor.seconds() + 1)
            if claimed:
                yield store.delivered_many([(d.id, None) for d in claimed], reactor.seconds())
                delivered += len(claimed)
            else:
                yield task.deferLater(reactor, 0.001, lambda: None)
    yield defer.gatherResults([caller() for _ in range(callers)] + [dispatcher()])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    yield store.stop()
    return delivered / elapsed, cpu * 1e6 / max(delivered, 1)


@defer.inlineCallbacks
def main(reactor, argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--synchronous", nargs="+", default=["NORMAL", "FULL"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 10, 100])
    parser.add_argument("--lifecycle", action="store_true",
                        help="accept, claim and deliver: CPU us per report (the store's whole share)")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="siaga-store-bench-", dir=args.dir)
    try:
        if args.lifecycle:
            print(f"{'synchronous':<12}{'reports/s':>12}{'CPU us/report':>15}")
            for synchronous in args.synchronous:
                rate, cpu = yield _lifecycle(reactor, directory, synchronous, args.seconds)
                print(f"{synchronous:<12}{rate:>12.0f}{cpu:>15.1f}", flush=True)
            return
        print(f"{'synchronous':<12}{'in flight':>10}{'accepts/s':>12}{'accepts/commit':>16}")
        for synchronous in args.synchronous:
            for concurrency in args.concurrency:
                rate, per_commit = yield _measure(reactor, directory, synchronous, concurrency, args.seconds)
                print(f"{synchronous:<12}{concurrency:>10}{rate:>12.0f}{per_commit:>16.1f}", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    task.react(main)
