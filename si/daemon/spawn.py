"""Starting runner processes: detached, in their own session, never tied to the hub's pipes.

This is the process adapter of DESIGN.md §6: the only place that knows runners are local
processes started from this interpreter.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import si
from si.paths import connectable_unix_path

# The root of the si package, so runners import the same si as the hub.
SI_ROOT = str(Path(si.__file__).resolve().parent.parent)


def spawn_runner(instance_dir: Path, listener: socket.socket) -> int:
    """Start a detached runner: its own session, stdio to files, the listening socket on fd 3."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SI_ROOT, env.get("PYTHONPATH")) if p)
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(instance_dir / "stdout"), append, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, str(instance_dir / "stderr"), append, 0o600),
        (os.POSIX_SPAWN_DUP2, listener.fileno(), 3),
    ]
    argv = [sys.executable, "-m", "si.runner", str(instance_dir)]
    return os.posix_spawn(sys.executable, argv, env, file_actions=file_actions, setsid=True)


def bind_unix_listener(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # dup2 onto fd 3 only clears close-on-exec when the numbers differ: keep it above 3.
    if listener.fileno() <= 3:
        high = socket.socket(fileno=os.dup(listener.fileno()))
        listener.close()
        listener = high
    target, dirfd = connectable_unix_path(path)
    try:
        listener.bind(target)
    finally:
        if dirfd is not None:
            os.close(dirfd)
    listener.listen(16)
    return listener
