"""The hub's registry of sequences and instances: load, start, stop, expire.

Watching runners is ``si.daemon.supervise``'s job, moving data between instances and topics
``si.daemon.routes``'s. The instance machinery (``si.daemon.instance`` and the link under it) is
imported when the first instance is loaded or started, not with this module: a hub that has
none answers its first request ~12 ms sooner, a sixth of its start-up beyond the interpreter
and trio.

Errors are the domain's (``StartError`` and its kinds, ``OutOfFileDescriptors``, ``OSError``
from storage); ``si.daemon.api`` turns them into HTTP statuses.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

from si.daemon.fds import Headroom, OutOfFileDescriptors
from si.daemon.feed import Feed
from si.daemon.limits import Limits, MemoryWatchdog
from si.daemon.node import NodeNotFound, NodeSnapshot, node_runner_argv, node_spare_argv
from si.daemon.options import HubOptions
from si.daemon.pipe import LagLimit
from si.daemon.record import InstanceRecord, InstanceStatus, RunOutcome
from si.daemon.restart import Decision, GiveUp, Restart, RestartPolicy, Stay
from si.daemon.routes import TopicRoutes, broadcast_event
from si.daemon.sequences import Sequence, load_sequences
from si.daemon.spawn import Spawner, SpawnError
from si.daemon.state_files import StateFiles
from si.daemon.supervise import Supervisor, discard_directory
from si.daemon.topics import Topics
from si.fsutil import read_json
from si.paths import HubPaths
from si.protocol import messages
from si.protocol.instance_dir import InstanceDir, SpawnSpec
from si.protocol.messages import ExitCode

if TYPE_CHECKING:
    from si.daemon.cluster.member import ClusterMember
    from si.daemon.instance import Instance

log = logging.getLogger("si.hub")

# A runner that has not loaded its sequence by then is reported as a failed start.
START_TIMEOUT = 30.0
# Loaded instances settled between two checks for requests at start-up: ~5 ms of work, so a
# hub restarted under 1,000 instances answers at once and adopts them meanwhile.
SETTLE_BATCH = 20


class StartError(Exception):
    """A start that did not happen; nothing of it is left running or stored."""


class InstanceExists(StartError):
    """The start asked for an instance id that is taken."""


class SequenceFailed(StartError):
    """The runner started but its sequence did not load or run (the message says why)."""


class RunnerNotStarted(StartError):
    """No runner could be spawned (the keeper failed, or Node.js is missing)."""


class Hub:
    def __init__(self, options: HubOptions, paths: HubPaths) -> None:
        self.options = options
        self.lag_limit = LagLimit(options.reader_lag_bytes, options.reader_lag_seconds)
        self.paths = paths
        self.sequences: dict[str, Sequence] = {}
        self.instances: dict[str, Instance] = {}
        self.started_at = time.time()
        self.spawner = Spawner(paths.lock.parent)
        self.node_snapshot = NodeSnapshot(paths.lock.parent / "node-snapshot")
        # Every state file the hub writes goes through this, so a full disk degrades.
        self.state_files = StateFiles()
        self.topics = Topics(paths.lock.parent / "topics.json", self.state_files)
        self.routes = TopicRoutes(self.topics)
        self.supervisor = Supervisor(
            self.spawner,
            on_run_end=self._run_ended,
            on_end=self._schedule_expiry,
            on_adopted=self._adopted,
            on_found_ended=self._found_ended,
        )
        self.watchdog = MemoryWatchdog()
        self.log_feed = Feed()
        self.audit_feed = Feed()
        # This hub in a NATS cluster (si hub serve --nats); None: a hub on its own.
        self.cluster: ClusterMember | None = None
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
                record = InstanceRecord.from_json(read_json(InstanceDir(directory).record_file))
            except Exception as exc:
                # Only this instance suffers: it is listed as lost, its runner left alone.
                log.warning("instance %s: unreadable record (%s)", directory.name, exc)
                record = InstanceRecord.unreadable(directory.name, exc)
            instance = Instance(directory, record, known_link=False, lag_limit=self.lag_limit)
            self._connect(instance)
            self.instances[instance.id] = instance
            self._unsettled[instance.id] = instance
            sequence = self.sequences.get(record.sequence_id)
            if sequence is not None:
                sequence.instances.append(instance.id)

    def begin(self, nursery: trio.Nursery) -> None:
        """Start supervising what ``load`` found: re-adopt live runners, expire ended ones.

        That runs in the background, a batch at a time, while requests are served. A request
        that reports on or acts on instances settles them first (``settle``), so no answer is
        based on a runner that has not been proven or found gone.
        """
        self._nursery = nursery
        self.routes.begin(nursery)
        self.supervisor.begin(nursery)
        nursery.start_soon(self.state_files.keep_retrying)
        nursery.start_soon(self.topics.keep_committed)
        nursery.start_soon(self._settle_loaded)
        nursery.start_soon(self.watchdog.run)
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
            if instance.state.status is InstanceStatus.RESTARTING:
                self._resume_restart(instance)
            elif instance.live:
                self.supervisor.adopt(instance)
            else:
                self.supervisor.found_ended(instance)

    def _connect(self, instance: Instance) -> None:
        """Wire a new Instance to the hub: its events, its topic routes, its state files."""
        instance.on_event = self.broadcast_event
        instance.on_topics = self.routes.route
        instance.state_files = self.state_files

    def warm_keeper(self) -> None:
        """Start the home's keeper in the background if it is not running, so that the next
        instance start does not wait for it (~0.1 s). Called when there are sequences to start:
        at start-up with stored ones, and after an upload."""
        self.nursery.start_soon(self._warm_keeper)
        if any(sequence.manifest.language == "node" for sequence in self.sequences.values()):
            self.warm_node_snapshot()

    def warm_node_snapshot(self) -> None:
        """Build the Node runner's startup snapshot in the background if it is not built yet;
        spares boot from it once it is (si.daemon.node.NodeSnapshot)."""
        if self.node_snapshot.claim_build():
            self.nursery.start_soon(self._build_node_snapshot)

    async def _build_node_snapshot(self) -> None:
        try:
            built = await trio.to_thread.run_sync(self.node_snapshot.build)
            log.info("the Node runner's startup snapshot is built: %s", built.name)
        except (NodeNotFound, OSError, subprocess.SubprocessError) as exc:
            log.warning("spares boot without a startup snapshot: cannot build one: %s", exc)

    async def _warm_keeper(self) -> None:
        try:
            await self.spawner.start_keeper()
        except OSError as exc:  # the next start tries again, and reports it
            log.warning("cannot start the keeper ahead of time: %s", exc)

    def _adopted(self, instance: Instance) -> None:
        self.routes.route(instance)  # routes recorded before the restart
        self._enforce_limits(instance)

    def _enforce_limits(self, instance: Instance) -> None:
        """Put a watched runner with a memory limit under the watchdog."""
        limit = Limits.from_record(instance.state).memory_bytes
        pid = instance.state.pid
        if limit is None or pid is None or instance.exited:
            return

        def over_limit(reason: str) -> None:
            if not instance.exited:
                instance.limit_breach = reason
                instance.signal(signal.SIGKILL)

        self.watchdog.watch(pid, limit, over_limit)

    def _found_ended(self, instance: Instance) -> None:
        self.routes.route_ended(instance)
        self._schedule_expiry(instance)

    # -- instances -------------------------------------------------------------------------

    async def start_instance(
        self,
        sequence: Sequence,
        payload: dict[str, Any],
        policy: RestartPolicy | None = None,
    ) -> Instance:
        """Spawn a runner for ``sequence`` and wait until its sequence is loaded and running.

        Raises:
            InstanceExists, SequenceFailed, RunnerNotStarted: see each; nothing is left.
            OutOfFileDescriptors: the hub has no room to watch a runner; none is left running.
            OSError: the instance's files could not be written (a full disk, say).
        """
        instance_id = payload.get("instanceId") or str(uuid.uuid4())
        directory = self.paths.instances / instance_id
        if instance_id in self.instances or directory.exists():
            raise InstanceExists("Instance with a given ID already exists")
        name = payload.get("name")
        if name is not None and any(
            i.state.name == name and i.live for i in self.instances.values()
        ):
            raise InstanceExists(f"An instance named {name} exists (remove it or pick another)")
        # Held until the runner is spawned: a hub with no room to watch a runner refuses the
        # start before anything runs (fds.py).
        headroom = Headroom()
        try:
            return await self._start_instance(
                sequence, payload, policy or RestartPolicy(), instance_id, headroom
            )
        finally:
            headroom.release()

    async def _start_instance(
        self,
        sequence: Sequence,
        payload: dict[str, Any],
        policy: RestartPolicy,
        instance_id: str,
        headroom: Headroom,
    ) -> Instance:
        directory = self.paths.instances / instance_id
        files = InstanceDir(directory)
        manifest = sequence.manifest
        record = InstanceRecord(
            id=instance_id,
            sequence_id=sequence.id,
            sequence={
                "id": sequence.id,
                "config": sequence.config(),
                "name": manifest.name,
                "location": "si",
            },
            args=list(payload.get("args") or []),
            app_config=dict(payload.get("appConfig") or {}),
            payload=payload,
            restart_policy=policy,
            name=payload.get("name"),
            labels=dict(payload.get("labels") or {}),
        )
        record.run_started = record.created
        directory.mkdir(mode=0o700)
        try:
            token = _write_spawn(files, record, sequence)
        except OSError:
            # The runner cannot start without its spawn file: refuse the start, leave nothing.
            headroom.release()  # rmtree needs descriptors too
            discard_directory(directory)
            raise
        from si.daemon.instance import Instance

        instance = Instance(directory, record, known_link=True, lag_limit=self.lag_limit)
        self._connect(instance)
        instance.reserve_output(0)
        instance.save()
        try:
            pid = await self._spawn(directory, sequence)
        except (SpawnError, NodeNotFound, OutOfFileDescriptors) as exc:
            # OutOfFileDescriptors: the keeper could not be asked; nothing started.
            headroom.release()  # rmtree needs descriptors too
            discard_directory(directory)
            if isinstance(exc, OutOfFileDescriptors):
                raise
            raise RunnerNotStarted(f"cannot start a runner: {exc}") from exc
        headroom.release()  # no checkpoint from here to the pidfd: the fds are ours
        await self._watch_spawned(instance, pid, token)
        self.instances[instance_id] = instance
        sequence.instances.append(instance_id)
        with trio.move_on_after(START_TIMEOUT):
            async with trio.open_nursery() as waiters:
                for event in (instance.ready, instance.run_over):
                    waiters.start_soon(_wait_then_cancel, event, waiters.cancel_scope)
        # A sequence may finish before the hub even connected (a short counter, or one that
        # fails while running): it loaded, so the start succeeded; its output waits for
        # readers in output.tail. Only a load failure (21, 22) or a runner that died without
        # recording an exit is a failed start.
        exit_code = ExitCode.of(record.exitcode if record.exitcode is not None else -1)
        load_failed = exit_code is not None and exit_code.is_load_failure
        loaded = files.has_exit() and not load_failed
        restarting = record.status is InstanceStatus.RESTARTING  # it loaded, then ended
        if instance.ready.is_set() or loaded or restarting:
            # The start request's --output-topic / --input-topic, and what the module declares.
            for declaration in files.read_declared().values():
                instance.declare_topics(declaration)
            instance.declare_topics({})
            return instance
        if not instance.run_over.is_set():
            await self.kill(instance)
            raise SequenceFailed(f"Sequence did not start within {START_TIMEOUT:.0f} s")
        raise SequenceFailed(record.reason or "Runner failed")

    async def _watch_spawned(self, instance: Instance, pid: int, token: str) -> None:
        """Watch the runner the keeper just spawned for ``instance``: its pidfd, its link, its
        limits.

        Raises:
            OutOfFileDescriptors: it could not be watched; it was killed through the keeper.
        """
        try:
            instance.attach_spawned(pid)
        except OutOfFileDescriptors:
            await self.supervisor.abandon(instance, pid)
            raise
        instance.make_link(token, str(instance.files.socket))
        self.supervisor.watch(instance)
        self._enforce_limits(instance)

    async def _spawn(self, directory: Path, sequence: Sequence) -> int:
        """Have the keeper start the runner of ``directory``; its pid.

        Raises:
            SpawnError, NodeNotFound, OutOfFileDescriptors: nothing was started.
        """
        if sequence.manifest.language == "node":
            self.warm_node_snapshot()
            return await self.spawner.spawn(
                directory, node_runner_argv(directory), node_spare_argv(self.node_snapshot.ready())
            )
        return await self.spawner.spawn(directory)

    # -- restarts (issue 15) ---------------------------------------------------------------

    def _run_ended(self, instance: Instance, outcome: RunOutcome, watched: bool) -> None:
        """A runner ended (``watched``: this hub saw it; else it ended while no hub watched):
        start another after a backoff, as its policy says, or end the instance."""
        if not watched:
            self.routes.route_ended(instance)  # what it saved goes on to its topic
        state = instance.state
        now = time.time()
        exit_code = ExitCode.of(outcome.code)
        decision: Decision = Stay()
        # A first run that did not load is the user's to fix, not to retry.
        if not (exit_code is not None and exit_code.is_load_failure and state.started is None):
            decision = state.restart_state.decide(
                state.restart_policy,
                failed=outcome.failed,
                by_user=outcome.by_user,
                started=state.run_started or state.created,
                now=now,
            )
        state.last_exit = outcome.last_exit(now)
        if isinstance(decision, Restart):
            log.info(
                "instance %s: %s; restart %d in %.1f s",
                instance.id,
                outcome.reason,
                state.restarts,
                decision.delay,
            )
            state.status = InstanceStatus.RESTARTING
            state.restart_at = now + decision.delay
            instance.save()
            self._schedule_restart(instance)
            return
        if isinstance(decision, GiveUp):
            log.warning("instance %s: restarted too often; it ends errored", instance.id)
            outcome = RunOutcome(InstanceStatus.ERRORED, decision.reason, outcome.code)
        instance.conclude(outcome)
        self._schedule_expiry(instance)

    def _resume_restart(self, instance: Instance) -> None:
        """A loaded instance was waiting for its restart when the last hub stopped: take what
        its runner saved and start the next at the recorded time."""
        instance.collect_unwatched_end()
        self.routes.route_ended(instance)
        self._schedule_restart(instance)

    def _schedule_restart(self, instance: Instance) -> None:
        # The scope exists before the task runs: a stop or kill that comes first cancels it.
        instance.restart_scope = trio.CancelScope()
        self.nursery.start_soon(self._restart_later, instance, instance.restart_scope)

    async def _restart_later(self, instance: Instance, scope: trio.CancelScope) -> None:
        """Wait out the backoff (a stop or a kill cancels it), then start the next runner."""
        with scope:
            due = instance.state.restart_at or time.time()
            await trio.sleep(max(0.0, due - time.time()))
        instance.restart_scope = None
        if scope.cancelled_caught or instance.state.status is not InstanceStatus.RESTARTING:
            return
        try:
            await self._respawn(instance)
        except (StartError, SpawnError, NodeNotFound, OutOfFileDescriptors, OSError) as exc:
            log.warning("instance %s: cannot restart: %s", instance.id, exc)
            instance.conclude(RunOutcome(InstanceStatus.ERRORED, f"Restart failed: {exc}", -1))
            self._schedule_expiry(instance)

    async def _respawn(self, instance: Instance) -> None:
        """Start a new runner for an instance whose last one ended: the same directory, id,
        args and config, a new token; its output continues the stream."""
        state = instance.state
        sequence = self.sequences.get(state.sequence_id)
        if sequence is None:
            raise RunnerNotStarted(f"its sequence {state.sequence_id} is gone")
        headroom = Headroom()
        try:
            instance.files.clear_runner_files()
            instance.begin_run()
            state.status = InstanceStatus.STARTING
            state.run_started = time.time()
            state.restart_at = None
            token = _write_spawn(instance.files, state, sequence)
            instance.save()
            pid = await self._spawn(instance.directory, sequence)
        finally:
            headroom.release()  # no checkpoint from here to the pidfd: the fds are ours
        await self._watch_spawned(instance, pid, token)
        self.routes.route(instance)  # the required topic into the new runner's input

    def broadcast_event(self, source: Instance, name: str, message: Any) -> None:
        """STH's in-hub event bus: an instance's event goes to every other live instance."""
        self.settle()
        broadcast_event(source, self.instances.values(), name, message)

    def _schedule_expiry(self, instance: Instance) -> None:
        self.nursery.start_soon(self._expire, instance)

    async def _expire(self, instance: Instance) -> None:
        retention = 0.0 if instance.remove_immediately else self.options.retention
        ended = instance.state.ended or time.time()
        await trio.sleep(max(0.0, ended + retention - time.time()))
        await instance.wait_reaped()
        self.remove_instance(instance)

    def remove_instance(self, instance: Instance) -> None:
        instance.output.close()
        self.instances.pop(instance.id, None)
        sequence = self.sequences.get(instance.state.sequence_id)
        if sequence is not None and instance.id in sequence.instances:
            sequence.instances.remove(instance.id)
        self.state_files.forget(instance.directory)
        shutil.rmtree(instance.directory, ignore_errors=True)

    def _cancel_restart(self, instance: Instance, code: ExitCode) -> bool:
        """A stop or a kill while the instance waits for its restart: it ends there."""
        scope = instance.restart_scope
        # Waiting: no runner, not ended. The API may have set the status to killing already.
        if scope is None or scope.cancel_called or not (instance.exited and instance.live):
            return False
        scope.cancel()
        instance.conclude(RunOutcome(InstanceStatus.COMPLETED, code.reason, code))
        self._schedule_expiry(instance)
        return True

    async def kill(self, instance: Instance) -> None:
        if self._cancel_restart(instance, ExitCode.KILLED):
            return
        if not instance.exited:
            instance.set_status(InstanceStatus.KILLING)
            await instance.kill()

    async def stop(self, instance: Instance, timeout_ms: int, can_keep_alive: bool) -> None:
        """STH's stop: ask nicely, wait up to ``timeout_ms``, then kill unless kept alive."""
        if self._cancel_restart(instance, ExitCode.STOPPED):
            return
        instance.set_status(InstanceStatus.STOPPING)
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
        live = [i for i in self.instances.values() if i.live]  # a pending restart too
        with trio.move_on_after(KILL_GRACE + 1):
            async with trio.open_nursery() as nursery:
                for instance in live:
                    nursery.start_soon(self.kill, instance)


def _write_spawn(files: InstanceDir, record: InstanceRecord, sequence: Sequence) -> str:
    """Write the spawn.json of a new runner for ``record``; its (new) link token.

    Raises:
        OSError: it could not be written.
    """
    token = secrets.token_hex(32)
    files.write_spawn(
        SpawnSpec(
            instance_id=record.id,
            token=token,
            socket=str(files.socket),
            sequence_dir=str(sequence.package_dir),
            entry=sequence.manifest.entry,
            args=record.args,
            app_config=record.app_config,
        )
    )
    return token


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
