"""Changes and WorkFlag: who is woken, and when."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from si.daemon.wakeup import Changes, WorkFlag

pytestmark = pytest.mark.timeout(10)


async def test_notify_wakes_every_waiter_of_that_moment_only() -> None:
    changes = Changes()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await changes.wait()
        woken.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "a")
        nursery.start_soon(waiter, "b")
        await trio.testing.wait_all_tasks_blocked()
        changes.notify()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == ["a", "b"]
        nursery.start_soon(waiter, "late")  # waits for the next change, not the past one
        await trio.testing.wait_all_tasks_blocked()
        assert "late" not in woken
        changes.notify()
    assert woken[-1] == "late"


async def test_a_work_flag_set_twice_before_it_is_taken_is_one_round() -> None:
    flag = WorkFlag()
    flag.set()
    flag.set()
    with trio.move_on_after(1) as first:
        await flag.take()
    assert not first.cancelled_caught
    with trio.move_on_after(0.05) as second:
        await flag.take()
    assert second.cancelled_caught  # cleared by the first take
    flag.set()
    await flag.take()
