"""What one load process measures, in one-second records.

Every locust process (the local runner, or each worker) has one Recorder.
Users add samples as they happen; once a second the process flushes a record
(a plain dict) that goes to the master as a locust custom message and ends up
as one line of `timeseries.jsonl` in the run's report folder. Buyers and the
host also append ledger entries (claims, releases, orders, deals) for the
outside correctness check.

Clock offsets: a user measures delivery latency as
`receive_time + offset - event.ts`, where `offset` is the server clock minus
ours. Each handshake gives one estimate, `welcome.server_time` minus the
midpoint of hello-sent and welcome-received, good to ± half the round trip.
Like NTP, the process keeps, per server node, the estimate with the smallest
round trip seen so far, so handshakes made under load do not spoil it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from loadtests.metrics import Hist


def now_ms() -> float:
    return time.time() * 1000.0


class ClockBook:
    def __init__(self) -> None:
        self.best: dict[str, tuple[float, float]] = {}  # node -> (rtt ms, offset ms)

    def observe(self, node: str, sent_ms: float, received_ms: float, server_time: float) -> None:
        rtt = max(0.0, received_ms - sent_ms)
        offset = float(server_time) - (sent_ms + received_ms) / 2
        best = self.best.get(node)
        if best is None or rtt < best[0]:
            self.best[node] = (rtt, offset)

    def offset(self, node: str | None) -> float:
        best = self.best.get(node or "")
        return best[1] if best else 0.0

    def uncertainty(self, node: str | None) -> float:
        best = self.best.get(node or "")
        return best[0] / 2 if best else 0.0

    def snapshot(self) -> dict[str, list[float]]:
        return {node: [round(off, 2), round(rtt, 2)] for node, (rtt, off) in self.best.items()}


class Recorder:
    def __init__(self, node: str) -> None:
        self.node = node
        self.clocks = ClockBook()
        self.conns: Counter[str] = Counter()  # open sockets by role (a gauge, never reset)
        self._reset()

    def _reset(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.events: Counter[str] = Counter()
        self.lat: defaultdict[str, Hist] = defaultdict(Hist)
        self.negative = 0
        self.handshakes = Hist()
        self.handshake_fail: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.reconnects = 0
        self.claims: defaultdict[str, Hist] = defaultdict(Hist)
        self.acks: defaultdict[str, Hist] = defaultdict(Hist)
        self.outcomes: Counter[str] = Counter()
        self.ledger: list[dict[str, Any]] = []

    # ---- samples -------------------------------------------------------

    def frame(self, size: int) -> None:
        self.frames += 1
        self.bytes += size

    def event(self, type_: str, latency_ms: float | None) -> None:
        self.events[type_] += 1
        if latency_ms is not None:
            if latency_ms < 0:
                self.negative += 1
            self.lat[type_].add(latency_ms)

    def handshake(self, ms: float) -> None:
        self.handshakes.add(ms)

    def claim(self, outcome: str, ms: float) -> None:
        self.claims[outcome].add(ms)

    def ack(self, name: str, ms: float) -> None:
        self.acks[name].add(ms)

    def outcome(self, name: str, n: int = 1) -> None:
        self.outcomes[name] += n

    def note(self, **entry: Any) -> None:
        """A ledger entry for the correctness check (claims, releases, orders, deals)."""
        self.ledger.append(entry)

    # ---- the one-second record -------------------------------------------

    def flush(self, t: float | None = None, cpu: float | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "t": round(t if t is not None else time.time(), 3), "node": self.node,
            "frames": self.frames, "bytes": self.bytes, "events": dict(self.events),
            "lat": {k: h.pairs() for k, h in self.lat.items()}, "negative": self.negative,
            "handshake": self.handshakes.pairs(), "handshake_fail": dict(self.handshake_fail),
            "closes": dict(self.closes), "reconnects": self.reconnects,
            "claims": {k: h.pairs() for k, h in self.claims.items()},
            "acks": {k: h.pairs() for k, h in self.acks.items()},
            "outcomes": dict(self.outcomes), "conns": dict(self.conns),
            "clocks": self.clocks.snapshot(), "cpu": cpu, "ledger": self.ledger,
        }
        self._reset()
        return record
