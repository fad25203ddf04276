"""
Crash consistency: a process accepting messages is killed with SIGKILL; every accept whose
Deferred had fired (the moment the gateway answers 2xx) is on disk when the file is reopened.
"""

import os
import select
import signal
import sqlite3
import subprocess
import sys
import time

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from gateway.store.sqlite import SQLiteStore

_CHILD = r"""
import sys
from twisted.internet import defer, reactor
from gateway.message import EMERGENCY, NORMAL
from gateway.store.contract import _intake
from gateway.store.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1], reactor)

def fired(accepted):
    for one in accepted:
        sys.stdout.write(one.message.id + "\n")
    sys.stdout.flush()

@defer.inlineCallbacks
def run():
    yield store.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 0
    while True:
        batch = []
        for _ in range(20):
            priority = EMERGENCY if n % 7 == 0 else NORMAL
            intake = _intake("pesan %d" % n, priority=priority, external_id="e%d" % n, destinations=("a", "b"))
            batch.append(store.accept([intake]).addCallback(fired))
            n += 1
        yield defer.gatherResults(batch)

reactor.callWhenRunning(run)
reactor.run()
"""


class CrashTests(TestCase):
    timeout = 60

    def _run_and_kill(self, path, wanted):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, path], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        self.addCleanup(lambda: child.poll() is None and child.kill())
        fired, buffer, deadline = [], b"", time.monotonic() + 30
        while len(fired) < wanted and time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            fired.extend(line.decode() for line in lines if line and line != b"ready")
        os.kill(child.pid, signal.SIGKILL)
        rest, errors = child.communicate(timeout=10)
        # whatever the child wrote before it died had fired too; a cut-off last line had not been written whole
        for line in (buffer + rest).split(b"\n"):
            if len(line) == 26:
                fired.append(line.decode())
        self.assertEqual(child.returncode, -signal.SIGKILL)
        self.assertGreaterEqual(len(fired), wanted, errors.decode("utf-8", "replace")[-2000:])
        return fired

    @defer.inlineCallbacks
    def test_every_fired_accept_survives_sigkill(self):
        path = self.mktemp() + ".db"
        fired = self._run_and_kill(path, wanted=400)
        conn = sqlite3.connect(path)
        try:
            stored = {row[0] for row in conn.execute("SELECT id FROM messages")}
            orphans = conn.execute("SELECT COUNT(*) FROM messages m WHERE NOT EXISTS"
                                   " (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)").fetchone()[0]
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        missing = [message_id for message_id in fired if message_id not in stored]
        self.assertEqual(missing, [])
        self.assertEqual(orphans, 0, "a message is never stored without its deliveries")
        self.assertEqual(check, "ok")

        from twisted.internet import reactor
        store = SQLiteStore(path, reactor)
        yield store.start()
        self.addCleanup(store.stop)
        recovered = yield store.recover(time.time())
        self.assertGreater(recovered, 0, "the emergencies were in flight")
        depth = yield store.depth()
        self.assertEqual(sum(depth.values()), 2 * len(stored))
