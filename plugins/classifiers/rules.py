"""
The default classifier: keyword rules. A first rule set; the full rule engine replaces it.
"""

import re

from zope.interface import implementer

from gateway.hookspecs import hookimpl
from gateway.interfaces import IClassifier
from gateway.message import EMERGENCY, NORMAL, Triage

_EMERGENCY_WORDS = {
    "fire": ("kebakaran", "terbakar", "api"),
    "flood": ("banjir",),
    "medical": ("pingsan", "ambulans", "ambulan", "sesak"),
    "traffic_accident": ("kecelakaan", "tabrakan", "laka"),
    "crime": ("perampokan", "begal", "penusukan"),
}


@implementer(IClassifier)
class KeywordClassifier:
    options = ()

    def __init__(self, name="rules", options=None, context=None):
        self.name = name

    def classify(self, message):
        words = set(re.findall(r"\w+", message.text.lower()))
        for category, keywords in _EMERGENCY_WORDS.items():
            hit = words.intersection(keywords)
            if hit:
                return Triage(EMERGENCY, category, 0.6, tuple(f"keyword:{w}" for w in sorted(hit)))
        return Triage(NORMAL, "complaint", 0.5, ("default",))


@hookimpl
def siaga_register_classifiers(register):
    register("rules", KeywordClassifier)
