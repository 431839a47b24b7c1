"""Vectored writes arrive as the joined bytes would, whatever the socket takes at a time."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing

from si.daemon.vectored import send_all_parts

PARTS: list[bytes | memoryview] = [
    b"head",
    b"",
    os.urandom(3 << 20),
    memoryview(b"tail"),
    b"x" * 10,
]


async def _receive_all(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some(65536):
        received += chunk
    return bytes(received)


async def test_parts_larger_than_the_socket_buffer_arrive_in_order() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sender = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    receiver = trio.SocketStream(trio.socket.from_stdlib_socket(right))
    received = b""

    async def receive() -> None:
        nonlocal received
        received = await _receive_all(receiver)

    async with receiver, trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await send_all_parts(sender, PARTS)
        await sender.aclose()
    assert received == b"".join(PARTS)


async def test_other_streams_get_the_joined_bytes() -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all_parts, sender, [b"a", b"b"])
        assert await receiver.receive_some(10) == b"ab"


async def test_a_peer_that_went_away_is_a_broken_resource() -> None:
    left, right = socket.socketpair()
    right.close()
    async with trio.SocketStream(trio.socket.from_stdlib_socket(left)) as sender:
        with pytest.raises(trio.BrokenResourceError):
            await send_all_parts(sender, [b"a", b"b"])
