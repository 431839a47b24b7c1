"""The hub's output pipe: offsets, readers, consumption (what the runner is told it may send)."""

from __future__ import annotations

import trio
import trio.testing

from si.daemon.pipe import OutputPipe


def make_pipe(base: int = 0) -> tuple[OutputPipe, list[int]]:
    consumed: list[int] = []
    pipe = OutputPipe(consumed.append)
    if base:
        pipe.rebase(base)
    return pipe, consumed


async def read_all(pipe: OutputPipe, offset: int | None = None) -> bytes:
    reader = pipe.attach(offset)
    received = bytearray()
    try:
        while (data := await pipe.read(reader)) is not None:
            received += data
            pipe.delivered(reader, len(data))
    finally:
        pipe.detach(reader)
    return bytes(received)


async def test_nothing_is_consumed_without_a_reader() -> None:
    pipe, consumed = make_pipe()
    pipe.append(b"abc")
    pipe.append(b"def")
    assert consumed == []
    pipe.end()
    assert await read_all(pipe) == b"abcdef"
    assert consumed == [6]


async def test_the_first_reader_gets_what_was_written_before_it_came() -> None:
    pipe, _ = make_pipe()
    pipe.append(b"early")
    pipe.end()
    assert await read_all(pipe) == b"early"


async def test_two_readers_each_get_every_byte_at_the_pace_of_the_slowest() -> None:
    pipe, consumed = make_pipe()
    fast, slow = pipe.attach(), pipe.attach()
    pipe.append(b"0123456789")
    data = await pipe.read(fast)
    pipe.delivered(fast, len(data))
    assert consumed == []  # the slow reader has not written anything yet
    data = await pipe.read(slow)
    pipe.delivered(slow, 4)
    assert consumed == [4]
    assert await pipe.read(slow) == b"456789"


async def test_a_resuming_reader_starts_exactly_at_its_offset() -> None:
    pipe, consumed = make_pipe(base=100)  # a re-adopted runner's first unconsumed byte
    pipe.append(b"0123456789")
    pipe.end()
    assert await read_all(pipe, offset=104) == b"456789"
    assert sum(consumed) == 10  # bytes before the offset count as delivered


async def test_an_offset_beyond_what_arrived_waits_for_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pipe, _ = make_pipe()
    result: list[bytes] = []

    async def follower() -> None:
        result.append(await read_all(pipe, offset=3))

    nursery.start_soon(follower)
    await trio.sleep(1)
    pipe.append(b"ab")
    await trio.sleep(1)
    pipe.append(b"cdef")
    pipe.end()
    await trio.sleep(1)
    assert result == [b"def"]


async def test_closing_ends_readers_without_an_end_marker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pipe, _ = make_pipe()
    result: list[bytes] = []

    async def follower() -> None:
        result.append(await read_all(pipe))

    nursery.start_soon(follower)
    pipe.append(b"partial")
    await trio.sleep(1)
    pipe.close()
    await trio.sleep(1)
    assert result == [b"partial"]
