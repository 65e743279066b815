"""Token bucket: pure, clock passed in, so it is testable without sleeping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens. Returns 0 on success, else seconds until possible."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else float("inf")
