"""One asyncio event loop on its own thread, driven from trio.

nats-py is an asyncio library and the hub runs on trio. Rather than a second event-loop
framework inside trio's (trio-asyncio is not installed here and lags trio's releases), the NATS
client lives on a dedicated thread running a plain asyncio loop, and trio tasks hand it one
coroutine at a time with ``AsyncioThread.call``. Every exchange is a request and its answer:
nothing streams from the asyncio side into trio on its own, so no queue can grow between the
two. Subscriptions are read by trio tasks calling ``next_msg``/``fetch`` through ``call``; what
waits meanwhile sits in nats-py's subscription buffer, whose limits we set.

Resource handling: ``start`` makes the thread, ``close`` (from trio, in a thread) stops the
loop, cancels what is still running on it, waits for those tasks and closes the loop, so no
"task was destroyed but it is pending" or unclosed-loop warning is left behind.

Error handling: an exception raised by the coroutine is raised to the trio caller as it is. A
cancelled trio caller cancels its asyncio task. A call after ``close`` raises
``BridgeClosed``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import trio
import trio.lowlevel

log = logging.getLogger("si.hub.cluster")

T = TypeVar("T")
P = ParamSpec("P")


class BridgeClosed(Exception):
    """The asyncio loop is not running (closed, or not started)."""


class AsyncioThread:
    def __init__(self, name: str = "si-nats") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the loop's thread and return once the loop runs."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            # Whatever is still running (nats-py's reader, pinger and flusher tasks of a client
            # that was not closed) is cancelled and awaited, so the loop closes clean.
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    @property
    def running(self) -> bool:
        loop = self._loop
        return loop is not None and not loop.is_closed() and loop.is_running()

    async def call(
        self, function: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``function(*args, **kwargs)`` on the asyncio loop and return its result.

        The coroutine is made on the loop's thread, so none is left un-awaited when the loop
        has gone away in between.

        Raises:
            BridgeClosed: the loop is not running.
            Whatever the coroutine raises.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise BridgeClosed("the NATS client's loop is not running")
        token = trio.lowlevel.current_trio_token()
        finished = trio.Event()
        tasks: list[asyncio.Task[T]] = []

        def wake(task: asyncio.Future[T]) -> None:
            if not task.cancelled():
                task.exception()  # retrieved here; raised to the caller from result() below
            try:
                token.run_sync_soon(finished.set)
            except trio.RunFinishedError:
                pass  # the hub's trio run is over; nobody waits for this any more

        def begin() -> None:
            task = loop.create_task(function(*args, **kwargs))
            tasks.append(task)
            task.add_done_callback(wake)

        def cancel() -> None:
            for task in tasks:
                task.cancel()

        try:
            loop.call_soon_threadsafe(begin)
        except RuntimeError:  # closed between the check above and now
            raise BridgeClosed("the NATS client's loop is not running") from None
        try:
            await finished.wait()
        except BaseException:
            try:
                loop.call_soon_threadsafe(cancel)  # FIFO: runs after begin()
            except RuntimeError:
                pass
            raise
        task = tasks[0]
        if task.cancelled():  # not by us: the loop was closed under it
            raise BridgeClosed("the NATS client's loop closed while the call ran")
        return task.result()

    def _stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join()

    async def close(self) -> None:
        """Stop the loop and wait for its thread (in a worker thread: joining blocks)."""
        await trio.to_thread.run_sync(self._stop)
