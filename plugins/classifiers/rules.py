"""
The default classifier: the triage rule engine (:mod:`gateway.triage`), and the
``siaga triage`` command that runs it over texts.

Configuration (``triage:`` in the gateway configuration)::

    triage:
      classifier: rules
      rules_dir: config/triage     # optional; the rule files (default: the repository's)
      places_dir: config/places    # optional; the place lists (default: the repository's)
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import yaml
from zope.interface import implementer

from gateway.hookspecs import hookimpl
from gateway.interfaces import IClassifier
from gateway.message import NORMAL, Triage
from gateway.options import Option
from gateway.triage import DEFAULT_PLACES_DIR, DEFAULT_RULES_DIR, TriageConfigError, load_engine


def _directory(value):
    return None if Path(value).is_dir() else f"expected a directory, got {value!r}"


def _engine(rules_dir: str, places_dir: str):
    """The engine for these directories, loaded once per process while their files stay unchanged."""
    stamp = tuple((str(p), p.stat().st_mtime_ns) for d in (rules_dir, places_dir) for p in sorted(Path(d).glob("*.yaml")))
    return _load(rules_dir, places_dir, stamp)


@functools.lru_cache(maxsize=8)
def _load(rules_dir, places_dir, stamp):
    return load_engine(rules_dir, places_dir)


@implementer(IClassifier)
class RuleClassifier:
    """
    Keyword and context rules over normalised Indonesian, with a gazetteer for locations.
    Built once at start-up (a bad rule file raises :class:`TriageConfigError`); ``classify``
    is pure and never raises.
    """

    options = (
        Option("rules_dir", str, default=str(DEFAULT_RULES_DIR), check=_directory,
               doc="Directory of the triage rule files (lexicon, emergencies, context, routing)."),
        Option("places_dir", str, default=str(DEFAULT_PLACES_DIR), check=_directory,
               doc="Directory of the place lists (*.yaml) of the gazetteer."),
    )

    def __init__(self, name="rules", options=None, context=None):
        options = dict(options or {})
        self.name = name
        self.engine = _engine(str(options.get("rules_dir") or DEFAULT_RULES_DIR),
                              str(options.get("places_dir") or DEFAULT_PLACES_DIR))

    def classify(self, message):
        try:
            return self.engine.classify(message)
        except Exception:
            # The contract: never raise on the ingest path. A message the rules cannot read is
            # kept and routed as an ordinary complaint, with its channel location if any.
            return Triage(NORMAL, "complaint", 0.0, ("error:classifier",), getattr(message, "location", None))


def add_arguments(parser):
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="gateway configuration whose 'triage:' section configures the classifier")
    parser.add_argument("text", nargs="*", help="texts to triage (default: each line of standard input)")


def triage_options(config_path):
    """The classifier options of the ``triage:`` section of ``config_path`` (without ``classifier``)."""
    if not config_path:
        return {}
    with open(config_path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    section = data.get("triage") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise TriageConfigError(f"{config_path}: triage: expected a mapping")
    options = {k: v for k, v in section.items() if k != "classifier"}
    base = Path(config_path).resolve().parent
    for key in ("rules_dir", "places_dir"):
        if isinstance(options.get(key), str) and not Path(options[key]).is_absolute():
            candidate = Path(options[key])
            options[key] = str(candidate if candidate.exists() else base / candidate)
    return options


def run(args, stdin=None, stdout=None):
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    try:
        classifier = RuleClassifier("rules", triage_options(getattr(args, "config", None)), None)
    except (TriageConfigError, OSError, yaml.YAMLError) as e:
        print(f"siaga triage: {e}", file=sys.stderr)
        return 2
    texts = list(args.text) if getattr(args, "text", None) else (line.rstrip("\n") for line in stdin)
    from gateway.message import Message

    for text in texts:
        message = Message(channel_id="cli", channel_type="cli", sender="cli", text=text)
        result = classifier.classify(message).to_json()
        stdout.write(json.dumps(dict(text=text, **result), ensure_ascii=False) + "\n")
    return 0


@hookimpl
def siaga_register_classifiers(register):
    register("rules", RuleClassifier)


@hookimpl
def siaga_register_commands(register):
    register("triage", add_arguments, run)
