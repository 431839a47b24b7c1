"""The runner's output batching and pump, without a hub or sockets: what they queue on the
link."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from si.protocol.frames import Channel
from si.protocol.link import DEFAULT_WINDOW, Link
from si.runner.output import OutputBatcher, pump_output
from si.runner.streams import InputStream


def runner_link() -> Link:
    return Link.for_runner("i", b"\0" * 16)


def pump_until_blocked(
    tmp_path: Path, data: bytes, content_type: str, source: Any = None
) -> tuple[int, list[bytes], bool]:
    """Run a sequence's output pump with no hub acknowledging: the output in flight, the
    frames queued, and whether the pump finished."""

    async def main() -> tuple[int, list[bytes], bool]:
        link = runner_link()
        batcher = OutputBatcher(link, lambda: None)
        # Input that did not come over the link: nothing to acknowledge.
        input_stream = InputStream(lambda n: None, content_type)
        input_stream.feed(data)
        input_stream.end()
        result = input_stream if source is None else source(input_stream)
        pump = asyncio.create_task(pump_output(batcher, result, input_stream, None))
        for _ in range(50):  # every step the pump can take without acknowledgements
            await asyncio.sleep(0)
        output = link.outbound[Channel.OUTPUT]
        frames = [payload for _, payload in output.replay]
        done = pump.done()
        pump.cancel()
        return output.in_flight(), frames, done

    return asyncio.run(main())


def test_a_passthrough_never_has_more_than_a_window_of_output_in_flight(tmp_path: Path) -> None:
    data = os.urandom(3 * DEFAULT_WINDOW + 5)
    in_flight, frames, done = pump_until_blocked(tmp_path, data, "application/octet-stream")

    assert in_flight == DEFAULT_WINDOW
    assert b"".join(frames) == data[:DEFAULT_WINDOW]
    assert not done  # it waits for the hub to acknowledge


async def _lines(source: InputStream) -> Any:
    async for line in source:
        yield line


def test_frames_end_where_items_end(tmp_path: Path) -> None:
    data = b"".join(b"%d\n" % n * (n % 50) for n in range(20_000))
    for source in (None, _lines):  # the block path and the item path
        in_flight, frames, _ = pump_until_blocked(tmp_path, data, "text/plain", source)
        assert 0 < in_flight <= DEFAULT_WINDOW
        assert all(frame.endswith(b"\n") for frame in frames)
        assert data.startswith(b"".join(frames))


def test_an_item_larger_than_the_window_goes_alone_once_nothing_is_in_flight() -> None:
    async def main() -> list[int]:
        link = runner_link()
        flushes: list[int] = []
        batcher = OutputBatcher(link, lambda: flushes.append(1), batch_size=1 << 30)
        small, big = b"a" * 10, b"b" * (DEFAULT_WINDOW + 1)
        batcher.add(small)
        batcher.add(big)
        assert batcher.flush()  # the small item fits; the big one does not yet
        assert not batcher.flush()  # nothing more while the small one is unacknowledged
        link.outbound[Channel.OUTPUT].acked = len(small)  # as an ACK would
        assert batcher.flush()  # the big one alone
        assert batcher.pending == 0
        return [len(payload) for _, payload in link.outbound[Channel.OUTPUT].replay]

    sizes = asyncio.run(main())
    # Split into frames of at most one MiB, but queued as one write after the small one.
    assert sizes[0] == 10
    assert sum(sizes[1:]) == DEFAULT_WINDOW + 1


def test_a_small_batch_is_flushed_on_the_next_loop_turn() -> None:
    async def main() -> int:
        link = runner_link()
        batcher = OutputBatcher(link, lambda: None)
        assert not batcher.add(b"x\n")  # not full: no need to wait
        await asyncio.sleep(0)
        return link.outbound[Channel.OUTPUT].next_offset

    assert asyncio.run(main()) == 2
