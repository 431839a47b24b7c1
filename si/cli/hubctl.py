"""Control of a local hub process: start it in the background, find it, stop it.

The hub holds an exclusive ``flock`` on ``hub.lock`` for its whole life and writes its pid into
that file. A pid read from a file proves nothing (the hub may be gone and the pid reused), so a
hub counts as running only while the kernel lists a lock on that very file held by that pid
(``/proc/locks``). Before it is signalled the process is pinned with a pidfd, so the signal
cannot reach a different process that took the pid in between.

Resource handling: every pidfd opened here is closed before the function returns; a detached
hub is a new session leader whose output goes to its log file, so nothing ties it to the
``si`` that started it.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from si.errors import SiError
from si.paths import HubPaths

# Generous: a cold interpreter on a loaded CI machine needs a second or two to import the hub.
READY_TIMEOUT = 30.0
# A hub answers ~0.15 s after it is spawned; a poll costs well under a millisecond.
READY_POLL = 0.005
# How long a hub gets to shut down after SIGTERM before ``si hub stop`` gives up (or kills).
STOP_TIMEOUT = 15.0
# The detached hub's stdout and stderr go here, beside its lock.
OUTPUT_FILE = "hub.out"


@dataclass(frozen=True)
class RunningHub:
    pid: int
    paths: HubPaths


def read_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_holders(lock: Path) -> set[int] | None:
    """The pids holding a ``flock`` on ``lock`` per ``/proc/locks``; ``None`` if unknowable."""
    try:
        info = os.stat(lock)
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return set()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders = set()
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF" (blocked waiters have "->").
        if (
            len(fields) >= 6
            and fields[1] == "FLOCK"
            and fields[5] == wanted
            and fields[4].isdigit()
        ):
            holders.add(int(fields[4]))
    return holders


def _lock_is_held(lock: Path) -> bool:
    """Whether anyone holds the lock, by trying to share it (for systems without /proc/locks)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def find_hub(paths: HubPaths) -> RunningHub | None:
    """The hub serving ``paths``, or ``None`` when none does."""
    pid = read_pid(paths.lock)
    if pid is None:
        return None
    holders = lock_holders(paths.lock)
    if holders is None:
        alive = _lock_is_held(paths.lock) and Path(f"/proc/{pid}").exists()
        return RunningHub(pid, paths) if alive else None
    return RunningHub(pid, paths) if pid in holders else None


def detach(serve_args: list[str], paths: HubPaths, timeout: float = READY_TIMEOUT) -> int:
    """Start a hub with ``SERVE_ARGS`` (``si hub serve``'s options) in the background; return
    its pid once it answers.

    Raises:
        SiError: a hub already serves this home, or the new one exited or did not answer in
            time (the message quotes the end of its output).
    """
    running = find_hub(paths)
    if running is not None:
        raise SiError(f"a hub is already running on this home (pid {running.pid})")
    paths.make_dirs()
    output = paths.lock.parent / OUTPUT_FILE
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        # The daemon's own entry point takes the same options as ``si hub serve``, without
        # importing the CLI first (~30 ms).
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "si.daemon", *serve_args],
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)
        os.close(null)
    deadline = time.monotonic() + timeout
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            code = os.waitstatus_to_exitcode(status)
            raise SiError(f"the hub exited with code {code}: {_tail(output)}")
        holder = find_hub(paths)
        if holder is not None and holder.pid == pid and _answers(paths):
            return pid
        if time.monotonic() > deadline:
            raise SiError(
                f"the hub (pid {pid}) did not answer within {timeout:g} s: {_tail(output)}"
            )
        time.sleep(READY_POLL)


def _answers(paths: HubPaths) -> bool:
    from si.client import HubClient

    try:
        with HubClient(str(paths.socket), connect_timeout=1) as client:
            client.version()
    except SiError:
        return False
    return True


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    last = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(last) or "(no output)"


def stop(hub: RunningHub, timeout: float = STOP_TIMEOUT, force: bool = False) -> bool:
    """SIGTERM the hub (proven first) and wait for it to exit; True once it has.

    With ``force``, a hub still running after ``timeout`` gets SIGKILL.

    Raises:
        SiError: the process is not (or no longer) the hub holding the lock.
    """
    from si.identity import ProcessIdentity

    identity = ProcessIdentity.of(hub.pid)
    try:
        pidfd = os.pidfd_open(hub.pid)
    except ProcessLookupError:
        return True
    try:
        # The pidfd pins the process; prove it is still the lock holder before signalling.
        if identity is None or not identity.is_alive() or find_hub(hub.paths) != hub:
            raise SiError(f"pid {hub.pid} is not the hub of this home any more")
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if _wait_exit(pidfd, timeout):
            return True
        if not force:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return _wait_exit(pidfd, timeout)
    finally:
        os.close(pidfd)


def _wait_exit(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def started_at(pid: int) -> float | None:
    """When the process started (epoch seconds), from ``/proc``; ``None`` if unknown."""
    from si.identity import process_start_time

    ticks = process_start_time(pid)
    if ticks is None:
        return None
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        clock = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return time.time() - uptime + ticks / clock
