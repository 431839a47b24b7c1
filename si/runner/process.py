"""The Python runner: one detached process per instance, running the user's sequence.

The hub starts it (``python -m si.runner <instance dir>``) in its own session with stdout and
stderr going to files in the instance directory and a listening Unix socket on fd 3. The
runner records who it is in ``runner.json``, then serves the link: whichever hub connects and
proves the instance's token gets the streams, so a restarted hub simply dials again and every
stream resumes (see ``si.protocol.link``).

The sequence runs on asyncio because that is what STH's Python sequences are written for.
Resource handling: the runner owns the listening socket, at most one hub connection at a time
(a newer one replaces an older one), and the instance's log file. It exits through
:meth:`Runner.finish`, which records the exit status and any output the hub has not consumed,
so a hub that comes back later still serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from si.allocator import keep_freed_memory
from si.fsutil import read_json, write_json_atomic
from si.protocol.frames import Channel
from si.protocol.link import (
    DEFAULT_WINDOW,
    Data,
    Ended,
    Link,
    LinkError,
    Message,
    WindowOpened,
)
from si.runner.context import AppContext
from si.runner.framework import passthrough_source, scramjet_stream
from si.runner.identity import ProcessIdentity
from si.runner.streams import NDJSON_TYPES, InputStream, output_encoder
from si.segments import DEFAULT_KEEP, DEFAULT_SEGMENT_BYTES, SegmentWriter

# Exit codes, as STH's hub maps them to statuses and reasons.
EXIT_COMPLETED = 0
EXIT_INVALID_PATH = 21
EXIT_FAILED_ON_START = 22
EXIT_FAILED_DURING_EXECUTION = 23
EXIT_KILLED = 137
EXIT_STOPPED = 138

# Output is gathered into batches of about this size before a frame is sent: per-frame costs
# are paid once per batch instead of once per line, while a slow generator still flushes at
# once (the flush is scheduled whenever the sequence yields to the event loop).
OUTPUT_BATCH = 64 * 1024
# Bytes through the link after which the runner tunes its allocator for streaming (see
# si/allocator.py); an instance that never streams keeps the C library's frugal defaults and
# ~0.2 MiB less resident.
STREAMING_BYTES = 4 << 20
# Messages (events, stop notices) a runner may hold for an absent hub; beyond this emit drops.
MONITORING_WINDOW = 1 << 20
# How long an older hub connection may take to reach its end once a newer hub connected.
OLD_CONNECTION_GRACE = 2.0
# How long a finishing runner waits for its last bytes to leave the socket buffer.
DRAIN_TIMEOUT = 0.5
HEARTBEAT_INTERVAL = 1.0

# Control and monitoring message codes (STH's numbering).
PING = 3000
MONITORING = 3001
SEQUENCE_STOPPED = 3006
ALIVE = 3010
PANG = 3012
EVENT = 5001
STOP = 4001
KILL = 4002
MONITORING_RATE = 4003

log = logging.getLogger("si.runner")


class SequenceLoadError(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HubConnection(asyncio.Protocol):
    """One accepted connection from a hub; all logic lives in the Runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Room for a whole window of output in the socket: writes seldom wait for the hub.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEFAULT_WINDOW)
        self.runner.attach(self)

    def data_received(self, data: bytes) -> None:
        self.runner.receive(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.runner.detach(self)


class Runner:
    def __init__(self, instance_dir: Path, spawn: dict[str, Any], listener: socket.socket) -> None:
        self.instance_dir = instance_dir
        self.instance_id: str = spawn["instance_id"]
        self.spawn = spawn
        self.listener = listener
        self.link = Link(
            "runner",
            self.instance_id,
            bytes.fromhex(spawn["token"]),
            outbound={Channel.OUTPUT: DEFAULT_WINDOW, Channel.MONITORING: MONITORING_WINDOW},
            inbound={
                Channel.INPUT: DEFAULT_WINDOW,
                Channel.STDIN: DEFAULT_WINDOW,
                Channel.CONTROL: DEFAULT_WINDOW,
            },
        )
        self.connection: HubConnection | None = None
        # A newer hub's connection, waiting until the current one has been read to its end.
        self._waiting: HubConnection | None = None
        self._waiting_data: list[bytes] = []
        self.input = InputStream(lambda n: self._consumed(Channel.INPUT, n))
        # What POST /stdin sends: text lines, offered to the sequence as sys.stdin.
        self.stdin = InputStream(lambda n: self._consumed(Channel.STDIN, n), "text/plain")
        self._window_open = asyncio.Event()
        self._batch: list[bytes | memoryview] = []
        self._batch_size = 0
        self._flush_scheduled = False
        self._traffic = 0  # bytes through the link until the allocator is tuned; then -1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.context: AppContext | None = None
        self.heartbeat_interval = HEARTBEAT_INTERVAL

    # -- connection ------------------------------------------------------------------------

    def attach(self, connection: HubConnection) -> None:
        """A hub connected. If an older connection is still open, it is read to its end
        first: bytes the old hub wrote before it died are still in that socket, and the
        handshake on the new connection must report them as received."""
        if self.connection is None:
            self._activate(connection)
            return
        if self._waiting is not None and self._waiting.transport is not None:
            self._waiting.transport.close()  # a newer hub supersedes a waiting one
        self._waiting = connection
        self._waiting_data.clear()
        asyncio.get_running_loop().call_later(
            OLD_CONNECTION_GRACE, self._replace_stale, self.connection
        )

    def _activate(self, connection: HubConnection) -> None:
        self.connection = connection
        self.link.connection_made(pid=os.getpid())
        self.flush()

    def _replace_stale(self, old: HubConnection) -> None:
        # The old connection neither ended nor was replaced in time: drop it.
        if old is self.connection and self._waiting is not None and old.transport is not None:
            old.transport.close()

    def detach(self, connection: HubConnection) -> None:
        if connection is self._waiting:
            self._waiting = None
            return
        if connection is not self.connection:
            return
        self.connection = None
        self.link.connection_lost()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._activate(waiting)
            for data in self._waiting_data:
                self.receive(waiting, data)
            self._waiting_data.clear()

    def receive(self, connection: HubConnection, data: bytes) -> None:
        if connection is self._waiting:
            self._waiting_data.append(data)  # its handshake waits for the old connection
            return
        if connection is not self.connection:
            return
        self._count_traffic(len(data))
        try:
            events = self.link.receive_data(data)
        except LinkError as exc:
            log.warning("dropping hub connection: %s", exc)
            if connection.transport is not None:
                connection.transport.close()
            return
        for event in events:
            if isinstance(event, Data):
                self._on_data(event.channel, event.data)
            elif isinstance(event, WindowOpened):
                if event.channel == Channel.OUTPUT:
                    self._flush_batch()
                    self._window_open.set()
            elif isinstance(event, Ended):
                if event.channel == Channel.INPUT:
                    self.input.end()
                elif event.channel == Channel.STDIN:
                    self.stdin.end()
            elif isinstance(event, Message):
                pass  # the hub sends no unnumbered messages the runner must act on
        self.flush()

    def flush(self) -> None:
        data = self.link.data_to_send()
        if data and self.connection is not None and self.connection.transport is not None:
            self.connection.transport.write(data)

    def _count_traffic(self, nbytes: int) -> None:
        if self._traffic >= 0:
            self._traffic += nbytes
            if self._traffic >= STREAMING_BYTES:
                self._traffic = -1
                keep_freed_memory()  # stream buffers are reused instead of faulted in afresh

    def _consumed(self, channel: int, nbytes: int) -> None:
        self.link.consume(channel, nbytes)
        self.flush()

    def _on_data(self, channel: int, data: bytes) -> None:
        if channel == Channel.INPUT:
            self.input.feed(data)
        elif channel == Channel.CONTROL:
            self.link.consume(channel, len(data))
            self._on_control(json.loads(data))
        elif channel == Channel.STDIN:
            self.stdin.feed(data)

    def _on_control(self, message: Any) -> None:
        code, body = message[0], message[1] if len(message) > 1 else {}
        if code == KILL:
            self.finish(EXIT_KILLED, "Instance killed")
        elif code == STOP:
            self.spawn_task(self._stop(body))
        elif code == EVENT and self.context is not None:
            self.context.dispatch_event(body.get("eventName", ""), body.get("message"))
        elif code == MONITORING_RATE:
            rate = body.get("monitoringRate", 1)
            self.heartbeat_interval = 1.0 / rate if rate else HEARTBEAT_INTERVAL

    async def _stop(self, body: dict[str, Any]) -> None:
        timeout_ms = body.get("timeout", 7000)
        can_keep_alive = bool(body.get("canCallKeepalive", False))
        if self.context is not None:
            self.context.keep_alive_requested = False
            try:
                await self.context.run_stop_handlers(timeout_ms / 1000, can_keep_alive)
            except Exception as exc:
                log.error("stop handler failed: %s", exc)
            if can_keep_alive and self.context.keep_alive_requested:
                return
        self.send_monitoring([SEQUENCE_STOPPED, {}])
        self.finish(EXIT_STOPPED, "Instance stopped")

    # -- to the hub ------------------------------------------------------------------------

    def send_monitoring(self, message: list[Any]) -> None:
        if self.link.writable(Channel.MONITORING) <= 0:
            log.warning("hub absent too long: dropping message %s", message[0])
            return
        self.link.send_json(Channel.MONITORING, message)
        self.flush()

    def emit_event(self, event_name: str, message: Any) -> None:
        self.send_monitoring([EVENT, {"eventName": event_name, "message": message}])

    def send_alive(self) -> None:
        self.send_monitoring([ALIVE, {}])

    def spawn_task(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- output ----------------------------------------------------------------------------

    def _flush_batch(self) -> bool:
        """Queue what the window allows of the output batch; False if nothing could go.

        Items are never split across frames, so output always ends where an item ends (a
        killed instance's output has no half line). An item goes when it fits the window, or
        when nothing is in flight (one item larger than the window).
        """
        self._flush_scheduled = False
        batch = self._batch
        if not batch:
            return False
        room = self.link.writable(Channel.OUTPUT)
        take, size = len(batch), self._batch_size
        if size > room:
            take = size = 0
            for item in batch:
                if size + len(item) > room:
                    break
                take += 1
                size += len(item)
            if not take:
                if self.link.outbound[Channel.OUTPUT].in_flight() > 0:
                    return False
                take, size = 1, len(batch[0])
        data = batch[0] if take == 1 else b"".join(batch[:take])
        del batch[:take]
        self._batch_size -= size
        self.link.send(Channel.OUTPUT, bytes(data))
        self._count_traffic(size)
        self.flush()
        return True

    async def _write_batch_when_possible(self) -> None:
        while self._batch:
            if not self._flush_batch():
                self._window_open.clear()
                await self._window_open.wait()

    def _add_output(self, data: bytes | memoryview) -> bool:
        """Queue encoded output; True when the batch is full and must be written first."""
        if not data:
            return False
        self._batch.append(data)
        self._batch_size += len(data)
        if self._batch_size >= OUTPUT_BATCH:
            return True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_batch)
        return False

    async def pump_output(self, source: Any, content_type: str | None) -> None:
        encode = output_encoder(content_type)
        add = self._add_output
        passthrough = passthrough_source(source, self.input)
        if passthrough is not None:
            # `return input`: whole blocks, the same bytes as item by item (see streams.py).
            async for block in passthrough.output_blocks(content_type):
                if add(block):
                    await self._write_batch_when_possible()
        elif isinstance(source, str | bytes | bytearray):
            add(encode(source))
        elif isinstance(source, AsyncIterable):
            async for item in source:
                if add(encode(item)):
                    await self._write_batch_when_possible()
        elif isinstance(source, Iterable) and not isinstance(source, dict):
            for item in source:
                if add(encode(item)):
                    await self._write_batch_when_possible()
                    await asyncio.sleep(0)  # let control messages in between batches
        else:
            add(encode(source))
        await self._write_batch_when_possible()
        self.link.end(Channel.OUTPUT)
        self.flush()

    # -- lifecycle -------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            health = self.context.health() if self.context is not None else {"healthy": True}
            if self.link.send_message([MONITORING, health]):
                self.flush()

    def declare_topics(self, module: Any) -> None:
        """Tell the hub the module-level topic declarations (STH's ``provides``/``requires``).

        Written to ``declared.json`` before the sequence runs, so a hub routes them even when
        the sequence ends before the hub connected; also sent as STH's PANG messages.
        """
        declared: dict[str, Any] = {}
        for name in ("provides", "requires"):
            value = getattr(module, name, None)
            if isinstance(value, dict) and value.get(name):
                declared[name] = {
                    name: str(value[name]),
                    "contentType": str(value.get("contentType", "")),
                }
        if not declared:
            return
        # For a hub that connects after the sequence ended; the PANGs tell a connected one. A
        # full disk loses only the former.
        with contextlib.suppress(OSError):
            write_json_atomic(self.instance_dir / "declared.json", declared)
        for declaration in declared.values():
            self.send_monitoring([PANG, declaration])

    async def run_sequence(self, module: Any) -> None:
        spawn = self.spawn
        logger = make_sequence_logger(spawn, self.instance_dir / "log", self.instance_id)
        self.context = context = AppContext(self, dict(spawn.get("app_config") or {}), logger)
        requires = getattr(module, "requires", None)
        if isinstance(requires, dict) and requires.get("contentType"):
            self.input.set_content_type(str(requires["contentType"]))
        provides = getattr(module, "provides", None)
        content_type = provides.get("contentType") if isinstance(provides, dict) else None
        try:
            sys.stdin = self.stdin  # async: `async for line in sys.stdin`
            result = module.run(context, scramjet_stream(self.input), *spawn.get("args", []))
            # Not inspect.isawaitable: a scramjet Stream defines __await__ only to refuse it.
            if inspect.iscoroutine(result) or asyncio.isfuture(result):
                result = await result
            if result is not None:
                declared = getattr(result, "content_type", None)
                if isinstance(declared, str) and declared in NDJSON_TYPES:
                    content_type = declared
                # STH's runtime declaration: attributes set on the returned stream.
                for key in ("provides", "requires"):
                    topic = getattr(result, key, None)
                    if isinstance(topic, str) and topic:
                        kind = declared if isinstance(declared, str) else ""
                        self.send_monitoring([PANG, {key: topic, "contentType": kind}])
                await self.pump_output(result, content_type)
            else:
                self.link.end(Channel.OUTPUT)
                self.flush()
        except Exception:
            sys.stderr.write(traceback.format_exc())
            self.finish(EXIT_FAILED_DURING_EXECUTION, "Sequence failed during execution")
            return
        self.finish(EXIT_COMPLETED, "Instance completed")

    def finish(self, code: int, reason: str) -> None:
        if not self._done.done():
            self._done.set_result((code, reason))

    async def main(self, module: Any | None, load_error: SequenceLoadError | None) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(lambda: HubConnection(self), sock=self.listener)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.finish, EXIT_KILLED, "Instance killed")
        self.spawn_task(self.heartbeat())
        if load_error is not None:
            self.finish(load_error.exit_code, str(load_error))
        else:
            self.declare_topics(module)
            self.send_monitoring([PING, {"pid": os.getpid()}])
            self.spawn_task(self.run_sequence(module))
        code, reason = await self._done
        self._record_exit(code, reason)
        await self._drain()
        server.close()
        return code

    def _record_exit(self, code: int, reason: str) -> None:
        """Persist what the hub may still need: unconsumed output, then the exit status."""
        output = self.link.outbound[Channel.OUTPUT]
        base = output.acked
        exit_info: dict[str, Any] = {"code": code, "reason": reason, "time": time.time()}
        tail_path = self.instance_dir / "output.tail"
        try:
            with open(tail_path, "wb") as tail:
                for offset, payload in output.replay:
                    tail.write(payload[max(0, base - offset) :])
            exit_info["output"] = {"base": base, "end": output.next_offset, "ended": output.ended}
        except OSError:
            # A full disk: the connected hub still drains the output over the link; a hub that
            # is not connected finds no saved output instead of a cut one.
            tail_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # then the keeper's wait.json tells the exit code
            write_json_atomic(self.instance_dir / "exit.json", exit_info)

    async def _drain(self) -> None:
        connection = self.connection
        if connection is None or connection.transport is None:
            return
        transport = connection.transport
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


class JsonLineFormatter(logging.Formatter):
    """STH's log entry shape: one JSON object per line."""

    LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}

    def __init__(self, source: str, instance_id: str) -> None:
        super().__init__()
        self.source = source
        self.instance_id = instance_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": int(record.created * 1000),
            "level": self.LEVELS.get(record.levelname, record.levelname),
            "msg": record.getMessage(),
            "from": self.source,
            self.source: {"id": self.instance_id},
        }
        return json.dumps(entry, default=str)


class SegmentLogHandler(logging.Handler):
    """Writes log lines to the instance's size-rotated log (this process is its only writer)."""

    def __init__(self, writer: SegmentWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)


def make_sequence_logger(
    spawn: dict[str, Any], directory: Path, instance_id: str
) -> logging.Logger:
    logger = logging.getLogger("Sequence")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    writer = SegmentWriter(
        directory,
        segment_bytes=int(spawn.get("log_segment_bytes", DEFAULT_SEGMENT_BYTES)),
        keep=int(spawn.get("log_keep", DEFAULT_KEEP)),
    )
    handler = SegmentLogHandler(writer)
    handler.setFormatter(JsonLineFormatter("Sequence", instance_id))
    logger.addHandler(handler)
    return logger


def load_sequence(sequence_dir: Path, entry: str) -> Any:
    """Import the sequence's main file the way STH's Python runner does.

    Raises:
        SequenceLoadError: with STH's exit code and a message for the user.
    """
    path = sequence_dir / entry
    if not path.is_file():
        raise SequenceLoadError(
            EXIT_INVALID_PATH,
            f"Sequence entrypoint path {entry} is invalid. Check `main` field in package.json",
        )
    for extra in (sequence_dir / "__pypackages__", path.parent):
        sys.path.insert(0, str(extra))
    os.chdir(sequence_dir)
    try:
        spec = importlib.util.spec_from_file_location("sequence", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {entry}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["sequence"] = module
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.stderr.write(traceback.format_exc())
        summary = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
        raise SequenceLoadError(
            EXIT_FAILED_ON_START, f"Sequence failed on start: {summary}"
        ) from None
    if not callable(getattr(module, "run", None)):
        raise SequenceLoadError(
            EXIT_FAILED_ON_START, f"Sequence failed on start: {entry} defines no run()"
        )
    return module


def main(argv: list[str]) -> int:
    instance_dir = Path(argv[1]).absolute()
    spawn = read_json(instance_dir / "spawn.json")
    listener = socket.socket(fileno=3)
    listener.setblocking(False)
    identity = ProcessIdentity.of(os.getpid())
    assert identity is not None
    write_json_atomic(
        instance_dir / "runner.json",
        {
            "pid": identity.pid,
            "start_time": identity.start_time,
            "boot_id": identity.boot_id,
            "socket": spawn["socket"],
            "token": spawn["token"],
            "protocol": 1,
        },
    )
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    module: Any = None
    load_error: SequenceLoadError | None = None
    try:
        module = load_sequence(Path(spawn["sequence_dir"]), spawn["entry"])
    except SequenceLoadError as exc:
        load_error = exc

    async def run() -> int:
        runner = Runner(instance_dir, spawn, listener)
        return await runner.main(module, load_error)

    # Not asyncio.run: its teardown waits for every task, and a sequence's task that ignores
    # cancellation would then hold the exit.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    code = loop.run_until_complete(run())
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    # Skip interpreter teardown: the sequence's leftover threads or tasks must not hold the
    # exit (the status is already recorded).
    os._exit(code)
