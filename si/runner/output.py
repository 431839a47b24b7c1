"""Output batching: encoded output items gathered into link frames, within the window.

Sans socket: the batcher queues on a ``Link`` and calls ``flush`` when it did; the runner's
link server moves the bytes. That keeps the batching rules testable with two in-memory links.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from si.protocol.frames import Channel
from si.protocol.link import Link
from si.runner.framework import passthrough_source
from si.runner.streams import InputStream, output_encoder

# Output is gathered into batches of about this size before a frame is sent: per-frame costs
# are paid once per batch instead of once per line, while a slow generator still flushes at
# once (the flush is scheduled whenever the sequence yields to the event loop).
OUTPUT_BATCH = 64 * 1024


class OutputBatcher:
    """Batches output for ``link``'s output channel.

    Items are never split across frames, so output always ends where an item ends (a killed
    instance's output has no half line). An item goes when it fits the window, or alone when
    nothing is in flight (one item larger than the window).

    Args:
        link: the runner's link.
        flush: called after bytes were queued on the link.
        on_sent: called with the size of every batch queued (the runner counts its traffic).
    """

    def __init__(
        self,
        link: Link,
        flush: Callable[[], None],
        on_sent: Callable[[int], None] = lambda nbytes: None,
        *,
        batch_size: int = OUTPUT_BATCH,
    ) -> None:
        self.link = link
        self._flush = flush
        self._on_sent = on_sent
        self.batch_size = batch_size
        self._batch: list[bytes | memoryview] = []
        self._size = 0
        self._scheduled = False
        self._window_open = asyncio.Event()

    @property
    def pending(self) -> int:
        """Bytes batched and not yet queued on the link."""
        return self._size

    def add(self, data: bytes | memoryview) -> bool:
        """Batch one encoded item; True when the batch is full and must be written first
        (``await write_when_possible()``)."""
        if not data:
            return False
        self._batch.append(data)
        self._size += len(data)
        if self._size >= self.batch_size:
            return True
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return False

    def flush(self) -> bool:
        """Queue what the window allows of the batch; False if nothing could go."""
        self._scheduled = False
        batch = self._batch
        if not batch:
            return False
        room = self.link.writable(Channel.OUTPUT)
        take, size = len(batch), self._size
        if size > room:
            take = size = 0
            for item in batch:
                if size + len(item) > room:
                    break
                take += 1
                size += len(item)
            if not take:
                if self.link.outbound[Channel.OUTPUT].in_flight() > 0:
                    return False
                take, size = 1, len(batch[0])
        data = batch[0] if take == 1 else b"".join(batch[:take])
        del batch[:take]
        self._size -= size
        self.link.send(Channel.OUTPUT, bytes(data))
        self._on_sent(size)
        self._flush()
        return True

    def window_opened(self) -> None:
        """The hub consumed output: send what waits, wake a blocked writer."""
        self.flush()
        self._window_open.set()

    async def write_when_possible(self) -> None:
        """Wait until the whole batch is queued on the link."""
        while self._batch:
            if not self.flush():
                self._window_open.clear()
                await self._window_open.wait()

    async def end(self) -> None:
        """Write the rest, then end the output channel."""
        await self.write_when_possible()
        self.link.end(Channel.OUTPUT)
        self._flush()


async def pump_output(
    batcher: OutputBatcher, source: Any, input_stream: InputStream, content_type: str | None
) -> None:
    """Write what ``run`` returned, item by item (or block by block for ``return input``),
    then end the output channel."""
    encode = output_encoder(content_type)
    add = batcher.add
    passthrough = passthrough_source(source, input_stream)
    if passthrough is not None:
        # `return input`: whole blocks, the same bytes as item by item (see streams.py).
        async for block in passthrough.output_blocks(content_type):
            if add(block):
                await batcher.write_when_possible()
    elif isinstance(source, str | bytes | bytearray):
        add(encode(source))
    elif isinstance(source, AsyncIterable):
        async for item in source:
            if add(encode(item)):
                await batcher.write_when_possible()
    elif isinstance(source, Iterable) and not isinstance(source, dict):
        for item in source:
            if add(encode(item)):
                await batcher.write_when_possible()
                await asyncio.sleep(0)  # let control messages in between batches
    else:
        add(encode(source))
    await batcher.end()
