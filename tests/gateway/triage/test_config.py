"""Rule and place files are checked at load; an error names the file, the line and the key."""

import shutil
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from gateway.triage import DEFAULT_PLACES_DIR, DEFAULT_RULES_DIR, TriageConfigError, load_engine
from gateway.triage.rules import RULE_FILES


class ConfigErrorTests(SynchronousTestCase):
    def setUp(self):
        self.root = Path(self.mktemp())
        self.rules = self.root / "triage"
        self.places = self.root / "places"
        shutil.copytree(DEFAULT_RULES_DIR, self.rules)
        shutil.copytree(DEFAULT_PLACES_DIR, self.places)

    def write(self, path, text):
        path.write_text(text, encoding="utf-8")
        return path

    def error(self):
        return self.assertRaises(TriageConfigError, load_engine, self.rules, self.places)

    def test_copies_load(self):
        engine = load_engine(self.rules, self.places)
        self.assertEqual(engine.classify_text("kebakaran").category, "fire")

    def test_wrong_type_names_file_line_and_key(self):
        path = self.write(self.rules / "emergencies.yaml",
                          "categories:\n  fire:\n    strong: [kebakaran]\n    weak: 12\n")
        error = self.error()
        self.assertEqual(str(error), f"{path}:4: categories.fire.weak: expected a list, got 12")

    def test_empty_phrase(self):
        path = self.write(self.rules / "emergencies.yaml", "categories:\n  fire:\n    strong:\n      - kebakaran\n      - '!!'\n")
        self.assertIn(f"{path}:5: categories.fire.strong[1]:", str(self.error()))

    def test_unknown_key(self):
        path = self.write(self.rules / "emergencies.yaml", "categories:\n  fire:\n    strnog: [kebakaran]\n")
        self.assertIn(f"{path}:3: categories.fire.strnog: unknown key", str(self.error()))

    def test_bad_priority(self):
        text = (self.rules / "routing.yaml").read_text(encoding="utf-8")
        path = self.write(self.rules / "routing.yaml", text.replace("priority: low", "priority: urgent", 1))
        self.assertRegex(str(self.error()), rf"^{path}:\d+: categories\.spam\.priority: expected one of")

    def test_bad_scoring_value(self):
        text = (self.rules / "context.yaml").read_text(encoding="utf-8")
        path = self.write(self.rules / "context.yaml", text.replace("strong_weight: 3", "strong_weight: three"))
        self.assertRegex(str(self.error()), rf"^{path}:\d+: scoring\.strong_weight: expected an integer")

    def test_unknown_demote_category(self):
        text = (self.rules / "context.yaml").read_text(encoding="utf-8")
        path = self.write(self.rules / "context.yaml", text.replace("category: complaint", "category: nonsense", 1))
        self.assertRegex(str(self.error()), rf"^{path}:\d+: demote\.past\.category: expected a routing category")

    def test_duplicate_key(self):
        path = self.write(self.rules / "emergencies.yaml",
                          "categories:\n  fire:\n    strong: [a]\n  fire:\n    strong: [b]\n")
        self.assertEqual(str(self.error()), f"{path}:4: categories.fire: duplicate key")

    def test_not_yaml(self):
        path = self.write(self.rules / "lexicon.yaml", "replace: [unclosed\n")
        self.assertTrue(str(self.error()).startswith(f"{path}:"))

    def test_missing_file(self):
        (self.rules / "routing.yaml").unlink()
        self.assertIn(str(self.rules / "routing.yaml"), str(self.error()))

    def test_missing_required_key(self):
        path = self.write(self.rules / "routing.yaml", "categories:\n  complaint: {priority: normal, terms: [rusak]}\n")
        self.assertEqual(str(self.error()), f"{path}: default: missing (expected a string)")

    def test_multiword_replacement_key(self):
        path = self.write(self.rules / "lexicon.yaml", "replace:\n  slang:\n    tlg: tolong\n    mobil damkar: x\n")
        self.assertEqual(str(self.error()), f"{path}:4: replace.slang.mobil damkar: a replaced word must be one word")

    def test_bad_place(self):
        path = self.write(self.places / "kutai_timur.yaml",
                          "kecamatan:\n  - name: Bengalon\n    lat: 0.8\n")
        self.assertEqual(str(self.error()), f"{path}:3: kecamatan[0].lat: lat and lon go together")

    def test_places_directory_without_files(self):
        (self.places / "kutai_timur.yaml").unlink()
        self.assertIn("holds no *.yaml file", str(self.error()))

    def test_rule_files_listed(self):
        self.assertEqual(sorted(p.name for p in DEFAULT_RULES_DIR.glob("*.yaml")), sorted(RULE_FILES))
