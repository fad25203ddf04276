"""
The benchmark's load generator: lean raw HTTP/1.1 over Twisted protocols (no HTTP client library,
so that the generator costs as little CPU as possible on a machine it shares with the server).

    python bench/load.py SPEC.json

The spec names the bodies to send and a list of phases, run one after the other:

- ``closed``: ``connections`` keep-alive connections each send the next POST as soon as the
  previous answer is in, for ``warmup + seconds``; the rate counts answers completed inside the
  ``seconds`` window (the ceiling and the accept throughput);
- ``count``: exactly ``count`` POSTs, as fast as ``connections`` connections allow (a backlog,
  end-to-end runs); a ``{"progress": n}`` line goes to stdout every ``progress_every`` answers;
- ``open``: an open-loop schedule: normal reports at ``rate``/s and, on connections of their own,
  emergencies at ``emergency_rate``/s, sent at their scheduled times whether or not earlier ones
  were answered (connections are opened as needed up to ``max_connections``; beyond that
  requests wait in the generator, which is reported). Each emergency's ``id`` is
  ``E<run>-<seq>-<send time in ns, time.monotonic_ns()>`` for the sink to compute the latency.

With ``cpu_pid``, the user+system CPU ticks of that process over the measured window are
reported. Every phase is bounded in time; the whole run stops by itself after ``hard_timeout``.
The last stdout line is ``{"results": [...]}``, one result per phase.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import time

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import ClientFactory, Protocol

_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)")


def now_ns() -> int:
    return time.monotonic_ns()


def cpu_ticks(pid):
    """utime + stime of ``pid`` in clock ticks, or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def parse_response(buf):
    """``(status, bytes consumed)`` of the first complete response in ``buf``, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    pos = end + 4
    if b"transfer-encoding: chunked" in head:
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                eol = buf.find(b"\r\n", pos)
                return None if eol < 0 else (status, eol + 2)
            if len(buf) < pos + size + 2:
                return None
            pos += size + 2
    match = _CONTENT_LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    if len(buf) < pos + length:
        return None
    return status, pos + length


def request_bytes(port, body: bytes) -> bytes:
    return (b"POST /channels/web/webhook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (port, len(body))) + body


class Connection(Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, pool):
        self.pool = pool
        self.buf = bytearray()
        self.callback = None

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.pool.made(self)

    def send(self, data, callback):
        self.callback = callback
        self.transport.write(data)

    def dataReceived(self, data):
        self.buf += data
        while self.callback is not None:
            parsed = parse_response(self.buf)
            if parsed is None:
                return
            status, used = parsed
            del self.buf[:used]
            callback, self.callback = self.callback, None
            callback(self, status)

    def connectionLost(self, reason):
        self.pool.lost(self)
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback(None, None)


class Pool(ClientFactory):
    """Connections to one port; ``ready(conn)`` is called when a connection is free for a request."""

    def __init__(self, port, ready):
        self.port = port
        self.ready = ready
        self.connections = set()
        self.connecting = 0
        self.failed = 0

    def buildProtocol(self, addr):
        return Connection(self)

    def open(self):
        self.connecting += 1
        reactor.connectTCP("127.0.0.1", self.port, self, timeout=10)

    def made(self, conn):
        self.connecting -= 1
        self.connections.add(conn)
        self.ready(conn)

    def lost(self, conn):
        self.connections.discard(conn)

    def clientConnectionFailed(self, connector, reason):
        self.connecting -= 1
        self.failed += 1

    def close(self):
        for conn in list(self.connections):
            conn.transport.loseConnection()


def percentiles(values):
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    values = sorted(values)
    return {"n": len(values), "p50": values[len(values) // 2],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))], "max": values[-1]}


class Bodies:
    def __init__(self, port, bodies):
        self.requests = [request_bytes(port, b.encode()) for b in bodies]
        self.i = 0

    def next(self):
        self.i += 1
        return self.requests[self.i % len(self.requests)]


def closed(spec, phase):
    """Back-to-back requests on a fixed number of connections; answers/s inside the window."""
    done = defer.Deferred()
    bodies = Bodies(phase["port"], spec["bodies"])
    start = now_ns() + int(phase.get("warmup", 0.5) * 1e9)
    end = start + int(phase["seconds"] * 1e9)
    codes = collections.Counter()
    latencies = []
    state = {"active": phase["connections"], "errors": 0, "cpu": [None, None], "all_ok": 0}

    def mark(i):
        state["cpu"][i] = cpu_ticks(phase.get("cpu_pid"))
    reactor.callLater(max(0.0, (start - now_ns()) / 1e9), mark, 0)
    reactor.callLater(max(0.0, (end - now_ns()) / 1e9), mark, 1)

    def free(conn):
        if now_ns() >= end:
            conn.transport.loseConnection()
            retire()
            return
        sent = now_ns()
        conn.send(bodies.next(), lambda c, status: answered(c, status, sent))

    def answered(conn, status, sent):
        t = now_ns()
        if status is not None and 200 <= status < 300:
            state["all_ok"] += 1
        if start <= t <= end:
            codes[status] += 1
            latencies.append((t - sent) / 1000.0)
        if conn is None:
            state["errors"] += 1
            retire()
            return
        free(conn)

    def retire():
        state["active"] -= 1
        if state["active"] == 0 and not done.called:
            reactor.callLater(0.05, finish)

    def finish():
        ok = sum(n for code, n in codes.items() if code is not None and 200 <= code < 300)
        seconds = (end - start) / 1e9
        cpu = state["cpu"]
        done.callback({"kind": "closed", "label": phase.get("label"), "seconds": seconds, "ok": ok,
                       "all_ok": state["all_ok"],
                       "rate": ok / seconds, "codes": {str(k): v for k, v in codes.items()},
                       "errors": state["errors"] + pool.failed,
                       "latency_us": percentiles(latencies),
                       "cpu_ticks": None if None in cpu else cpu[1] - cpu[0]})

    pool = Pool(phase["port"], free)
    for _ in range(phase["connections"]):
        pool.open()
    # Connections that could not be made never call free(): give up on them at the end.
    reactor.callLater((end - now_ns()) / 1e9 + 5.0, lambda: (not done.called) and finish())
    return done


def count(spec, phase):
    """Exactly ``count`` requests as fast as the connections allow."""
    done = defer.Deferred()
    bodies = Bodies(phase["port"], spec["bodies"])
    total = phase["count"]
    every = phase.get("progress_every") or 0
    deadline = now_ns() + int(phase.get("timeout", 600) * 1e9)
    state = {"next": 0, "ok": 0, "other": 0, "errors": 0, "shed": 0, "active": phase["connections"],
             "first": None, "last": None, "cpu0": cpu_ticks(phase.get("cpu_pid"))}

    def free(conn):
        if state["next"] >= total or now_ns() >= deadline:
            conn.transport.loseConnection()
            retire()
            return
        state["next"] += 1
        if state["first"] is None:
            state["first"] = now_ns()
        conn.send(bodies.next(), answered)

    def answered(conn, status):
        if status is not None and 200 <= status < 300:
            state["ok"] += 1
            state["last"] = now_ns()
            if every and state["ok"] % every == 0:
                emit({"progress": state["ok"]})
        elif status is None:
            state["errors"] += 1
        elif status == 503 and phase.get("retry_503"):
            # Shed under overload: send it again shortly, as a platform would.
            state["shed"] += 1
            state["next"] -= 1
            if conn is not None:
                reactor.callLater(0.05, free, conn)
                return
        else:
            state["other"] += 1
        if conn is None:
            retire()
            return
        free(conn)

    def retire():
        state["active"] -= 1
        if state["active"] == 0 and not done.called:
            finish()

    def finish():
        cpu1 = cpu_ticks(phase.get("cpu_pid"))
        seconds = ((state["last"] or now_ns()) - (state["first"] or now_ns())) / 1e9
        done.callback({"kind": "count", "label": phase.get("label"), "sent": state["next"], "ok": state["ok"],
                       "other": state["other"], "errors": state["errors"] + pool.failed, "shed_503": state["shed"],
                       "first_send_ns": state["first"], "last_ack_ns": state["last"],
                       "rate": state["ok"] / seconds if seconds > 0 else None,
                       "cpu_ticks": None if state["cpu0"] is None or cpu1 is None else cpu1 - state["cpu0"]})

    pool = Pool(phase["port"], free)
    for _ in range(phase["connections"]):
        pool.open()
    reactor.callLater(phase.get("timeout", 600) + 5.0, lambda: (not done.called) and finish())
    return done


class OpenStream:
    """One open-loop stream: requests at their scheduled times over connections opened as needed."""

    def __init__(self, port, max_connections, make_request):
        self.make_request = make_request
        self.queue = collections.deque()   # scheduled times waiting for a free connection
        self.idle = []
        self.pool = Pool(port, self._ready)
        self.max_connections = max_connections
        self.outstanding = 0
        self.codes = collections.Counter()
        self.ack_us = []          # answer time minus scheduled time
        self.send_late_us = []    # actual send minus scheduled time (generator's own delay)
        self.max_queued = 0

    def send(self, scheduled):
        self.outstanding += 1
        if self.idle:
            self._go(self.idle.pop(), scheduled)
            return
        self.queue.append(scheduled)
        self.max_queued = max(self.max_queued, len(self.queue))
        if len(self.pool.connections) + self.pool.connecting < self.max_connections:
            self.pool.open()

    def _ready(self, conn):
        if self.queue:
            self._go(conn, self.queue.popleft())
        else:
            self.idle.append(conn)

    def _go(self, conn, scheduled):
        sent = now_ns()
        self.send_late_us.append((sent - scheduled) / 1000.0)
        conn.send(self.make_request(sent), lambda c, status: self._answered(c, status, scheduled))

    def _answered(self, conn, status, scheduled):
        self.outstanding -= 1
        self.codes[status] += 1
        self.ack_us.append((now_ns() - scheduled) / 1000.0)
        if conn is not None:
            self._ready(conn)

    def result(self):
        ok = sum(n for code, n in self.codes.items() if code is not None and 200 <= code < 300)
        return {"sent": len(self.send_late_us), "ok": ok, "codes": {str(k): v for k, v in self.codes.items()},
                "unanswered": self.outstanding, "connect_failures": self.pool.failed,
                "connections": len(self.pool.connections), "max_queued_in_generator": self.max_queued,
                "ack_us": percentiles(self.ack_us), "send_late_us": percentiles(self.send_late_us)}


def open_loop(spec, phase):
    done = defer.Deferred()
    port = phase["port"]
    bodies = Bodies(port, spec["bodies"])
    texts = spec["emergency_texts"]
    run = spec.get("run", "0")
    rate, erate = float(phase.get("rate", 0)), float(phase.get("emergency_rate", 0))
    normal = OpenStream(port, phase.get("max_connections", 256), lambda sent: bodies.next())
    eseq = [0]

    def emergency_request(sent):
        eseq[0] += 1
        body = json.dumps({"sender": f"0813{eseq[0] % 100000000:08d}", "text": texts[eseq[0] % len(texts)],
                           "id": f"E{run}-{eseq[0]}-{sent}"}).encode()
        return request_bytes(port, body)
    emergency = OpenStream(port, 16, emergency_request)
    t0 = now_ns() + 50_000_000
    seconds = phase["seconds"]
    end = t0 + int(seconds * 1e9)
    n_total, e_total = int(rate * seconds), int(erate * seconds)
    state = {"n": 0, "e": 0, "cpu": [None, None]}

    def tick():
        t = now_ns()
        if t < t0:
            return
        if state["cpu"][0] is None:
            state["cpu"][0] = cpu_ticks(phase.get("cpu_pid"))
        elapsed = (t - t0) / 1e9
        due = min(n_total, int(elapsed * rate))
        while state["n"] < due:
            normal.send(t0 + int(state["n"] / rate * 1e9))
            state["n"] += 1
        edue = min(e_total, int(elapsed * erate) + (1 if erate else 0))
        while state["e"] < edue:
            emergency.send(t0 + int(state["e"] / erate * 1e9))
            state["e"] += 1
        if t >= end:
            loop.stop()
            state["cpu"][1] = cpu_ticks(phase.get("cpu_pid"))
            drain(now_ns() + int(phase.get("grace", 15) * 1e9))

    def drain(deadline):
        if (normal.outstanding or emergency.outstanding) and now_ns() < deadline:
            reactor.callLater(0.02, drain, deadline)
            return
        normal.pool.close()
        emergency.pool.close()
        cpu = state["cpu"]
        done.callback({"kind": "open", "label": phase.get("label"), "seconds": seconds, "rate": rate,
                       "emergency_rate": erate, "normal": normal.result(), "emergency": emergency.result(),
                       "accepted_rate": normal.result()["ok"] / seconds,
                       "cpu_ticks": None if None in cpu else cpu[1] - cpu[0]})

    loop = task.LoopingCall(tick)
    loop.start(0.001)
    return done


PHASES = {"closed": closed, "count": count, "open": open_loop}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@defer.inlineCallbacks
def run(spec):
    results = []
    try:
        for phase in spec["phases"]:
            result = yield PHASES[phase["kind"]](spec, phase)
            results.append(result)
            if phase.get("pause"):
                yield task.deferLater(reactor, phase["pause"], lambda: None)
    finally:
        emit({"results": results})
        reactor.stop()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    hard = spec.get("hard_timeout", 900)

    def give_up():
        emit({"error": f"load generator stopped after its hard timeout of {hard}s"})
        os._exit(3)
    reactor.callLater(hard, give_up)
    reactor.callWhenRunning(run, spec)
    reactor.run()


if __name__ == "__main__":
    main()
