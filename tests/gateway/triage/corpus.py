"""
The labelled triage corpus of tests/data/triage/ and the figures measured over it.

``dev.jsonl`` is the part the rules were tuned on; ``heldout.jsonl`` was written before any
tuning and is never used to tune them. Each line: ``{"text", "priority", "category", "hard",
"split"}``. Run this module to print the figures and every miss of the development part::

    .venv/bin/python -m tests.gateway.triage.corpus [dev|heldout|all]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import List

from gateway.message import EMERGENCY

DATA = Path(__file__).resolve().parents[2] / "data" / "triage"


def load(split: str = "all") -> List[dict]:
    names = {"dev": ["dev.jsonl"], "heldout": ["heldout.jsonl"], "all": ["dev.jsonl", "heldout.jsonl"]}[split]
    rows = []
    for name in names:
        with open(DATA / name, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


@dataclasses.dataclass
class Figures:
    total: int
    true_positive: int
    false_positive: int
    false_negative: int
    category_right: int
    misses: list

    @property
    def recall(self) -> float:
        found = self.true_positive + self.false_negative
        return self.true_positive / found if found else 1.0

    @property
    def precision(self) -> float:
        said = self.true_positive + self.false_positive
        return self.true_positive / said if said else 1.0

    @property
    def category_accuracy(self) -> float:
        """Of the true emergencies found, the share with the right emergency category."""
        return self.category_right / self.true_positive if self.true_positive else 1.0

    def summary(self, name: str) -> str:
        return (f"{name}: {self.total} messages, emergency recall {self.recall:.3f}, precision "
                f"{self.precision:.3f} (tp {self.true_positive}, fp {self.false_positive}, fn "
                f"{self.false_negative}), emergency category accuracy {self.category_accuracy:.3f}")


def measure(classify_text, rows) -> Figures:
    tp = fp = fn = right = 0
    misses = []
    for row in rows:
        result = classify_text(row["text"])
        said = result.priority == EMERGENCY
        truth = row["priority"] == EMERGENCY
        if said and truth:
            tp += 1
            if result.category == row["category"]:
                right += 1
            else:
                misses.append(("category", row, result))
        elif said:
            fp += 1
            misses.append(("false positive", row, result))
        elif truth:
            fn += 1
            misses.append(("false negative", row, result))
    return Figures(len(rows), tp, fp, fn, right, misses)


def main(argv):
    from gateway.triage import load_engine

    split = argv[1] if len(argv) > 1 else "dev"
    engine = load_engine()
    figures = measure(engine.classify_text, load(split))
    if split == "dev":
        for kind, row, result in figures.misses:
            print(f"{kind}: {row['text']!r} want {row['priority']}/{row['category']} got "
                  f"{result.priority}/{result.category} {list(result.reasons)}")
    print(figures.summary(split))


if __name__ == "__main__":
    main(sys.argv)
