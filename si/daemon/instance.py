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

import dataclasses
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
from si.daemon.record import InstanceRecord, InstanceStatus, Route, RunOutcome
from si.daemon.restart import RestartMode
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
# Output offsets are reserved in instance.json this far ahead of the pipe's tail (see
# InstanceRecord.output_reserved): one small write per 64 MiB of output.
OUTPUT_RESERVATION = 64 << 20


_STOPPED_BY_USER = frozenset({InstanceStatus.STOPPING, InstanceStatus.KILLING})


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
        # Set when the current runner's end is collected, whatever comes next (a start waits
        # for it: a first run that ends before it loaded ends the start, restarted or not).
        self.run_over = trio.Event()
        # A restart policy keeps the output stream open over a runner's END: the next runner
        # continues it. Whether the current runner ended its output:
        self._run_output_ended = False
        # The stream offset up to which the current runner was told its output is consumed.
        self._output_acked_to = record.output_base
        # Why the hub killed the current runner for a limit it crossed (the watchdog's words).
        self.limit_breach: str | None = None
        # The pending restart (its backoff), cancelled by a stop or a kill.
        self.restart_scope: trio.CancelScope | None = None
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

    def save(self, *, durable: bool = True) -> None:
        """Record the instance in ``instance.json``; through the hub's StateFiles when it has
        them, so a full disk keeps the record in memory for a later retry instead of failing.
        ``durable=False``: no fsync, for what only a hub crash (not the machine's) must find."""
        path = self.files.record_file
        if self.state_files is None:
            write_json_atomic(path, self.state.to_json(), durable=durable)
        else:
            self.state_files.write(path, self.state.to_json(), durable=durable)

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

    def conclude(self, outcome: RunOutcome) -> None:
        """The last runner ended and none follows: the instance ends as that runner did."""
        if self._run_output_ended:
            self.output.end()
        self.end(outcome.status, outcome.reason, outcome.code)

    @property
    def may_restart(self) -> bool:
        return self.state.restart_policy.mode is not RestartMode.NO

    def _runner_ended(self) -> None:
        """The current runner is gone (how, and what follows, is for the caller to say)."""
        self.exited = True
        self.run_over.set()

    def _close(self) -> None:
        """No runner any more: end the streams and wake every waiter."""
        self._runner_ended()
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

    async def wait_reaped(self) -> None:
        """Wait, at most WAIT_STATUS_TIMEOUT, until the keeper has recorded reaping the runner.

        The keeper writes wait.json into the instance's directory a moment after the runner
        ended (after exit.json, which is all an exit needs). Removing the directory before
        that races the keeper's write: the directory stays, holding only wait.json, and its id
        can never be started again.
        """
        if self.state.pid is None:
            return  # no runner was ever spawned: no keeper will write
        with trio.move_on_after(WAIT_STATUS_TIMEOUT):
            while not self.files.file("wait").exists():
                await trio.sleep(0.01)

    def collect_exit(self, wait_code: int | None) -> RunOutcome:
        """How the runner ended: its exit.json when it wrote one, else its wait status. The
        output it saved as it exited joins the stream; whether the stream ends, and the
        instance with it, is for the restart policy to say (see ``conclude``)."""
        record = self.files.read_exit()
        if wait_code is None:
            wait_code = self.files.read_wait_code()
        self._recover_output(record.output if record is not None else None)
        self._runner_ended()
        outcome = exit_status(
            record.code if record is not None else None,
            record.reason if record is not None else None,
            wait_code,
            recorded=record is not None,
        )
        if self.limit_breach is not None:
            outcome = dataclasses.replace(
                outcome, status=InstanceStatus.ERRORED, reason=self.limit_breach
            )
        # The user's stop or kill, asked of this hub or of one before it (the status says so).
        if self.state.status in _STOPPED_BY_USER:
            outcome = dataclasses.replace(outcome, by_user=True)
        return outcome

    def collect_unwatched_end(self) -> RunOutcome | None:
        """A runner that ended while no hub watched: how, from the files it and the keeper
        left (its saved output joins the stream); None when it left none, having vanished
        without a word (its unsaved output is lost)."""
        if self.files.has_ended():
            return self.collect_exit(None)
        self._runner_ended()
        self._start_unknown_pipe()
        self._end_run_output()
        return None

    def _start_unknown_pipe(self) -> None:
        """A runner ended unseen and left no record of its output: what it wrote after the
        last byte a hub recorded is lost. The stream goes on past every offset a reader can
        have been given, so a follower is told of the gap rather than handed other bytes."""
        if not self.output.known:
            self.output.rebase(max(self.state.output_base, self.state.output_reserved))

    def reserve_output(self, end: int) -> None:
        """Reserve output offsets up to past ``end`` (saved with the record's next save)."""
        self.state.output_reserved = max(self.state.output_reserved, end + OUTPUT_RESERVATION)

    def _append_output(self, data: bytes) -> None:
        end = self.output.tail + len(data)
        if end > self.state.output_reserved:
            self.reserve_output(end)
            self.save(durable=False)  # before any reader can be given these offsets
        self.output.append(data)

    def collect_saved_output(self) -> None:
        """For an instance that ended before this hub started: serve what the runner saved."""
        record = self.files.read_exit()
        self._recover_output(record.output if record is not None else None)
        if self._run_output_ended:
            self.output.end()
        self._close()

    def _recover_output(self, saved: SavedOutput | None) -> None:
        """Take the output the runner saved as it exited, beyond what the pipe already has."""
        pipe = self.output
        if saved is None:
            self._start_unknown_pipe()
            self._end_run_output()
            return
        # The runner numbers from 0; the stream from where this runner's output began.
        base = self.state.output_base + saved.base
        end = self.state.output_base + saved.end
        if not pipe.known:
            pipe.rebase(base)  # a hub that never saw this runner's output
        if pipe.tail < base:
            if pipe.tail != pipe.head:
                log.error("instance %s: output bytes %d-%d are lost", self.id, pipe.tail, base)
                return
            pipe.rebase(base)  # the runner saved bytes past what the pipe took
        if pipe.tail < end:
            try:
                self._append_output(self.files.read_output_tail(pipe.tail - base, end - pipe.tail))
            except OSError as exc:
                log.error("instance %s: cannot read saved output: %s", self.id, exc)
        if saved.ended or pipe.tail >= end:
            self._end_run_output()

    def _end_run_output(self) -> None:
        """The current runner's output ended: so does the stream, unless a next runner may
        continue it (then the end waits for the policy's word)."""
        if self.may_restart:
            self._run_output_ended = True
        else:
            self.output.end()

    def begin_run(self) -> None:
        """A new runner takes over the instance (a restart): its output continues the stream
        at its tail, and the hub's view of the last runner is dropped."""
        self.state.output_base = self.output.tail
        self.reserve_output(self.output.tail)
        self._output_acked_to = self.output.tail
        self._run_output_ended = False
        self.exited = False
        self.wait_code = None
        self.unreachable = None
        self.limit_breach = None
        self.identity = None
        self.keepalive_since_stop = False
        self.health = None
        self.link = None
        self.runner_link = None
        self.run_over = trio.Event()
        self._known_link = True  # a fresh runner: both ends number from 0
        for route in self.input_routes:
            route.cancel()
        self.input_routes.clear()
        self.routed.discard("requires")  # the topic feeds the new runner's input

    # -- link callbacks (LinkOwner) --------------------------------------------------------

    def _output_consumed(self, nbytes: int) -> None:
        # Only the current runner's bytes are acknowledged to it: after a restart the pipe may
        # still hold the previous runner's, which its successor never sent.
        head = self.output.head
        owed = head - self._output_acked_to  # never below the current runner's output_base
        if owed <= 0:
            return
        self._output_acked_to = head
        if self.runner_link is not None and not self.exited:
            self.runner_link.consume(Channel.OUTPUT, owed)

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
        base = self.state.output_base + received.get(Channel.OUTPUT, 0)
        pipe = self.output
        if not pipe.known:
            pipe.rebase(base)
            pipe.hold(RESUME_HOLD_SECONDS, RESUME_HOLD_BYTES)
            self._output_acked_to = base
        elif pipe.tail == pipe.head and pipe.tail < base:
            pipe.rebase(base)
            self._output_acked_to = base

    def on_output(self, data: bytes) -> None:
        self._append_output(data)

    def on_output_end(self) -> None:
        self._end_run_output()

    def on_monitoring(self, value: Any) -> None:
        try:
            message = messages.parse(value)
        except messages.MessageError as exc:
            log.warning("instance %s: ignoring a malformed message: %s", self.id, exc)
            return
        if isinstance(message, messages.Ping):
            if self.state.status == InstanceStatus.STARTING:
                self.state.status = InstanceStatus.RUNNING
                if self.state.started is None:  # STH's started: the first run's
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
) -> RunOutcome:
    """How a runner ended: from its own record (``recorded``: it wrote exit.json) or, failing
    that, the keeper's wait status. A stop or a kill the runner recorded ends ``completed``,
    as STH has it."""
    if code is None:
        code = wait_code
    if code is None:
        return RunOutcome(InstanceStatus.ERRORED, "Runner died; its exit status is unknown", -1)
    if not recorded and code > 128:
        # Killed from outside (the runner records its own stop and kill in exit.json).
        number = code - 128
        try:
            name: str | None = signal.Signals(number).name
        except ValueError:
            name = None
        return RunOutcome(
            InstanceStatus.ERRORED, f"Runner killed by signal {number}", code, signal=name
        )
    known = ExitCode.of(code)
    if known is None:
        return RunOutcome(InstanceStatus.ERRORED, reason or "Runner failed", code)
    status = InstanceStatus.ERRORED if known.errored else InstanceStatus.COMPLETED
    return RunOutcome(status, reason or known.reason, code)
