"""One instance as the hub sees it: its record, its runner process and its streams.

Layout of ``<home>/instances/<id>/`` (the hub writes the first two, the runner the rest)::

    instance.json   sequence, args, appConfig, status, times, exit (the hub's record)
    spawn.json      what the runner needs to start, including the link token (mode 0600)
    runner.json     the runner's identity: pid, start time, boot id, socket, token
    runner.sock     the runner's listening socket; the hub dials it
    stdout, stderr  the runner's stdio (never a pipe to the hub)
    log             the sequence's log, one JSON object per line
    exit.json       written by the runner as it exits: code, reason, unconsumed output range
    output.tail     the output bytes the hub had not consumed when the runner exited

The hub never signals a process it has not proven to be the runner (pid + start time + boot id
checked through a pidfd, which then cannot be recycled under us).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from si.daemon.events import EventBoard
from si.daemon.fds import OutOfFileDescriptors
from si.daemon.pipe import LagLimit, OutputPipe
from si.daemon.record import InstanceRecord, InstanceStatus, Route
from si.daemon.runner_link import RunnerLink
from si.daemon.state_files import StateFiles
from si.fsutil import is_exhaustion, write_json_atomic
from si.identity import ProcessIdentity
from si.protocol import messages
from si.protocol.frames import Channel
from si.protocol.instance_dir import InstanceDir, SavedOutput
from si.protocol.link import Link, WindowFull
from si.protocol.messages import ExitCode

log = logging.getLogger("si.hub.instance")

# After KILL, how long the runner gets to exit by itself before it is SIGKILLed.
KILL_GRACE = 5.0
# Room past a full control window for the hub's own STOP and KILL (a few dozen bytes each).
CONTROL_RESERVE = 64 * 1024
# How long to wait for the keeper's record of a runner's exit status once the runner is gone.
WAIT_STATUS_TIMEOUT = 0.5
# After re-adoption, consumed output is kept this long (at most RESUME_HOLD_BYTES of it) so
# every follower cut by the restart can resume, not only the first to come back. Followers
# retry within ~0.5 s of the hub answering (si.client's backoff), well inside this.
RESUME_HOLD_SECONDS = 10.0
RESUME_HOLD_BYTES = 8 << 20


class Instance:
    """Record plus live state of one instance; driven by the Supervisor and the API."""

    def __init__(
        self,
        directory: Path,
        record: InstanceRecord,
        *,
        known_link: bool,
        lag_limit: LagLimit | None = None,
    ) -> None:
        self.directory = directory
        self.files = InstanceDir(directory)
        self.state = record
        self.health: Any = None
        self.identity: ProcessIdentity | None = None
        self.pidfd: int | None = None
        # A re-adopted runner's output offsets are learnt from its handshake: until then
        # readers wait rather than be numbered from 0.
        self.output = OutputPipe(self._output_consumed, known=known_link, lag_limit=lag_limit)
        self.ready = trio.Event()
        self.finished = trio.Event()
        self.exited = False
        self.wait_code: int | None = None
        self.remove_immediately = False
        self.unreachable: str | None = None  # why an adopted runner could not be proven
        self.on_topics: Callable[[Instance], None] | None = None
        self.routed: set[str] = set()  # "provides", "requires": routes the hub has wired
        self.input_routes: list[trio.CancelScope] = []
        self.events = EventBoard()
        # The hub's event bus: called with (instance, name, message) for every emitted event.
        self.on_event: Callable[[Instance, str, Any], None] | None = None
        self.keepalive_since_stop = False
        self.link: Link | None = None
        self.runner_link: RunnerLink | None = None
        self._known_link = known_link
        # The hub's writer of state files (None: write directly, failures raise).
        self.state_files: StateFiles | None = None

    @property
    def id(self) -> str:
        return self.state.id

    # -- record ----------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The instance as STH's API shows it (see InstanceRecord.sth_view)."""
        connected = self.live and self.link is not None and self.link.established
        return self.state.sth_view(connected=connected)

    def save(self) -> None:
        """Record the instance in ``instance.json``; through the hub's StateFiles when it has
        them, so a full disk keeps the record in memory for a later retry instead of failing."""
        path = self.files.record_file
        if self.state_files is None:
            write_json_atomic(path, self.state.to_json())
        else:
            self.state_files.write(path, self.state.to_json())

    def set_status(self, status: InstanceStatus) -> None:
        if self.state.status != status:
            self.state.status = status
            self.save()

    @property
    def live(self) -> bool:
        return self.state.live

    def end(self, status: InstanceStatus, reason: str, code: int) -> None:
        """The instance's life is over: record it, end its streams, wake its waiters."""
        self.state.end(status, reason, code)
        self.save()
        self._close()

    def _close(self) -> None:
        """No runner any more: end the streams and wake every waiter."""
        self.exited = True
        if not self.output.ended:
            self.output.close()  # killed mid-stream: readers end after what was saved
        self.events.close()
        for route in self.input_routes:
            route.cancel()
        self.finished.set()

    # -- process ---------------------------------------------------------------------------

    def attach_spawned(self, pid: int) -> None:
        """Watch a runner the keeper just started for us.

        It may already have exited (a sequence that fails at once); then the pidfd cannot be
        had and the exit is collected from the files the runner and keeper leave.

        Raises:
            OutOfFileDescriptors: no descriptor to watch it with; it may well be running.
        """
        self.state.pid = pid
        try:
            identity = ProcessIdentity.of(pid)
        except OSError as exc:
            raise OutOfFileDescriptors.of(exc) from exc
        if identity is None or not self.attach_process(identity):
            self.exited = True

    def attach_process(self, identity: ProcessIdentity) -> bool:
        """Hold a pidfd on an adopted runner; False if that process is no longer the runner.

        Raises:
            OutOfFileDescriptors: the hub is at its descriptor limit: nothing is known about
                the process, which must not be taken for gone.
        """
        try:
            pidfd = os.pidfd_open(identity.pid)
        except ProcessLookupError:
            return False
        except OSError as exc:
            if is_exhaustion(exc):
                raise OutOfFileDescriptors.of(exc) from exc
            raise
        # Checked after opening: the pidfd now pins this exact process.
        try:
            alive = identity.is_alive()
        except OSError as exc:
            os.close(pidfd)
            raise OutOfFileDescriptors.of(exc) from exc
        if not alive:
            os.close(pidfd)
            return False
        self.identity = identity
        self.pidfd = pidfd
        self.state.pid = identity.pid
        return True

    def make_link(
        self, token: str, socket_path: str, *, prove_within: float | None = None
    ) -> RunnerLink:
        self.link = Link.for_hub(self.id, bytes.fromhex(token), known=self._known_link)
        self.runner_link = RunnerLink(self, self.link, socket_path, prove_within=prove_within)
        return self.runner_link

    def runner_alive(self) -> bool:
        return not self.exited and self.unreachable is None

    def on_unreachable(self, reason: str) -> None:
        self.unreachable = reason

    def signal(self, signum: int) -> None:
        if self.pidfd is not None and not self.exited:
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except ProcessLookupError:
                pass

    async def wait_process_exit(self) -> None:
        """Wait for the runner process to end (the keeper, its parent, reaps it)."""
        if self.pidfd is not None:
            await trio.lowlevel.wait_readable(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        self.exited = True
        # The runner writes exit.json as it exits; the keeper writes wait.json once it reaped
        # the runner, which may be a moment after the pidfd said it ended.
        with trio.move_on_after(WAIT_STATUS_TIMEOUT):
            while not self.files.has_exit():
                wait = self.files.read_wait_code()
                if wait is not None:
                    self.wait_code = wait
                    break
                await trio.sleep(0.01)

    def collect_exit(self, wait_code: int | None) -> None:
        """Record how the runner ended: its exit.json when it wrote one, else its wait status."""
        record = self.files.read_exit()
        if wait_code is None:
            wait_code = self.files.read_wait_code()
        self._recover_output(record.output if record is not None else None)
        status, reason, code = exit_status(
            record.code if record is not None else None,
            record.reason if record is not None else None,
            wait_code,
            recorded=record is not None,
        )
        self.end(status, reason, code)

    def collect_saved_output(self) -> None:
        """For an instance that ended before this hub started: serve what the runner saved."""
        record = self.files.read_exit()
        self._recover_output(record.output if record is not None else None)
        self._close()

    def _recover_output(self, saved: SavedOutput | None) -> None:
        """Take the output the runner saved as it exited, beyond what the pipe already has."""
        if saved is None:
            self.output.end()
            return
        base, end = saved.base, saved.end
        pipe = self.output
        if pipe.tail < base:
            if pipe.tail != pipe.head:
                log.error("instance %s: output bytes %d-%d are lost", self.id, pipe.tail, base)
                return
            pipe.rebase(base)  # a hub that never saw this runner's output
        if pipe.tail < end:
            try:
                pipe.append(self.files.read_output_tail(pipe.tail - base, end - pipe.tail))
            except OSError as exc:
                log.error("instance %s: cannot read saved output: %s", self.id, exc)
        if saved.ended or pipe.tail >= end:
            pipe.end()

    # -- link callbacks (LinkOwner) --------------------------------------------------------

    def _output_consumed(self, nbytes: int) -> None:
        if self.runner_link is not None and not self.exited:
            self.runner_link.consume(Channel.OUTPUT, nbytes)

    def check_peer(self, peer: dict[str, Any]) -> str | None:
        # The token proves the peer is this instance's runner; its pid must also be the one
        # our pidfd pins, or a signal meant for the runner would reach another process (a
        # forged or stale runner.json). Both runners put their pid in HELLO.
        pid = self.state.pid
        if pid is not None and peer.get("pid") != pid:
            return (
                f"the runner on its socket is pid {peer.get('pid')}, not pid {pid} "
                "named in runner.json; it is not signalled (stop it by hand if it still runs)"
            )
        return None

    def on_established(self, peer: dict[str, Any], received: dict[int, int]) -> None:
        # A hub that adopted a running runner starts its pipe where the runner's unconsumed
        # output begins; offsets then match those its followers resume from.
        base = received.get(Channel.OUTPUT, 0)
        pipe = self.output
        if not pipe.known:
            pipe.rebase(base)
            pipe.hold(RESUME_HOLD_SECONDS, RESUME_HOLD_BYTES)
        elif pipe.tail == pipe.head and pipe.tail < base:
            pipe.rebase(base)

    def on_output(self, data: bytes) -> None:
        self.output.append(data)

    def on_output_end(self) -> None:
        self.output.end()

    def on_monitoring(self, value: Any) -> None:
        try:
            message = messages.parse(value)
        except messages.MessageError as exc:
            log.warning("instance %s: ignoring a malformed message: %s", self.id, exc)
            return
        if isinstance(message, messages.Ping):
            if self.state.status == InstanceStatus.STARTING:
                self.state.status = InstanceStatus.RUNNING
                self.state.started = time.time()
                self.save()
            self.ready.set()
        elif isinstance(message, messages.Alive):
            self.keepalive_since_stop = True
        elif isinstance(message, messages.Pang):
            self.declare_topics(message.body())
        elif isinstance(message, messages.SequenceEvent):
            self.events.publish(message.name, message.message)
            if self.on_event is not None:
                self.on_event(self, message.name, message.message)

    def declare_topics(self, declared: dict[str, Any]) -> None:
        """Resolve the instance's topic routes: the start payload's names win (STH)."""
        content_type = str(declared.get("contentType") or "")
        state, payload = self.state, self.state.payload
        provides = payload.get("outputTopic") or declared.get("provides")
        requires = payload.get("inputTopic") or declared.get("requires")
        changed = False
        if state.provides is None and provides:
            state.provides = Route(str(provides), content_type)
            changed = True
        if state.requires is None and requires:
            state.requires = Route(str(requires), content_type)
            changed = True
        if changed:
            self.save()
            if self.on_topics is not None:
                self.on_topics(self)

    def on_message(self, value: Any) -> None:
        try:
            message = messages.parse(value)
        except messages.MessageError:
            return
        if isinstance(message, messages.Health):
            self.health = message.report

    # -- control ---------------------------------------------------------------------------

    def send_control(self, message: messages.AnyMessage) -> None:
        """Send a client's message (an event, a monitoring rate) to the runner.

        Raises:
            WindowFull: the runner is not reading its control channel; nothing was queued.
        """
        if self.runner_link is not None:
            self.runner_link.send_json(Channel.CONTROL, messages.encode(message))

    def send_own_control(self, message: messages.Stop | messages.Kill) -> None:
        """Send the hub's own STOP or KILL: past a full window, within a reserve. A runner that
        has not read a whole window and the reserve has earlier STOPs and KILLs still unread;
        the hub's timeouts and SIGKILL end it without one more."""
        if self.runner_link is None:
            return
        try:
            self.runner_link.send_json(
                Channel.CONTROL, messages.encode(message), allowance=CONTROL_RESERVE
            )
        except WindowFull:
            log.warning(
                "instance %s: not reading its control channel; %s not sent",
                self.id,
                message.code.name,
            )

    async def kill(self) -> None:
        """Ask the runner to exit; SIGKILL it if it has not after ``KILL_GRACE`` seconds."""
        self.send_own_control(messages.Kill())
        with trio.move_on_after(KILL_GRACE):
            await self.finished.wait()
            return
        self.signal(signal.SIGKILL)


def exit_status(
    code: int | None, reason: str | None, wait_code: int | None, *, recorded: bool
) -> tuple[InstanceStatus, str, int]:
    """(status, reason, exit code) for a runner that ended: from its own record (``recorded``:
    it wrote exit.json) or, failing that, the keeper's wait status. A stop or a kill the
    runner recorded ends ``completed``, as STH has it."""
    if code is None:
        code = wait_code
    if code is None:
        return InstanceStatus.ERRORED, "Runner died; its exit status is unknown", -1
    if not recorded and code > 128:
        # Killed from outside (the runner records its own stop and kill in exit.json).
        return InstanceStatus.ERRORED, f"Runner killed by signal {code - 128}", code
    known = ExitCode.of(code)
    if known is None:
        return InstanceStatus.ERRORED, reason or "Runner failed", code
    status = InstanceStatus.ERRORED if known.errored else InstanceStatus.COMPLETED
    return status, reason or known.reason, code
