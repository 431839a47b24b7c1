"""A small HTTP/1.1 server shell: h11 parses and frames, trio moves the bytes.

Why not an ASGI server: the hub's API is mostly long-lived streams with end-to-end
backpressure (a request body is read only as fast as the runner takes it; a response is written
only as fast as the client reads). Driving h11 directly keeps that explicit, keeps the import
cheap (the hub should answer its first request quickly) and adds no framework between the
socket and the link.

Resource handling: one task per connection, owned by the listener's nursery. A streaming
response whose client goes away is cancelled (a watcher task reads the socket for EOF once the
request body is complete). A handler that fails after the response started leaves the response
unterminated and the connection is closed, so the client sees the failure instead of a
silently truncated body.

Failure containment: whatever goes wrong on one connection (a client that vanishes mid-body,
broken framing, a bug in a handler) ends that connection only; ``HttpConnection.serve`` never
lets an exception other than cancellation reach the listener's nursery, which is the hub's.
A request the API never sees (malformed head, bad path, timeout) gets a one-line JSON error
and the connection closes.

Timeouts (``Timeouts``): a request head must arrive within ``head`` seconds, an idle keep-alive
connection is closed after ``keep_alive`` seconds, and a request body may pause at most
``body_idle`` seconds when it has a declared length or is read whole (JSON bodies). A chunked
body streamed into a handler (``tail -f app.log | si inst input -``) is the request-side twin
of a follower and, like a streaming response, may be quiet for as long as it likes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import h11
import trio

from si.daemon.options import (
    DEFAULT_BODY_IDLE_TIMEOUT,
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
)
from si.daemon.vectored import send_all_parts

log = logging.getLogger("si.hub.http")

# Large enough that a fast upload takes few reads (each costs a pass through h11 and trio),
# small enough to bound per-connection memory.
RECEIVE_SIZE = 256 * 1024
# Kernel send buffer of each local client connection (the system's maximum caps it).
SEND_BUFFER = 1 << 20
# Request heads are tiny; a bigger one is a broken or hostile client.
MAX_HEAD_SIZE = 64 * 1024
# Unread request body the server drains to keep a connection alive; past it, it closes instead.
MAX_DRAIN = 1 << 20
# After refusing a request, how long the server reads (and drops) what the client still sends
# before closing: closing with unread input resets a TCP connection, and the client would lose
# the error response it has not read yet.
LINGER = 1.0

COMMON_HEADERS = [(b"access-control-allow-origin", b"*")]


@dataclass(frozen=True)
class Timeouts:
    """How long the server waits for a client, in seconds (``math.inf``: for ever)."""

    head: float = DEFAULT_HEAD_TIMEOUT
    body_idle: float = DEFAULT_BODY_IDLE_TIMEOUT
    keep_alive: float = DEFAULT_KEEP_ALIVE_TIMEOUT

    @classmethod
    def of(cls, head: float, body_idle: float, keep_alive: float) -> Timeouts:
        """From the hub's options, where 0 turns a timeout off."""
        return cls(head or math.inf, body_idle or math.inf, keep_alive or math.inf)


class BadRequest(Exception):
    """A request the server refuses with ``status`` (and the connection closes)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BodyError(BadRequest):
    """The client's request body broke off (disconnect, malformed framing, too slow, too big)."""


class Request:
    """An HTTP request whose body is read on demand, so a slow consumer slows the client."""

    def __init__(self, connection: HttpConnection, event: h11.Request) -> None:
        self._connection = connection
        if not event.http_version.startswith(b"1."):
            version = event.http_version.decode("ascii")
            raise BadRequest(f"HTTP/{version} is not supported; speak HTTP/1.1", 505)
        self.method = event.method.decode("ascii").upper()
        parts = urlsplit(event.target.decode("latin-1"))
        try:
            # Decoded strictly: a path that is not UTF-8 cannot name any route or id, and a
            # lenient decode would turn distinct paths into the same one.
            self.path = unquote_to_bytes(parts.path.encode("latin-1")).decode()
            self.query = dict(parse_qsl(parts.query, errors="strict"))
        except UnicodeDecodeError:
            raise BadRequest("the request target is not UTF-8 after percent-decoding") from None
        # h11 bounds only a head that arrives in pieces; one that came in a single read is
        # measured here, so every head over the limit is refused alike.
        size = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
        if size > MAX_HEAD_SIZE:
            raise BadRequest(f"request head over {MAX_HEAD_SIZE} bytes", 431)
        self.headers: dict[str, str] = {}
        for name, value in event.headers:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.params: dict[str, str] = {}
        self.remote = connection.remote
        self.peer = connection.peer
        self.body_complete = False
        # Set by a handler that refused the body: the rest is not read, the connection closes.
        self.body_abandoned = False

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def abandon_body(self) -> None:
        """Read no more of the body (a refused upload): the answer says ``connection: close``
        and the connection closes after it, instead of draining what the client still sends."""
        if not self.body_complete:
            self.body_abandoned = True

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    async def body(self, *, idle: float | None = None) -> AsyncIterator[bytes]:
        """The request body in chunks as they arrive. Raises BodyError if it breaks off, or
        (408) if no byte arrives for ``idle`` seconds while it is waited for; by default the
        body-idle timeout for a body of declared length, none for a chunked stream."""
        connection = self._connection
        if self.body_complete:
            return
        if idle is None:
            sized = "content-length" in self.headers
            idle = connection.timeouts.body_idle if sized else math.inf
        if connection.conn.they_are_waiting_for_100_continue:
            await connection.send(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            try:
                # Only the wait for bytes is timed: a handler that reads slowly (backpressure
                # from a runner) is not the client's fault.
                with trio.move_on_after(idle) as wait:
                    event = await connection.next_event()
            except (
                h11.RemoteProtocolError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
            ) as exc:
                raise BodyError(f"request body broke off: {exc}") from exc
            if wait.cancelled_caught:
                raise BodyError(f"no request body bytes for {idle:g} s", 408)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.body_complete = True
                return
            else:
                raise BodyError("client closed the connection during the request body")

    async def read(self, limit: int) -> bytes:
        """The whole body; BodyError if it exceeds ``limit`` bytes."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.body(idle=self._connection.timeouts.body_idle):
            size += len(chunk)
            if size > limit:
                raise BodyError(f"request body over {limit} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)


class Response:
    """One response: whole (``json``, ``empty``) or streamed (``start``, ``write``, ``end``)."""

    def __init__(self, connection: HttpConnection, request: Request) -> None:
        self._connection = connection
        self._request = request
        self.started = False
        self.finished = False
        self.status = 0

    async def start(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        """Send the status line and headers; the body follows in chunks (chunked encoding)."""
        encoded = list(COMMON_HEADERS)
        encoded += [(k.encode(), v.encode()) for k, v in headers or []]
        self.started = True
        self.status = status
        await self._connection.send(h11.Response(status_code=status, headers=encoded))
        self._connection.response_started(self._request)

    async def write(self, data: bytes) -> None:
        if data:
            await self._connection.send(h11.Data(data=data))

    async def end(self) -> None:
        self.finished = True
        await self._connection.send(h11.EndOfMessage())

    async def json(
        self, status: int, body: Any, headers: list[tuple[str, str]] | None = None
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        await self.whole(status, payload, "application/json", headers)

    async def empty(self, status: int, content_type: str | None = None) -> None:
        await self.whole(status, b"", content_type)

    async def whole(
        self,
        status: int,
        payload: bytes,
        content_type: str | None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [("content-length", str(len(payload))), *(extra or [])]
        if content_type:
            headers.append(("content-type", content_type))
        if self._request.body_abandoned:
            headers.append(("connection", "close"))
        encoded = list(COMMON_HEADERS) + [(k.encode(), v.encode()) for k, v in headers]
        self.started = True
        self.status = status
        await self._connection.send(h11.Response(status_code=status, headers=encoded))
        if payload:
            await self._connection.send(h11.Data(data=payload))
        self.finished = True
        await self._connection.send(h11.EndOfMessage())


Handler = Callable[[Request, Response], Awaitable[None]]


class HttpConnection:
    """One client connection: a sequence of request/response cycles (keep-alive)."""

    def __init__(
        self, stream: trio.abc.Stream, handler: Handler, timeouts: Timeouts | None = None
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.timeouts = timeouts or Timeouts()
        # Over TCP (plain or TLS) rather than the hub's Unix socket, and from where: the API
        # asks a remote request for a token.
        self.remote, self.peer = _remote_peer(stream)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        self._handler_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._watcher_scope: trio.CancelScope | None = None

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(RECEIVE_SIZE)
                self.conn.receive_data(bytes(data))
                continue
            return event

    async def send(self, event: Any) -> None:
        # h11 hands body data back as it is, between its framing: no join, no copy.
        parts = self.conn.send_with_data_passthrough(event)
        if parts:
            await send_all_parts(self.stream, parts)

    def response_started(self, request: Request) -> None:
        # Once the request body is in and a response is streaming, the only thing left to
        # read is EOF: watch for it so an abandoned stream releases its resources.
        if request.body_complete and self._nursery is not None and self._watcher_scope is None:
            self._watcher_scope = trio.CancelScope()
            self._nursery.start_soon(self._watch_for_eof, self._watcher_scope)

    async def _watch_for_eof(self, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        break
                    self.conn.receive_data(bytes(data))  # a pipelined request: h11 keeps it
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            if self._handler_scope is not None:
                self._handler_scope.cancel()

    async def serve(self) -> None:
        """Serve the connection until it ends. Never raises, except to be cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._serve_cycles()
                finally:
                    nursery.cancel_scope.cancel()
        except* CLIENT_FAILURES:
            pass  # the client went away or broke HTTP mid-stream: only its connection ends
        except* Exception:
            # A bug, but one connection's: the hub and every other client carry on.
            log.exception("connection failed; closing it")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    async def _serve_cycles(self) -> None:
        first = True
        while True:
            try:
                event = await self._next_head(first)
            except h11.RemoteProtocolError as exc:
                # h11's hint: 400 for a malformed head, 431 for an oversized one.
                await self._refuse(BadRequest(f"bad request: {exc}", exc.error_status_hint))
                return
            first = False
            if not isinstance(event, h11.Request):
                return  # closed, timed out, or nothing more to read on this connection
            try:
                request = Request(self, event)
            except BadRequest as exc:
                await self._refuse(exc)
                return
            if self.conn.their_state is h11.DONE:
                request.body_complete = True
            response = Response(self, request)
            with trio.CancelScope() as scope:
                self._handler_scope = scope
                try:
                    await self.handler(request, response)
                except BodyError as exc:
                    log.info("%s %s: %s", request.method, request.path, exc)
                    if not response.started:
                        await self._refuse(exc)
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the client went away mid-response
                except Exception:
                    log.exception("%s %s failed", request.method, request.path)
                    if not response.started:
                        await response.empty(500)
                    else:
                        return
            self._handler_scope = None
            if self._watcher_scope is not None:
                self._watcher_scope.cancel()
                self._watcher_scope = None
            if scope.cancelled_caught or not response.finished:
                return  # the client went away, or the response could not be completed
            if not await self._finish_cycle(request):
                return

    async def _next_head(self, first: bool) -> Any:
        """The next request's head (or whatever else h11 sees instead).

        A connection's first request has ``head`` seconds from the accept; a later one may
        keep the connection idle for ``keep_alive`` seconds, then has ``head`` seconds from
        its first byte. A head that takes longer is answered 408; an idle connection is
        closed without a word. Returns None then.
        """
        timeouts = self.timeouts
        started = first or bool(self.conn.trailing_data[0])
        with trio.move_on_after(timeouts.head if started else timeouts.keep_alive) as wait:
            while True:
                event = self.conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if data and not started:
                    started = True
                    wait.deadline = trio.current_time() + timeouts.head
                self.conn.receive_data(bytes(data))
        if started:
            limit = timeouts.head
            await self._refuse(BadRequest(f"request head not received within {limit:g} s", 408))
        return None

    async def _refuse(self, error: BadRequest) -> None:
        """Answer ``error`` as a JSON error with ``connection: close``, if a response can
        still be sent; then let the client read it before the connection closes."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        log.info("refused a request (%d): %s", error.status, error)
        payload = json.dumps({"error": str(error)}, separators=(",", ":")).encode()
        headers = [
            *COMMON_HEADERS,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        try:
            await self.send(h11.Response(status_code=error.status, headers=headers))
            await self.send(h11.Data(data=payload))
            await self.send(h11.EndOfMessage())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client is gone: nobody to tell
        await self._linger()

    async def _finish_cycle(self, request: Request) -> bool:
        """Prepare for the next request on this connection; False means close it."""
        if request.body_abandoned:
            await self._linger()
            return False
        if self.conn.their_state is not h11.DONE:
            drained = 0
            try:
                # The body of a request already answered: bounded, and timed even when it is
                # a chunked stream, since nobody waits for it any more.
                async for chunk in request.body(idle=self.timeouts.body_idle):
                    drained += len(chunk)
                    if drained > MAX_DRAIN:
                        return False
            except BodyError:
                return False
        if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
            return False
        self.conn.start_next_cycle()
        return True

    async def _linger(self) -> None:
        """After a refusal: end our side, then discard what the client still sends for a
        moment (see LINGER)."""
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return
        discarded = 0
        with trio.move_on_after(LINGER):
            try:
                await stream.send_eof()
                while discarded <= MAX_DRAIN and (data := await stream.receive_some(RECEIVE_SIZE)):
                    discarded += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


# What a client can do to its own connection; the connection ends quietly.
CLIENT_FAILURES = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.RemoteProtocolError,
    BodyError,
)


def _remote_peer(stream: trio.abc.Stream) -> tuple[bool, str]:
    """(whether the stream is a network connection, the peer's address) for a plain or TLS
    stream; a Unix socket is local, with no address."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(inner, trio.SocketStream):
        return False, ""  # an in-memory stream (tests): local
    if inner.socket.family == socket.AF_UNIX:
        return False, ""
    try:
        return True, str(inner.socket.getpeername()[0])
    except OSError:
        return True, ""


def handle_connections(
    handler: Handler, timeouts: Timeouts | None = None, max_remote: int | None = None
) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """The per-connection task for ``trio.serve_listeners``. ``max_remote`` bounds the TCP
    connections open at once: one past it is answered 503 and closed."""
    remote_open = 0

    async def serve_one(stream: trio.abc.Stream) -> None:
        nonlocal remote_open
        if isinstance(stream, trio.SocketStream) and stream.socket.family == socket.AF_UNIX:
            # Room for a streamed response to run ahead of a client that reads in bursts (TCP
            # tunes its own buffers). A peer already gone is the connection's concern.
            with contextlib.suppress(OSError):
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            await HttpConnection(stream, handler, timeouts).serve()
            return
        if max_remote is not None and remote_open >= max_remote:
            await _turn_away(stream, max_remote)
            return
        remote_open += 1
        try:
            await HttpConnection(stream, handler, timeouts).serve()
        finally:
            remote_open -= 1

    return serve_one


async def _turn_away(stream: trio.abc.Stream, limit: int) -> None:
    """Answer a connection over the limit with 503 and close it, reading nothing."""
    body = json.dumps({"error": f"the hub has {limit} connections open; try again"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    with trio.move_on_after(1), contextlib.suppress(*CLIENT_FAILURES):
        await stream.send_all(head.encode() + body)
    with trio.move_on_after(1), contextlib.suppress(*CLIENT_FAILURES):
        await stream.aclose()
