"""
The triage rules, compiled from the YAML files of a rules directory into one phrase index.

Four files, each checked at load (a mistake raises :class:`TriageConfigError` naming the file,
the line and the key):

- ``lexicon.yaml``: how to normalise words (see :mod:`gateway.triage.normalise`).
- ``emergencies.yaml``: the emergency categories, in order of precedence; each has ``strong``
  phrases (enough alone), ``weak`` phrases (a hint) and ``pairs`` (two word lists that together
  are as good as a strong phrase: ``api`` with ``rumah``). Pair phrases have an index of their
  own, scanned separately, so ``air`` still counts for a pair inside the phrase ``air naik``.
- ``context.yaml``: ``scoring`` numbers, ``promote`` groups (a victim, a danger now), ``demote``
  groups (past, resolved, prevention, elsewhere, aid questions ...), ``mask`` groups (figurative
  phrases whose words must not count: ``banjir diskon``) and ``cry`` words.
- ``routing.yaml``: the categories of everything that is not an emergency, each with phrases.

A compiled :class:`RuleSet` only matches; :mod:`gateway.triage.engine` decides.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from gateway.message import PRIORITIES
from gateway.triage.config import Document, TriageConfigError, load
from gateway.triage.normalise import squeeze_phrase
from gateway.triage.phrases import PhraseIndex

RULE_FILES = ("lexicon.yaml", "emergencies.yaml", "context.yaml", "routing.yaml")

_SCORING_DEFAULTS = {
    "strong_weight": 3,
    "weak_weight": 1,
    "pair_weight": 3,
    "emergency_evidence": 3,
    "emergency_score": 3,
    "supported_evidence": 1,
    "supported_score": 4,
    "evidence_cap": 5,
    "high_score": 1,
    "shout_weight": 1,
}


@dataclasses.dataclass(frozen=True, eq=False)
class Term:
    """
    What a matched phrase means (compared by identity: each term is one rule entry).
    ``kind``: ``evidence`` (for emergency category ``group``), ``pair`` (side ``side`` of
    pair ``pair`` of category ``group``), ``promote``, ``demote``, ``mask`` or ``route``.
    ``label`` is the phrase as written in the rule file.
    """

    kind: str
    group: str
    label: str
    weight: int = 0
    strength: str = ""
    pair: int = -1
    side: int = -1
    reason: str = dataclasses.field(init=False)

    def __post_init__(self):
        if self.kind == "evidence":
            reason = f"{self.group}:{self.label}"
        else:
            reason = f"{self.kind}.{self.group}:{self.label}"
        object.__setattr__(self, "reason", reason)


@dataclasses.dataclass(frozen=True)
class Pair:
    category: str
    name: str
    weight: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Group:
    """A promote, demote, mask or routing group: its weight and where it sends the message."""

    name: str
    weight: int
    category: Optional[str] = None
    priority: Optional[str] = None


@dataclasses.dataclass
class RuleSet:
    lexicon: Dict[str, dict]
    emergency_categories: Tuple[str, ...]
    routing_categories: Tuple[str, ...]
    routing_priority: Dict[str, str]
    default_category: str
    pairs: Tuple[Pair, ...]
    promote: Dict[str, Group]
    demote: Dict[str, Group]
    mask: Dict[str, Group]
    cry: frozenset
    scoring: Dict[str, int]
    index: PhraseIndex
    pair_index: PhraseIndex

    def vocabulary(self):
        """Every word some rule phrase uses."""
        yield from self.index.words()
        yield from self.pair_index.words()


def load_rules(directory: Path) -> RuleSet:
    """Load and check the four rule files of ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TriageConfigError(f"{directory}: not a directory of triage rules")
    lexicon_doc, emergencies_doc, context_doc, routing_doc = (load(directory / n) for n in RULE_FILES)
    index = PhraseIndex()
    pair_index = PhraseIndex()
    lexicon = _lexicon(lexicon_doc)

    emergency_categories, pairs = _emergencies(emergencies_doc, index, pair_index)
    routing, routing_priority, default = _routing(routing_doc, index)
    overlap = set(emergency_categories) & set(routing)
    if overlap:
        raise routing_doc.error(("categories", sorted(overlap)[0]), "is also an emergency category")
    promote, demote, mask, cry, scoring = _context(context_doc, index, set(routing))
    index.freeze()
    pair_index.freeze()
    return RuleSet(lexicon, emergency_categories, routing, routing_priority, default, pairs,
                   promote, demote, mask, cry, scoring, index, pair_index)


def _lexicon(doc: Document) -> Dict[str, dict]:
    doc.get((), dict)
    doc.check_keys((), ("replace", "emoji", "known"))
    replace: Dict[str, str] = {}
    sections = doc.get(("replace",), dict)
    for section, table in sections.items():
        table = doc.get(("replace", section), dict)
        for word, replacement in table.items():
            key = ("replace", section, word)
            if not isinstance(word, str) or not word.strip() or " " in word.strip():
                raise doc.error(key, "a replaced word must be one word")
            if not isinstance(replacement, str) or not replacement.strip():
                raise doc.error(key, f"expected the replacement words as a string, got {replacement!r}")
            if word in replace and replace[word] != replacement:
                raise doc.error(key, f"already replaced by {replace[word]!r} in another section")
            replace[word] = replacement
    emoji = doc.get(("emoji",), dict, required=False, default={})
    for char, words in emoji.items():
        if not isinstance(words, str) or not words.strip():
            raise doc.error(("emoji", char), f"expected the words an emoji stands for, got {words!r}")
    known = doc.strings(("known",), required=False)
    return {"replace": replace, "emoji": emoji, "known": known}


def _phrases(doc: Document, key_path, index: PhraseIndex, make_term) -> List[str]:
    phrases = doc.strings(key_path, required=False)
    for i, phrase in enumerate(phrases):
        words = squeeze_phrase(phrase)
        if not words:
            raise doc.error(key_path + (i,), f"phrase {phrase!r} has no words")
        index.add(words, make_term(phrase))
    return phrases


def _emergencies(doc: Document, index: PhraseIndex, pair_index: PhraseIndex):
    doc.get((), dict)
    doc.check_keys((), ("categories",))
    categories = doc.get(("categories",), dict)
    if not categories:
        raise doc.error(("categories",), "expected at least one category")
    pairs: List[Pair] = []
    for name in categories:
        base = ("categories", name)
        doc.get(base, dict)
        doc.check_keys(base, ("description", "strong", "weak", "pairs"))
        found = _phrases(doc, base + ("strong",), index, lambda p, n=name: Term("evidence", n, p, strength="strong"))
        found += _phrases(doc, base + ("weak",), index, lambda p, n=name: Term("evidence", n, p, strength="weak"))
        for i, _ in enumerate(doc.get(base + ("pairs",), list, required=False, default=[])):
            key = base + ("pairs", i)
            doc.get(key, dict)
            doc.check_keys(key, ("name", "weight", "a", "b"))
            pair_name = doc.get(key + ("name",), str)
            number = len(pairs)
            pairs.append(Pair(name, pair_name, doc.get(key + ("weight",), int, required=False)))
            for side, side_key in enumerate(("a", "b")):
                if not doc.strings(key + (side_key,)):
                    raise doc.error(key + (side_key,), "expected at least one phrase")
                _phrases(doc, key + (side_key,), pair_index,
                         lambda p, n=name, num=number, s=side: Term("pair", n, p, pair=num, side=s))
            found.append(pair_name)
        if not found:
            raise doc.error(base, "expected strong, weak or pairs phrases")
    return tuple(categories), tuple(pairs)


def _routing(doc: Document, index: PhraseIndex):
    doc.get((), dict)
    doc.check_keys((), ("default", "categories"))
    categories = doc.get(("categories",), dict)
    priorities = {}
    for name in categories:
        base = ("categories", name)
        doc.get(base, dict)
        doc.check_keys(base, ("description", "priority", "weight", "terms"))
        priority = doc.get(base + ("priority",), str)
        if priority not in PRIORITIES:
            raise doc.error(base + ("priority",), f"expected one of {', '.join(PRIORITIES)}, got {priority!r}")
        weight = doc.get(base + ("weight",), int, required=False, default=1)
        priorities[name] = priority
        _phrases(doc, base + ("terms",), index, lambda p, n=name, w=weight: Term("route", n, p, w))
    default = doc.get(("default",), str)
    if default not in categories:
        raise doc.error(("default",), f"expected one of the categories, got {default!r}")
    return tuple(categories), priorities, default


def _context(doc: Document, index: PhraseIndex, routing: set):
    doc.get((), dict)
    doc.check_keys((), ("scoring", "promote", "demote", "mask", "cry"))
    scoring = dict(_SCORING_DEFAULTS)
    if "scoring" in doc.data:
        doc.check_keys(("scoring",), tuple(_SCORING_DEFAULTS))
    for key in _SCORING_DEFAULTS:
        scoring[key] = doc.get(("scoring", key), int, required=False, default=scoring[key])
    groups = {}
    for kind in ("promote", "demote", "mask"):
        groups[kind] = {}
        for name in doc.get((kind,), dict):
            base = (kind, name)
            doc.get(base, dict)
            doc.check_keys(base, ("description", "weight", "category", "priority", "terms"))
            weight = doc.get(base + ("weight",), int, required=(kind != "mask"), default=0)
            category = doc.get(base + ("category",), str, required=False)
            if category is not None and category not in routing:
                raise doc.error(base + ("category",), f"expected a routing category, got {category!r}")
            priority = doc.get(base + ("priority",), str, required=False)
            if priority is not None and priority not in PRIORITIES:
                raise doc.error(base + ("priority",), f"expected one of {', '.join(PRIORITIES)}, got {priority!r}")
            groups[kind][name] = Group(name, weight, category, priority)
            if not doc.strings(base + ("terms",)):
                raise doc.error(base + ("terms",), "expected at least one phrase")
            _phrases(doc, base + ("terms",), index, lambda p, k=kind, n=name, w=weight: Term(k, n, p, w))
    cry = frozenset(w for phrase in doc.strings(("cry",), required=False) for w in squeeze_phrase(phrase))
    return groups["promote"], groups["demote"], groups["mask"], cry, scoring
