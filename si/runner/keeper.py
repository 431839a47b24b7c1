"""The keeper: one small long-lived process per hub home that starts and reaps runners.

Why a keeper, rather than the hub spawning runners itself:

- **Start latency and memory.** The keeper has the Python runner imported already; starting an
  instance is a ``fork`` (a few milliseconds) instead of an interpreter start and its imports,
  and the runners share the keeper's pages copy-on-write.
- **Reaping.** Runners must outlive the hub. A runner whose parent (the hub) died is re-parented
  to pid 1, and not every pid 1 reaps orphans (this project's CI machines do not): exited runners
  would stay zombies. The keeper is the runners' parent and a child subreaper, so it reaps every
  runner and every orphan a sequence leaves behind, whatever happens to the hub.
- **Exit status.** Only a parent learns how a child ended. The keeper writes it to
  ``<instance dir>/wait.json``, so a restarted hub knows that a runner was SIGKILLed.

Requests arrive on ``<home>/keeper.sock`` (mode 0600), one JSON object per line, each answered
with one line:

    {"spawn": "<instance dir>"}                    -> {"pid": N}  fork a Python runner
    {"spawn": "<instance dir>", "argv": [...]}     -> {"pid": N}  exec another runner (Node.js)
    {"spawn": ..., "argv": [...], "spare": [...]}   -> {"pid": N}  the same, by a warm spare
    {"ping": true}                                 -> {"pid": <keeper pid>}
    {"kill": N}                                    -> {"killed": N}  SIGKILL runner N (one of
                                                      ours, not reaped: the pid is still it)

With ``spare``, the argv of a runner that boots and waits for an assignment, the keeper hands
the instance to a spare it has booted already and boots a replacement after answering; the
first such request just remembers the argv (``si.runner.spares``).

Either way the child gets its own session, fd 0 = /dev/null, fd 1/2 = the instance's stdout and
stderr files, fd 3 = the runner's listening socket (bound by the keeper at
``<instance dir>/runner.sock`` before it answers, so the hub can dial at once).

The keeper is single-threaded and runs no event loop (fork safety); it exits once it has had no
children and no requests for ``IDLE_EXIT`` seconds. Its lifetime is tied to nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

# Imported here, before any fork, so every runner starts with it in memory (the point).
import si.runner.process as runner_process
from si.allocator import give_back_free_heap
from si.fsutil import write_json_atomic
from si.identity import ProcessIdentity
from si.paths import connectable_unix_path
from si.protocol.instance_dir import InstanceDir
from si.runner.spares import SparePool

try:
    # The framework STH's Python sequences get their input in (si.runner.framework), when it is
    # installed beside si: imported once here instead of in every runner, which saves each
    # runner ~0.4 MiB of private memory and the import. As with STH's runner, whose own copy
    # comes first on PYTHONPATH, this copy is used even if a package bundles another.
    importlib.import_module("scramjet.streams")
except ImportError:
    pass

# An idle keeper costs a little memory; a new one costs the next start ~0.2 s. Five minutes
# without children or requests is a fair point to give the memory back.
IDLE_EXIT = 300.0
# How often an idle keeper looks whether its home still exists.
HOME_CHECK_INTERVAL = 5.0
PR_SET_CHILD_SUBREAPER = 36
# Calls after which CPython has specialised a function's bytecode (it takes 8), with margin.
WARM_ROUNDS = 20
MAX_REQUEST = 64 * 1024


def _runner_environment() -> dict[str, str]:
    """The environment of a runner the keeper execs (the Node.js runner): its own, except that
    NODE_EXTRA_CA_CERTS is handed over as SI_NODE_EXTRA_CA_CERTS, which the runner reads when
    TLS is first used instead of at every boot (si/runner/node/runner.js)."""
    env = dict(os.environ)
    extra = env.pop("NODE_EXTRA_CA_CERTS", None)
    if extra:
        env["SI_NODE_EXTRA_CA_CERTS"] = extra
    return env


def bind_listener(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` (reached through /proc when the path is long)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    target, dirfd = connectable_unix_path(path)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        listener.bind(target)
    finally:
        if dirfd is not None:
            os.close(dirfd)
    listener.listen(64)
    return listener


def _child_stdio(
    instance_dir: Path, listener: socket.socket, control: socket.socket | None = None
) -> None:
    """In the forked child: detach and put the runner's descriptors in place.

    ``control`` is a spare's socket to the keeper, its fd 4 (see ``si.runner.spares``).
    """
    os.setsid()
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    targets = [
        os.open(os.devnull, os.O_RDONLY),
        os.open(InstanceDir(instance_dir).file("stdout"), append, 0o600),
        os.open(InstanceDir(instance_dir).file("stderr"), append, 0o600),
        os.dup(listener.fileno()),
    ]
    if control is not None:
        targets.append(os.dup(control.fileno()))
    for number, fd in enumerate(targets):
        os.dup2(fd, number)  # dup2 makes the target inheritable, as exec needs
    for fd in targets:
        if fd >= len(targets):
            os.close(fd)
    os.closerange(len(targets), 1 << 16)  # the keeper's own sockets must not leak into runners


class Keeper:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.children: dict[int, Path] = {}
        self.last_activity = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.spares = SparePool(home / "spares", self.start_child)

    # -- spawning --------------------------------------------------------------------------

    def spawn(
        self, instance_dir: Path, argv: list[str] | None, spare: list[str] | None = None
    ) -> int:
        """Start the runner of ``instance_dir``: a warm spare started with ``spare`` if there
        is one, else ``argv`` exec'd (or the Python runner forked when ``argv`` is None)."""
        pid = self.spares.take(spare, instance_dir) if spare else None
        if pid is None:
            pid = self.start_child(instance_dir, argv)
        self.children[pid] = instance_dir
        return pid

    def start_child(
        self, directory: Path, argv: list[str] | None, control: socket.socket | None = None
    ) -> int:
        listener = bind_listener(InstanceDir(directory).socket)
        try:
            # Everything allocated so far moves to the collector's permanent generation: a full
            # collection in the runner (or here) then never walks, and so never writes to, the
            # objects the runners share with the keeper. Without it one collection in a runner
            # turns ~3 MiB of shared pages into private copies.
            gc.freeze()
            pid = os.fork()
            if pid == 0:  # the runner
                try:
                    _child_stdio(directory, listener, control)
                    signal.set_wakeup_fd(-1)
                    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                        signal.signal(signum, signal.SIG_DFL)
                    if argv:
                        os.execvpe(argv[0], argv, _runner_environment())
                    runner_process.main(["runner", str(directory)])
                finally:
                    os._exit(70)  # exec or the runner failed before it could record anything
        finally:
            listener.close()
        return pid

    def kill(self, pid: Any) -> dict[str, Any]:
        """SIGKILL a runner of ours, for a hub that started it but cannot watch it."""
        if not isinstance(pid, int) or pid not in self.children:
            return {"error": f"{pid!r} is not a runner of this keeper"}
        # Not reaped yet (reap() removes it from children), so the pid cannot have been reused.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return {"killed": pid}

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            instance_dir = self.children.pop(pid, None)
            if instance_dir is None:
                # A spare, or an orphan a sequence left behind: reaping it is all we owe it.
                self.spares.exited(pid)
                continue
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
            with contextlib.suppress(OSError):
                InstanceDir(instance_dir).write_wait(pid, code)

    # -- serving ---------------------------------------------------------------------------

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        if request.get("ping"):
            return {"pid": os.getpid()}
        if "kill" in request:
            return self.kill(request["kill"])
        target = request.get("spawn")
        argv = request.get("argv")
        spare = request.get("spare")
        if not isinstance(target, str) or not all(
            value is None or isinstance(value, list) for value in (argv, spare)
        ):
            return {"error": "unknown request"}
        instance_dir = Path(target)
        if not InstanceDir(instance_dir).has_spawn():
            return {"error": f"{instance_dir} has no spawn.json"}
        try:
            return {"pid": self.spawn(instance_dir, argv, spare)}
        except OSError as exc:
            return {"error": f"cannot start the runner: {exc}"}

    def serve_client(self, client: socket.socket) -> None:
        client.settimeout(5)
        with client:
            buffer = b""
            try:
                while b"\n" not in buffer and len(buffer) < MAX_REQUEST:
                    data = client.recv(4096)
                    if not data:
                        return
                    buffer += data
                request = json.loads(buffer.split(b"\n", 1)[0])
            except (OSError, ValueError):
                return
            reply = self.handle(request)
            with contextlib.suppress(OSError):
                client.sendall(json.dumps(reply).encode() + b"\n")

    def run(self, listener: socket.socket) -> None:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, _leave)  # retire the spares on the way out (main)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_read, selectors.EVENT_READ, "signal")
        while True:
            idle_for = time.monotonic() - self.last_activity
            if not self.children and (idle_for >= IDLE_EXIT or not self.home.exists()):
                return
            # Wake at least every few seconds to notice a removed home (a finished test hub).
            for key, _ in self.selector.select(timeout=HOME_CHECK_INTERVAL):
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
                    self.reap()
                else:
                    try:
                        client, _ = listener.accept()
                    except OSError:
                        continue
                    self.last_activity = time.monotonic()
                    self.serve_client(client)
                    self.spares.fill()  # replace a spare taken, once the start has its answer
            self.reap()  # signals can coalesce: a pass after every wake-up costs little
            self.spares.shrink_when_quiet()


def _leave(signum: int, frame: object) -> None:
    raise SystemExit(0)


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans then go to pid 1, as they would without a keeper


def warm_event_loop() -> None:
    """Run the event loop's everyday paths (tasks, futures, queues, events, JSON) a few times.

    CPython 3.11 rewrites a function's bytecode in place once it has been called a few times
    (specialisation). Done here, before any fork, that write lands in pages every runner shares
    instead of in a private copy in each: ~0.13 MiB less private memory per idle runner.
    """

    async def exercise() -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int] = asyncio.Queue()
        event = asyncio.Event()
        for number in range(WARM_ROUNDS):
            await asyncio.ensure_future(asyncio.sleep(0))
            queue.put_nowait(number)
            await queue.get()
            event.set()
            event.clear()
            future = loop.create_future()
            loop.call_soon(future.set_result, json.loads(json.dumps({"n": [number]})))
            await future

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(exercise())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def main(argv: list[str]) -> int:
    home = Path(argv[1]).absolute()
    lock_fd = os.open(home / "keeper.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return 0  # another keeper serves this home already
        raise
    become_subreaper()
    old_umask = os.umask(0o177)
    try:
        listener = bind_listener(home / "keeper.sock")
    finally:
        os.umask(old_umask)
    identity = ProcessIdentity.of(os.getpid())
    if identity is not None:
        # Only names the keeper to whoever cleans up after it: a full disk must not stop it.
        with contextlib.suppress(OSError):
            write_json_atomic(
                home / "keeper.json",
                {
                    "pid": identity.pid,
                    "start_time": identity.start_time,
                    "boot_id": identity.boot_id,
                },
            )
    keeper = Keeper(home)
    warm_event_loop()
    give_back_free_heap()  # last, once the keeper has made everything it lives with
    try:
        keeper.run(listener)
    finally:
        keeper.spares.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
