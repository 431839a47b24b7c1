"""EventBoard: last, next, and what waiters get when the instance ends."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from si.daemon.events import EventBoard

pytestmark = pytest.mark.timeout(10)


async def test_next_waits_for_the_next_message_and_last_or_next_takes_the_last() -> None:
    board = EventBoard()
    got: list[object] = []

    async def wait_next() -> None:
        got.append(await board.next("tick"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_next)
        await trio.testing.wait_all_tasks_blocked()
        board.publish("tick", 1)
    assert got == [1]
    assert await board.last_or_next("tick") == 1


async def test_waiters_are_answered_none_when_the_instance_ends() -> None:
    board = EventBoard()
    board.publish("tick", 1)
    got: list[object] = []

    async def wait(name: str) -> None:
        got.append(await board.next(name))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "tick")  # had a message before: still not that one
        nursery.start_soon(wait, "never")
        await trio.testing.wait_all_tasks_blocked()
        board.close()
    assert got == [None, None]
    # Asked after the end: answered at once.
    assert await board.next("tick") is None
    assert await board.last_or_next("never") is None
    assert await board.last_or_next("tick") == 1
