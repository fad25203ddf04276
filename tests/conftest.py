"""
Test set-up shared by every test: trial's ``mktemp`` makes its directories under one temporary
directory for the run (removed at the end), not in the working tree.
"""

import atexit
import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

_ROOT = tempfile.mkdtemp(prefix="siaga-tests-")
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def _mktemp(self):
    """A new path (not created) in a fresh directory of its own, named after the test."""
    base = os.path.join(_ROOT, type(self).__module__[:32], type(self).__name__[:32], self._testMethodName[:32])
    os.makedirs(base, exist_ok=True)
    return os.path.join(tempfile.mkdtemp(dir=base), "temp")


SynchronousTestCase.mktemp = _mktemp
