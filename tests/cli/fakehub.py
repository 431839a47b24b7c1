"""A scripted server for what a real hub never does on purpose, in client and CLI tests.

It streams instance output, instance streams and the hub's log with the ``x-si-offset``
contract, and fails the ways a follower must survive: a connection dropped mid-body at an exact
byte, a restart, a resume that starts earlier or later than asked, no offsets at all. It also
serves plain HTTP on TCP for the addressing tests. Everything else is tested against a real hub
(``tests.cli.hubproxy``).
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

from si.paths import connectable_unix_path
from tests.cli.hubproxy import Recorded

API = "/api/v1/"


@dataclass
class OutputPlan:
    """How the output of one instance is served.

    data: the whole stream; a request is served from its ``x-si-offset`` (0 if absent).
    drops: for successive requests, how many body bytes to send before dropping the connection
        (``None`` or a missing entry: send to the end).
    rewind: serve this many bytes before the requested offset (the client must skip them).
    skip_ahead: serve from this many bytes after the requested offset (a gap).
    offsets: send the ``x-si-offset`` header at all.
    endless: after ``data``, keep sending ``data`` again every 10 ms until the client leaves.
    """

    data: bytes = b""
    drops: list[int | None] = field(default_factory=list)
    rewind: int = 0
    skip_ahead: int = 0
    offsets: bool = True
    endless: bool = False
    chunk: int = 7


class FakeHub:
    """A threaded fake hub. Use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(self, socket_path: str | None = None, *, tcp: bool = False) -> None:
        self.socket_path = socket_path
        self.tcp = tcp
        self.requests: list[Recorded] = []
        self.sequences: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, OutputPlan] = {}
        # Other instance streams, by (instance id, "stdout"|"stderr"|"log"|"events/<name>").
        self.streams: dict[tuple[str, str], OutputPlan] = {}
        # Hub streams: "log" and "audit".
        self.hub_streams: dict[str, OutputPlan] = {}
        # (status, body) answered to the next request whatever it is.
        self.fail_next: tuple[int, bytes] | None = None
        self.lock = threading.Lock()
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None
        self._dirfd: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        if self.tcp:
            assert self._server is not None
            host, port = cast(tuple[str, int], self._server.server_address)
            return f"http://{host}:{port}"
        assert self.socket_path is not None
        return self.socket_path

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        if self.tcp:
            server: socketserver.BaseServer = _TcpServer(("127.0.0.1", 0), Handler)
        else:
            assert self.socket_path is not None
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)
            bind_path, self._dirfd = connectable_unix_path(self.socket_path)
            server = _UnixServer(bind_path, Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket, like a hub that went away."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(5)
        self._server = None
        if not self.tcp and self.socket_path and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None

    def restart_after(self, delay: float) -> threading.Thread:
        """Bring the hub back after ``delay`` seconds, in the background."""

        def later() -> None:
            time.sleep(delay)
            self.start()

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        return thread

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- canned state ------------------------------------------------------------------------

    def add_sequence(self, sequence_id: str | None = None, name: str = "hello") -> str:
        sequence_id = sequence_id or str(uuid.uuid4())
        self.sequences[sequence_id] = {
            "id": sequence_id,
            "config": {
                "type": "process",
                "id": sequence_id,
                "name": name,
                "version": "1.2.3",
                "language": "py",
                "entrypointPath": "main.py",
            },
            "location": "STH",
            "instances": [],
        }
        return sequence_id

    def add_instance(self, sequence_id: str, instance_id: str | None = None, **extra: Any) -> str:
        instance_id = instance_id or str(uuid.uuid4())
        sequence = self.sequences[sequence_id]
        sequence["instances"].append(instance_id)
        self.instances[instance_id] = {
            "id": instance_id,
            "appConfig": {},
            "args": [],
            "sequence": {"id": sequence_id, "config": sequence["config"], "location": "STH"},
            "started": "2024-01-01T00:00:00.000Z",
            "status": "running",
            **extra,
        }
        return instance_id

    def requests_to(self, method: str, suffix: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "fake-client"

    # Every method goes through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = Recorded(self.command, self.path, headers, body)
        hub = self.fake
        with hub.lock:
            hub.requests.append(record)
            failure, hub.fail_next = hub.fail_next, None
        if failure is not None:
            self._reply(failure[0], failure[1])
            return
        if not self.path.startswith(API):
            self._reply(404, b"")
            return
        parts = self.path.split("?", 1)[0][len(API) :].split("/")
        try:
            self._route(record, parts)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, record: Recorded, parts: list[str]) -> None:
        hub = self.fake
        method = record.method
        match parts:
            case ["version"] if method == "GET":
                self._json(
                    200,
                    {
                        "service": "@scramjet/host",
                        "apiVersion": "v1",
                        "version": "1.0.1",
                        "build": "fake",
                    },
                )
            case ["load-check"] if method == "GET":
                self._json(200, {"avgLoad": 0.5, "currentLoad": 0.25, "memFree": 1, "memUsed": 2})
            case ["log" | "audit"] if method == "GET":
                self._serve_plan(hub.hub_streams.setdefault(parts[0], OutputPlan()), record)
            case ["instance", instance_id, *_] if instance_id not in hub.instances:
                # STH's sub-router: no content type on this one.
                self._reply(
                    404, json.dumps({"error": f"Instance {instance_id} not found"}).encode()
                )
            case ["instance", instance_id] if method == "GET":
                self._json(200, hub.instances[instance_id])
            case ["instance", instance_id, "events", name] if method == "GET":
                plan = hub.streams.setdefault((instance_id, f"events/{name}"), OutputPlan())
                self._serve_plan(plan, record)
            case ["instance", instance_id, "stdout" | "stderr" | "log"] if method == "GET":
                self._serve_plan(
                    hub.streams.setdefault((instance_id, parts[2]), OutputPlan()), record
                )
            case ["instance", instance_id, "stdin"] if method == "POST":
                self._reply(200, b"")
            case ["instance", instance_id, "output"] if method == "GET":
                self._stream_output(instance_id, record)
            case _:
                self._reply(404, b"")

    def _drop(self) -> None:
        """Break the connection the way a crashing hub does."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _stream_output(self, instance_id: str, record: Recorded) -> None:
        hub = self.fake
        with hub.lock:
            plan = hub.outputs.setdefault(instance_id, OutputPlan())
        self._serve_plan(plan, record)

    def _serve_plan(self, plan: OutputPlan, record: Recorded) -> None:
        hub = self.fake
        with hub.lock:
            drop = plan.drops.pop(0) if plan.drops else None
        requested = int(record.headers.get("x-si-offset") or 0)
        start = max(0, requested - plan.rewind + plan.skip_ahead)
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        if plan.offsets:
            self.send_header("x-si-offset", str(start))
        self.end_headers()
        body = plan.data[start:]
        if drop is not None:
            body = body[:drop]
        for index in range(0, len(body), plan.chunk):
            piece = body[index : index + plan.chunk]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.flush()
        if drop is not None:
            self._drop()
            return
        while plan.endless:
            time.sleep(0.01)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(plan.data), plan.data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
