"""The asyncio thread trio drives nats-py through."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from si.daemon.cluster.bridge import AsyncioThread, BridgeClosed


async def test_a_call_runs_on_the_loop_thread_and_returns_or_raises_there() -> None:
    bridge = AsyncioThread()
    bridge.start()
    try:

        async def where(value: int) -> tuple[str, int]:
            await asyncio.sleep(0)
            return threading.current_thread().name, value * 2

        assert await bridge.call(where, 21) == ("si-nats", 42)

        async def fails() -> None:
            raise KeyError("from asyncio")

        with pytest.raises(KeyError, match="from asyncio"):
            await bridge.call(fails)
    finally:
        await bridge.close()


async def test_a_cancelled_trio_caller_cancels_its_asyncio_task() -> None:
    bridge = AsyncioThread()
    bridge.start()
    cancelled = threading.Event()
    try:

        async def forever() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with trio.move_on_after(0.2):
            await bridge.call(forever)
        assert await trio.to_thread.run_sync(cancelled.wait, 5)
    finally:
        await bridge.close()


async def test_a_closed_bridge_refuses_calls_and_leaves_no_pending_task() -> None:
    bridge = AsyncioThread()
    bridge.start()
    started = trio.Event()

    async def lingering() -> None:
        await asyncio.sleep(60)  # cancelled and awaited by close, warning-free

    async with trio.open_nursery() as nursery:

        async def call_it() -> None:
            started.set()
            with pytest.raises(BridgeClosed, match="closed while the call ran"):
                await bridge.call(lingering)

        nursery.start_soon(call_it)
        await started.wait()
        await trio.sleep(0.05)
        await bridge.close()
    assert not bridge.running

    async def anything() -> None:
        return None

    with pytest.raises(BridgeClosed):
        await bridge.call(anything)
