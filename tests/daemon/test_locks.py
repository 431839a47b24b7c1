"""Advisory locks on a fake clock."""

from __future__ import annotations

import pytest

from si.daemon.locks import LockBusy, Locks
from tests.fakeclock import FakeClock

pytestmark = pytest.mark.timeout(10)


def test_a_held_lock_refuses_another_and_says_who_holds_it() -> None:
    clock = FakeClock()
    locks = Locks(clock)
    held = locks.take("stack", "ci job 7", ttl=60)
    clock.now += 5
    with pytest.raises(LockBusy, match=r"held by ci job 7 for 5 s \(it lapses in 55 s"):
        locks.take("stack", "laptop", ttl=60)
    assert locks.take("other", "laptop", ttl=60).owner == "laptop"  # names are separate
    assert not locks.release("stack", "not-the-key")
    assert locks.release("stack", held.key)
    assert locks.take("stack", "laptop", ttl=60).owner == "laptop"


def test_a_lock_lapses_after_its_ttl() -> None:
    clock = FakeClock()
    locks = Locks(clock)
    old = locks.take("stack", "a crashed apply", ttl=10)
    clock.now += 11
    assert locks.take("stack", "the next", ttl=10).owner == "the next"
    assert not locks.release("stack", old.key)  # the lapsed key frees nothing


def test_a_ttl_is_bounded() -> None:
    clock = FakeClock()
    held = Locks(clock).take("stack", "x", ttl=10**9)
    assert held.until - held.since == 3600
