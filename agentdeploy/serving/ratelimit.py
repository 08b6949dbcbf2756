"""`ai_gateway.rate_limits`: calls per minute per user or per endpoint, as token buckets.

A limit of N calls per minute is a bucket of N tokens refilled at N/60 per second: a burst of N
is allowed, then one call every 60/N seconds. A refused call learns how long until a token is
back (the `Retry-After` of its 429).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RateLimit", "EndpointRateLimiter"]


@dataclass(slots=True)
class RateLimit:
    key: str  # "user" or "endpoint"
    calls: int
    _buckets: dict[int, list[float]] = field(default_factory=dict)

    def take(self, who: int, now: float) -> float:
        """0 if the call may go ahead (and a token is taken), else the seconds until one is back."""
        if self.calls <= 0:
            return 60.0
        rate = self.calls / 60.0
        slot = who if self.key == "user" else 0
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = [float(self.calls), now]
        tokens = min(float(self.calls), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate


class EndpointRateLimiter:
    """Every rate limit of one endpoint; a call must pass all of them."""

    def __init__(self, config: list[dict[str, Any]] | None) -> None:
        self.config = config or []
        self.limits = [
            RateLimit(key=str(c.get("key") or "user"), calls=int(c.get("calls") or 0))
            for c in self.config
            if c.get("calls") is not None
        ]

    def __bool__(self) -> bool:
        return bool(self.limits)

    def check(self, principal_id: int) -> float:
        """0 if the call may go ahead, else the seconds to wait for the strictest limit."""
        now = time.monotonic()
        wait = 0.0
        for limit in self.limits:
            wait = max(wait, limit.take(principal_id, now))
        return wait
