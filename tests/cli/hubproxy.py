"""A real hub for CLI tests, behind a proxy that records requests and injects faults.

The hub is ``si hub serve`` on a temporary home (``si.testing.HubProcess``); the CLI under test
talks to the proxy's own Unix socket, which passes bytes through both ways as they come (so
uploads, stdin and followed output stream as they would), parses the requests with h11 to
record them, and on demand answers one request itself or cuts a response short, the way a
failing hub would. Stopping the proxy removes its socket: to the CLI, the hub went away.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

from si.client import HubClient
from si.paths import connectable_unix_path
from si.testing import HubProcess, python_package, wait_for

# Sequences the CLI tests start: a counter that prints its numbers and one that echoes input.
COUNTER = """\
async def run(context, input, *args):
    count = int(args[0]) if args else 3
    for n in range(count):
        yield f"{n}\\n"
"""
ECHO = """\
async def run(context, input, *args):
    async for chunk in input:
        yield chunk
"""
UPPER = """\
async def run(context, input, *args):
    async for chunk in input:
        yield chunk.upper()
"""
# Writes raw bytes to stdout and stderr and a line to its log, then ends.
CHATTY = """\
import sys

async def run(context, input, *args):
    sys.stdout.buffer.write(b"\\x00\\xffline one\\nline two\\n")
    sys.stdout.flush()
    sys.stderr.buffer.write(b"\\x01\\xfeerr one\\n")
    sys.stderr.flush()
    context.logger.info("a log line")
    yield ""
"""
# Answers every event it is sent with the same event and message, until its input ends.
REPLY = """\
async def run(context, input, *args):
    for name in ("greet", "n", "bare"):
        context.on(name, lambda message, name=name: context.emit(name, message))
    async for chunk in input:
        yield chunk
"""


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HubProxy:
    """A proxy on ``socket_path`` in front of the hub listening on ``upstream``."""

    def __init__(self, socket_path: str, upstream: str) -> None:
        self.socket_path = socket_path
        self.upstream = upstream
        self.requests: list[Recorded] = []
        # (status, body) answered by the proxy to the next request, which the hub never sees.
        self.fail_next: tuple[int, bytes] | None = None
        # Cut the next response after this many bytes (head included), as a crashing hub does.
        self.cut_next_response: int | None = None
        self.lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._dirfd: int | None = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return self.socket_path

    def start(self) -> HubProxy:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        bind_path, self._dirfd = connectable_unix_path(self.socket_path)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(bind_path)
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop answering and remove the socket, like a hub that went away."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None

    def requests_to(self, method: str, suffix: str) -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == method
                and (r.path.endswith(suffix) or r.path.split("?", 1)[0].endswith(suffix))
            ]

    # -- connections -------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _upstream_ready(self) -> None:
        """Called before each connection is passed on (the real hub starts lazily)."""

    def _serve(self, client: socket.socket) -> None:
        try:
            self._upstream_ready()
        except Exception:
            client.close()
            raise
        target, dirfd = connectable_unix_path(self.upstream)
        hub = socket.socket(socket.AF_UNIX)
        try:
            hub.connect(target)
        except OSError:
            client.close()
            hub.close()
            return
        finally:
            if dirfd is not None:
                os.close(dirfd)
        back = threading.Thread(target=self._responses, args=(hub, client), daemon=True)
        back.start()
        parser: h11.Connection | None = h11.Connection(h11.SERVER)
        current: Recorded | None = None
        try:
            while data := client.recv(256 * 1024):
                if parser is not None:
                    parser.receive_data(data)
                    try:
                        current, answered = self._record(parser, current, client)
                    except h11.ProtocolError:
                        parser = None
                        answered = False
                    if answered:
                        return
                hub.sendall(data)
            hub.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            back.join(30)
            client.close()
            hub.close()

    def _record(
        self, parser: h11.Connection, current: Recorded | None, client: socket.socket
    ) -> tuple[Recorded | None, bool]:
        """Record what ``parser`` has now; True when the proxy answered a request itself."""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return current, False
            if isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                current = Recorded(event.method.decode(), event.target.decode(), headers, b"")
                with self.lock:
                    self.requests.append(current)
                    failure, self.fail_next = self.fail_next, None
                if failure is not None:
                    status, body = failure
                    client.sendall(
                        b"HTTP/1.1 %d Failure\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                        % (status, len(body), body)
                    )
                    return current, True
            elif isinstance(event, h11.Data) and current is not None:
                current.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                # The hub answers; the parser only needs its turn to reach the next request.
                parser.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                parser.send(h11.EndOfMessage())
                if parser.our_state is h11.MUST_CLOSE:
                    return current, False
                parser.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return current, False

    def _responses(self, hub: socket.socket, client: socket.socket) -> None:
        with self.lock:
            cut, self.cut_next_response = self.cut_next_response, None
        sent = 0
        try:
            while data := hub.recv(256 * 1024):
                if cut is not None and sent + len(data) >= cut:
                    client.sendall(data[: cut - sent])
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)
                sent += len(data)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class HubUnderTest(HubProxy):
    """The ``hub`` of a CLI test: a real hub on ``home`` behind a recording proxy."""

    def __init__(self, socket_path: str, home: Path) -> None:
        self.process = HubProcess(home)
        self._starting = threading.Lock()
        super().__init__(socket_path, self.process.address)

    def _upstream_ready(self) -> None:
        # Started on first use: most CLI tests never reach the hub, and a hub start is ~0.2 s.
        with self._starting:
            if self.process.process is None:
                self.process.start()

    def close(self) -> None:
        self.stop()
        if self.process.process is not None:
            self.process.stop()
            self.process.kill_runners()

    def __enter__(self) -> HubUnderTest:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state, straight from the hub (never through the proxy) ------------------------------

    def client(self) -> HubClient:
        self._upstream_ready()
        return HubClient(self.process.address)

    def add_sequence(self, source: str = ECHO, name: str = "hello") -> str:
        """Upload a Python sequence (by default one that runs until its input ends); its id."""
        with self.client() as client:
            reply = client.send_sequence(python_package(source, name=name, version="1.2.3"))
        return str(reply["id"])

    def add_instance(self, sequence_id: str, *args: str, **payload: Any) -> str:
        """Start ``sequence_id``; the instance's id once it runs."""
        with self.client() as client:
            reply = client.start_sequence(sequence_id, {"args": list(args), **payload})
        return str(reply["id"])

    @property
    def sequences(self) -> dict[str, dict[str, Any]]:
        with self.client() as client:
            return {s["id"]: s for s in client.list_sequences()}

    @property
    def instances(self) -> dict[str, dict[str, Any]]:
        with self.client() as client:
            return {i["id"]: i for i in client.list_instances()}

    def instance(self, instance_id: str) -> dict[str, Any]:
        with self.client() as client:
            return client.get_instance(instance_id)

    def wait_ended(self, instance_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The instance's record once it is no longer running."""
        live = ("starting", "running", "stopping", "killing", "restarting")
        return wait_for(
            lambda: (r := self.instance(instance_id))["status"] not in live and r, timeout
        )

    def read(self, instance_id: str, stream: str) -> bytes:
        """What the hub serves of an instance's stream now, without following it."""
        with self.client() as client:
            return b"".join(client.instance_stream(instance_id, stream, follow=False))
