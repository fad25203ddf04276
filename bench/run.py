"""
Siaga's end-to-end benchmark (``make bench``; ``make bench QUICK=1`` for a seconds-long smoke run).

It starts, all on 127.0.0.1 and each in a process group of its own:

- the real daemon (``twistd -n siaga``) with a temporary configuration: the ``web`` channel, the
  default SQLite store in a temporary directory, and two ``webhook`` destinations, ``cad112``
  (emergencies) and ``lapor`` (everything else), pointing at
- two sink processes (``bench/sink.py``): 200 to every delivery; the emergency one stamps arrival times;
- the reference (``bench/reference.py``): the most trivial twisted.web resource answering the same POST;
- the load generator (``bench/load.py``), one process per step.

and measures, in one run:

a. the ceiling: POSTs/s the reference answers (closed loop, same generator, same connections);
b. Siaga's accepted reports/s (202 after the durable commit) and b/a;
c. end-to-end reports/s (first send until the last delivery reached the sink) and c/a;
d. emergency latency (send -> arrival at the emergency sink) idle and under an open-loop flood of
   ordinary reports at 50% and 90% of (b), and the ratios to idle;
e. triage time per message (``bench/triage_bench.py``);
f. daemon CPU microseconds per accepted report, peak RSS, and RSS while a backlog of undelivered
   reports piles up in the store (the ordinary sink answers 503).

Reference and Siaga are measured alternately in short slices and medians of the per-pair ratios are
quoted: the machine is shared and noisy. Results go to ``bench/results/latest.json`` (``quick.json``
with ``--quick``) and, for full runs, into the tables of ``BENCHMARKS.md``. ``--profile`` adds a
py-spy profile of the daemon under a 90% flood (after the measurements, so it does not bias them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
BIN = os.path.dirname(PY)
CLK_TCK = os.sysconf("SC_CLK_TCK")

FULL = dict(slices=5, slice_seconds=3.0, warmup=0.5, connections=32, e2e_pairs=3, e2e_count=5000,
            latency_rounds=2, latency_seconds=6.0, emergency_rate=20.0, backlog=100_000, drain_timeout=180.0,
            settle=2.0)
QUICK = dict(slices=1, slice_seconds=0.4, warmup=0.1, connections=16, e2e_pairs=1, e2e_count=100,
             latency_rounds=1, latency_seconds=0.4, emergency_rate=20.0, backlog=2000, drain_timeout=30.0,
             settle=0.2)

#: Keys every result file has (the quick test checks them).
RESULT_KEYS = ("machine", "settings", "ceiling", "accept", "end_to_end", "emergency_latency", "triage",
               "resources", "targets")


def log(text):
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- processes --------------------------------------------------------------------------------

class Proc:
    """A child process in its own session (process group), stopped with its whole group."""

    def __init__(self, name, argv, directory, env=None):
        self.name = name
        self.log_path = os.path.join(directory, f"{name}.log")
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, env=dict(os.environ, **(env or {})))
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=15.0):
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines=30):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port_file(proc, path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return int(Path(path).read_text())
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not start within {timeout}s:\n{proc.tail()}")


def http(method, url, timeout=10.0):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sink_stats(port):
    return json.loads(http("GET", f"http://127.0.0.1:{port}/stats")[1])


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid):
    """CPU ticks per thread name of ``pid``: the store's writer thread and the rest (the reactor)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw.rsplit(b")", 1)[1].split()
        name = "reactor" if tid == str(pid) else "other threads"
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def memory_kb(pid):
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def run_load(directory, spec, timeout, on_progress=None):
    """Run bench/load.py on ``spec``; return its per-phase results."""
    path = os.path.join(directory, "load-spec.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(spec, hard_timeout=timeout), f)
    popen = subprocess.Popen([PY, str(BENCH / "load.py"), path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=directory, start_new_session=True, text=True)
    results, error = None, None
    try:
        for line in popen.stdout:
            message = json.loads(line)
            if "progress" in message and on_progress is not None:
                on_progress(message["progress"])
            elif "results" in message:
                results = message["results"]
            elif "error" in message:
                error = message["error"]
        popen.wait(timeout + 10)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    if results is None or len(results) != len(spec["phases"]):
        raise RuntimeError(f"load generator failed ({error}): {popen.stderr.read()[-2000:]}")
    return results


# -- the system under test ----------------------------------------------------------------------

def write_config(directory, port, emergency_port, normal_port, store="sqlite"):
    path = os.path.join(directory, "gateway.yaml")
    store_block = (f"{{backend: sqlite, path: {directory}/siaga.db, synchronous: NORMAL}}" if store == "sqlite"
                   else "{backend: memory}")
    with open(path, "w") as f:
        f.write(textwrap.dedent(f"""\
            listen: ["tcp:{port}:interface=127.0.0.1"]
            log_format: text
            state_dir: {directory}/state
            store: {store_block}
            triage: {{classifier: rules}}
            channels:
              web: {{type: web}}
            destinations:
              cad112: {{type: webhook, url: "http://127.0.0.1:{emergency_port}/emergency", timeout: 5}}
              lapor: {{type: webhook, url: "http://127.0.0.1:{normal_port}/normal", timeout: 5, batch_size: 50}}
            routes:
              - when: {{priority: emergency}}
                to: [cad112]
              - to: [lapor]
            dispatch: {{emergency_concurrency: 32, concurrency: 8, max_attempts: 12}}
            """))
    return path


def wait_ready(daemon, port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"twistd exited:\n{daemon.tail()}")
        try:
            if http("GET", f"http://127.0.0.1:{port}/health/ready", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"twistd not ready within {timeout}s:\n{daemon.tail()}")


def rule_classifier():
    from plugins.classifiers.rules import RuleClassifier
    return RuleClassifier("rules", {}, None)


def corpus_bodies(classifier):
    """Ordinary reports and emergency texts from the triage corpus, as the classifier sees them."""
    from gateway.message import EMERGENCY, Message
    normal, emergency = [], []
    for name in ("dev.jsonl", "heldout.jsonl"):
        with open(ROOT / "tests" / "data" / "triage" / name, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                text = json.loads(line)["text"]
                priority = classifier.classify(Message(channel_id="web", channel_type="web", sender="0",
                                                       text=text)).priority
                (emergency if priority == EMERGENCY else normal).append(text)
    bodies = [json.dumps({"sender": f"0812{i:08d}", "text": text}) for i, text in enumerate(normal)]
    return bodies, emergency


def triage_figures(classifier, quick):
    sys.path.insert(0, str(BENCH))
    import triage_bench

    from gateway.message import Message
    texts = triage_bench.corpus()
    messages = [Message(channel_id="bench", channel_type="bench", sender="0", text=t) for t in texts]
    for message in messages:
        classifier.classify(message)
    median, p99 = triage_bench.report("RuleClassifier.classify (warm)",
                                      triage_bench.timings(classifier.classify, messages, 1 if quick else 20))
    return {"median_us": round(median, 2), "p99_us": round(p99, 2), "messages": len(messages)}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pct(values):
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    values = sorted(values)
    return {"n": len(values), "p50_ms": round(values[len(values) // 2] / 1000, 3),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] / 1000, 3),
            "max_ms": round(values[-1] / 1000, 3)}


def ratio(a, b, digits=3):
    return round(a / b, digits) if a is not None and b else None


class Bench:
    def __init__(self, args):
        self.args = args
        self.s = QUICK if args.quick else FULL
        self.directory = tempfile.mkdtemp(prefix="siaga-bench-")
        self.procs = []
        self.source = None
        self.normal_expected = 0   # ordinary reports accepted so far: what the lapor sink must get
        self.result = {}

    # the pieces

    def spawn(self, name, argv, env=None):
        if self.source and env is None:
            env = {"PYTHONPATH": self.source}
        proc = Proc(name, argv, self.directory, env)
        self.procs.append(proc)
        return proc

    def start_all(self):
        ports = {}
        for role in ("emergency", "normal"):
            port_file = os.path.join(self.directory, f"sink-{role}.port")
            proc = self.spawn(f"sink-{role}", [PY, str(BENCH / "sink.py"), "--role", role, "--port-file", port_file])
            ports[role] = wait_for_port_file(proc, port_file)
        port_file = os.path.join(self.directory, "reference.port")
        proc = self.spawn("reference", [PY, str(BENCH / "reference.py"), "--port-file", port_file])
        self.reference_port = wait_for_port_file(proc, port_file)
        self.reference_pid = proc.pid
        self.emergency_port, self.normal_port = ports["emergency"], ports["normal"]
        self.port = free_port()
        config = write_config(self.directory, self.port, self.emergency_port, self.normal_port, self.args.store)
        twistd = [os.path.join(BIN, "twistd")]
        if self.args.switch_interval:
            # An experiment only: the interpreter's GIL switch interval (default 5 ms), set before twistd runs.
            twistd = [PY, "-c", f"import sys; sys.setswitchinterval({self.args.switch_interval}); "
                      "from twisted.scripts.twistd import run; run()"]
        self.daemon = self.spawn("twistd", twistd + ["-n", "--pidfile=", "siaga", "--config", config])
        wait_ready(self.daemon, self.port)
        self.pid = self.daemon.pid
        log(f"daemon pid {self.pid} on port {self.port}; reference on {self.reference_port}; "
            f"sinks {self.emergency_port} (emergency), {self.normal_port} (ordinary)")

    def stop_all(self):
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                log(f"stopping {proc.name} failed: {e}")

    def load(self, phases, timeout, on_progress=None):
        spec = {"bodies": self.bodies, "emergency_texts": self.emergency_texts, "run": str(os.getpid()),
                "phases": phases}
        results = run_load(self.directory, spec, timeout, on_progress)
        for phase, result in zip(phases, results):
            if phase["port"] == self.port:
                if phase["kind"] == "open":
                    self.normal_expected += result["normal"]["ok"]
                else:
                    self.normal_expected += result.get("all_ok", result["ok"])
        return results

    def closed(self, port, label, seconds=None, cpu_pid=None):
        return {"kind": "closed", "port": port, "label": label, "seconds": seconds or self.s["slice_seconds"],
                "warmup": self.s["warmup"], "connections": self.s["connections"], "cpu_pid": cpu_pid}

    def drained(self, timeout=None):
        """Wait until the ordinary sink has every ordinary report accepted so far; seconds waited."""
        started = time.monotonic()
        deadline = started + (timeout or self.s["drain_timeout"])
        while time.monotonic() < deadline:
            if sink_stats(self.normal_port)["count"] >= self.normal_expected:
                return time.monotonic() - started
            if not self.daemon.alive():
                raise RuntimeError(f"twistd exited:\n{self.daemon.tail()}")
            time.sleep(0.05)
        got = sink_stats(self.normal_port)["count"]
        raise RuntimeError(f"only {got} of {self.normal_expected} ordinary reports delivered within the timeout")

    # the steps

    def warm_up(self):
        seconds = 0.2 if self.args.quick else 1.0
        self.load([self.closed(self.reference_port, "warm-ref", seconds), self.closed(self.port, "warm-siaga", seconds)],
                  timeout=60)
        self.drained()

    def throughput(self):
        """(a) and (b), alternating slices; daemon CPU per accepted report."""
        pairs = []
        for i in range(self.s["slices"]):
            ref, = self.load([self.closed(self.reference_port, "reference", cpu_pid=self.reference_pid)], timeout=60)
            ticks0, threads0 = cpu_ticks(self.pid), thread_ticks(self.pid)
            siaga, = self.load([self.closed(self.port, "siaga", cpu_pid=self.pid)], timeout=60)
            threads1 = thread_ticks(self.pid)
            drain_seconds = self.drained()
            ticks_all = cpu_ticks(self.pid) - ticks0
            per_thread = {name: ratio((threads1[name] - threads0.get(name, 0)) * 1e6 / CLK_TCK, siaga["all_ok"], 1)
                          for name in threads1}
            pairs.append({"reference": ref["rate"], "siaga": siaga["rate"], "ratio": ratio(siaga["rate"], ref["rate"]),
                          "siaga_codes": siaga["codes"], "siaga_errors": siaga["errors"],
                          "reference_errors": ref["errors"], "siaga_latency_us": siaga["latency_us"],
                          "reference_latency_us": ref["latency_us"],
                          "cpu_us_per_accept": ratio(siaga["cpu_ticks"] * 1e6 / CLK_TCK, siaga["ok"], 1),
                          "cpu_us_per_accept_by_thread": per_thread,
                          "reference_cpu_us_per_request": ratio(ref["cpu_ticks"] * 1e6 / CLK_TCK, ref["ok"], 1),
                          "cpu_us_per_report_incl_delivery": ratio(ticks_all * 1e6 / CLK_TCK, siaga["ok"], 1),
                          "drain_seconds": round(drain_seconds, 2)})
            log(f"slice {i + 1}: reference {ref['rate']:.0f}/s, siaga {siaga['rate']:.0f}/s "
                f"(ratio {pairs[-1]['ratio']}), {pairs[-1]['cpu_us_per_accept']} us CPU/accept, "
                f"drained in {drain_seconds:.1f}s")
        self.ceiling = median(p["reference"] for p in pairs)
        self.accept_rate = median(p["siaga"] for p in pairs)
        self.result["ceiling"] = {"requests_per_s": round(self.ceiling, 1), "slices": [round(p["reference"], 1)
                                                                                      for p in pairs]}
        self.result["accept"] = {"accepted_per_s": round(self.accept_rate, 1),
                                 "ratio_to_ceiling": median(p["ratio"] for p in pairs), "pairs": pairs}
        self.cpu_us_per_accept = median(p["cpu_us_per_accept"] for p in pairs)
        self.reference_cpu_us = median(p["reference_cpu_us_per_request"] for p in pairs)
        self.cpu_us_per_report = median(p["cpu_us_per_report_incl_delivery"] for p in pairs)

    def end_to_end(self):
        """(c): N reports from the first send until the last one reached the sink, alternating with the reference."""
        pairs = []
        for i in range(self.s["e2e_pairs"]):
            ref, = self.load([self.closed(self.reference_port, "reference")], timeout=60)
            before = sink_stats(self.normal_port)
            ticks0 = cpu_ticks(self.pid)
            run, = self.load([{"kind": "count", "port": self.port, "label": "e2e", "count": self.s["e2e_count"],
                               "connections": self.s["connections"], "timeout": 120, "retry_503": True}],
                             timeout=180)
            self.drained()
            ticks = cpu_ticks(self.pid) - ticks0
            after = sink_stats(self.normal_port)
            seconds = (after["last_ns"] - run["first_send_ns"]) / 1e9
            rate = run["ok"] / seconds
            pairs.append({"reference": ref["rate"], "delivered": after["count"] - before["count"], "accepted": run["ok"],
                          "deliveries_per_request": ratio(after["count"] - before["count"],
                                                          after["requests"] - before["requests"], 1),
                          "shed_503_and_resent": run.get("shed_503"),
                          "seconds": round(seconds, 3), "rate": rate, "accept_rate": run["rate"],
                          "ratio": ratio(rate, ref["rate"]),
                          "cpu_us_per_report": ratio(ticks * 1e6 / CLK_TCK, run["ok"], 1)})
            log(f"end-to-end {i + 1}: {run['ok']} reports in {seconds:.2f}s = {rate:.0f}/s "
                f"(reference {ref['rate']:.0f}/s, ratio {pairs[-1]['ratio']})")
        self.result["end_to_end"] = {"delivered_per_s": round(median(p["rate"] for p in pairs), 1),
                                     "ratio_to_ceiling": median(p["ratio"] for p in pairs),
                                     "deliveries_per_request": median(p["deliveries_per_request"] for p in pairs),
                                     "cpu_us_per_report": median(p["cpu_us_per_report"] for p in pairs),
                                     "pairs": pairs}

    def latency(self):
        """(d): emergencies at a low rate, idle and under open-loop floods at 50% and 90% of (b)."""
        b, c = self.accept_rate, self.result["end_to_end"]["delivered_per_s"]
        # The last one is not a target: a flood the daemon can also deliver, at 90% of (c).
        conditions = {"idle": 0.0, "flood_50": 0.5 * b, "flood_90": 0.9 * b, "flood_90_of_e2e": 0.9 * c}
        samples = {name: [] for name in conditions}
        floods = {name: [] for name in conditions}
        for _ in range(self.s["latency_rounds"]):
            for name, rate in conditions.items():
                http("POST", f"http://127.0.0.1:{self.emergency_port}/reset")
                rate = round(rate, 1)
                phase = {"kind": "open", "port": self.port, "label": name, "seconds": self.s["latency_seconds"],
                         "rate": rate, "emergency_rate": self.s["emergency_rate"], "max_connections": 256,
                         "cpu_pid": self.pid, "grace": 15}
                result, = self.load([phase], timeout=self.s["latency_seconds"] + 60)
                sent = result["emergency"]["ok"]
                deadline = time.monotonic() + 15
                while sink_stats(self.emergency_port)["count"] < sent and time.monotonic() < deadline:
                    time.sleep(0.05)
                stats = sink_stats(self.emergency_port)
                samples[name].extend(stats["latencies_us"])
                floods[name].append({"offered_per_s": rate, "accepted_per_s": round(result["accepted_rate"], 1),
                                     "normal": result["normal"], "emergency_acks": result["emergency"],
                                     "emergencies_arrived": stats["count"],
                                     "cpu_share_of_one_core": ratio(result["cpu_ticks"] / CLK_TCK,
                                                                    self.s["latency_seconds"])})
                self.drained()
                got = pct(stats["latencies_us"])
                log(f"latency {name} (offered {rate}/s, accepted {result['accepted_rate']:.0f}/s): "
                    f"p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms, max {got['max_ms']} ms, n={got['n']}")
        out = {name: dict(pct(samples[name]), runs=floods[name]) for name in conditions}
        idle = out["idle"]
        for name in ("flood_50", "flood_90", "flood_90_of_e2e"):
            out[name]["ratio_to_idle"] = {k: ratio(out[name][f"{k}_ms"], idle[f"{k}_ms"], 2) for k in ("p50", "p99", "max")}
        self.result["emergency_latency"] = out

    def profile(self, seconds):
        """
        py-spy profiles of the daemon: a closed-loop accept burst (what (b) measures) and an
        open-loop flood at 90% of (b) with emergencies (what (d) measures).
        """
        spy = os.path.join(BIN, "py-spy")
        if not os.path.exists(spy):
            self.result["profile"] = {"error": "py-spy is not installed in the venv (.venv/bin/pip install py-spy)"}
            return
        flood = {"kind": "open", "port": self.port, "label": "profile", "seconds": seconds,
                 "rate": round(self.accept_rate * 0.9, 1), "emergency_rate": self.s["emergency_rate"],
                 "max_connections": 256, "grace": 15}
        burst = dict(self.closed(self.port, "profile", seconds), warmup=0.0)
        self.result["profile"] = {}
        os.makedirs(BENCH / "results", exist_ok=True)
        for name, phase in (("accept_burst", burst), ("flood_90", flood)):
            raw = os.path.join(self.directory, f"profile-{name}.txt")
            recorder = self.spawn(f"py-spy-{name}", [spy, "record", "--pid", str(self.pid), "--duration",
                                                     str(int(seconds)), "--rate", "200", "--format", "raw",
                                                     "--output", raw, "--nonblocking"])
            time.sleep(1.0)
            result, = self.load([phase], timeout=seconds + 60)
            recorder.popen.wait(seconds + 30)
            self.drained()
            accepted = result.get("all_ok") or result.get("normal", {}).get("ok")
            self.result["profile"][name] = dict(summarise_profile(raw), accepted=accepted)
            with open(raw, encoding="utf-8", errors="replace") as f, \
                    open(BENCH / "results" / f"profile-{name}.json", "w", encoding="utf-8") as out:
                json.dump({"format": "py-spy raw (collapsed stacks, samples at 200 Hz)",
                           "stacks": f.read().splitlines()}, out)

    def backlog(self):
        """(f): a backlog of undelivered ordinary reports; RSS sampled as it grows."""
        memory = memory_kb(self.pid)
        hwm_before = memory["VmHWM"]
        http("POST", f"http://127.0.0.1:{self.normal_port}/refuse")
        samples = [{"accepted": 0, "rss_kb": memory["VmRSS"]}]
        total = self.s["backlog"]

        def progress(n):
            samples.append({"accepted": n, "rss_kb": memory_kb(self.pid)["VmRSS"]})
        started = time.monotonic()
        run, = self.load([{"kind": "count", "port": self.port, "label": "backlog", "count": total,
                           "connections": self.s["connections"], "timeout": 600, "progress_every": total // 10,
                           "retry_503": True,
                           "cpu_pid": self.pid}], timeout=660, on_progress=progress)
        elapsed = time.monotonic() - started
        time.sleep(self.s["settle"])
        memory = memory_kb(self.pid)
        samples.append({"accepted": run["ok"], "rss_kb": memory["VmRSS"], "after_settle": True})
        first = next((s for s in samples if s["accepted"] >= total // 10), samples[0])
        end = samples[-1]["rss_kb"]
        self.backlog_result = {
            "reports": total, "accepted": run["ok"], "shed_503_and_resent": run.get("shed_503"),
            "seconds": round(elapsed, 1),
            "accepted_per_s": round(run["rate"] or 0, 1),
            "cpu_us_per_accept_sink_down": ratio(run["cpu_ticks"] * 1e6 / CLK_TCK, run["ok"], 1),
            "rss_before_kb": samples[0]["rss_kb"], "rss_at_10pct_kb": first["rss_kb"], "rss_after_kb": end,
            "growth_kb": end - samples[0]["rss_kb"], "growth_from_10pct_kb": end - first["rss_kb"],
            "growth_bytes_per_report": round((end - samples[0]["rss_kb"]) * 1024 / max(run["ok"], 1), 2),
            "samples": samples, "sink_refused": sink_stats(self.normal_port)["refused"],
        }
        self.peak_before_backlog = hwm_before
        self.peak_after = memory["VmHWM"]
        log(f"backlog: {run['ok']} accepted in {elapsed:.1f}s; RSS {samples[0]['rss_kb'] / 1024:.1f} -> "
            f"{end / 1024:.1f} MB")

    def store_counts(self):
        """Deliveries by lane and state, read from the database once the daemon has stopped."""
        conn = sqlite3.connect(os.path.join(self.directory, "siaga.db"))
        try:
            rows = conn.execute("SELECT priority, state, COUNT(*) FROM deliveries GROUP BY priority, state").fetchall()
        finally:
            conn.close()
        return {f"{priority}/{state}": n for priority, state, n in rows}

    # the whole run

    def run(self):
        s = self.s
        if self.args.rev:
            self.source = export(self.args.rev, os.path.join(self.directory, "src"), self.args.patch)
            sys.path.insert(0, self.source)
        self.result["machine"] = machine(self.args.rev)
        self.result["settings"] = dict(s, quick=self.args.quick, command=command_line(self.args))
        log("triage")
        classifier = rule_classifier()
        self.result["triage"] = triage_figures(classifier, self.args.quick)
        self.bodies, self.emergency_texts = corpus_bodies(classifier)
        self.result["settings"]["corpus"] = {"ordinary_bodies": len(self.bodies),
                                             "emergency_texts": len(self.emergency_texts)}
        try:
            self.start_all()
            if not self.args.quick:
                self.warm_up()
            log("throughput: reference and siaga, alternating")
            self.throughput()
            log("end to end")
            self.end_to_end()
            log("emergency latency")
            self.latency()
            if self.args.profile:
                log(f"profile under a 90% flood ({self.args.profile}s)")
                self.profile(self.args.profile)
            log(f"backlog of {s['backlog']}")
            self.backlog()
            log_bytes = os.path.getsize(self.daemon.log_path)
        finally:
            self.stop_all()
        counts = self.store_counts() if self.args.store == "sqlite" else {}
        pending = sum(n for key, n in counts.items() if key.endswith("/pending") or key.endswith("/in_flight"))
        self.result["resources"] = {
            "cpu_us_per_accept": self.cpu_us_per_accept,
            "reference_cpu_us_per_request": self.reference_cpu_us,
            "cpu_us_per_report_incl_delivery": self.cpu_us_per_report,
            "peak_rss_kb_before_backlog": self.peak_before_backlog,
            "peak_rss_kb": self.peak_after,
            "backlog": dict(self.backlog_result, undelivered_in_store=pending, deliveries_by_state=counts),
            "daemon_log_bytes": log_bytes,
        }
        self.result["targets"] = targets(self.result)
        return self.result

    def clean_up(self):
        if self.args.keep:
            log(f"kept {self.directory}")
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


def summarise_profile(path, top=15):
    """
    Own ("self") and total samples per function from py-spy's raw (collapsed) output, split by
    thread: the store's writer thread (stacks through ``SQLiteStore._run``) and the reactor.
    """
    own, total, threads, samples = {}, {}, {}, 0
    frame_name = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            samples += n
            thread = "writer" if "SQLiteStore._run" in stack else "reactor"
            threads[thread] = threads.get(thread, 0) + n
            frames = []
            for frame in stack.split(";"):
                m = frame_name.match(frame)
                name = f"[{thread}] {m.group(1)} ({shorten(m.group(2))})" if m else f"[{thread}] {frame}"
                if name not in frames:
                    frames.append(name)
            for name in frames:
                total[name] = total.get(name, 0) + n
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + n

    def ranked(table, keep=lambda name: True):
        rows = [(k, v) for k, v in sorted(table.items(), key=lambda kv: -kv[1]) if keep(k)]
        return [{"function": k, "samples": v, "share": round(v / samples, 4)} for k, v in rows[:top]]
    ours = ("gateway/", "plugins/", "twisted/logger", "treq/", "json/", "email/")
    return {"samples": samples, "seconds_of_cpu": round(samples / 200.0, 2), "threads": threads,
            "top_self": ranked(own), "top_total": ranked(total),
            "top_total_project": ranked(total, lambda k: any(m in k for m in ours))}


def shorten(path):
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def targets(r):
    lat = r["emergency_latency"]
    backlog = r["resources"]["backlog"]
    rows = [
        ("accept / ceiling >= 0.85", r["accept"]["ratio_to_ceiling"], lambda v: v >= 0.85),
        ("end-to-end >= 2000 reports/s", r["end_to_end"]["delivered_per_s"], lambda v: v >= 2000),
        ("emergency p99 under 90% flood <= 3x idle p99", lat["flood_90"]["ratio_to_idle"]["p99"], lambda v: v <= 3),
        ("triage median < 50 us", r["triage"]["median_us"], lambda v: v < 50),
        ("RSS after the backlog within 10% of RSS at 10% of it",
         ratio(backlog["rss_after_kb"], backlog["rss_at_10pct_kb"]), lambda v: v <= 1.10),
    ]
    return [{"target": name, "value": value, "met": bool(value is not None and ok(value))} for name, value, ok in rows]


def export(rev, directory, patches=()):
    """
    The tree of git revision ``rev`` unpacked into ``directory`` (the daemon then runs that code),
    with ``patches`` (unified diffs, ``a/`` and ``b/`` prefixes) applied: a proposed change is
    measured without touching the working tree.
    """
    os.makedirs(directory)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True,
                             timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True, timeout=60)
    for patch in patches or ():
        subprocess.run(["patch", "-p1", "--batch", "--silent", "-d", directory, "-i", os.path.abspath(patch)],
                       check=True, timeout=60)
    return directory


def machine(rev=None):
    import twisted
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", rev or "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        if rev is None and subprocess.run(["git", "status", "--porcelain", "--", "gateway", "plugins"], cwd=ROOT,
                                          capture_output=True, text=True, timeout=10).stdout.strip():
            commit += "+uncommitted"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "twisted": twisted.__version__, "kernel": platform.release(), "commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": os.getloadavg()}


def command_line(args):
    if not (args.switch_interval or args.store != "sqlite" or args.patch):
        words = ["make bench"] + (["QUICK=1"] if args.quick else []) + (["PROFILE=1"] if args.profile else [])
        return " ".join(words + ([f"REV={args.rev}"] if args.rev else []))
    words = [".venv/bin/python bench/run.py"] + (["--quick"] if args.quick else [])
    words += [f"--profile {args.profile:g}"] if args.profile else []
    words += [f"--rev {args.rev}"] if args.rev else []
    words += [f"--patch {os.path.relpath(p, ROOT)}" for p in args.patch]
    words += [f"--store {args.store}"] if args.store != "sqlite" else []
    words += [f"--switch-interval {args.switch_interval:g}"] if args.switch_interval else []
    return " ".join(words)


# -- BENCHMARKS.md ------------------------------------------------------------------------------

def fmt(value, digits=0, unit=""):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def markdown_tables(r):
    m, lat, res = r["machine"], r["emergency_latency"], r["resources"]
    b = res["backlog"]
    lines = [
        f"Measured {m['date']} on {m['nproc']} x {m['cpu']}, Python {m['python']}, Twisted {m['twisted']}, "
        f"commit {m['commit']}, load average before the run {m['load_average'][0]:.2f}; "
        f"command `{r['settings']['command']}`.",
        "",
        "| | measure | result |",
        "|---|---|---|",
        f"| a | ceiling: trivial twisted.web POST | {fmt(r['ceiling']['requests_per_s'])} requests/s |",
        f"| b | accepted (202 after commit) | {fmt(r['accept']['accepted_per_s'])} reports/s, "
        f"ratio to (a) {fmt(r['accept']['ratio_to_ceiling'], 2)} |",
        f"| c | end-to-end (send -> sink) | {fmt(r['end_to_end']['delivered_per_s'])} reports/s, "
        f"ratio to (a) {fmt(r['end_to_end']['ratio_to_ceiling'], 2)}; "
        f"{fmt(r['end_to_end'].get('deliveries_per_request'), 1)} reports per request to the sink |",
    ]
    for name, label in (("idle", "idle"), ("flood_50", "flood at 50% of (b)"), ("flood_90", "flood at 90% of (b)"),
                        ("flood_90_of_e2e", "flood at 90% of (c)")):
        x = lat[name]
        extra = ""
        if "ratio_to_idle" in x:
            q = x["ratio_to_idle"]
            accepted = median(run["accepted_per_s"] for run in x["runs"])
            extra = (f"; x idle: p50 {fmt(q['p50'], 1)}, p99 {fmt(q['p99'], 1)}, max {fmt(q['max'], 1)}; "
                     f"flood accepted {fmt(accepted)}/s")
        lines.append(f"| d | emergency latency, {label} | p50 {fmt(x['p50_ms'], 1)} ms, p99 {fmt(x['p99_ms'], 1)} ms, "
                     f"max {fmt(x['max_ms'], 1)} ms (n={x['n']}){extra} |")
    lines += [
        f"| e | triage per message | median {fmt(r['triage']['median_us'], 1)} us, p99 {fmt(r['triage']['p99_us'], 1)} us |",
        f"| f | daemon CPU per accepted report | {fmt(res['cpu_us_per_accept'])} us (accept slices); "
        f"{fmt(res['cpu_us_per_report_incl_delivery'])} us incl. its delivery; the reference: "
        f"{fmt(res.get('reference_cpu_us_per_request'))} us per request |",
        f"| f | peak RSS (VmHWM) | {fmt(res['peak_rss_kb_before_backlog'] / 1024, 1)} MB before the backlog, "
        f"{fmt(res['peak_rss_kb'] / 1024, 1)} MB after |",
        f"| f | RSS with a backlog of {b['reports']:,} undelivered | {fmt(b['rss_before_kb'] / 1024, 1)} MB before, "
        f"{fmt(b['rss_at_10pct_kb'] / 1024, 1)} MB at 10%, {fmt(b['rss_after_kb'] / 1024, 1)} MB after "
        f"({fmt(b['undelivered_in_store'])} undelivered in the store; accepted at {fmt(b['accepted_per_s'])}/s "
        f"with the sink down) |",
        "",
        "| target | value | met |",
        "|---|---|---|",
    ]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {fmt(t['value'], 2)} | {'yes' if t['met'] else 'NO'} |")
    for name, profile in sorted((r.get("profile") or {}).items()):
        if "top_self" not in profile:
            continue
        lines += ["", f"Profile `{name}` (py-spy, 200 Hz, {profile['samples']} samples = "
                      f"{profile['seconds_of_cpu']} s busy, {profile['accepted']} reports accepted; "
                      f"threads {profile['threads']}):", "",
                  "| own time | function | | total time | function (project, logging, HTTP client) |",
                  "|---|---|---|---|---|"]
        for own, total in zip(profile["top_self"][:10], profile["top_total_project"][:10]):
            lines.append(f"| {own['share'] * 100:.1f}% | `{own['function']}` | | {total['share'] * 100:.1f}% | "
                         f"`{total['function']}` |")
    return "\n".join(lines)


def history_row(r):
    m, lat = r["machine"], r["emergency_latency"]
    return (f"| {m['date']} | {m['commit']} | {fmt(r['ceiling']['requests_per_s'])} | "
            f"{fmt(r['accept']['accepted_per_s'])} ({fmt(r['accept']['ratio_to_ceiling'], 2)}) | "
            f"{fmt(r['end_to_end']['delivered_per_s'])} ({fmt(r['end_to_end']['ratio_to_ceiling'], 2)}) | "
            f"{fmt(lat['idle']['p99_ms'], 1)} / {fmt(lat['flood_90']['p99_ms'], 1)} | "
            f"{fmt(r['triage']['median_us'], 1)} | {fmt(r['resources']['cpu_us_per_accept'])} | "
            f"{fmt(r['resources']['backlog']['rss_before_kb'] / 1024, 1)} -> "
            f"{fmt(r['resources']['backlog']['rss_after_kb'] / 1024, 1)} |")


def update_markdown(path, r):
    text = Path(path).read_text(encoding="utf-8")
    start, end = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    text = f"{before}{start}\n{markdown_tables(r)}\n{end}{after}"
    marker = "<!-- bench:history:next -->"
    text = text.replace(marker, history_row(r) + "\n" + marker)
    Path(path).write_text(text, encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that the benchmark runs")
    parser.add_argument("--output", help="result file (default bench/results/latest.json, quick.json with --quick)")
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="also profile the daemon with py-spy under a 90%% flood for SECONDS")
    parser.add_argument("--rev", help="run the daemon on this git revision (exported to the temporary directory) "
                                      "instead of the working tree")
    parser.add_argument("--patch", action="append", default=[], metavar="DIFF",
                        help="with --rev: apply this diff to the exported tree first (repeatable)")
    parser.add_argument("--switch-interval", type=float, default=None, metavar="SECONDS",
                        help="experiment: run the daemon with sys.setswitchinterval(SECONDS)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite",
                        help="experiment: 'memory' isolates the cost of SQLite and its writer thread (not durable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args(argv)
    if args.patch and not args.rev:
        parser.error("--patch needs --rev (the working tree is never modified)")
    output = args.output or str(BENCH / "results" / ("quick.json" if args.quick else "latest.json"))

    def terminate(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    bench = Bench(args)
    try:
        result = bench.run()
    finally:
        bench.clean_up()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    log(f"wrote {output}")
    if not args.quick and not args.no_markdown:
        update_markdown(ROOT / "BENCHMARKS.md", result)
        log("updated BENCHMARKS.md")
    print(markdown_tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
