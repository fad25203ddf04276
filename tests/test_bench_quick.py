"""
``make bench`` still runs: the quick mode of ``bench/run.py`` (tiny counts, a backlog of 2,000)
completes against the real daemon and writes a result file with every expected key. No speed is
asserted here; the figures live in BENCHMARKS.md.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("machine", "settings", "ceiling", "accept", "end_to_end", "emergency_latency", "triage",
        "resources", "targets")


class QuickBenchTests(SynchronousTestCase):
    def test_quick_run_writes_every_key(self):
        output = os.path.abspath(self.mktemp()) + ".json"
        run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--no-markdown",
                              "--output", output], cwd=ROOT, capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
        with open(output, encoding="utf-8") as f:
            result = json.load(f)
        for key in KEYS:
            self.assertIn(key, result)
        self.assertTrue(result["settings"]["quick"])
        self.assertGreater(result["accept"]["accepted_per_s"], 0)
        self.assertGreater(result["ceiling"]["requests_per_s"], 0)
        for condition in ("idle", "flood_50", "flood_90"):
            self.assertGreater(result["emergency_latency"][condition]["n"], 0, condition)
        backlog = result["resources"]["backlog"]
        self.assertEqual(backlog["accepted"], 2000)
        self.assertGreaterEqual(backlog["undelivered_in_store"], 2000)
        self.assertEqual([t["target"] for t in result["targets"]][0], "accept / ceiling >= 0.85")
