"""
Emergency triage of citizens' messages: normalisation of social-media Indonesian
(:mod:`.normalise`), rules compiled from ``config/triage/`` (:mod:`.rules`), a gazetteer from
``config/places/`` (:mod:`.places`) and the decision (:mod:`.engine`).

``load_engine()`` builds a :class:`TriageEngine` from the repository's rule and place files (or
the directories given); a bad file raises :class:`TriageConfigError` naming file, line and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import gateway
from gateway.triage.config import TriageConfigError
from gateway.triage.engine import TriageEngine
from gateway.triage.places import load_places
from gateway.triage.rules import load_rules

CONFIG_DIR = Path(gateway.__file__).resolve().parent.parent / "config"
DEFAULT_RULES_DIR = CONFIG_DIR / "triage"
DEFAULT_PLACES_DIR = CONFIG_DIR / "places"

__all__ = ["TriageConfigError", "TriageEngine", "load_engine", "DEFAULT_RULES_DIR", "DEFAULT_PLACES_DIR"]


def load_engine(rules_dir: Optional[Union[str, Path]] = None,
                places_dir: Optional[Union[str, Path]] = None) -> TriageEngine:
    """A triage engine from the rule files of ``rules_dir`` and place lists of ``places_dir``."""
    rules = load_rules(Path(rules_dir) if rules_dir else DEFAULT_RULES_DIR)
    places = load_places(Path(places_dir) if places_dir else DEFAULT_PLACES_DIR)
    return TriageEngine(rules, places)
