"""
The triage decision: normalised words + compiled rules + gazetteer -> :class:`Triage`.

For one message:

1. normalise the text (:mod:`gateway.triage.normalise`) and scan it once with the rule index;
2. *evidence* per emergency category: each distinct ``strong`` phrase adds ``strong_weight``,
   each ``weak`` phrase ``weak_weight``, each pair whose two sides both occur ``pair_weight``;
   words inside a ``mask`` phrase (``banjir diskon``, ``tidak ada korban``) count for nothing;
3. *promotion*: the weight of every distinct ``promote`` group that fired, plus ``shout_weight``
   when the message shouts (``!!``, capitals, a held letter);
   *demotion*: the weight of every distinct ``demote`` group that fired;
4. with the best category's evidence ``E`` and ``score = E + promotion - demotion``:
   emergency when ``E >= emergency_evidence`` and ``score >= emergency_score``, or when some
   evidence is well supported (``E >= supported_evidence`` and ``score >= supported_score``:
   ``buaya`` with a child taken and a shout); high when there
   is some evidence, ``score >= high_score`` and nothing demoted; high ``other_emergency`` for a
   shouted cry (``TOLOOONG``) with nothing else said; otherwise the routing category with the
   most weight (or the category a demote/mask group names, or the default) at its priority.

``reasons`` lists every rule that fired (``fire:kebakaran``, ``promote.victim:terjebak``,
``demote.past:tahun lalu``, ``mask.figurative:banjir diskon``, ``route.complaint:rusak``,
``place:Bengalon``) and the decision (``decision:emergency``).
"""

from __future__ import annotations

from typing import Dict, List, Optional

from gateway.message import EMERGENCY, HIGH, Location, Triage
from gateway.triage.normalise import Normaliser
from gateway.triage.places import Gazetteer
from gateway.triage.rules import RuleSet

OTHER_EMERGENCY = "other_emergency"


class TriageEngine:
    """Pure and synchronous; :meth:`classify_text` takes microseconds."""

    def __init__(self, rules: RuleSet, gazetteer: Gazetteer):
        self.rules = rules
        self.gazetteer = gazetteer
        vocabulary = set(rules.vocabulary()) | set(gazetteer.vocabulary()) | set(rules.cry)
        lexicon = rules.lexicon
        self.normalise = Normaliser(lexicon["replace"], lexicon["emoji"], lexicon["known"], vocabulary)
        self._order = {name: i for i, name in enumerate(rules.emergency_categories)}
        self._route_order = {name: i for i, name in enumerate(rules.routing_categories)}
        if OTHER_EMERGENCY not in self._order:
            self._order[OTHER_EMERGENCY] = len(self._order)

    def classify_text(self, text: str, location: Optional[Location] = None) -> Triage:
        rules = self.rules
        scoring = rules.scoring
        normalised = self.normalise(text)
        tokens = normalised.tokens
        reasons: List[str] = []
        evidence: Dict[str, int] = {}
        seen = set()
        sides: Dict[int, int] = {}
        promote = 0
        promoted = set()
        demote = 0
        demoted: List[str] = []
        masked: List[str] = []
        route: Dict[str, int] = {}

        masked_spans = []
        for start, end, terms in rules.index.scan(tokens):
            for term in terms:
                if term in seen:
                    continue
                seen.add(term)
                kind = term.kind
                if kind == "evidence":
                    weight = scoring["strong_weight"] if term.strength == "strong" else scoring["weak_weight"]
                    evidence[term.group] = evidence.get(term.group, 0) + weight
                    reasons.append(term.reason)
                elif kind == "promote":
                    if term.group not in promoted:
                        promoted.add(term.group)
                        promote += term.weight
                    reasons.append(term.reason)
                elif kind == "demote":
                    if term.group not in demoted:
                        demoted.append(term.group)
                        demote += term.weight
                    reasons.append(term.reason)
                elif kind == "mask":
                    masked.append(term.group)
                    masked_spans.append((start, end))
                    reasons.append(term.reason)
                else:
                    route[term.group] = route.get(term.group, 0) + term.weight
                    reasons.append(term.reason)

        for start, _end, terms in rules.pair_index.scan(tokens):
            if masked_spans and any(a <= start < b for a, b in masked_spans):
                continue
            for term in terms:
                sides[term.pair] = sides.get(term.pair, 0) | (1 << term.side)
        for number, value in sides.items():
            if value == 3:
                pair = rules.pairs[number]
                weight = scoring["pair_weight"] if pair.weight is None else pair.weight
                evidence[pair.category] = evidence.get(pair.category, 0) + weight
                reasons.append(f"{pair.category}:{pair.name}")

        if normalised.shout:
            promote += scoring["shout_weight"]
            reasons.append("promote.shout")

        place = None
        if location is None:
            place = self.gazetteer.find(tokens)
            if place is not None:
                location = place.location()
                reasons.append(f"place:{place.label}")

        best = None
        best_evidence = 0
        for category, value in evidence.items():
            if value > best_evidence or (value == best_evidence and self._order[category] < self._order[best]):
                best, best_evidence = category, value
        best_evidence = min(best_evidence, scoring["evidence_cap"])
        score = best_evidence + promote - demote

        if best is not None and (
                (best_evidence >= scoring["emergency_evidence"] and score >= scoring["emergency_score"])
                or (best_evidence >= scoring["supported_evidence"] and score >= scoring["supported_score"])):
            confidence = min(0.99, 0.6 + 0.05 * score + (0.05 if promote else 0.0))
            reasons.append("decision:emergency")
            return Triage(EMERGENCY, best, round(confidence, 2), tuple(reasons), location)
        if best is not None and not demoted and score >= scoring["high_score"]:
            reasons.append("decision:high")
            return Triage(HIGH, best, round(min(0.8, 0.45 + 0.05 * score), 2), tuple(reasons), location)
        if (best is None and not demoted and not route and normalised.shout
                and not rules.cry.isdisjoint(tokens)):
            reasons.append("decision:cry")
            return Triage(HIGH, OTHER_EMERGENCY, 0.5, tuple(reasons), location)

        category = None
        if route:
            top = 0
            for name, value in route.items():
                if value > top or (value == top and self._route_order[name] < self._route_order[category]):
                    category, top = name, value
            confidence = min(0.9, 0.5 + 0.1 * top)
        else:
            confidence = 0.4
        priority = None
        for group in (rules.demote[g] for g in demoted):
            if group.category and category is None:
                category = group.category
            if group.priority and priority is None and (best is not None or masked):
                priority = group.priority
        for name in masked:
            group = rules.mask[name]
            if group.category and category is None:
                category = group.category
        if category is None:
            category = rules.default_category
        if priority is None:
            priority = rules.routing_priority[category]
        reasons.append(f"decision:{category}")
        return Triage(priority, category, round(confidence, 2), tuple(reasons), location)

    def classify(self, message) -> Triage:
        """The triage of a :class:`gateway.message.Message`; channel coordinates win over names."""
        text = getattr(message, "text", "") or ""
        return self.classify_text(text, getattr(message, "location", None))
