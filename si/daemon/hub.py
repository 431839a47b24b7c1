"""The hub's state and its supervision of runners: start, adopt, watch, expire.

The instance machinery (``si.daemon.instance`` and the link under it) is imported when the first
instance is loaded or started, not with this module: a hub that has none answers its first
request ~12 ms sooner, a sixth of its start-up beyond the interpreter and trio.

Resource handling: every background task (one supervisor per instance, retention timers) runs
in the hub's nursery; the hub owns each runner's pidfd and link connection, never the runner
process itself, which lives in its own session and survives the hub.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import shutil
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

from si.daemon.fds import Headroom, OutOfFileDescriptors
from si.daemon.feed import Feed
from si.daemon.node import NodeNotFound, node_runner_argv, node_spare_argv
from si.daemon.options import HubOptions
from si.daemon.pipe import LagLimit
from si.daemon.sequences import Sequence, load_sequences
from si.daemon.spawn import Spawner, SpawnError
from si.daemon.state_files import StateFiles
from si.daemon.topics import DEFAULT_CONTENT_TYPE, MessageSplitter, Topic, TopicError, Topics
from si.fsutil import is_disk_full, is_exhaustion, read_json
from si.paths import HubPaths
from si.protocol import messages
from si.protocol.frames import Channel
from si.protocol.instance_dir import InstanceDir, SpawnSpec
from si.protocol.messages import ExitCode

if TYPE_CHECKING:
    from si.daemon.instance import Instance

log = logging.getLogger("si.hub")

# A runner that has not loaded its sequence by then is reported as a failed start.
START_TIMEOUT = 30.0
# An adopted runner must answer its socket and prove the token within this; else it is lost.
ADOPT_PROOF_TIMEOUT = 3.0
# A runner that could not be watched for want of file descriptors is tried again this often.
ADOPT_RETRY = 1.0
# A runner started but not watchable is killed through the keeper; tries, spaced out.
ABANDON_ATTEMPTS = 5
ABANDON_RETRY = 0.2
# After a runner exits, how long its link may take to deliver what it wrote before exiting.
LINK_DRAIN_TIMEOUT = 1.0
# Loaded instances settled between two checks for requests at start-up: ~5 ms of work, so a
# hub restarted under 1,000 instances answers at once and adopts them meanwhile.
SETTLE_BATCH = 20


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def out_of_fds(exc: OutOfFileDescriptors) -> str:
    return f"the hub is out of file descriptors ({exc}); the instance was not started"


def discard_directory(directory: Path) -> bool:
    """Remove what a refused start wrote; True once it is gone. rmtree needs descriptors,
    which a hub out of them lacks: then an empty directory still goes with rmdir."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
    return not directory.exists()


def storage_error(exc: OSError, doing: str) -> ApiError:
    """The answer to a request that failed to write: 507 when the disk is full, 503 when the
    hub is out of file descriptors, else 500."""
    if is_disk_full(exc):
        return ApiError(507, f"{doing}: the hub's disk is full ({exc.strerror})")
    if is_exhaustion(exc):
        return ApiError(503, f"{doing}: the hub is out of file descriptors ({exc.strerror})")
    return ApiError(500, f"{doing}: {exc.strerror or exc}")


class Hub:
    def __init__(self, options: HubOptions, paths: HubPaths) -> None:
        self.options = options
        self.lag_limit = LagLimit(options.reader_lag_bytes, options.reader_lag_seconds)
        self.paths = paths
        self.sequences: dict[str, Sequence] = {}
        self.instances: dict[str, Instance] = {}
        self.started_at = time.time()
        self.spawner = Spawner(paths.lock.parent)
        # Every state file the hub writes goes through this, so a full disk degrades.
        self.state_files = StateFiles()
        self.topics = Topics(paths.lock.parent / "topics.json", self.state_files)
        self.log_feed = Feed()
        self.audit_feed = Feed()
        self._nursery: trio.Nursery | None = None
        # Loaded, not yet adopted or expired (see begin); by id, in load order.
        self._unsettled: dict[str, Instance] = {}

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "the hub is not running"
        return self._nursery

    # -- start-up --------------------------------------------------------------------------

    def load(self) -> None:
        """Read stored sequences and instances (before any request is served)."""
        self.sequences = load_sequences(self.paths.sequences)
        directories = [path for path in sorted(self.paths.instances.iterdir()) if path.is_dir()]
        if not directories:
            return
        from si.daemon.instance import Instance

        for directory in directories:
            try:
                record = read_json(InstanceDir(directory).record_file)
                instance = Instance(directory, record, known_link=False, lag_limit=self.lag_limit)
            except Exception as exc:
                # Only this instance suffers: it is listed as lost, its runner left alone.
                log.warning("instance %s: unreadable record (%s)", directory.name, exc)
                instance = Instance(
                    directory,
                    {"id": directory.name, "sequence_id": "", "status": "lost"},
                    known_link=False,
                )
                instance.terminated = {
                    "exitcode": -1,
                    "reason": f"Instance record unreadable: {exc}",
                }
            self._connect(instance)
            self.instances[instance.id] = instance
            self._unsettled[instance.id] = instance
            sequence = self.sequences.get(instance.sequence_id)
            if sequence is not None:
                sequence.instances.append(instance.id)

    def begin(self, nursery: trio.Nursery) -> None:
        """Start supervising what ``load`` found: re-adopt live runners, expire ended ones.

        That runs in the background, a batch at a time, while requests are served. A request
        that reports on or acts on instances settles them first (``settle``), so no answer is
        based on a runner that has not been proven or found gone.
        """
        self._nursery = nursery
        nursery.start_soon(self.state_files.keep_retrying)
        nursery.start_soon(self.topics.keep_committed)
        nursery.start_soon(self._settle_loaded)
        if self.sequences:
            self.warm_keeper()

    async def _settle_loaded(self) -> None:
        while self._unsettled:
            for instance_id in list(itertools.islice(self._unsettled, SETTLE_BATCH)):
                self.settle(instance_id)
            await trio.lowlevel.checkpoint()

    def settle(self, instance_id: str | None = None) -> None:
        """Adopt or expire now the loaded instance ``instance_id`` (every one when ``None``)."""
        for key in list(self._unsettled) if instance_id is None else [instance_id]:
            instance = self._unsettled.pop(key, None)
            if instance is None:
                continue
            if instance.live:
                self._adopt(instance)
            else:
                instance.exited = True
                instance.collect_saved_output()
                self._route_ended(instance)
                self._schedule_expiry(instance)

    def _connect(self, instance: Instance) -> None:
        """Wire a new Instance to the hub: its events, its topic routes, its state files."""
        instance.on_event = self.broadcast_event
        instance.on_topics = self.route_instance
        instance.state_files = self.state_files

    def warm_keeper(self) -> None:
        """Start the home's keeper in the background if it is not running, so that the next
        instance start does not wait for it (~0.1 s). Called when there are sequences to start:
        at start-up with stored ones, and after an upload."""
        self.nursery.start_soon(self._warm_keeper)

    async def _warm_keeper(self) -> None:
        try:
            await self.spawner.start_keeper()
        except OSError as exc:  # the next start tries again, and reports it
            log.warning("cannot start the keeper ahead of time: %s", exc)

    def _adopt(self, instance: Instance) -> None:
        from si.identity import ProcessIdentity

        try:
            runner = instance.files.read_runner()
            identity = ProcessIdentity(runner.pid, runner.start_time, runner.boot_id)
            token, socket_path = runner.token, runner.socket
        except Exception as exc:
            self._mark_lost(instance, f"runner record unreadable: {exc}")
            return
        try:
            attached = instance.attach_process(identity)
        except OutOfFileDescriptors as exc:
            # Nothing is known about the runner: it is neither lost nor adopted. Try again.
            log.warning(
                "instance %s: cannot watch its runner yet (%s); retrying in %.0f s",
                instance.id,
                exc,
                ADOPT_RETRY,
            )
            self.nursery.start_soon(self._adopt_later, instance)
            return
        if not attached:
            if instance.files.has_ended():
                instance.exited = True
                instance.collect_exit(None)  # it ended while no hub was watching
                self._route_ended(instance)
                self._schedule_expiry(instance)
            else:
                self._mark_lost(instance, "runner process is gone (or its pid was reused)")
            return
        instance.make_link(token, socket_path, prove_within=ADOPT_PROOF_TIMEOUT)
        self.nursery.start_soon(self._supervise, instance)
        self.route_instance(instance)  # routes recorded before the restart

    async def _adopt_later(self, instance: Instance) -> None:
        await trio.sleep(ADOPT_RETRY)
        if not instance.exited and instance.pidfd is None:
            self._adopt(instance)

    def _route_ended(self, instance: Instance) -> None:
        """An instance that ended while no hub watched still hands its saved output to the
        topic it provides: the route recorded at its start, or one it declared afterwards (on
        its returned stream) and recorded in declared.json while no hub could hear it."""
        declared = instance.files.read_declared()
        if "provides" in declared:
            instance.declare_topics(declared["provides"])  # routes it when the route is new
        self.route_instance(instance)

    def _mark_lost(self, instance: Instance, reason: str) -> None:
        """Give up on a runner that could not be proven; it is never signalled."""
        log.warning("instance %s lost: %s", instance.id, reason)
        if instance.pidfd is not None:
            os.close(instance.pidfd)
            instance.pidfd = None
        instance.exited = True
        instance.status = "lost"
        instance.terminated = {"exitcode": -1, "reason": f"Instance lost: {reason}"}
        instance.ended = time.time()
        instance.save()
        instance.output.close()
        instance.finished.set()
        self._schedule_expiry(instance)

    # -- instances -------------------------------------------------------------------------

    async def start_instance(self, sequence: Sequence, payload: dict[str, Any]) -> Instance:
        """Spawn a runner for ``sequence`` and wait until its sequence is loaded and running.

        Raises:
            ApiError: 409 for a taken instance id, 400 when the sequence fails to start, 503
                when the hub is out of file descriptors (no runner is left running).
        """
        instance_id = payload.get("instanceId") or str(uuid.uuid4())
        directory = self.paths.instances / instance_id
        if instance_id in self.instances or directory.exists():
            raise ApiError(409, "Instance with a given ID already exists")
        try:
            # Held until the runner is spawned: a hub with no room to watch a runner refuses
            # the start before anything runs (fds.py).
            headroom = Headroom()
        except OutOfFileDescriptors as exc:
            raise ApiError(503, out_of_fds(exc)) from exc
        try:
            return await self._start_instance(sequence, payload, instance_id, headroom)
        finally:
            headroom.release()

    async def _start_instance(
        self, sequence: Sequence, payload: dict[str, Any], instance_id: str, headroom: Headroom
    ) -> Instance:
        directory = self.paths.instances / instance_id
        files = InstanceDir(directory)
        token = secrets.token_hex(32)
        socket_path = files.socket
        manifest = sequence.manifest
        args = list(payload.get("args") or [])
        app_config = dict(payload.get("appConfig") or {})
        record = {
            "id": instance_id,
            "sequence_id": sequence.id,
            "sequence": {
                "id": sequence.id,
                "config": sequence.config(),
                "name": manifest.name,
                "location": "si",
            },
            "args": args,
            "app_config": app_config,
            "payload": payload,
            "status": "starting",
            "created": time.time(),
        }
        spawn = SpawnSpec(
            instance_id=instance_id,
            token=token,
            socket=str(socket_path),
            sequence_dir=str(sequence.package_dir),
            entry=manifest.entry,
            args=args,
            app_config=app_config,
        )
        try:
            directory.mkdir(mode=0o700)
        except OSError as exc:
            raise storage_error(exc, "cannot start an instance") from exc
        try:
            files.write_spawn(spawn)
        except OSError as exc:
            # The runner cannot start without its spawn file: refuse the start, leave nothing.
            headroom.release()  # rmtree needs descriptors too
            discard_directory(directory)
            raise storage_error(exc, "cannot start an instance") from exc
        from si.daemon.instance import Instance

        instance = Instance(directory, record, known_link=True, lag_limit=self.lag_limit)
        self._connect(instance)
        instance.save()
        try:
            if manifest.language == "node":
                pid = await self.spawner.spawn(
                    directory, node_runner_argv(directory), node_spare_argv()
                )
            else:
                pid = await self.spawner.spawn(directory)
        except (SpawnError, NodeNotFound) as exc:
            headroom.release()  # rmtree needs descriptors too
            discard_directory(directory)
            raise ApiError(500, f"cannot start a runner: {exc}") from exc
        except OutOfFileDescriptors as exc:  # the keeper could not be asked: nothing started
            headroom.release()  # rmtree needs descriptors too
            discard_directory(directory)
            raise ApiError(503, out_of_fds(exc)) from exc
        headroom.release()  # no checkpoint from here to the pidfd: the fds are ours
        try:
            instance.attach_spawned(pid)
        except OutOfFileDescriptors as exc:
            await self._abandon_start(instance, pid)
            raise ApiError(503, out_of_fds(exc)) from exc
        instance.make_link(token, str(socket_path))
        self.instances[instance_id] = instance
        sequence.instances.append(instance_id)
        self.nursery.start_soon(self._supervise, instance)
        with trio.move_on_after(START_TIMEOUT):
            async with trio.open_nursery() as waiters:
                for event in (instance.ready, instance.finished):
                    waiters.start_soon(_wait_then_cancel, event, waiters.cancel_scope)
        # A sequence may finish before the hub even connected (a short counter, or one that
        # fails while running): it loaded, so the start succeeded; its output waits for
        # readers in output.tail. Only a load failure (21, 22) or a runner that died without
        # recording an exit is a failed start.
        exit_code = ExitCode.of((instance.terminated or {}).get("exitcode", -1))
        load_failed = exit_code is not None and exit_code.is_load_failure
        loaded = files.has_exit() and not load_failed
        if instance.ready.is_set() or loaded:
            # The start request's --output-topic / --input-topic, and what the module declares.
            for declaration in files.read_declared().values():
                instance.declare_topics(declaration)
            instance.declare_topics({})
            return instance
        if not instance.finished.is_set():
            await self.kill(instance)
            raise ApiError(400, f"Sequence did not start within {START_TIMEOUT:.0f} s")
        reason = (instance.terminated or {}).get("reason", "Runner failed")
        raise ApiError(400, reason)

    async def _abandon_start(self, instance: Instance, pid: int) -> None:
        """A runner was spawned but cannot be watched: have its keeper (its parent, so the pid
        is still that runner's) kill it, and keep nothing of the start."""
        for attempt in range(ABANDON_ATTEMPTS):
            try:
                await self.spawner.kill(pid)
                break
            except (SpawnError, OSError) as exc:
                failure = exc
                await trio.sleep(ABANDON_RETRY * (attempt + 1))  # descriptors may come free
        else:
            log.error(
                "instance %s: its runner (pid %d) could not be stopped (%s); stop it by hand",
                instance.id,
                pid,
                failure,
            )
            return
        for attempt in range(ABANDON_ATTEMPTS):
            if discard_directory(instance.directory):
                return
            await trio.sleep(ABANDON_RETRY * (attempt + 1))
        log.warning("instance %s: cannot remove %s", instance.id, instance.directory)

    async def _supervise(self, instance: Instance) -> None:
        """Own one runner until it ends: its link, its exit, then the retention timer."""
        runner_link = instance.runner_link
        assert runner_link is not None
        link_done = trio.Event()
        async with trio.open_nursery() as nursery:

            async def run_link() -> None:
                await runner_link.run()
                link_done.set()
                if instance.unreachable is not None and not instance.exited:
                    nursery.cancel_scope.cancel()  # never proven: stop watching, never signal

            nursery.start_soon(run_link)
            await instance.wait_process_exit()
            # The link reads what the runner wrote before exiting, up to EOF; bound the wait.
            with trio.move_on_after(LINK_DRAIN_TIMEOUT):
                await link_done.wait()
            nursery.cancel_scope.cancel()
        if instance.unreachable is not None and not instance.exited:
            self._mark_lost(instance, instance.unreachable)
            return
        instance.collect_exit(instance.wait_code)
        self._schedule_expiry(instance)

    # -- topics ----------------------------------------------------------------------------

    def route_instance(self, instance: Instance) -> None:
        """Wire an instance's output and input to its topics (once each).

        An instance that already ended still hands its remaining output to its topic.
        """
        for direction, route in (("provides", instance.provides), ("requires", instance.requires)):
            if route is None or direction in instance.routed:
                continue
            if direction == "requires" and instance.exited:
                continue
            name, content_type = route
            try:
                existing = self.topics.topics.get(name)
                topic = self.topics.get_or_create(
                    name,
                    content_type or (existing.content_type if existing else DEFAULT_CONTENT_TYPE),
                )
            except TopicError as exc:
                log.warning("instance %s: cannot route to topic %s: %s", instance.id, name, exc)
                continue
            instance.routed.add(direction)
            task = self._produce_from if direction == "provides" else self._consume_into
            self.nursery.start_soon(task, instance, topic)

    async def _produce_from(self, instance: Instance, topic: Topic) -> None:
        """An instance's output into a topic, message by message, at the topic's pace.

        The instance's output is acknowledged only once the topic's consumers took the messages
        and the topic's head is recorded: after a hub crash its runner resends the rest.
        """
        pipe = instance.output
        await pipe.wait_known()
        # Internal: it reads ahead and acknowledges at the topic's pace, so it is never cut off.
        reader = pipe.attach(lag_limited=False)
        cursor = reader.position  # read ahead of what is acknowledged
        splitter = MessageSplitter(topic.content_type)
        # (topic offset, output offset): output to acknowledge once the topic committed it.
        # Bounded: the output pipe holds at most the runner's window of unacknowledged bytes.
        pending: deque[tuple[int, int]] = deque()
        appended = trio.Event()
        topic.producers += 1
        skip = topic.restored.pop(instance.id, 0)
        if skip > cursor:
            # Re-adopted after a crash: this much of the output is in the topic already.
            pipe.delivered(reader, skip - reader.position)
            cursor = skip

        def committed_output(head: int) -> int:
            """How far into the output is in the topic before ``head`` (for the topic file)."""
            value = reader.position
            for topic_end, output_end in pending:
                if topic_end > head:
                    break
                value = output_end
            return value

        topic.routes[instance.id] = committed_output

        async def release() -> None:
            nonlocal appended
            while True:
                while not pending:
                    await appended.wait()
                    appended = trio.Event()
                topic_end, output_end = pending[0]
                await topic.wait_committed(topic_end)
                if topic.pipe.closed:
                    return
                pending.popleft()
                if output_end > reader.position:
                    pipe.delivered(reader, output_end - reader.position)

        def note(output_end: int) -> None:
            pending.append((topic.pipe.tail, output_end))
            appended.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release)
                while (data := await pipe.read(reader, at=cursor)) is not None:
                    cursor += len(data)
                    messages = splitter.feed(data)
                    if messages:
                        await topic.publish(messages)
                        note(cursor - splitter.pending)
                last = splitter.finish()
                if last:
                    await topic.publish(last)
                note(cursor)
                await topic.wait_committed(topic.pipe.tail)
                with trio.move_on_after(1):  # let release() hand over the last range
                    while pending and not topic.pipe.closed:
                        await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
        except trio.ClosedResourceError:
            pass  # the topic was removed
        finally:
            topic.routes.pop(instance.id, None)
            pipe.detach(reader)
            topic.producers -= 1

    async def _consume_into(self, instance: Instance, topic: Topic) -> None:
        """A topic into an instance's input, within the input's window."""
        runner_link = instance.runner_link
        if runner_link is None:
            return
        while not runner_link.link.established and not instance.exited:
            await runner_link.connected.wait()
        reader = topic.pipe.attach()
        try:
            declared = bool(instance.requires and instance.requires[1])
            if runner_link.link.outbound[Channel.INPUT].next_offset == 0 and not declared:
                # A sequence that declared its input topic knows its type; others are told.
                header = f"Content-Type: {topic.content_type}\r\n\r\n".encode()
                await runner_link.send(Channel.INPUT, header)
            with trio.CancelScope() as scope:
                instance.input_routes.append(scope)
                while not instance.exited and (data := await topic.pipe.read(reader)) is not None:
                    await runner_link.send(Channel.INPUT, data)
                    topic.pipe.delivered(reader, len(data))
        finally:
            topic.pipe.detach(reader)

    def broadcast_event(self, source: Instance, name: str, message: Any) -> None:
        """STH's in-hub event bus: an instance's event goes to every other live instance."""
        from si.protocol.link import WindowFull

        self.settle()
        event = messages.SequenceEvent(name, message, source.id)
        for other in self.instances.values():
            if other is not source and other.live and not other.exited:
                try:
                    other.send_control(event)
                except WindowFull:
                    # Not reading its control channel: this one misses the event, the rest
                    # do not wait for it.
                    log.debug("instance %s: event %s not delivered (window full)", other.id, name)

    def _schedule_expiry(self, instance: Instance) -> None:
        self.nursery.start_soon(self._expire, instance)

    async def _expire(self, instance: Instance) -> None:
        retention = 0.0 if instance.remove_immediately else self.options.retention
        ended = instance.ended or time.time()
        await trio.sleep(max(0.0, ended + retention - time.time()))
        self.remove_instance(instance)

    def remove_instance(self, instance: Instance) -> None:
        instance.output.close()
        self.instances.pop(instance.id, None)
        sequence = self.sequences.get(instance.sequence_id)
        if sequence is not None and instance.id in sequence.instances:
            sequence.instances.remove(instance.id)
        self.state_files.forget(instance.directory)
        shutil.rmtree(instance.directory, ignore_errors=True)

    async def kill(self, instance: Instance) -> None:
        if not instance.exited:
            instance.set_status("killing")
            await instance.kill()

    async def stop(self, instance: Instance, timeout_ms: int, can_keep_alive: bool) -> None:
        """STH's stop: ask nicely, wait up to ``timeout_ms``, then kill unless kept alive."""
        instance.set_status("stopping")
        instance.keepalive_since_stop = False
        instance.send_own_control(messages.Stop(timeout_ms, can_keep_alive))
        with trio.move_on_after(timeout_ms / 1000):
            await instance.finished.wait()
        if instance.finished.is_set():
            return
        if can_keep_alive and instance.keepalive_since_stop:
            return
        self.nursery.start_soon(instance.kill)

    async def shutdown(self) -> None:
        """With ``--kill-on-exit``: end every instance before the hub exits."""
        if not self.options.kill_on_exit:
            return
        from si.daemon.instance import KILL_GRACE

        self.settle()
        live = [i for i in self.instances.values() if not i.exited]
        with trio.move_on_after(KILL_GRACE + 1):
            async with trio.open_nursery() as nursery:
                for instance in live:
                    nursery.start_soon(self.kill, instance)


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
