"""The rule engine against the labelled corpus: recall and precision of emergencies."""

from twisted.trial.unittest import SynchronousTestCase

from gateway.triage import load_engine
from tests.gateway.triage import corpus


class CorpusTests(SynchronousTestCase):
    @classmethod
    def setUpClass(cls):
        cls.engine = load_engine()

    def test_size_and_shape(self):
        rows = corpus.load("all")
        heldout = corpus.load("heldout")
        self.assertGreaterEqual(len(rows), 400)
        self.assertGreaterEqual(len(heldout), 100)
        self.assertGreaterEqual(sum(r["hard"] for r in rows), len(rows) // 2)
        for row in rows:
            self.assertIn(row["priority"], ("emergency", "high", "normal", "low"))
            self.assertTrue(row["text"].strip())

    def test_whole_corpus(self):
        figures = corpus.measure(self.engine.classify_text, corpus.load("all"))
        print("\n" + figures.summary("whole corpus"))
        self.assertGreaterEqual(figures.recall, 0.98, figures.summary("whole corpus"))
        self.assertGreaterEqual(figures.precision, 0.92, figures.summary("whole corpus"))

    def test_heldout(self):
        figures = corpus.measure(self.engine.classify_text, corpus.load("heldout"))
        print("\n" + figures.summary("held-out"))
        self.assertGreaterEqual(figures.recall, 0.95, figures.summary("held-out"))
        self.assertGreaterEqual(figures.precision, 0.90, figures.summary("held-out"))
