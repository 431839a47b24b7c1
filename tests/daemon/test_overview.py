"""The watch feed's shared line: however many pages watch, the hub builds at most two a second."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from si.daemon.overview import FRESH, MAX_INTERVAL, MIN_INTERVAL, SharedLine, interval_of


async def test_watchers_within_half_a_second_share_one_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    built: list[float] = []

    async def build() -> bytes:
        built.append(trio.current_time())
        await trio.sleep(0.05)  # a thousand instances' /proc reads take a while
        return b"line %d\n" % len(built)

    shared = SharedLine(build)
    got: list[bytes] = []

    async def watcher(delay: float) -> None:
        await trio.sleep(delay)
        for _ in range(5):
            got.append(await shared.current())
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for delay in (0, 0.01, 0.2, 0.3, 0.45):  # five pages open at about the same time
            nursery.start_soon(watcher, delay)
    assert len(got) == 25
    assert shared.builds == 5  # one line a second for all of them
    assert all(b - a >= 1 - FRESH for a, b in itertools.pairwise(built))


async def test_a_line_older_than_fresh_is_built_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    count = 0

    async def build() -> bytes:
        nonlocal count
        count += 1
        return b"%d\n" % count

    shared = SharedLine(build)
    assert await shared.current() == b"1\n"
    await trio.sleep(FRESH / 2)
    assert await shared.current() == b"1\n"
    await trio.sleep(FRESH)
    assert await shared.current() == b"2\n"


def test_the_interval_is_kept_within_bounds() -> None:
    assert interval_of(None) == MIN_INTERVAL
    assert interval_of("0.01") == MIN_INTERVAL
    assert interval_of("5") == 5
    assert interval_of("1e9") == MAX_INTERVAL
    for bad in ("soon", "nan"):
        with pytest.raises(ValueError, match=r"number|could not convert"):
            interval_of(bad)
