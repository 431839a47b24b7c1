"""The instance directory: the files through which the hub, the keeper and a runner meet.

``<home>/instances/<id>/`` outlives any one hub, so its files are the contract that lets a
restarted hub take over: who writes each, and what is in it, is written down here once. The
Node.js runner reads the same names from ``contract.json``.

=============  ========  ===================================================================
file           writer    content
=============  ========  ===================================================================
instance.json  hub       the instance record (``si.daemon.record.InstanceRecord``)
spawn.json     hub       :class:`SpawnSpec`: what the runner needs to start (mode 0600)
runner.json    runner    :class:`RunnerRecord`: its identity, socket and token
runner.sock    keeper    the runner's listening socket (fd 3); the hub dials it
stdout/stderr  runner    its stdio, appended (never a pipe to the hub)
log            runner    the sequence's log, size-rotated segments of JSON lines
declared.json  runner    the module's topic declarations, for a hub that connects late
exit.json      runner    :class:`ExitRecord`: how it ended, and the unconsumed output range
output.tail    runner    the output bytes the hub had not consumed when it exited
wait.json      keeper    the runner's wait status once reaped
=============  ========  ===================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from si.fsutil import read_json, write_json_atomic

# Every file's name, by role; contract.json carries this mapping to the Node.js runner.
FILE_NAMES: dict[str, str] = {
    "record": "instance.json",
    "spawn": "spawn.json",
    "runner": "runner.json",
    "socket": "runner.sock",
    "stdout": "stdout",
    "stderr": "stderr",
    "log": "log",
    "declared": "declared.json",
    "exit": "exit.json",
    "output_tail": "output.tail",
    "wait": "wait.json",
}

RUNNER_RECORD_VERSION = 1

# What one runner leaves that the next one in the directory must not be taken to have written.
_RUNNER_FILES = ("runner", "socket", "declared", "exit", "output_tail", "wait")


class RecordError(ValueError):
    """A file exists but does not hold what its writer promises."""


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    instance_id: str
    token: str  # hex: the link's shared secret
    socket: str
    sequence_dir: str
    entry: str
    args: list[Any] = field(default_factory=list)
    app_config: dict[str, Any] = field(default_factory=dict)
    log_segment_bytes: int | None = None
    log_keep: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "instance_id": self.instance_id,
            "token": self.token,
            "socket": self.socket,
            "sequence_dir": self.sequence_dir,
            "entry": self.entry,
            "args": self.args,
            "app_config": self.app_config,
        }
        if self.log_segment_bytes is not None:
            body["log_segment_bytes"] = self.log_segment_bytes
        if self.log_keep is not None:
            body["log_keep"] = self.log_keep
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SpawnSpec:
        try:
            return cls(
                instance_id=_str(body, "instance_id"),
                token=_str(body, "token"),
                socket=_str(body, "socket"),
                sequence_dir=_str(body, "sequence_dir"),
                entry=_str(body, "entry"),
                args=list(body.get("args") or []),
                app_config=dict(body.get("app_config") or {}),
                log_segment_bytes=_optional_int(body, "log_segment_bytes"),
                log_keep=_optional_int(body, "log_keep"),
            )
        except (TypeError, ValueError) as exc:
            raise RecordError(f"spawn.json: {exc}") from None


@dataclass(frozen=True, slots=True)
class RunnerRecord:
    pid: int
    start_time: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    boot_id: str
    socket: str
    token: str
    protocol: int = RUNNER_RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start_time": self.start_time,
            "boot_id": self.boot_id,
            "socket": self.socket,
            "token": self.token,
            "protocol": self.protocol,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RunnerRecord:
        try:
            return cls(
                pid=_int(body, "pid"),
                start_time=_int(body, "start_time"),
                boot_id=_str(body, "boot_id"),
                socket=_str(body, "socket"),
                token=_str(body, "token"),
                protocol=int(body.get("protocol", RUNNER_RECORD_VERSION)),
            )
        except (TypeError, ValueError) as exc:
            raise RecordError(f"runner.json: {exc}") from None


@dataclass(frozen=True, slots=True)
class SavedOutput:
    """The output range ``[base, end)`` in output.tail; ``ended``: the stream ended there."""

    base: int
    end: int
    ended: bool

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "end": self.end, "ended": self.ended}

    @classmethod
    def from_json(cls, body: Any) -> SavedOutput | None:
        if not isinstance(body, dict):
            return None
        try:
            return cls(int(body.get("base", 0)), int(body.get("end", 0)), bool(body.get("ended")))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class ExitRecord:
    code: int | None
    reason: str | None
    time: float | None = None
    output: SavedOutput | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "reason": self.reason, "time": self.time}
        if self.output is not None:
            body["output"] = self.output.to_json()
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ExitRecord:
        code, reason, at = body.get("code"), body.get("reason"), body.get("time")
        return cls(
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            reason if isinstance(reason, str) and reason else None,
            float(at) if isinstance(at, int | float) else None,
            SavedOutput.from_json(body.get("output")),
        )


class InstanceDir:
    """Typed access to one instance directory's files (no state beyond the path)."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def file(self, role: str) -> Path:
        return self.path / FILE_NAMES[role]

    @property
    def record_file(self) -> Path:
        return self.path / FILE_NAMES["record"]

    @property
    def socket(self) -> Path:
        return self.path / FILE_NAMES["socket"]

    @property
    def log(self) -> Path:
        return self.path / FILE_NAMES["log"]

    # -- spawn.json ------------------------------------------------------------------------

    def write_spawn(self, spec: SpawnSpec) -> None:
        write_json_atomic(self.file("spawn"), spec.to_json())

    def read_spawn(self) -> SpawnSpec:
        """Raises: OSError, ValueError (RecordError included)."""
        return SpawnSpec.from_json(read_json(self.file("spawn")))

    def has_spawn(self) -> bool:
        return self.file("spawn").is_file()

    # -- runner.json -----------------------------------------------------------------------

    def write_runner(self, record: RunnerRecord) -> None:
        write_json_atomic(self.file("runner"), record.to_json())

    def read_runner(self) -> RunnerRecord:
        """Raises: OSError, ValueError (RecordError included)."""
        return RunnerRecord.from_json(read_json(self.file("runner")))

    # -- declared.json ---------------------------------------------------------------------

    def write_declared(self, declared: dict[str, dict[str, str]]) -> None:
        write_json_atomic(self.file("declared"), declared)

    def read_declared(self) -> dict[str, dict[str, Any]]:
        """The module's declarations by direction; empty when none were written."""
        try:
            declared = read_json(self.file("declared"))
        except (OSError, ValueError):
            return {}
        return {
            key: value
            for key in ("provides", "requires")
            if isinstance(value := declared.get(key), dict)
        }

    # -- the runner's end ------------------------------------------------------------------

    def write_exit(self, record: ExitRecord) -> None:
        write_json_atomic(self.file("exit"), record.to_json())

    def read_exit(self) -> ExitRecord | None:
        try:
            return ExitRecord.from_json(read_json(self.file("exit")))
        except (OSError, ValueError):
            return None

    def has_exit(self) -> bool:
        return self.file("exit").exists()

    def write_output_tail(self, parts: Iterable[bytes | memoryview]) -> None:
        with open(self.file("output_tail"), "wb") as tail:
            for part in parts:
                tail.write(part)

    def discard_output_tail(self) -> None:
        self.file("output_tail").unlink(missing_ok=True)

    def read_output_tail(self, start: int, count: int) -> bytes:
        """``count`` bytes from ``start`` (relative to the saved range's base)."""
        with open(self.file("output_tail"), "rb") as tail:
            tail.seek(max(0, start))
            return tail.read(count)

    def write_wait(self, pid: int, code: int) -> None:
        write_json_atomic(self.file("wait"), {"pid": pid, "code": code})

    def read_wait_code(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            code = read_json(self.file("wait")).get("code")
            if isinstance(code, int):
                return code
        return None

    def has_ended(self) -> bool:
        """The runner recorded its exit, or the keeper recorded reaping it."""
        return self.has_exit() or self.file("wait").exists()

    def clear_runner_files(self) -> None:
        """Remove what the last runner and its reaping left, for a new runner in the same
        directory (a restart); its stdio and log are kept, the new runner appends to them.

        Raises:
            OSError: a file could not be removed.
        """
        for role in _RUNNER_FILES:
            self.file(role).unlink(missing_ok=True)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} must be an integer")
    return int(value)


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    return None if body.get(key) is None else _int(body, key)
