"""The Python runner's end of the link over a real socket pair, in one process.

A hub that dies leaves what it last wrote in the runner's socket. Those bytes were taken by the
kernel before the hub answered its client, and a restarted hub trusts the runner's handshake to
count them: the runner must read them even when the first thing it notices is a failed write.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from si.protocol.frames import Channel
from si.protocol.link import Established, Link
from si.runner.link_server import HubConnection, LinkServer

INSTANCE = "0123456789abcdef0123456789abcdef0123"
TOKEN = b"t" * 32


class Recorder:
    def __init__(self) -> None:
        self.input = bytearray()

    def on_data(self, channel: int, data: bytes) -> None:
        if channel == Channel.INPUT:
            self.input += data

    def on_ended(self, channel: int) -> None:
        pass

    def on_window_opened(self, channel: int) -> None:
        pass

    def count_traffic(self, nbytes: int) -> None:
        pass


def shake_hands(hub: Link, hub_sock: socket.socket) -> None:
    """Run the hub's half of the handshake on a blocking socket."""
    hub.connection_made()
    hub_sock.sendall(hub.data_to_send())
    while not hub.established:
        data = hub_sock.recv(65536)
        assert data, "the runner closed during the handshake"
        events = hub.receive_data(data)
        hub_sock.sendall(hub.data_to_send())
        if any(isinstance(event, Established) for event in events):
            break


async def input_taken_from_a_dead_hub(payload: bytes, *, write_first: bool) -> tuple[bytes, int]:
    """Connect a hub, have it write ``payload`` as input and die; ``write_first``: the runner
    writes output before its loop reads again, so that write fails (EPIPE). Returns the input
    the runner took and its received offset once it dropped the connection."""
    loop = asyncio.get_running_loop()
    runner = Link.for_runner(INSTANCE, TOKEN)
    recorder = Recorder()
    server = LinkServer(runner, recorder)
    hub_sock, runner_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    await loop.connect_accepted_socket(lambda: HubConnection(server), runner_sock)
    hub = Link.for_hub(INSTANCE, TOKEN)
    await asyncio.to_thread(shake_hands, hub, hub_sock)
    while not runner.established:
        await asyncio.sleep(0.001)
    hub.send(Channel.INPUT, payload)
    hub_sock.sendall(hub.data_to_send())
    hub_sock.close()
    if write_first:
        runner.send(Channel.OUTPUT, b"output\n")
        server.flush()
    for _ in range(200):
        if server.connection is None:
            break
        await asyncio.sleep(0.005)
    assert server.connection is None, "the dead connection was never dropped"
    return bytes(recorder.input), runner.inbound[Channel.INPUT].received


@pytest.mark.parametrize("write_first", [True, False], ids=["write-fails-first", "end-read-first"])
def test_input_a_dead_hub_wrote_is_taken(write_first: bool) -> None:
    payload = b"".join(f"{n}\n".encode() for n in range(1000))
    received, offset = asyncio.run(input_taken_from_a_dead_hub(payload, write_first=write_first))
    assert received == payload
    assert offset == len(payload)
