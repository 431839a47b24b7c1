"""The runner's output pump, without a hub: what it queues on the link."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from si.protocol.frames import Channel
from si.protocol.link import DEFAULT_WINDOW
from si.runner.process import Runner
from si.runner.streams import InputStream


def test_a_passthrough_never_has_more_than_a_window_of_output_in_flight(tmp_path: Path) -> None:
    data = os.urandom(3 * DEFAULT_WINDOW + 5)

    async def main() -> tuple[int, bytes, bool]:
        left, right = socket.socketpair()
        with left, right:
            runner = Runner(tmp_path, {"instance_id": "i", "token": "00" * 16}, left)
            # Input that did not come over the link: nothing to acknowledge.
            runner.input = InputStream(lambda n: None, "application/octet-stream")
            runner.input.feed(data)
            runner.input.end()
            pump = asyncio.create_task(runner.pump_output(runner.input, None))
            for _ in range(20):  # every step the pump can take without acknowledgements
                await asyncio.sleep(0)
            output = runner.link.outbound[Channel.OUTPUT]
            sent = b"".join(payload for _, payload in output.replay)
            done = pump.done()
            pump.cancel()
            return output.in_flight(), sent, done

    in_flight, sent, done = asyncio.run(main())
    assert in_flight == DEFAULT_WINDOW
    assert sent == data[:DEFAULT_WINDOW]
    assert not done  # it waits for the hub to acknowledge
