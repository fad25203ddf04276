"""
Turning social-media Indonesian into a sequence of canonical words the rules can match.

``Normaliser(lexicon, vocabulary)(text)`` returns a :class:`Normalised`: lower case, emoji turned
into words (🔥 -> ``api``, 🆘 -> ``sos``), punctuation dropped, letters repeated for emphasis
squeezed (``tolooong`` -> ``tolong``), abbreviations, slang, Banjar/Kutai and English words
replaced from the lexicon (``tlg`` -> ``tolong``, ``banyu`` -> ``air``, ``help`` -> ``tolong``),
``anak2`` -> ``anak anak``, the suffixes ``-nya``/``-lah``/``-kah`` taken off a known word, a
preposition glued to its word split (``dirumah`` -> ``di rumah``), and a misspelt rule word
corrected when exactly one word of the ``vocabulary`` is within one edit of it (``kebakarn``,
``tengelam``) or has the same consonants (``kbkrn``).

Every word is squeezed the same way, rule words included, so ``sangatta`` and ``sanggata`` both
become ``sangata``; :func:`squeeze` is what the rule compiler applies to its phrases.

Pure and cached per word: the same word is worked out once.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Dict, FrozenSet, Iterable, Mapping, NamedTuple, Optional, Tuple

_REPEAT = re.compile(r"([a-z])\1+")
_LONG_REPEAT = re.compile(r"([a-z])\1\1")
_WORD = re.compile(r"[^\W_]+")
_REDUPLICATED = re.compile(r"^([a-z]{2,})2$")
_VOWELS = frozenset("aeiou")
_SUFFIXES = ("nya", "lah", "kah", "pun")
_PREFIXES = ("di", "ke", "dr")
_CACHE_LIMIT = 50_000


def squeeze(word: str) -> str:
    """``word`` with every run of one repeated letter made a single letter."""
    return _REPEAT.sub(r"\1", word)


def squeeze_phrase(phrase: str) -> Tuple[str, ...]:
    """A rule phrase as the tuple of squeezed lower-case words it matches."""
    return tuple(squeeze(w) for w in _WORD.findall(unicodedata.normalize("NFKC", phrase).lower()))


class Normalised(NamedTuple):
    """
    ``tokens``: the canonical words, in order. ``shout``: written with emphasis (several ``!``,
    all capitals, or a letter held: ``tolooong``). ``question``: has a ``?``. ``elongated``: the
    canonical words that were written with a held letter.
    """

    tokens: Tuple[str, ...]
    shout: bool
    question: bool
    elongated: FrozenSet[str]


class Normaliser:
    """
    Built from the lexicon (``replace``: word -> replacement words; ``emoji``: character ->
    words; ``known``: words never to correct) and the ``vocabulary`` of words the rules and the
    place list use, which misspellings are corrected towards.
    """

    def __init__(self, replace: Mapping[str, str], emoji: Mapping[str, str],
                 known: Iterable[str] = (), vocabulary: Iterable[str] = ()):
        self._replace: Dict[str, Tuple[str, ...]] = {}
        for word, replacement in replace.items():
            self._replace[squeeze(word.lower())] = squeeze_phrase(replacement)
        self._emoji = {}
        for char, words in emoji.items():
            for c in char:
                if unicodedata.category(c) not in ("Mn", "Cf"):
                    self._emoji[ord(c)] = f" {words} "
        self._vocabulary = frozenset(squeeze(w) for w in vocabulary)
        replaced_to = {w for words in self._replace.values() for w in words}
        self._known = frozenset(squeeze(w.lower()) for w in known) | self._vocabulary | replaced_to
        self._near: Dict[str, Optional[str]] = {}
        self._skeletons: Dict[str, Optional[str]] = {}
        for word in self._vocabulary:
            if len(word) >= 6 and word.isalpha():
                for variant in (word,) + _deletions(word):
                    _add_unique(self._near, variant, word)
            if len(word) >= 4 and word.isalpha():
                _add_unique(self._skeletons, _skeleton(word), word)
        self._cache: Dict[str, Tuple[Tuple[str, ...], bool]] = {}

    def __call__(self, text: str) -> Normalised:
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text).translate(self._emoji)
        shout = text.count("!") >= 2 or (text.isupper() and len(text) >= 6)
        question = "?" in text
        tokens = []
        elongated = set()
        cache = self._cache
        for raw in _WORD.findall(text.lower()):
            entry = cache.get(raw)
            if entry is None:
                entry = self._word(raw)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[raw] = entry
            words, held = entry
            tokens.extend(words)
            if held:
                shout = True
                elongated.update(words)
        return Normalised(tuple(tokens), shout, question, frozenset(elongated))

    def _word(self, raw: str) -> Tuple[Tuple[str, ...], bool]:
        held = _LONG_REPEAT.search(raw) is not None
        match = _REDUPLICATED.match(raw)
        if match:
            words = self._one(squeeze(match.group(1)))
            return words + words, held
        return self._one(squeeze(raw)), held

    def _one(self, word: str) -> Tuple[str, ...]:
        replaced = self._replace.get(word)
        if replaced is not None:
            return replaced
        if not word.isalpha():
            return (word,)
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                stem = word[: -len(suffix)]
                stem_words = self._replace.get(stem)
                if stem_words is not None:
                    return stem_words
                if stem in self._known:
                    return (stem,)
        if word in self._known:
            return (word,)
        for prefix in _PREFIXES:
            if word.startswith(prefix) and len(word) - len(prefix) >= 4:
                rest = word[len(prefix):]
                if rest in self._vocabulary:
                    return ("di" if prefix == "dr" else prefix, rest)
        corrected = self._correct(word)
        return (corrected,) if corrected else (word,)

    def _correct(self, word: str) -> Optional[str]:
        if not set(word[1:]) & _VOWELS and len(word) >= 3:
            return self._skeletons.get(word)
        if len(word) < 5:
            return None
        found = set()
        for variant in (word,) + _deletions(word):
            target = self._near.get(variant, "")
            if target is None:
                return None
            if target and target[0] == word[0]:
                found.add(target)
        if len(found) == 1:
            return found.pop()
        return None


def _deletions(word: str) -> Tuple[str, ...]:
    return tuple(word[:i] + word[i + 1:] for i in range(len(word)))


def _skeleton(word: str) -> str:
    return word[0] + "".join(c for c in word[1:] if c not in _VOWELS)


def _add_unique(table: Dict[str, Optional[str]], key: str, word: str) -> None:
    """Map ``key`` to ``word``; a key two different words share maps to None (ambiguous)."""
    if key in table and table[key] != word:
        table[key] = None
    else:
        table[key] = word
