"""An instance's output as the hub holds it: a bounded, offset-addressed pipe with many readers.

Bytes arrive from the runner with their stream offsets and stay until every attached reader
has written them to its client; only then are they *consumed*, which the link reports back to
the runner as an acknowledgement. The runner holds back once a window of unacknowledged bytes
is out, so this pipe never holds more than that window, however slow the readers are.

Semantics (STH's, made exact): a reader attaching without an offset starts at the oldest byte
not yet consumed (so the first reader also gets what was written before it came); a reader
that gives an offset (a follower resuming after a hub restart) starts exactly there, and the
bytes before it count as delivered. Several readers each get every byte from where they
started; the pipe moves at the pace of the slowest. With no reader, nothing is consumed and
the producer is held back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

# The most one read hands out at once: large enough for throughput, small enough to interleave
# readers and keep each HTTP chunk modest.
MAX_READ = 256 * 1024


class PipeReader:
    def __init__(self, position: int) -> None:
        self.position = position


class OutputPipe:
    """Bytes ``[head, tail)`` received and not yet consumed by every reader."""

    def __init__(
        self, on_consumed: Callable[[int], None], base: int = 0, *, retain: int = 0
    ) -> None:
        self._on_consumed = on_consumed
        self._chunks: deque[tuple[int, bytes]] = deque()
        # Consumed bytes kept for readers that come back (a topic consumer that reconnects
        # after its client dropped what was in flight); 0 for an instance's output.
        self.retain = retain
        self.head = base
        self.tail = base
        self.ended = False
        self.closed = False  # the instance is gone: readers end even without an END
        self._readers: set[PipeReader] = set()
        self._changed = trio.Event()

    # -- producer side ---------------------------------------------------------------------

    def rebase(self, offset: int) -> None:
        """Start an empty pipe at ``offset`` (a re-adopted runner's first unconsumed byte)."""
        if self._chunks or self.tail != self.head:
            raise RuntimeError("rebase of a non-empty pipe")
        self.head = self.tail = offset

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append((self.tail, data))
            self.tail += len(data)
            self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- reader side -----------------------------------------------------------------------

    @property
    def floor(self) -> int:
        """The oldest offset still held: a reader asking for less starts here."""
        return self._chunks[0][0] if self._chunks and self.retain else self.head

    def attach(self, offset: int | None = None) -> PipeReader:
        position = self.head if offset is None else max(offset, min(self.floor, self.head))
        reader = PipeReader(position)
        self._readers.add(reader)
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
        """
        while True:
            position = reader.position if at is None else at
            if position < self.tail:
                return self._peek(position)
            if self.ended or self.closed:
                return None
            await self._changed.wait()

    def delivered(self, reader: PipeReader, nbytes: int) -> None:
        reader.position += nbytes
        self._advance_head()

    def _peek(self, position: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        for offset, data in self._chunks:
            end = offset + len(data)
            if end <= position:
                continue
            if offset < position:
                data = data[position - offset :]
            parts.append(data)
            size += len(data)
            if size >= MAX_READ:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _advance_head(self) -> None:
        if not self._readers:
            return
        new_head = min(self.tail, min(reader.position for reader in self._readers))
        if new_head <= self.head:
            return
        consumed = new_head - self.head
        self.head = new_head
        chunks = self._chunks
        keep_from = new_head - self.retain
        while chunks and chunks[0][0] + len(chunks[0][1]) <= keep_from:
            chunks.popleft()
        self._on_consumed(consumed)
