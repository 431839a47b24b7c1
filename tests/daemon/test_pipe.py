"""The hub's output pipe: offsets, readers, consumption (what the runner is told it may send)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from si.daemon.pipe import LagLimit, OffsetError, OutputPipe, PipeReader


async def read_some(pipe: OutputPipe, reader: PipeReader) -> bytes:
    """What ``pipe.read`` gives a reader the test knows is not at the end."""
    data = await pipe.read(reader)
    assert data is not None
    return data


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
    assert data is not None
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


# -- re-adoption: unknown base, resume hold ------------------------------------------------


async def test_readers_of_an_unknown_pipe_wait_for_its_base(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # A reader arriving while the hub re-adopts the runner must not be numbered from 0.
    consumed: list[int] = []
    pipe = OutputPipe(consumed.append, known=False)
    with pytest.raises(RuntimeError):
        pipe.attach()
    starts: list[int] = []

    async def fresh_reader() -> None:
        await pipe.wait_known()
        reader = pipe.attach()
        starts.append(reader.position)
        data = await pipe.read(reader)
        assert data == b"101\n"

    nursery.start_soon(fresh_reader)
    await trio.sleep(1)
    assert starts == []
    pipe.rebase(1000)
    pipe.append(b"101\n")
    await trio.sleep(1)
    assert starts == [1000]


async def test_a_hold_keeps_consumed_bytes_for_the_second_follower() -> None:
    pipe, consumed = make_pipe(base=100)
    pipe.hold(10, bound=1000)
    pipe.append(b"0123456789")
    first = pipe.attach(104)
    data = await pipe.read(first)
    assert data is not None
    pipe.delivered(first, len(data))
    pipe.detach(first)
    assert sum(consumed) == 10  # the runner may go on...
    second = pipe.attach(102)  # ...and the follower that came back later still finds its bytes
    assert second.position == 102
    assert await pipe.read(second) == b"23456789"


async def test_a_hold_at_its_bound_stops_the_head_until_it_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pipe, consumed = make_pipe()
    pipe.hold(5, bound=4)
    pipe.append(b"0123456789")
    reader = pipe.attach()
    pipe.delivered(reader, len(await read_some(pipe, reader)))
    assert consumed == [4]  # no more than the bound is consumed while held
    with trio.move_on_after(10):
        await pipe.read(reader)  # waits at the tail: the hold's deadline releases the rest
    assert sum(consumed) == 10
    assert pipe.floor == 10


# -- offsets ---------------------------------------------------------------------------------


async def test_offsets_that_can_never_be_served_are_refused() -> None:
    pipe, _ = make_pipe(base=100)
    pipe.append(b"abc")
    with pytest.raises(OffsetError):
        pipe.attach(-1)
    with pytest.raises(OffsetError):
        pipe.attach(103 + (1 << 20) + 1)  # more than a window past the tail
    assert pipe.attach(103 + 10).position == 113  # may still come: it waits
    pipe.end()
    with pytest.raises(OffsetError):
        pipe.attach(104)  # the stream ended at 103


# -- lag limit -------------------------------------------------------------------------------


def lagged_pipe(max_bytes: int = 10, max_seconds: float = 5) -> tuple[OutputPipe, list[int]]:
    consumed: list[int] = []
    return OutputPipe(consumed.append, lag_limit=LagLimit(max_bytes, max_seconds)), consumed


async def test_a_reader_that_stays_too_far_behind_is_cut_off_and_the_others_go_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pipe, consumed = lagged_pipe(max_bytes=10, max_seconds=5)
    fast, stopped = pipe.attach(), pipe.attach()
    pipe.append(b"x" * 8)
    pipe.delivered(fast, len(await read_some(pipe, fast)))
    pipe.append(b"y" * 8)
    pipe.delivered(fast, len(await read_some(pipe, fast)))  # 16 bytes behind: its clock starts

    async def wait_for_more() -> None:
        await pipe.read(fast)

    nursery.start_soon(wait_for_more)
    await trio.sleep(4.9)
    assert stopped.cut_off is None
    assert consumed == []
    await trio.sleep(0.2)
    assert stopped.cut_off is not None
    assert "16 bytes behind" in stopped.cut_off
    assert stopped.scope.cancel_called
    assert consumed == [16]  # the producer is no longer held back by it


async def test_a_reader_that_catches_up_in_time_is_not_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A stopped reader's socket buffers make it look fast at first: the one actually reading
    # is behind for a moment, and must not be cut for it.
    pipe, consumed = lagged_pipe(max_bytes=10, max_seconds=5)
    buffered, reading = pipe.attach(), pipe.attach()
    pipe.append(b"z" * 30)
    pipe.delivered(buffered, 30)
    await trio.sleep(3)
    pipe.delivered(reading, 25)  # 5 behind: within the bytes again
    await trio.sleep(3)
    pipe.delivered(buffered, 0)
    assert reading.cut_off is None
    assert consumed == [25]


async def test_a_lone_slow_reader_is_backpressure_never_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pipe, consumed = lagged_pipe(max_bytes=1, max_seconds=1)
    reader = pipe.attach()
    pipe.append(b"0123456789")
    await trio.sleep(60)
    pipe.delivered(reader, 2)
    assert reader.cut_off is None
    assert consumed == [2]


async def test_an_internal_reader_is_never_cut_off() -> None:
    pipe, _ = lagged_pipe(max_bytes=2)
    fast, internal = pipe.attach(), pipe.attach(lag_limited=False)
    pipe.append(b"0123456789")
    pipe.delivered(fast, len(await read_some(pipe, fast)))
    assert internal.cut_off is None


async def test_many_small_chunks_read_back_exactly_across_compactions() -> None:
    # Retained (or held) bytes can be thousands of small chunks; readers find theirs by
    # bisection and trimmed slots are compacted away. Every byte still comes out once, in order.
    consumed: list[int] = []
    pipe = OutputPipe(consumed.append, retain=3000)
    pipe.rebase(7)
    written = bytearray()
    reader = pipe.attach(None)
    received = bytearray()
    for n in range(5000):
        piece = f"{n}\n".encode()
        pipe.append(piece)
        written += piece
        if n % 3 == 0:  # reads of varying size, some mid-chunk
            data = await pipe.read(reader)
            assert data is not None
            take = max(1, len(data) // 2)
            received += data[:take]
            pipe.delivered(reader, take)
    floor = pipe.floor
    assert pipe.head - 3000 - 6 < floor <= pipe.head - 3000  # whole chunks of 2-5 bytes kept
    assert len(pipe._data) < 3000  # trimmed slots were compacted, not kept forever
    late = pipe.attach(floor)  # a reader coming back to the oldest byte still retained
    data = await pipe.read(late)
    assert data
    assert data == written[floor - 7 : floor - 7 + len(data)]
    pipe.detach(late)
    pipe.end()
    while (data := await pipe.read(reader)) is not None:
        received += data
        pipe.delivered(reader, len(data))
    assert bytes(received) == bytes(written)
    assert sum(consumed) == pipe.head - 7
