"""
Finding many phrases in a word sequence at once: an index from a phrase's first word to the
phrases that start with it, longest first. A scan takes, at each position, the longest phrase
that matches there and goes on after it, so ``kebakaran jenggot`` hides the ``kebakaran`` inside
it. One dictionary look-up per word; no regular expression.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple


class PhraseIndex:
    """Phrases (tuples of words) each carrying a tuple of payloads."""

    def __init__(self) -> None:
        self._by_first: Dict[str, List[Tuple[Tuple[str, ...], List[Any]]]] = {}

    def add(self, words: Tuple[str, ...], payload: Any) -> None:
        """Attach ``payload`` to the phrase ``words`` (a phrase may carry several payloads)."""
        if not words:
            raise ValueError("empty phrase")
        entries = self._by_first.setdefault(words[0], [])
        for phrase, payloads in entries:
            if phrase == words:
                payloads.append(payload)
                return
        entries.append((words, [payload]))
        entries.sort(key=lambda e: -len(e[0]))

    def freeze(self) -> None:
        """Make payload lists tuples (call once every phrase is added)."""
        for first, entries in self._by_first.items():
            self._by_first[first] = [(phrase, tuple(payloads)) for phrase, payloads in entries]

    def words(self):
        """Every word of every phrase."""
        for entries in self._by_first.values():
            for phrase, _ in entries:
                yield from phrase

    def scan(self, tokens: Sequence[str]) -> List[Tuple[int, int, Tuple[Any, ...]]]:
        """``(start, end, payloads)`` of the longest phrase at each position, left to right."""
        found = []
        by_first = self._by_first
        n = len(tokens)
        i = 0
        while i < n:
            entries = by_first.get(tokens[i])
            if entries:
                for phrase, payloads in entries:
                    end = i + len(phrase)
                    if end <= n and (len(phrase) == 1 or tuple(tokens[i:end]) == phrase):
                        found.append((i, end, payloads))
                        i = end
                        break
                else:
                    i += 1
            else:
                i += 1
        return found
