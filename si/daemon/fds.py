"""Out of file descriptors: seen as such, never mistaken for a runner's death.

Watching a runner takes descriptors (its pidfd, a read of ``/proc/<pid>/stat``, its socket).
A hub at its ``RLIMIT_NOFILE`` used to read ``pidfd_open``'s EMFILE as "the runner is gone"
and leave a started runner running untracked. Now a start holds placeholder descriptors from
before the runner is spawned until the moment they are needed, so a hub without room refuses
the start before anything runs; and EMFILE anywhere on that path is its own error.
"""

from __future__ import annotations

import os

from si.fsutil import is_exhaustion

# What attach_spawned needs at once: the pidfd it keeps, and one /proc read at a time.
START_FDS = 2


class OutOfFileDescriptors(Exception):
    """The hub (or the system) has no file descriptor left for what it must do now."""

    @classmethod
    def of(cls, exc: OSError) -> OutOfFileDescriptors:
        return cls(exc.strerror or str(exc))


class Headroom:
    """``count`` descriptors held on ``/dev/null``, released just before they are used.

    ``release`` is called right before the work that needs them, with no checkpoint between,
    so no other task of the hub can take them first.
    """

    def __init__(self, count: int = START_FDS) -> None:
        self._held: list[int] = []
        try:
            for _ in range(count):
                self._held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            self.release()
            if is_exhaustion(exc):
                raise OutOfFileDescriptors.of(exc) from exc
            raise

    def release(self) -> None:
        while self._held:
            os.close(self._held.pop())
