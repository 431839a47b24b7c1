"""The Python runner: one detached process per instance, running the user's sequence.

The hub starts it (``python -m si.runner <instance dir>``) in its own session with stdout and
stderr going to files in the instance directory and a listening Unix socket on fd 3. The
runner records who it is in ``runner.json``, then serves the link (``si.runner.link_server``):
whichever hub connects and proves the instance's token gets the streams, so a restarted hub
simply dials again and every stream resumes (see ``si.protocol.link``).

The sequence runs on asyncio because that is what STH's Python sequences are written for.
Resource handling: the runner owns the listening socket and the instance's log file. It exits
through :meth:`Runner.finish`, which records the exit status and any output the hub has not
consumed, so a hub that comes back later still serves them.
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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from si.allocator import keep_freed_memory
from si.identity import ProcessIdentity
from si.protocol import messages
from si.protocol.frames import Channel
from si.protocol.instance_dir import ExitRecord, InstanceDir, RunnerRecord, SavedOutput, SpawnSpec
from si.protocol.link import Link, WindowFull
from si.protocol.messages import ExitCode
from si.runner.context import AppContext
from si.runner.framework import scramjet_stream
from si.runner.link_server import LinkServer
from si.runner.output import OutputBatcher, pump_output
from si.runner.streams import NDJSON_TYPES, InputStream
from si.segments import DEFAULT_KEEP, DEFAULT_SEGMENT_BYTES, SegmentWriter

# Bytes through the link after which the runner tunes its allocator for streaming (see
# si/allocator.py); an instance that never streams keeps the C library's frugal defaults and
# ~0.2 MiB less resident.
STREAMING_BYTES = 4 << 20
# How long a finishing runner waits for its last bytes to leave the socket buffer.
DRAIN_TIMEOUT = 0.5
HEARTBEAT_INTERVAL = 1.0

log = logging.getLogger("si.runner")


class SequenceLoadError(Exception):
    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Runner:
    """The sequence's side: its streams, its control messages, its exit."""

    def __init__(self, instance_dir: Path, spawn: SpawnSpec, listener: socket.socket) -> None:
        self.directory = InstanceDir(instance_dir)
        self.instance_id = spawn.instance_id
        self.spawn = spawn
        self.listener = listener
        self.link = Link.for_runner(self.instance_id, bytes.fromhex(spawn.token))
        self.server = LinkServer(self.link, self)
        self.output = OutputBatcher(self.link, self.server.flush, self.count_traffic)
        self.input = InputStream(lambda n: self._consumed(Channel.INPUT, n))
        # What POST /stdin sends: text lines, offered to the sequence as sys.stdin.
        self.stdin = InputStream(lambda n: self._consumed(Channel.STDIN, n), "text/plain")
        self._traffic = 0  # bytes through the link until the allocator is tuned; then -1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.context: AppContext | None = None
        self.heartbeat_interval = HEARTBEAT_INTERVAL

    # -- from the hub (LinkReceiver) -------------------------------------------------------

    def on_data(self, channel: int, data: bytes) -> None:
        if channel == Channel.INPUT:
            self.input.feed(data)
        elif channel == Channel.CONTROL:
            self.link.consume(channel, len(data))
            try:
                self._on_control(messages.parse(json.loads(data)))
            except (ValueError, messages.MessageError) as exc:
                log.warning("ignoring a malformed control message: %s", exc)
        elif channel == Channel.STDIN:
            self.stdin.feed(data)

    def on_ended(self, channel: int) -> None:
        if channel == Channel.INPUT:
            self.input.end()
        elif channel == Channel.STDIN:
            self.stdin.end()

    def on_window_opened(self, channel: int) -> None:
        if channel == Channel.OUTPUT:
            self.output.window_opened()

    def count_traffic(self, nbytes: int) -> None:
        if self._traffic >= 0:
            self._traffic += nbytes
            if self._traffic >= STREAMING_BYTES:
                self._traffic = -1
                keep_freed_memory()  # stream buffers are reused instead of faulted in afresh

    def _consumed(self, channel: int, nbytes: int) -> None:
        self.link.consume(channel, nbytes)
        self.server.flush()

    def _on_control(self, message: messages.AnyMessage) -> None:
        if isinstance(message, messages.Kill):
            self.finish(ExitCode.KILLED, ExitCode.KILLED.reason)
        elif isinstance(message, messages.Stop):
            self.spawn_task(self._stop(message))
        elif isinstance(message, messages.SequenceEvent) and self.context is not None:
            self.context.dispatch_event(message.name, message.message)
        elif isinstance(message, messages.MonitoringRate):
            rate = message.rate
            self.heartbeat_interval = 1.0 / rate if rate else HEARTBEAT_INTERVAL

    async def _stop(self, stop: messages.Stop) -> None:
        if self.context is not None:
            self.context.keep_alive_requested = False
            try:
                await self.context.run_stop_handlers(stop.timeout_ms / 1000, stop.can_keep_alive)
            except Exception as exc:
                log.error("stop handler failed: %s", exc)
            if stop.can_keep_alive and self.context.keep_alive_requested:
                return
        self.send_monitoring(messages.SequenceStopped())
        self.finish(ExitCode.STOPPED, ExitCode.STOPPED.reason)

    # -- to the hub (the context's SequenceHost) -------------------------------------------

    def send_monitoring(self, message: messages.AnyMessage) -> None:
        try:
            self.link.send_json(Channel.MONITORING, messages.encode(message))
        except WindowFull:
            log.warning("hub absent too long: dropping message %d", message.code)
            return
        self.server.flush()

    def emit_event(self, event_name: str, message: Any) -> None:
        self.send_monitoring(messages.SequenceEvent(event_name, message))

    def send_alive(self) -> None:
        self.send_monitoring(messages.Alive())

    def spawn_task(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle -------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            health = self.context.health() if self.context is not None else {"healthy": True}
            if self.link.send_message(messages.encode(messages.Health(health))):
                self.server.flush()

    def declare_topics(self, module: Any) -> None:
        """Tell the hub the module-level topic declarations (STH's ``provides``/``requires``).

        Written to ``declared.json`` before the sequence runs, so a hub routes them even when
        the sequence ends before the hub connected; also sent as STH's PANG messages.
        """
        declared: dict[str, dict[str, str]] = {}
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
            self.directory.write_declared(declared)
        for declaration in declared.values():
            for pang in messages.Pang.from_declaration(declaration):
                self.send_monitoring(pang)

    async def run_sequence(self, module: Any) -> None:
        spawn = self.spawn
        logger = make_sequence_logger(spawn, self.directory.log, self.instance_id)
        self.context = context = AppContext(self, dict(spawn.app_config), logger)
        requires = getattr(module, "requires", None)
        if isinstance(requires, dict) and requires.get("contentType"):
            self.input.set_content_type(str(requires["contentType"]))
        provides = getattr(module, "provides", None)
        content_type = provides.get("contentType") if isinstance(provides, dict) else None
        try:
            sys.stdin = self.stdin  # async: `async for line in sys.stdin`
            result = module.run(context, scramjet_stream(self.input), *spawn.args)
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
                        self.send_monitoring(messages.Pang(key, topic, kind))
                await pump_output(self.output, result, self.input, content_type)
            else:
                await self.output.end()
        except Exception:
            sys.stderr.write(traceback.format_exc())
            self.finish(ExitCode.FAILED_DURING_EXECUTION, ExitCode.FAILED_DURING_EXECUTION.reason)
            return
        self.finish(ExitCode.COMPLETED, ExitCode.COMPLETED.reason)

    def finish(self, code: int, reason: str) -> None:
        if not self._done.done():
            self._done.set_result((code, reason))

    async def main(self, module: Any | None, load_error: SequenceLoadError | None) -> int:
        loop = asyncio.get_running_loop()
        await self.server.serve(self.listener)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.finish, ExitCode.KILLED, ExitCode.KILLED.reason)
        self.spawn_task(self.heartbeat())
        if load_error is not None:
            self.finish(load_error.exit_code, str(load_error))
        else:
            self.declare_topics(module)
            self.send_monitoring(messages.Ping(os.getpid()))
            self.spawn_task(self.run_sequence(module))
        code, reason = await self._done
        self._record_exit(code, reason)
        await self.server.drain(DRAIN_TIMEOUT)
        self.server.close()
        return code

    def _record_exit(self, code: int, reason: str) -> None:
        """Persist what the hub may still need: unconsumed output, then the exit status."""
        output = self.link.outbound[Channel.OUTPUT]
        base = output.acked
        saved: SavedOutput | None = None
        try:
            self.directory.write_output_tail(
                memoryview(payload)[max(0, base - offset) :] for offset, payload in output.replay
            )
            saved = SavedOutput(base, output.next_offset, output.ended)
        except OSError:
            # A full disk: the connected hub still drains the output over the link; a hub that
            # is not connected finds no saved output instead of a cut one.
            with contextlib.suppress(OSError):
                self.directory.discard_output_tail()
        with contextlib.suppress(OSError):  # then the keeper's wait.json tells the exit code
            self.directory.write_exit(ExitRecord(code, reason, time.time(), saved))


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


def make_sequence_logger(spawn: SpawnSpec, directory: Path, instance_id: str) -> logging.Logger:
    logger = logging.getLogger("Sequence")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    writer = SegmentWriter(
        directory,
        segment_bytes=spawn.log_segment_bytes or DEFAULT_SEGMENT_BYTES,
        keep=spawn.log_keep or DEFAULT_KEEP,
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
            ExitCode.INVALID_PATH,
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
            ExitCode.FAILED_ON_START, f"Sequence failed on start: {summary}"
        ) from None
    if not callable(getattr(module, "run", None)):
        raise SequenceLoadError(
            ExitCode.FAILED_ON_START, f"Sequence failed on start: {entry} defines no run()"
        )
    return module


def main(argv: list[str]) -> int:
    instance_dir = Path(argv[1]).absolute()
    directory = InstanceDir(instance_dir)
    spawn = directory.read_spawn()
    listener = socket.socket(fileno=3)
    listener.setblocking(False)
    identity = ProcessIdentity.of(os.getpid())
    assert identity is not None
    directory.write_runner(
        RunnerRecord(identity.pid, identity.start_time, identity.boot_id, spawn.socket, spawn.token)
    )
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    module: Any = None
    load_error: SequenceLoadError | None = None
    try:
        module = load_sequence(Path(spawn.sequence_dir), spawn.entry)
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
