"""Who a runner process is, in a form that survives pid reuse.

A pid alone can be reused by an unrelated process after the runner dies; the pid together with
the process start time (in clock ticks since boot) and the boot id cannot.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from si.fsutil import is_exhaustion


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``, or ``None`` when no such live process exists.

    A zombie (exited, not yet reaped) counts as gone.

    Raises:
        OSError: EMFILE or ENFILE: out of descriptors, which says nothing about the process.
    """
    # os.open/os.read rather than pathlib: a restarted hub asks this for every runner it adopts.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError as exc:
        if is_exhaustion(exc):
            raise
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


@functools.cache  # the boot id cannot change while this process runs
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        start = process_start_time(pid)
        return None if start is None else cls(pid, start, boot_id())

    def is_alive(self) -> bool:
        """True only if this exact process still runs (not a later one with the same pid)."""
        return process_start_time(self.pid) == self.start_time and boot_id() == self.boot_id
