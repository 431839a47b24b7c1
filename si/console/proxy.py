"""``si hub console``: the hub's console on a loopback port, for a hub on a Unix socket.

A browser cannot reach a Unix socket, so this opens ``127.0.0.1:PORT`` and forwards each
request the gate lets through (``si.console.gate``) to the hub on a connection of its own, then
copies the answer back byte for byte as it streams (followers, the watch feed). One hub
connection per request keeps the proxy ignorant of HTTP framing: the request goes on with
``Connection: close``, so the hub's answer ends where its connection does.

The proxy outlives the hub: while the hub is down (restarting, crashed) each request gets a
502 saying so, and the page reconnects when the hub is back. Every connection is its own task
and contains its own errors, so one broken browser connection ends that one only.
"""

from __future__ import annotations

import html
import json
import logging
import ssl
from collections.abc import Awaitable, Callable

import trio

from si.console.gate import Answer, Gate, build_head, parse_head

log = logging.getLogger("si.console")

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 10.0
CHUNK = 256 * 1024

OpenUpstream = Callable[[], Awaitable[trio.abc.Stream]]


def unix_upstream(path: str) -> OpenUpstream:
    async def open_unix() -> trio.abc.Stream:
        return await trio.open_unix_socket(path)

    return open_unix


def tcp_upstream(host: str, port: int, tls: ssl.SSLContext | None) -> OpenUpstream:
    async def open_tcp() -> trio.abc.Stream:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if tls is not None:
            wrapped = trio.SSLStream(stream, tls, server_hostname=host, https_compatible=True)
            await wrapped.do_handshake()
            stream = wrapped
        return stream

    return open_tcp


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes] | None:
    """The request head (without its blank line) and any bytes read past it; None at EOF."""
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_HEAD:
            raise ValueError("request head too large")
        data = await stream.receive_some(CHUNK)
        if not data:
            return None
        buffer += data
    return bytes(buffer[:end]), bytes(buffer[end + 4 :])


def render_answer(answer: Answer, wants_html: bool) -> bytes:
    """The browser's answer: a small page for a page load, JSON for the API's callers."""
    if wants_html and answer.status >= 400:
        text = html.escape(answer.message)
        body = (
            "<!doctype html><meta charset=utf-8><title>si console</title>"
            "<body style='font:16px system-ui;margin:2em'>"
            f"<h1>si console</h1><p role=alert>{text}</p></body>"
        ).encode()
        content_type = "text/html; charset=utf-8"
    else:
        body = json.dumps({"error" if answer.status >= 400 else "message": answer.message}).encode()
        content_type = "application/json"
    reason = {303: "See Other", 401: "Unauthorized", 403: "Forbidden", 502: "Bad Gateway"}
    lines = [
        f"HTTP/1.1 {answer.status} {reason.get(answer.status, 'Error')}",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
        "cache-control: no-store",
        "connection: close",
        *(f"{name}: {value}" for name, value in answer.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ConsoleProxy:
    def __init__(self, gate: Gate, open_upstream: OpenUpstream) -> None:
        self.gate = gate
        self.open_upstream = open_upstream

    async def serve_one(self, client: trio.abc.Stream) -> None:
        """One browser connection: one request, forwarded or answered. Errors end it only."""
        try:
            async with client:
                await self._serve(client)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError) as exc:
            log.debug("console connection ended: %s", exc)
        except Exception:
            log.exception("console connection failed")

    async def _serve(self, client: trio.abc.Stream) -> None:
        read = None
        with trio.move_on_after(HEAD_TIMEOUT):
            read = await read_head(client)
        if read is None:
            return  # closed, or no head in time
        head, rest = read
        method, target, headers = parse_head(head)
        wants_html = any(
            name.lower() == "accept" and "text/html" in value for name, value in headers
        )
        verdict = self.gate.judge(method, target, headers)
        if isinstance(verdict, Answer):
            await client.send_all(render_answer(verdict, wants_html))
            return
        try:
            upstream = await self.open_upstream()
        except OSError as exc:
            message = f"the hub is not running or cannot be reached ({exc.strerror or exc})"
            await client.send_all(render_answer(Answer(502, message), wants_html))
            return
        async with upstream:
            await upstream.send_all(build_head(method, target, verdict.headers) + rest)
            async with trio.open_nursery() as nursery:

                async def to_hub() -> None:
                    # The rest of the body; the browser closing its side means it gave up.
                    while data := await client.receive_some(CHUNK):
                        await upstream.send_all(data)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(to_hub)
                while data := await upstream.receive_some(CHUNK):
                    await client.send_all(data)
                nursery.cancel_scope.cancel()


async def serve_console(
    proxy: ConsoleProxy,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0: any free port) and serve until cancelled; reports the port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, proxy.serve_one, listeners)
        task_status.started(bound)
