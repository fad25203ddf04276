"""The rule classifier as a plugin, the ``siaga triage`` command, and never raising."""

import argparse
import io
import json
import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.hookspecs import hookimpl
from gateway.interfaces import IClassifier
from gateway.message import EMERGENCY, LOW, PRIORITIES, Message, Triage
from gateway.plugins import collect, make_plugin_manager
from gateway.triage import DEFAULT_PLACES_DIR, DEFAULT_RULES_DIR, TriageConfigError
from plugins.classifiers import rules as rules_plugin
from plugins.classifiers.rules import RuleClassifier


def message(text, **kwargs):
    return Message(channel_id="test", channel_type="test", sender="0812", text=text, **kwargs)


@implementer(IClassifier)
class EverythingIsLow:
    options = ()

    def __init__(self, name, options, context):
        self.name = name

    def classify(self, message):
        return Triage(LOW, "information", 1.0, ("everything-is-low",))


class OutsidePlugin:
    @hookimpl
    def siaga_register_classifiers(self, register):
        register("everything-is-low", EverythingIsLow)


class RegistrationTests(SynchronousTestCase):
    def test_rules_is_registered(self):
        registry = collect(make_plugin_manager(disabled=(), entry_points=False))
        self.assertIs(registry.classifiers["rules"].factory, RuleClassifier)
        self.assertIn("triage", registry.commands)

    def test_outside_classifier_through_the_hook(self):
        pm = make_plugin_manager(disabled=(), entry_points=False)
        pm.register(OutsidePlugin(), name="outside")
        registry = collect(pm)
        factory = registry.classifiers["everything-is-low"].factory
        self.assertEqual(registry.classifiers["everything-is-low"].plugin, "outside")
        self.assertIn("rules", registry.classifiers)
        result = factory("low", {}, None).classify(message("kebakaran"))
        self.assertEqual(result.priority, LOW)

    def test_options(self):
        names = {option.name: option for option in RuleClassifier.options}
        self.assertEqual(names["rules_dir"].default, str(DEFAULT_RULES_DIR))
        self.assertEqual(names["places_dir"].default, str(DEFAULT_PLACES_DIR))
        self.assertIsNone(names["rules_dir"].problem(str(DEFAULT_RULES_DIR)))
        self.assertIsNotNone(names["rules_dir"].problem("/nonexistent/rules"))

    def test_constructed_like_the_core_does(self):
        classifier = RuleClassifier("rules", {"rules_dir": str(DEFAULT_RULES_DIR),
                                              "places_dir": str(DEFAULT_PLACES_DIR)}, None)
        self.assertTrue(verifyObject(IClassifier, classifier))
        result = classifier.classify(message("kebakaran di bengalon, ada korban"))
        self.assertEqual((result.priority, result.category), (EMERGENCY, "fire"))
        self.assertEqual(result.location.name, "Bengalon")

    def test_bad_rules_directory_raises_at_start(self):
        self.assertRaises(TriageConfigError, RuleClassifier, "rules", {"rules_dir": self.mktemp()}, None)


ODD_STRINGS = [
    "", " ", "\n", "\x00", "\ud800", "\uffff", "🔥" * 1000, "a" * 10000, "!!!???", "2" * 50, "anak2" * 300,
    "ـــــ", "كهرباء", "火事", "𝕜𝕖𝕓𝕒𝕜𝕒𝕣𝕒𝕟", "k\u0301ebakaran", "di di di di", "nya nya", "\t\r\x0b",
    "tolong " * 500, "dibengalon" * 10, "\u200b\u200d\ufe0f", "ǅ", "ß" * 20, "İstanbul", "ﬁre",
]


class NeverRaisesTests(SynchronousTestCase):
    @classmethod
    def setUpClass(cls):
        cls.classifier = RuleClassifier("rules", {}, None)

    def check(self, text):
        result = self.classifier.classify(message(text))
        self.assertIn(result.priority, PRIORITIES)
        self.assertIsInstance(result.category, str)
        json.dumps(result.to_json())

    def test_odd_strings(self):
        for text in ODD_STRINGS:
            self.check(text)

    def test_fuzz_loop(self):
        rng = random.Random(20240601)
        alphabet = "aeiou kbtlgnr2!?.,🔥🆘🚑\u0301\x00\ud800éßİ" + "".join(chr(c) for c in range(0x370, 0x380))
        words = ["kebakaran", "tolong", "banjir", "tidak", "di", "sangatta", "sudah", "padam", "korban", "!!!"]
        for _ in range(2000):
            if rng.random() < 0.5:
                text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
            else:
                text = " ".join(rng.choice(words) for _ in range(rng.randrange(0, 15)))
            self.check(text)

    def test_hypothesis(self):
        try:
            from hypothesis import given, settings, strategies
        except ImportError:
            self.skipTest("hypothesis is not installed; the fuzz loop above covers odd text")

        @settings(max_examples=300, deadline=None)
        @given(strategies.text())
        def never_raises(text):
            self.check(text)

        never_raises()

    def test_a_broken_engine_still_answers(self):
        classifier = RuleClassifier("rules", {}, None)

        class Broken:
            def classify(self, message):
                raise RuntimeError("boom")

        classifier.engine = Broken()
        here = message("kebakaran").location
        result = classifier.classify(message("kebakaran"))
        self.assertEqual(result.reasons, ("error:classifier",))
        self.assertEqual(result.location, here)


class CommandTests(SynchronousTestCase):
    def parse(self, argv):
        parser = argparse.ArgumentParser()
        rules_plugin.add_arguments(parser)
        return parser.parse_args(argv)

    def run_command(self, argv, stdin=""):
        out = io.StringIO()
        code = rules_plugin.run(self.parse(argv), stdin=io.StringIO(stdin), stdout=out)
        return code, [json.loads(line) for line in out.getvalue().splitlines()]

    def test_arguments(self):
        code, lines = self.run_command(["kebakaran di bengalon", "jalan rusak"])
        self.assertEqual(code, 0)
        self.assertEqual([line["priority"] for line in lines], ["emergency", "normal"])
        for line in lines:
            self.assertTrue({"text", "priority", "category", "confidence", "reasons", "location"} <= set(line))
        self.assertEqual(lines[0]["location"]["name"], "Bengalon")
        self.assertEqual(lines[0]["location"]["source"], "gazetteer")

    def test_stdin_lines(self):
        code, lines = self.run_command([], stdin="banjir setinggi dada\nterima kasih pak\n")
        self.assertEqual(code, 0)
        self.assertEqual([line["category"] for line in lines], ["flood", "appreciation"])

    def test_config_section(self):
        config = self.mktemp()
        with open(config, "w", encoding="utf-8") as f:
            f.write(f"triage:\n  classifier: rules\n  rules_dir: {DEFAULT_RULES_DIR}\n  places_dir: {DEFAULT_PLACES_DIR}\n")
        code, lines = self.run_command(["--config", config, "kebakaran"])
        self.assertEqual(code, 0)
        self.assertEqual(lines[0]["category"], "fire")

    def test_config_without_triage_section(self):
        config = self.mktemp()
        with open(config, "w", encoding="utf-8") as f:
            f.write("store: {backend: sqlite}\n")
        code, lines = self.run_command(["--config", config, "kebakaran"])
        self.assertEqual((code, lines[0]["category"]), (0, "fire"))

    def test_bad_rules_directory_is_exit_2(self):
        config = self.mktemp()
        with open(config, "w", encoding="utf-8") as f:
            f.write("triage:\n  rules_dir: /nonexistent/rules\n")
        code, lines = self.run_command(["--config", config, "kebakaran"])
        self.assertEqual((code, lines), (2, []))

    def test_config_absent_from_args(self):
        args = self.parse(["kebakaran"])
        self.assertFalse(hasattr(args, "config"))
        args.config = None
        out = io.StringIO()
        self.assertEqual(rules_plugin.run(args, stdin=io.StringIO(), stdout=out), 0)
