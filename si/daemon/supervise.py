"""Watching runners: adopt one after a hub restart, watch it to its end, give up on it.

The hub holds each runner's pidfd and link, never the process itself (it lives in its own
session and survives the hub). Every runner's watcher is a task in the hub's nursery; when it
ends, the instance's record says how and the hub is told (``on_end``) to schedule its removal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from si.daemon.fds import OutOfFileDescriptors
from si.daemon.record import InstanceStatus, RunOutcome
from si.daemon.spawn import Spawner, SpawnError

if TYPE_CHECKING:
    from si.daemon.instance import Instance

log = logging.getLogger("si.hub")

# An adopted runner must answer its socket and prove the token within this; else it is lost.
ADOPT_PROOF_TIMEOUT = 3.0
# A runner that could not be watched for want of file descriptors is tried again this often.
ADOPT_RETRY = 1.0
# A runner started but not watchable is killed through the keeper; tries, spaced out.
ABANDON_ATTEMPTS = 5
ABANDON_RETRY = 0.2
# After a runner exits, how long its link may take to deliver what it wrote before exiting.
LINK_DRAIN_TIMEOUT = 1.0


def discard_directory(directory: Path) -> bool:
    """Remove what a refused start wrote; True once it is gone. rmtree needs descriptors,
    which a hub out of them lacks: then an empty directory still goes with rmdir."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
    return not directory.exists()


class Supervisor:
    """Owns the watch on every runner.

    Tells the hub: ``on_run_end(instance, outcome, watched)`` when a runner ended (``watched``:
    this hub saw it end; else it ended, or vanished with the machine's reboot, while no hub
    watched), for the restart policy to judge; ``on_end(instance)`` when an instance was given
    up as lost (its record says why); ``on_adopted(instance)`` when a runner is watched again
    after a restart (its recorded topic routes are due); ``on_found_ended(instance)`` when a
    loaded instance had ended already (its saved output is served, its removal due).
    """

    def __init__(
        self,
        spawner: Spawner,
        *,
        on_run_end: Callable[[Instance, RunOutcome, bool], None],
        on_end: Callable[[Instance], None],
        on_adopted: Callable[[Instance], None],
        on_found_ended: Callable[[Instance], None],
    ) -> None:
        self.spawner = spawner
        self.on_run_end = on_run_end
        self.on_end = on_end
        self.on_adopted = on_adopted
        self.on_found_ended = on_found_ended
        self._nursery: trio.Nursery | None = None

    def begin(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "the hub is not running"
        return self._nursery

    def watch(self, instance: Instance) -> None:
        """Watch a runner whose pidfd and link the instance holds until it ends."""
        self.nursery.start_soon(self._supervise_guarded, instance)

    async def _supervise_guarded(self, instance: Instance) -> None:
        # A bug met while watching one runner ends the watch on that one, never the hub: the
        # instance is given up as lost (its runner is left alone) and the log has the trace.
        try:
            await self._supervise(instance)
        except Exception as exc:
            log.exception("instance %s: supervision failed", instance.id)
            if instance.live:
                self.mark_lost(instance, f"the hub failed watching it ({exc!r})")

    def found_ended(self, instance: Instance) -> None:
        """An instance loaded already ended (its record says so): serve what it left."""
        instance.collect_saved_output()
        self.on_found_ended(instance)

    def adopt(self, instance: Instance) -> None:
        """Take a loaded live instance's runner back: prove it is the one recorded in
        runner.json and watch it; or record it ended, or lost."""
        from si.identity import ProcessIdentity, boot_id

        try:
            runner = instance.files.read_runner()
            identity = ProcessIdentity(runner.pid, runner.start_time, runner.boot_id)
            token, socket_path = runner.token, runner.socket
        except Exception as exc:
            self.mark_lost(instance, f"runner record unreadable: {exc}")
            return
        if runner.boot_id != boot_id():
            # Whatever the runner wrote as the machine went down (a SIGTERM, say), it did not
            # end by itself: the policy restarts it or it is lost.
            instance.collect_unwatched_end()  # for the output it saved, if any
            outcome = RunOutcome(InstanceStatus.LOST, "Instance lost: the machine rebooted", -1)
            self.on_run_end(instance, outcome, False)
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
        if not attached:  # it ended while no hub was watching
            ended = instance.collect_unwatched_end()
            if ended is None:
                reason = "Instance lost: runner process is gone (or its pid was reused)"
                log.warning("instance %s: %s", instance.id, reason)
                ended = RunOutcome(InstanceStatus.LOST, reason, -1)
            self.on_run_end(instance, ended, False)
            return
        instance.make_link(token, socket_path, prove_within=ADOPT_PROOF_TIMEOUT)
        self.watch(instance)
        self.on_adopted(instance)

    async def _adopt_later(self, instance: Instance) -> None:
        await trio.sleep(ADOPT_RETRY)
        if not instance.exited and instance.pidfd is None:
            self.adopt(instance)

    def mark_lost(self, instance: Instance, reason: str) -> None:
        """Give up on a runner that could not be proven; it is never signalled."""
        log.warning("instance %s lost: %s", instance.id, reason)
        if instance.pidfd is not None:
            os.close(instance.pidfd)
            instance.pidfd = None
        instance.end(InstanceStatus.LOST, f"Instance lost: {reason}", -1)
        self.on_end(instance)

    async def abandon(self, instance: Instance, pid: int) -> None:
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
            self.mark_lost(instance, instance.unreachable)
            return
        self.on_run_end(instance, instance.collect_exit(instance.wait_code), True)
