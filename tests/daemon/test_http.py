"""The HTTP server shell against in-memory streams: failure containment, timeouts, refusals.

Timeouts run on trio's autojump clock, so the times asserted are exact and the tests instant.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from si.daemon.http import MAX_HEAD_SIZE, HttpConnection, Request, Response, Timeouts

TIMEOUTS = Timeouts(head=10, body_idle=30, keep_alive=60)
HEAD = b"Host: si\r\n"


async def handler(request: Request, response: Response) -> None:
    if request.path == "/read":
        body = await request.read(1 << 20)
        await response.json(200, {"size": len(body)})
    elif request.path == "/stream-in":
        total = 0
        async for chunk in request.body():
            total += len(chunk)
        await response.json(200, {"size": total})
    elif request.path == "/stream-out":
        await response.start(200, [("content-type", "application/octet-stream")])
        for number in range(5):
            await trio.sleep(100)
            await response.write(b"%d\n" % number)
        await response.end()
    elif request.path == "/crash":
        raise RuntimeError("a bug in a handler")
    else:
        await response.json(404, {"error": f"{request.path} not found"})


class Served:
    def __init__(self, client: trio.abc.HalfCloseableStream) -> None:
        self.client = client
        self.done = trio.Event()
        self.received = bytearray()
        self.closed_at: float | None = None

    async def send(self, data: bytes) -> None:
        await self.client.send_all(data)

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.received:
            data = await self.client.receive_some()
            assert data, f"closed before {marker!r}: {bytes(self.received)!r}"
            self.received += data
        head, _, rest = bytes(self.received).partition(marker)
        self.received = bytearray(rest)
        return head + marker

    async def read_to_eof(self) -> bytes:
        while data := await self.client.receive_some():
            self.received += data
        self.closed_at = trio.current_time()
        return bytes(self.received)


@asynccontextmanager
async def served(timeouts: Timeouts = TIMEOUTS) -> AsyncIterator[Served]:
    client, server = trio.testing.memory_stream_pair()
    served = Served(client)

    async def serve() -> None:
        await HttpConnection(server, handler, timeouts).serve()  # must never raise
        served.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield served
        with trio.fail_after(300):
            await served.done.wait()


def statuses(data: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


@pytest.mark.timeout(10)
async def test_a_client_that_closes_before_its_declared_body_ends_only_its_connection() -> None:
    # `si inst kill <unknown id>` did this: the hub answered 404 at once, the client closed, and
    # draining the unread body raised out of the connection and stopped the hub.
    async with served() as hub:
        await hub.send(b"POST /nowhere HTTP/1.1\r\n" + HEAD + b"content-length: 27\r\n\r\n")
        assert b"HTTP/1.1 404 " in await hub.read_until(b'not found"}')
        await hub.client.aclose()


class FailingStream(trio.abc.Stream):
    """A transport that breaks in a way nothing expects (a bug below the shell)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pass

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise RuntimeError("unexpected failure in the transport")

    async def aclose(self) -> None:
        pass


@pytest.mark.timeout(10)
async def test_any_exception_on_one_connection_is_logged_and_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="si.hub.http"):
        await HttpConnection(FailingStream(), handler, TIMEOUTS).serve()
    assert "connection failed" in caplog.text
    assert "unexpected failure in the transport" in caplog.text


@pytest.mark.timeout(10)
async def test_a_handler_bug_is_a_500_and_the_connection_carries_on() -> None:
    async with served() as hub:
        await hub.send(b"GET /crash HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert b"HTTP/1.1 500 " in await hub.read_until(b"\r\n\r\n")
        await hub.send(b"GET /x HTTP/1.1\r\n" + HEAD + b"connection: close\r\n\r\n")
        assert statuses(await hub.read_to_eof()) == [404]


@pytest.mark.timeout(10)
async def test_a_slowloris_head_is_answered_408_when_the_head_timeout_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    start = trio.current_time()
    async with served() as hub:

        async def trickle() -> None:
            for byte in b"GET / HTTP/1.1\r\nHost: si\r\nx-slow: " + b"a" * 100:
                await trio.sleep(3)
                await hub.send(bytes([byte]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            data = await hub.read_to_eof()
            nursery.cancel_scope.cancel()
    assert statuses(data) == [408]
    assert b"connection: close" in data
    assert hub.closed_at is not None
    assert hub.closed_at - start == pytest.approx(10)


@pytest.mark.timeout(10)
async def test_an_idle_keep_alive_connection_is_closed_without_a_word(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with served() as hub:
        await hub.send(b"GET /x HTTP/1.1\r\n" + HEAD + b"\r\n")
        await hub.read_until(b'not found"}')
        answered = trio.current_time()
        assert await hub.read_to_eof() == b""
    assert hub.closed_at is not None
    assert hub.closed_at - answered == pytest.approx(60)


@pytest.mark.timeout(10)
async def test_keep_alive_waits_for_a_next_request_then_times_its_head_from_its_first_byte(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with served() as hub:
        await hub.send(b"GET /x HTTP/1.1\r\n" + HEAD + b"\r\n")
        await hub.read_until(b'not found"}')
        await trio.sleep(55)
        await hub.send(b"GET /y HTTP/1.1\r\n")  # 55 s idle is within keep-alive
        started = trio.current_time()
        data = await hub.read_to_eof()  # ...and the rest of the head never comes
    assert statuses(data) == [408]
    assert hub.closed_at is not None
    assert hub.closed_at - started == pytest.approx(10)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("path", ["/read", "/stream-in"])
async def test_a_short_body_of_declared_length_is_answered_408_after_the_body_idle_timeout(
    autojump_clock: trio.abc.Clock, path: str
) -> None:
    async with served() as hub:
        await hub.send(f"POST {path} HTTP/1.1\r\n".encode() + HEAD + b"content-length: 27\r\n\r\n")
        await trio.sleep(20)
        await hub.send(b'{"a":')  # a pause under the limit, then five of 27 bytes and silence
        last_byte = trio.current_time()
        data = await hub.read_to_eof()
    assert statuses(data) == [408]
    assert b"no request body bytes for 30 s" in data
    assert hub.closed_at is not None
    assert hub.closed_at - last_byte == pytest.approx(30)


@pytest.mark.timeout(10)
async def test_a_chunked_body_streamed_into_a_handler_may_pause_for_ever(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with served() as hub:
        await hub.send(
            b"POST /stream-in HTTP/1.1\r\n" + HEAD + b"transfer-encoding: chunked\r\n\r\n"
        )
        for _ in range(3):
            await trio.sleep(1000)
            await hub.send(b"5\r\nhello\r\n")
        await hub.send(b"0\r\n\r\n")
        assert b'{"size":15}' in await hub.read_until(b"}")
        await hub.client.aclose()


@pytest.mark.timeout(10)
async def test_an_unread_chunked_body_that_stalls_is_dropped_after_the_body_idle_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with served() as hub:
        await hub.send(b"POST /x HTTP/1.1\r\n" + HEAD + b"transfer-encoding: chunked\r\n\r\n")
        await hub.send(b"5\r\nhello\r\n")
        sent = trio.current_time()
        data = await hub.read_to_eof()
    assert statuses(data) == [404]  # answered before the body was drained
    assert hub.closed_at is not None
    assert hub.closed_at - sent == pytest.approx(30)


@pytest.mark.timeout(10)
async def test_a_streaming_response_is_never_timed_out(autojump_clock: trio.abc.Clock) -> None:
    async with served() as hub:
        await hub.send(b"GET /stream-out HTTP/1.1\r\n" + HEAD + b"connection: close\r\n\r\n")
        data = await hub.read_to_eof()
    assert statuses(data) == [200]
    assert all(b"%d\n" % number in data for number in range(5))


BAD_REQUESTS = {
    "malformed-request-line": (b"GARBAGE\r\n\r\n", 400),
    "no-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "path-not-utf8": (b"GET /api/v1/instance/%ff%fe HTTP/1.1\r\n" + HEAD + b"\r\n", 400),
    "query-not-utf8": (b"GET /q?x=%ff HTTP/1.1\r\n" + HEAD + b"\r\n", 400),
    "http-9.9": (b"GET / HTTP/9.9\r\n" + HEAD + b"\r\n", 505),
    "huge-head": (b"GET / HTTP/1.1\r\n" + HEAD + b"x: " + b"a" * MAX_HEAD_SIZE + b"\r\n\r\n", 431),
    "bad-chunk-size": (
        b"POST /read HTTP/1.1\r\n" + HEAD + b"transfer-encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "chunk-broken-off": (
        b"POST /stream-in HTTP/1.1\r\n" + HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nab",
        400,
    ),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("raw", "status"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_a_broken_request_is_answered_with_its_status_then_closed(
    autojump_clock: trio.abc.Clock, raw: bytes, status: int
) -> None:
    async with served() as hub:
        await hub.send(raw)
        if raw.endswith(b"ab"):
            await hub.client.send_eof()  # the chunk breaks off
        data = await hub.read_to_eof()
    assert statuses(data) == [status]
    assert b'{"error":' in data
    assert b"connection: close" in data
    assert hub.closed_at is not None
    assert hub.closed_at < 1
