"""Resource limits in process mode (issue 15): STH's ``limits.memory``, enforced.

A start body's ``limits`` (``{"memory": MiB}``, as STH's ``si seq start --limits`` sends it) is
enforced by an RSS watchdog: one hub task samples the resident set of every runner that has a
limit, ``SAMPLES_PER_SECOND`` times a second, and kills a runner past its limit; the instance
then ends (or restarts, as its policy says) with reason ``memory-limit``.

Why a watchdog and not a cgroup: a cgroup v2 ``memory.max`` needs a delegated subtree with the
memory controller, which the hub cannot count on (these machines run cgroup v1; a user's systemd
session delegates one only with ``Delegate=yes``). The watchdog works wherever /proc does; its
cost is measured by ``bench/`` (reading a held /proc/<pid>/statm descriptor, ~3 µs a runner).
The instance's record says which mode enforced its limit (``limits.enforcedBy``).

``limits.cpu`` is accepted and recorded but not enforced: a rate limit needs cgroups' cpu.max.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from si.daemon.record import InstanceRecord

log = logging.getLogger("si.hub.limits")

SAMPLES_PER_SECOND = 4
MIB = 1 << 20
WATCHDOG = "rss-watchdog"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class LimitsError(ValueError):
    """A start request's ``limits`` are not limits (the message says which field)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    memory_mib: float | None = None
    cpu: float | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Limits:
        """The limits a start request asks for. STH sends ``limits: {}`` with every start.

        Raises:
            LimitsError: a field has the wrong type or value.
        """
        limits = payload.get("limits")
        if limits is None:
            return cls()
        if not isinstance(limits, dict):
            raise LimitsError("limits must be a JSON object")
        return cls(_positive(limits, "memory"), _positive(limits, "cpu"))

    @classmethod
    def from_record(cls, record: InstanceRecord) -> Limits:
        """The limits of a started instance (checked at its start; none if unreadable)."""
        try:
            return cls.from_payload(record.payload)
        except LimitsError:
            return cls()

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mib is None else int(self.memory_mib * MIB)

    def view(self) -> dict[str, Any] | None:
        """What the instance record shows: the limits and what enforces them."""
        if self.memory_mib is None and self.cpu is None:
            return None
        shown: dict[str, Any] = {}
        if self.memory_mib is not None:
            shown["memory"] = self.memory_mib
            shown["enforcedBy"] = WATCHDOG
        if self.cpu is not None:
            shown["cpu"] = self.cpu
            shown["cpuEnforced"] = False
        return shown


def _positive(limits: dict[str, Any], key: str) -> float | None:
    value = limits.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise LimitsError(f"limits.{key} must be a number above 0")
    return float(value)


def breach(rss_bytes: int, limit_bytes: int) -> str | None:
    """The reason a runner is killed, when its resident set is past its limit."""
    if rss_bytes <= limit_bytes:
        return None
    return f"memory-limit: RSS {rss_bytes / MIB:.1f} MiB over the {limit_bytes / MIB:g} MiB limit"


class _Watched:
    __slots__ = ("fd", "limit", "on_breach")

    def __init__(self, fd: int, limit: int, on_breach: Callable[[str], None]) -> None:
        self.fd = fd
        self.limit = limit
        self.on_breach = on_breach


def read_rss(fd: int) -> int | None:
    """Resident bytes from a held /proc/<pid>/statm descriptor; None once the process is gone."""
    try:
        fields = os.pread(fd, 128, 0).split()
    except OSError:
        return None
    if len(fields) < 2:
        return None
    return int(fields[1]) * PAGE_SIZE


class MemoryWatchdog:
    """Samples the RSS of every runner with a memory limit; calls its ``on_breach`` once."""

    def __init__(self, interval: float = 1 / SAMPLES_PER_SECOND) -> None:
        self.interval = interval
        self._watched: dict[int, _Watched] = {}  # by pid

    def watch(self, pid: int, limit_bytes: int, on_breach: Callable[[str], None]) -> bool:
        """Watch runner ``pid`` (already proven the runner); False if /proc has no such pid."""
        self.forget(pid)
        try:
            fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        self._watched[pid] = _Watched(fd, limit_bytes, on_breach)
        return True

    def forget(self, pid: int) -> None:
        watched = self._watched.pop(pid, None)
        if watched is not None:
            with contextlib.suppress(OSError):
                os.close(watched.fd)

    def __len__(self) -> int:
        return len(self._watched)

    def sample(self) -> None:
        """One pass over every watched runner."""
        for pid, watched in list(self._watched.items()):
            rss = read_rss(watched.fd)
            if rss is None:
                self.forget(pid)
                continue
            reason = breach(rss, watched.limit)
            if reason is not None:
                log.warning("runner %d: %s; killing it", pid, reason)
                self.forget(pid)
                watched.on_breach(reason)

    async def run(self) -> None:
        """Sample for the hub's lifetime."""
        while True:
            await trio.sleep(self.interval)
            self.sample()
