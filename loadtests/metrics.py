"""Mergeable latency histograms and the per-second records the load processes send.

Pure Python, no gevent: the locust processes build these, the orchestrator
merges them for the summary and the charts.

A histogram keeps counts per bucket: exact milliseconds below 100 ms, then
two significant digits (110, 120 … 990, 1000, 1100 …), like locust's own
rounding, so p50/p99 are within ~5 % and histograms of many processes and
seconds merge by adding counts. On the wire a histogram is a list of
`[bucket, count]` pairs (locust's msgpack transport only allows string keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

Pairs = list[list[int]]


def bucket(ms: float) -> int:
    """The bucket a latency (milliseconds, may be fractional or negative) falls in."""
    if ms <= 0:
        return 0
    if ms < 100:
        return round(ms)
    digits = math.floor(math.log10(ms)) + 1
    step = 10 ** (digits - 2)
    return int(round(ms / step) * step)


class Hist:
    __slots__ = ("counts",)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = counts or {}

    def add(self, ms: float, n: int = 1) -> None:
        b = bucket(ms)
        self.counts[b] = self.counts.get(b, 0) + n

    def merge(self, other: Hist | Pairs | None) -> Hist:
        if other is None:
            return self
        items: Iterable[Any] = other.counts.items() if isinstance(other, Hist) else other
        for b, n in items:
            self.counts[int(b)] = self.counts.get(int(b), 0) + int(n)
        return self

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> int | None:
        """The smallest bucket with at least p (0..1) of the samples at or below it."""
        total = self.count
        if total == 0:
            return None
        need = max(1, math.ceil(p * total))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= need:
                return b
        return max(self.counts)

    def mean(self) -> float | None:
        total = self.count
        if total == 0:
            return None
        return sum(b * n for b, n in self.counts.items()) / total

    def max(self) -> int | None:
        return max(self.counts) if self.counts else None

    def pairs(self) -> Pairs:
        return [[b, n] for b, n in sorted(self.counts.items())]

    @classmethod
    def of(cls, pairs: Pairs | None) -> Hist:
        return cls().merge(pairs or [])

    def __bool__(self) -> bool:
        return bool(self.counts)


def merge_hists(hists: Iterable[Hist | Pairs | None]) -> Hist:
    out = Hist()
    for h in hists:
        out.merge(h)
    return out


# Event types that go through the show's stored event stream (they carry `seq`):
# their delivery latency is publish -> Redis -> hub -> socket -> client.
BROADCAST_TYPES = frozenset({
    "chat.message", "chat.deleted", "chat.pinned", "chat.unpinned", "product.pinned",
    "product.unpinned", "deal.started", "deal.ended", "announcement", "show.status",
})
# Generated per node on timers (no seq): their latency is node queue -> client.
TIMER_TYPES = frozenset({"deal.tick", "viewers", "reactions", "stats"})
