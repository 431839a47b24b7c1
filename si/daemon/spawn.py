"""Starting runners through the home's keeper (``si.runner.keeper``).

This is the hub's process adapter: the only hub code that knows runners are local
processes. The hub asks the keeper to start a runner and gets its pid; the keeper, not the
hub, is the runner's parent, so runners survive the hub, are reaped whatever happens to it, and
start by ``fork`` from an interpreter that has the runner imported already.

Error handling: a keeper that is not running (first start, idle exit, crash) is started on
demand; a request that gets no answer is retried once against a fresh keeper.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import trio

import si
from si.daemon.fds import OutOfFileDescriptors
from si.fsutil import is_exhaustion
from si.paths import connectable_unix_path

log = logging.getLogger("si.hub.spawn")

# The root of the si package, so the keeper and runners import the same si as the hub.
SI_ROOT = str(Path(si.__file__).resolve().parent.parent)
# A keeper answers a spawn in milliseconds; this bounds a wedged one.
REQUEST_TIMEOUT = 10.0
# A cold interpreter with the runner's imports takes well under a second; allow a loaded CI box.
KEEPER_START_TIMEOUT = 15.0


class SpawnError(Exception):
    """The runner could not be started; the message says why."""


class Spawner:
    """Talks to the keeper of one hub home; starts it when needed."""

    def __init__(self, keeper_dir: Path) -> None:
        self.keeper_dir = keeper_dir
        self.socket_path = keeper_dir / "keeper.sock"
        self._starting = trio.Lock()

    async def spawn(
        self, instance_dir: Path, argv: list[str] | None = None, spare: list[str] | None = None
    ) -> int:
        """Start the runner of ``instance_dir`` (a Python runner unless ``argv`` is given).

        ``spare`` is the command line of a warm spare of the same runner: the keeper then
        hands the instance to one it has booted already (``si.runner.spares``).

        Raises:
            SpawnError: the keeper refused or could not be reached.
        """
        request: dict[str, Any] = {"spawn": str(instance_dir)}
        if argv is not None:
            request["argv"] = argv
        if spare is not None:
            request["spare"] = spare
        for attempt in range(2):
            try:
                reply = await self._request(request)
            except (OSError, trio.TooSlowError, ValueError) as exc:
                if isinstance(exc, OSError) and is_exhaustion(exc):
                    raise OutOfFileDescriptors.of(exc) from exc
                if attempt:
                    raise SpawnError(f"the keeper does not answer: {exc}") from exc
                await self.start_keeper()
                continue
            if "pid" in reply:
                return int(reply["pid"])
            raise SpawnError(str(reply.get("error", "the keeper refused")))
        raise AssertionError("unreachable")

    async def kill(self, pid: int) -> None:
        """Have the keeper SIGKILL its runner ``pid``: as the parent that has not reaped it,
        the keeper knows the pid is still that runner, which no one else can know.

        Raises:
            SpawnError: the keeper refused (not its runner) or did not answer.
        """
        try:
            reply = await self._request({"kill": pid})
        except (OSError, trio.TooSlowError, ValueError) as exc:
            raise SpawnError(f"the keeper does not answer: {exc}") from exc
        if reply.get("killed") != pid:
            raise SpawnError(str(reply.get("error", "the keeper refused")))

    async def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        target, dirfd = connectable_unix_path(self.socket_path)
        try:
            stream = await trio.open_unix_socket(target)
        finally:
            if dirfd is not None:
                os.close(dirfd)
        async with stream:
            with trio.fail_after(REQUEST_TIMEOUT):
                await stream.send_all(json.dumps(body).encode() + b"\n")
                buffer = b""
                while b"\n" not in buffer:
                    data = await stream.receive_some(4096)
                    if not data:
                        raise ValueError("the keeper closed the connection without answering")
                    buffer += data
        reply = json.loads(buffer.split(b"\n", 1)[0])
        if not isinstance(reply, dict):
            raise ValueError("malformed keeper reply")
        return reply

    async def start_keeper(self) -> None:
        """Start a keeper for this home (a no-op if one is running) and wait until it answers."""
        async with self._starting:
            try:
                await self._request({"ping": True})
                return
            except (OSError, trio.TooSlowError, ValueError):
                pass
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (SI_ROOT, env.get("PYTHONPATH")) if p)
            log_path = str(self.keeper_dir / "keeper.log")
            append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            file_actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, log_path, append, 0o600),
                (os.POSIX_SPAWN_OPEN, 2, log_path, append, 0o600),
            ]
            argv = [sys.executable, "-m", "si.runner.keeper", str(self.keeper_dir)]
            pid = os.posix_spawn(  # noqa: ASYNC221 (returns at once: the keeper is detached)
                sys.executable, argv, env, file_actions=file_actions, setsid=True
            )
            log.info("started keeper (pid %d) for %s", pid, self.keeper_dir)
            with trio.move_on_after(KEEPER_START_TIMEOUT):
                while True:
                    # Reap it if it exits at once (lost a race to another keeper, or failed).
                    if pid and os.waitpid(pid, os.WNOHANG)[0] == pid:  # noqa: ASYNC222
                        pid = 0
                    try:
                        await self._request({"ping": True})
                        break
                    except (OSError, trio.TooSlowError, ValueError):
                        await trio.sleep(0.01)
            if pid:
                # Our direct child: reap it in the background whenever it exits.
                trio.lowlevel.spawn_system_task(_reap_when_done, pid)


async def _reap_when_done(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (it has exited: no wait)
    except ChildProcessError:
        pass
    finally:
        os.close(pidfd)
