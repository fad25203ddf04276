"""
How long the rule engine takes per message, over the labelled corpus of tests/data/triage/.

    .venv/bin/python bench/triage_bench.py [--rounds N]

Every message is classified once to warm up (the word cache fills as it would in a running
gateway), then each message is timed alone, ``--rounds`` times over the whole corpus; the median
and the 99th percentile of those times are reported, for the bare engine
(``TriageEngine.classify_text``) and through the plugin (``RuleClassifier.classify`` on a
``Message``). A cold pass (cache cleared before each message) is reported too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.message import Message  # noqa: E402
from plugins.classifiers.rules import RuleClassifier  # noqa: E402


def corpus():
    texts = []
    for name in ("dev.jsonl", "heldout.jsonl"):
        with open(ROOT / "tests" / "data" / "triage" / name, encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f if line.strip())
    return texts


def timings(call, items, rounds, before=None):
    clock = time.perf_counter_ns
    out = []
    for _ in range(rounds):
        for item in items:
            if before is not None:
                before()
            start = clock()
            call(item)
            out.append(clock() - start)
    return out


def report(name, values):
    values = sorted(values)
    median = statistics.median(values) / 1000
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))] / 1000
    print(f"{name:<34} median {median:7.1f} us   p99 {p99:7.1f} us   ({len(values)} timings)")
    return median, p99


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    classifier = RuleClassifier("rules", {}, None)
    print(f"start-up (load, check and compile rules and places): {(time.perf_counter() - start) * 1000:.0f} ms")
    engine = classifier.engine
    texts = corpus()
    messages = [Message(channel_id="bench", channel_type="bench", sender="0", text=t) for t in texts]
    print(f"corpus: {len(texts)} messages, mean {statistics.mean(len(t) for t in texts):.0f} characters")
    for text in texts:
        engine.classify_text(text)
    report("engine.classify_text (warm)", timings(engine.classify_text, texts, args.rounds))
    report("RuleClassifier.classify (warm)", timings(classifier.classify, messages, args.rounds))
    report("engine.classify_text (cold cache)",
           timings(engine.classify_text, texts, 1, before=engine.normalise._cache.clear))


if __name__ == "__main__":
    main()
