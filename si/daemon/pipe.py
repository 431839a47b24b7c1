"""An instance's output as the hub holds it: a bounded, offset-addressed pipe with many readers.

Bytes arrive from the runner with their stream offsets and stay until every attached reader
has written them to its client; only then are they *consumed*, which the link reports back to
the runner as an acknowledgement. The runner holds back once a window of unacknowledged bytes
is out, so this pipe holds no more than that window plus what it deliberately retains.

Semantics (STH's, made exact): a reader attaching without an offset starts at the oldest byte
not yet consumed, the *head* (so the first reader also gets what was written before it came);
a reader that gives an offset (a follower resuming after a hub restart) starts exactly there,
and the bytes before it count as delivered. Several readers each get every byte from where they
started; the pipe moves at the pace of the slowest. With no reader, nothing is consumed and
the producer is held back.

Three guards keep that promise honest under faults:

- *Unknown base*: a pipe of a runner being re-adopted does not know its offsets until the link
  is established. Readers wait (:meth:`wait_known`) instead of being numbered from 0 and then
  seeing the same bytes under two offsets.
- *Resume hold*: after re-adoption, consumed bytes are kept (up to a bound) for a grace period,
  so a second follower that comes back after the first one already moved on still finds its
  bytes. While the bound is reached the head stops, so nothing held is ever dropped early.
- *Lag limit*: a reader that stays too far behind the fastest reader (more than a number of
  bytes, for longer than a number of seconds) is cut off (its response breaks, it may resume by
  offset if the bytes are still held); the others and the producer go on. Both bounds matter:
  socket buffers make readers look far apart for a moment (a reader that stops reading first
  fills its buffers and looks fast), and a reader that merely pauses catches up. A lone reader
  is never cut: it is simply backpressure.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

import trio

from si.daemon.wakeup import Changes

# The most one read hands out at once: large enough for throughput, small enough to interleave
# readers and keep each HTTP chunk modest.
MAX_READ = 256 * 1024
# Trimmed chunk slots are dropped from the front of the lists once this many have piled up.
COMPACT_AFTER = 1024


@dataclass(frozen=True)
class LagLimit:
    """How far behind the fastest reader another may stay before it is cut off.

    Args:
        max_bytes: bytes behind the fastest reader that are always allowed.
        max_seconds: how long a reader may stay more than ``max_bytes`` behind.
    """

    max_bytes: int
    max_seconds: float


class PipeReader:
    """One attached reader. Its serving task runs inside :attr:`scope`, which the pipe cancels
    when it cuts the reader off; :attr:`cut_off` then says why."""

    def __init__(self, position: int, *, lag_limited: bool) -> None:
        self.position = position
        self.lag_limited = lag_limited
        self.scope = trio.CancelScope()
        self.cut_off: str | None = None
        # Since when it has been more than the lag limit's bytes behind the fastest reader.
        self.behind_since: float | None = None


class OffsetError(ValueError):
    """A reader asked for an offset this pipe can never serve."""


class OutputPipe:
    """Bytes ``[head, tail)`` received and not yet consumed by every reader.

    Args:
        on_consumed: called with the number of bytes every reader has now taken.
        base: the offset of the first byte.
        retain: consumed bytes kept for readers that come back (a topic consumer that
            reconnects after its client dropped what was in flight); 0 for an instance.
        known: False for a pipe whose base is learnt later (:meth:`rebase`).
        lag_limit: cut off readers that fall behind (``None``: never).
        clock: the time source for lag and hold deadlines.
    """

    def __init__(
        self,
        on_consumed: Callable[[int], None],
        base: int = 0,
        *,
        retain: int = 0,
        known: bool = True,
        lag_limit: LagLimit | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._on_consumed = on_consumed
        # Held bytes as chunks in offset order: ``_offsets[i]`` is where ``_data[i]`` starts.
        # Entries before ``_first`` are trimmed. A reader finds its chunk by bisection, since
        # a resume hold can keep thousands of small chunks and every read would scan them.
        self._offsets: list[int] = []
        self._data: list[bytes] = []
        self._first = 0
        self.retain = retain
        self.head = base
        self.tail = base
        self.ended = False
        self.closed = False  # the instance is gone: readers end even without an END
        self.lag_limit = lag_limit
        self._clock = clock
        self._readers: set[PipeReader] = set()
        self._changed = Changes()
        self._known = trio.Event()
        if known:
            self._known.set()
        # Resume hold: (offset, deadline, bound) while followers may still come back.
        self._hold: tuple[int, float, int] | None = None

    # -- producer side ---------------------------------------------------------------------

    @property
    def known(self) -> bool:
        return self._known.is_set()

    def rebase(self, offset: int) -> None:
        """Start an empty pipe at ``offset`` (a re-adopted runner's first unconsumed byte)."""
        if self._first < len(self._data) or self.tail != self.head:
            raise RuntimeError("rebase of a non-empty pipe")
        self.head = self.tail = offset
        for reader in self._readers:
            # Only for a pipe that was known already (readers wait for an unknown one): the
            # bytes below ``offset`` are gone, so its readers skip them rather than misnumber.
            reader.position = max(reader.position, offset)
        self._known.set()

    def mark_known(self) -> None:
        """The pipe's offsets are right as they are (nothing to rebase)."""
        self._known.set()

    def hold(self, seconds: float, bound: int) -> None:
        """Keep consumed bytes from the head on for ``seconds`` (at most ``bound`` of them),
        so readers that were attached before a hub restart can all come back."""
        self._hold = (self.head, self._clock() + seconds, bound)

    def append(self, data: bytes) -> None:
        if data:
            self._offsets.append(self.tail)
            self._data.append(data)
            self.tail += len(data)
            self._wake()

    def end(self) -> None:
        self.ended = True
        self._known.set()
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._known.set()
        self._wake()

    def _wake(self) -> None:
        self._changed.notify()

    # -- reader side -----------------------------------------------------------------------

    async def wait_known(self) -> None:
        await self._known.wait()

    @property
    def floor(self) -> int:
        """The oldest offset still held: a reader asking for less starts here."""
        return self._offsets[self._first] if self._first < len(self._data) else self.head

    def attach(self, offset: int | None = None, *, lag_limited: bool = True) -> PipeReader:
        """A new reader at ``offset`` (``None``: the head).

        An offset below what is still held starts at the oldest byte held (the reply's
        ``x-si-offset`` tells the client its gap); one beyond the tail waits for its bytes,
        unless it is further than the runner could ever have sent (the window past the
        tail, which no follower can have seen).

        Raises:
            OffsetError: a negative offset, or one past what the producer can have written.
            RuntimeError: the pipe's offsets are not known yet (await :meth:`wait_known`).
        """
        if not self.known:
            raise RuntimeError("attach before the pipe's offsets are known")
        if offset is None:
            position = self.head
        elif offset < 0:
            raise OffsetError("x-si-offset must not be negative")
        elif offset > self.tail and (self.ended or self.closed or offset > self.tail + _AHEAD):
            raise OffsetError(f"x-si-offset {offset} is past the end of the stream ({self.tail})")
        else:
            position = max(offset, min(self.floor, self.head))
        reader = PipeReader(position, lag_limited=lag_limited)
        self._readers.add(reader)
        self._advance_head()
        return reader

    def detach(self, reader: PipeReader) -> None:
        self._readers.discard(reader)
        self._advance_head()

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    async def read(self, reader: PipeReader, at: int | None = None) -> bytes | None:
        """Wait for bytes at the reader's position (or ``at``, to read ahead of it); ``None``
        at the end of the stream.

        The bytes are not consumed until the caller calls :meth:`delivered` after writing them.
        While it waits, a reader also enforces the deadlines of others (lag, resume hold):
        a waiting reader is the one a laggard or a hold would be holding back.
        """
        while True:
            position = reader.position if at is None else at
            if position < self.tail:
                return self._peek(position)
            if self.ended or self.closed:
                return None
            deadline = self._next_deadline()
            if deadline is None:
                await self._changed.wait()
            else:
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                self._enforce()

    async def glance(self, position: int) -> tuple[int, bytes] | None:
        """Bytes from ``position`` without being a reader (a console's live peek at a topic):
        nothing waits for a glance and nothing counts it as consumed. A glance that fell
        behind what is held goes on from the oldest byte held; the start it returns tells.
        ``None`` at the end of the stream."""
        while True:
            position = max(position, self.floor)
            if position < self.tail:
                return position, self._peek(position)
            if self.ended or self.closed:
                return None
            await self._changed.wait()

    def delivered(self, reader: PipeReader, nbytes: int) -> None:
        reader.position += nbytes
        if self._hold is not None or (self.lag_limit is not None and len(self._readers) > 1):
            self._enforce()
        self._advance_head()

    def _peek(self, position: int) -> bytes:
        offsets, chunks = self._offsets, self._data
        start = max(bisect_right(offsets, position, lo=self._first) - 1, self._first)
        parts: list[bytes] = []
        size = 0
        for index in range(start, len(chunks)):
            offset, data = offsets[index], chunks[index]
            if offset + len(data) <= position:
                continue
            if offset < position:
                data = data[position - offset :]
            parts.append(data)
            size += len(data)
            if size >= MAX_READ:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- deadlines: lag limit and resume hold ----------------------------------------------

    def _laggards(self) -> list[tuple[PipeReader, int]]:
        """Lag-limited readers more than the limit's bytes behind the fastest reader, with how
        far behind; every other reader's lag clock is reset."""
        limit = self.lag_limit
        if limit is None or len(self._readers) < 2:
            for reader in self._readers:
                reader.behind_since = None
            return []
        leader = max(reader.position for reader in self._readers)
        laggards = []
        for reader in self._readers:
            lag = leader - reader.position
            if reader.lag_limited and lag > limit.max_bytes:
                laggards.append((reader, lag))
            else:
                reader.behind_since = None
        return laggards

    def _next_deadline(self) -> float | None:
        deadlines = []
        if self._hold is not None:
            deadlines.append(self._hold[1])
        if self.lag_limit is not None:
            for reader in self._readers:
                if reader.behind_since is not None:
                    deadlines.append(reader.behind_since + self.lag_limit.max_seconds)
        return min(deadlines) if deadlines else None

    def _enforce(self) -> None:
        now = self._clock()
        if self._hold is not None and now >= self._hold[1]:
            self._hold = None
        limit = self.lag_limit
        if limit is not None:
            for reader, lag in self._laggards():
                if reader.behind_since is None:
                    reader.behind_since = now
                elif now - reader.behind_since >= limit.max_seconds:
                    self._cut(
                        reader,
                        f"it stayed more than {limit.max_bytes} bytes behind the fastest reader "
                        f"for {limit.max_seconds:g} s ({lag} bytes behind)",
                    )
        self._advance_head()

    def _cut(self, reader: PipeReader, reason: str) -> None:
        reader.cut_off = reason
        reader.scope.cancel()
        self._readers.discard(reader)

    def _advance_head(self) -> None:
        if not self._readers:
            self._trim()
            return
        new_head = min(self.tail, min(reader.position for reader in self._readers))
        if self._hold is not None:
            offset, _, bound = self._hold
            new_head = min(new_head, max(self.head, offset + bound))
        if new_head <= self.head:
            self._trim()
            return
        consumed = new_head - self.head
        self.head = new_head
        self._trim()
        self._on_consumed(consumed)

    def _trim(self) -> None:
        keep_from = self.head - self.retain
        if self._hold is not None:
            keep_from = min(keep_from, self._hold[0])
        offsets, chunks, first = self._offsets, self._data, self._first
        while first < len(chunks) and offsets[first] + len(chunks[first]) <= keep_from:
            chunks[first] = b""  # its memory goes now, its slot at the next compaction
            first += 1
        # Compacting when at least half the slots are trimmed keeps it O(1) per chunk.
        if first == len(chunks) or (first >= COMPACT_AFTER and 2 * first >= len(chunks)):
            del offsets[:first], chunks[:first]
            first = 0
        self._first = first


# How far past the tail a resuming reader may ask for: the runner never has more than one
# window of output unacknowledged, so no follower can have seen bytes beyond that.
_AHEAD = 1 << 20
