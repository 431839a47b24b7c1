"""Rewindable NDJSON feeds: the hub's own log (``GET /log``) and audit stream (``GET /audit``).

A feed keeps its most recent entries (a bounded deque) and numbers every entry; a reader
first gets the retained history, then follows. Entries may be published from any thread
(logging handlers run in worker threads too); readers wake through the trio token.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

import trio

from si.daemon.wakeup import Changes

# Entries a feed retains for late readers: bounded, so a busy hub's memory stays flat.
DEFAULT_CAPACITY = 10_000


class Feed:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._entries: deque[bytes] = deque(maxlen=capacity)
        self._published = 0  # number of the next entry
        self._changed = Changes()
        self._token: trio.lowlevel.TrioToken | None = None

    def bind(self) -> None:
        """Remember the trio run, so entries published from other threads wake readers."""
        self._token = trio.lowlevel.current_trio_token()

    def publish(self, entry: dict[str, Any]) -> None:
        self._entries.append(json.dumps(entry, default=str).encode() + b"\n")
        self._published += 1
        if self._token is None:
            return
        try:
            trio.lowlevel.current_task()
            self._wake()
        except RuntimeError:  # another thread: hand the wake-up to the trio run
            try:
                self._token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                pass

    def _wake(self) -> None:
        self._changed.notify()

    async def follow(self) -> Any:
        """Yield NDJSON chunks: the retained history, then new entries as they come."""
        position = self._published - len(self._entries)
        while True:
            oldest = self._published - len(self._entries)
            position = max(position, oldest)  # a reader that fell behind skips what is gone
            if position < self._published:
                entries = list(self._entries)[position - oldest :]
                position = self._published
                yield b"".join(entries)
                continue
            await self._changed.wait()


class FeedHandler(logging.Handler):
    """Puts the hub's log records into a Feed in STH's log entry shape."""

    LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self.feed = feed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.feed.publish(
                {
                    "ts": int(record.created * 1000),
                    "level": self.LEVELS.get(record.levelname, record.levelname),
                    "msg": record.getMessage(),
                    "from": record.name,
                }
            )
        except Exception:
            self.handleError(record)


def now_ms() -> int:
    return int(time.time() * 1000)
