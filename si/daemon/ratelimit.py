"""Request limits per token on the TCP API (issue 16): a rate and a number in flight.

Sans-IO: ``TokenBucket.take(now)`` says whether a request may go now or in how many seconds
(the ``Retry-After`` of a 429); ``Limiter`` keeps one bucket and one in-flight count per key
(a token's id, or the peer's address when the hub runs without tokens). Tested with a fake
clock; the HTTP shell asks it per request.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

DEFAULT_RATE = 100.0  # requests per second, per token
DEFAULT_BURST = 200
DEFAULT_CONCURRENT = 64  # requests in flight per token (a stream being read counts as one)
DEFAULT_MAX_CONNECTIONS = 1024  # TCP connections at once, in all
# Buckets kept before idle ones are dropped (keys are tokens, or peers without tokens).
MAX_KEYS = 4096


@dataclasses.dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float | None:
        """Take one request's worth: None if it may go, else the seconds until it could."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate


@dataclasses.dataclass(frozen=True)
class Refused:
    message: str
    retry_after: int  # whole seconds, at least 1


class Limiter:
    def __init__(
        self,
        clock: Callable[[], float],
        rate: float = DEFAULT_RATE,
        burst: float = DEFAULT_BURST,
        concurrent: int = DEFAULT_CONCURRENT,
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.concurrent = concurrent
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}

    def begin(self, key: str) -> Refused | None:
        """A request of ``key`` arrives: None lets it in (call ``end`` after), else why not."""
        if self._in_flight.get(key, 0) >= self.concurrent:
            return Refused(f"more than {self.concurrent} requests at once with this token", 1)
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._forget_idle(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        if wait is not None:
            return Refused(
                f"over {self.rate:g} requests a second with this token",
                max(1, math.ceil(wait)),
            )
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return None

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have refilled: they hold nothing a new one would not."""
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.burst:
                del self._buckets[key]

    def end(self, key: str) -> None:
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
