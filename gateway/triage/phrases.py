"""
Finding many phrases in a word sequence at once. One-word phrases are looked up in one
dictionary; longer phrases in a second one keyed by their first two words, longest first. A scan
takes, at each position, the longest phrase that matches there and goes on after it, so
``kebakaran jenggot`` hides the ``kebakaran`` inside it. At most two dictionary look-ups per word;
no regular expression.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple


class PhraseIndex:
    """Phrases (tuples of words) each carrying a tuple of payloads."""

    def __init__(self) -> None:
        self._payloads: Dict[Tuple[str, ...], List[Any]] = {}
        self._single: Dict[str, Tuple[Any, ...]] = {}
        self._multi: Dict[Tuple[str, str], List[Tuple[int, Tuple[str, ...], Tuple[Any, ...]]]] = {}
        self._starts: frozenset = frozenset()

    def add(self, words: Tuple[str, ...], payload: Any) -> None:
        """Attach ``payload`` to the phrase ``words`` (a phrase may carry several payloads)."""
        if not words:
            raise ValueError("empty phrase")
        self._payloads.setdefault(tuple(words), []).append(payload)

    def freeze(self) -> None:
        """Build the look-up tables (call once every phrase is added)."""
        self._single = {}
        self._multi = {}
        for phrase, payloads in self._payloads.items():
            if len(phrase) == 1:
                self._single[phrase[0]] = tuple(payloads)
            else:
                self._multi.setdefault(phrase[:2], []).append((len(phrase), phrase, tuple(payloads)))
        for entries in self._multi.values():
            entries.sort(key=lambda e: -e[0])
        self._starts = frozenset(first for first, _ in self._multi)

    def words(self):
        """Every word of every phrase."""
        for phrase in self._payloads:
            yield from phrase

    def scan(self, tokens: Sequence[str]) -> List[Tuple[int, int, Tuple[Any, ...]]]:
        """``(start, end, payloads)`` of the longest phrase at each position, left to right."""
        found = []
        single = self._single
        multi = self._multi
        starts = self._starts
        n = len(tokens)
        i = 0
        while i < n:
            word = tokens[i]
            if word in starts and i + 1 < n:
                entries = multi.get((word, tokens[i + 1]))
                if entries:
                    for length, phrase, payloads in entries:
                        end = i + length
                        if length == 2 or (end <= n and tuple(tokens[i:end]) == phrase):
                            found.append((i, end, payloads))
                            i = end
                            break
                    else:
                        entries = None
                    if entries:
                        continue
            payloads = single.get(word)
            if payloads is not None:
                found.append((i, i + 1, payloads))
            i += 1
        return found
