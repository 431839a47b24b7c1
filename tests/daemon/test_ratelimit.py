"""Request limits per token, on a fake clock."""

from __future__ import annotations

import pytest

from si.daemon.ratelimit import Limiter, Refused
from tests.fakeclock import FakeClock

pytestmark = pytest.mark.timeout(10)


def test_a_burst_goes_then_the_rate_holds_with_a_retry_after() -> None:
    clock = FakeClock(0.0)
    limiter = Limiter(clock, rate=10, burst=20, concurrent=1000)
    for _ in range(20):
        assert limiter.begin("t") is None
        limiter.end("t")
    refused = limiter.begin("t")
    assert isinstance(refused, Refused)
    assert refused.retry_after == 1
    clock.now += 0.1  # one request's worth at 10/s
    assert limiter.begin("t") is None
    assert isinstance(limiter.begin("t"), Refused)


def test_tokens_do_not_share_a_budget() -> None:
    limiter = Limiter(FakeClock(0.0), rate=1, burst=1, concurrent=10)
    assert limiter.begin("a") is None
    assert isinstance(limiter.begin("a"), Refused)
    assert limiter.begin("b") is None


def test_requests_in_flight_are_bounded_and_released() -> None:
    limiter = Limiter(FakeClock(0.0), rate=1000, burst=1000, concurrent=2)
    assert limiter.begin("t") is None
    assert limiter.begin("t") is None
    refused = limiter.begin("t")
    assert refused is not None
    assert "2 requests at once" in refused.message
    limiter.end("t")
    assert limiter.begin("t") is None


def test_a_slow_refill_gives_a_longer_retry_after() -> None:
    clock = FakeClock(0.0)
    limiter = Limiter(clock, rate=0.25, burst=1, concurrent=10)
    assert limiter.begin("t") is None
    refused = limiter.begin("t")
    assert refused is not None
    assert refused.retry_after == 4
