"""Events an instance emits, as the hub keeps them for API readers.

STH's semantics: ``/event/<name>`` answers the last message seen (or waits for the first),
``/once/<name>`` waits for the next one, ``/events/<name>`` streams every one as NDJSON. Once the
instance has ended no next message can come: waiters are answered ``None`` (null). Every
stream subscriber has a bounded queue; one that falls that far behind is dropped rather than
allowed to grow the hub's memory.
"""

from __future__ import annotations

from typing import Any

import trio

# Events a stream subscriber may have unread before it is cut off.
SUBSCRIBER_BACKLOG = 1000

_MISSING = object()


class EventBoard:
    def __init__(self) -> None:
        self._last: dict[str, Any] = {}
        self._next: dict[str, trio.Event] = {}
        self._values: dict[str, Any] = {}
        self._subscribers: dict[str, set[trio.MemorySendChannel[Any]]] = {}
        # Subscribers to every name (the console's event view): (name, message) pairs.
        self._watchers: set[trio.MemorySendChannel[tuple[str, Any]]] = set()
        self.closed = False

    def publish(self, name: str, message: Any) -> None:
        self._last[name] = message
        waiter = self._next.pop(name, None)
        if waiter is not None:
            self._values[name] = message
            waiter.set()
        for channel in list(self._subscribers.get(name, ())):
            try:
                channel.send_nowait(message)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers[name].discard(channel)
                channel.close()
        for watcher in list(self._watchers):
            try:
                watcher.send_nowait((name, message))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._watchers.discard(watcher)
                watcher.close()

    def last(self, name: str) -> Any:
        """The last message of ``name``, or the module's missing marker."""
        return self._last.get(name, _MISSING)

    async def next(self, name: str) -> Any:
        """The next message of ``name``; None once the instance ended without one."""
        if self.closed:
            return None
        waiter = self._next.get(name)
        if waiter is None:
            waiter = self._next[name] = trio.Event()
        await waiter.wait()
        return self._values.get(name)

    async def last_or_next(self, name: str) -> Any:
        value = self._last.get(name, _MISSING)
        if value is not _MISSING and value:
            return value
        return await self.next(name)

    def subscribe(self, name: str) -> trio.MemoryReceiveChannel[Any]:
        send, receive = trio.open_memory_channel[Any](SUBSCRIBER_BACKLOG)
        self._subscribers.setdefault(name, set()).add(send)
        return receive

    def watch(self) -> tuple[list[tuple[str, Any]], trio.MemoryReceiveChannel[tuple[str, Any]]]:
        """Every name's last message so far, and a channel of every (name, message) after it;
        bounded like a named subscription. Ends at once for an instance that ended."""
        send, receive = trio.open_memory_channel[tuple[str, Any]](SUBSCRIBER_BACKLOG)
        if self.closed:
            send.close()
        else:
            self._watchers.add(send)
        return list(self._last.items()), receive

    def close(self) -> None:
        """The instance ended: streams end, and waiters for a next message get None."""
        self.closed = True
        for name, waiter in self._next.items():
            self._values[name] = None
            waiter.set()
        self._next.clear()
        for channels in self._subscribers.values():
            for channel in channels:
                channel.close()
        self._subscribers.clear()
        for watcher in self._watchers:
            watcher.close()
        self._watchers.clear()
