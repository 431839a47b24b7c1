"""The runner's output pump, without a hub: what it queues on the link."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

from si.protocol.frames import Channel
from si.protocol.link import DEFAULT_WINDOW
from si.runner.process import Runner
from si.runner.streams import InputStream


def pump_until_blocked(
    tmp_path: Path, data: bytes, content_type: str, source: Any = None
) -> tuple[int, list[bytes], bool]:
    """Run a sequence's output pump with no hub acknowledging: the output in flight, the
    frames queued, and whether the pump finished."""

    async def main() -> tuple[int, list[bytes], bool]:
        left, right = socket.socketpair()
        with left, right:
            runner = Runner(tmp_path, {"instance_id": "i", "token": "00" * 16}, left)
            # Input that did not come over the link: nothing to acknowledge.
            runner.input = InputStream(lambda n: None, content_type)
            runner.input.feed(data)
            runner.input.end()
            result = runner.input if source is None else source(runner.input)
            pump = asyncio.create_task(runner.pump_output(result, None))
            for _ in range(50):  # every step the pump can take without acknowledgements
                await asyncio.sleep(0)
            output = runner.link.outbound[Channel.OUTPUT]
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
