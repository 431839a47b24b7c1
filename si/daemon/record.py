"""One instance's record: what ``instance.json`` holds and what STH's API shows of it.

The record is the one schema of an instance: the hub builds it at a start, saves it on every
change, loads it after a restart and answers ``GET /instance/:id`` from it. Its life ends in
one place, ``end``, whether the runner exited, was killed, or could not be found again.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from enum import StrEnum
from typing import Any

from si.daemon.limits import Limits
from si.daemon.restart import RestartPolicy, RestartState


class InstanceStatus(StrEnum):
    """STH's instance statuses (plus ``lost``: a runner the hub could not prove again)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    KILLING = "killing"
    # si's: the runner ended and the restart policy starts another after a backoff.
    RESTARTING = "restarting"
    COMPLETED = "completed"
    ERRORED = "errored"
    LOST = "lost"

    @property
    def live(self) -> bool:
        """Whether a runner may still be running."""
        return self in _LIVE


_LIVE = frozenset(
    {
        InstanceStatus.STARTING,
        InstanceStatus.RUNNING,
        InstanceStatus.STOPPING,
        InstanceStatus.KILLING,
        InstanceStatus.RESTARTING,
    }
)


@dataclasses.dataclass(frozen=True)
class Route:
    """A topic an instance provides its output to or requires its input from."""

    topic: str
    content_type: str  # "" when neither the request nor the sequence named one

    def to_json(self) -> list[str]:
        return [self.topic, self.content_type]

    @classmethod
    def from_json(cls, value: Any) -> Route | None:
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, str) for v in value)
        ):
            return cls(value[0], value[1])
        return None


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """How one runner ended: the status and reason its instance would end with, its exit
    code, and the signal that killed it when one did (``"SIGKILL"``)."""

    status: InstanceStatus
    reason: str
    code: int
    signal: str | None = None
    # A stop or kill the user asked for (never restarted).
    by_user: bool = False

    @property
    def failed(self) -> bool:
        return self.status in (InstanceStatus.ERRORED, InstanceStatus.LOST)

    def last_exit(self, at: float) -> dict[str, Any]:
        """The record's ``lastExit``."""
        return {"code": self.code, "signal": self.signal, "reason": self.reason, "at": iso(at)}


@dataclasses.dataclass
class InstanceRecord:
    id: str
    sequence_id: str
    # The sequence as it was at the start (STH shows it with the instance): id, config, name.
    sequence: dict[str, Any] = dataclasses.field(default_factory=dict)
    args: list[Any] = dataclasses.field(default_factory=list)
    app_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The start request's body, as given (instanceId, outputTopic, inputTopic, ...).
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: InstanceStatus = InstanceStatus.STARTING
    created: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    exitcode: int | None = None
    reason: str | None = None
    pid: int | None = None
    provides: Route | None = None
    requires: Route | None = None
    # si's: a name unique among the hub's instances (``si inst output web``), and labels.
    name: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    # Supervision (issue 15): the policy, what it remembers, and how the last run ended.
    restart_policy: RestartPolicy = dataclasses.field(default_factory=RestartPolicy)
    restart_state: RestartState = dataclasses.field(default_factory=RestartState)
    last_exit: dict[str, Any] | None = None
    # When the current runner was started, and when a pending restart is due (wall clock).
    run_started: float | None = None
    restart_at: float | None = None
    # The output stream is one across runners: each runner numbers its output from 0, and
    # its byte n is the stream's byte ``output_base + n``.
    output_base: int = 0
    # Every output offset the hub let readers see is below this; recorded before it lets
    # them past it. A runner that vanished while no hub watched took its last offsets with
    # it: its successor starts here, so no follower is handed a new byte under an old number.
    output_reserved: int = 0

    @property
    def restarts(self) -> int:
        return self.restart_state.restarts

    @property
    def live(self) -> bool:
        return self.status.live

    def end(self, status: InstanceStatus, reason: str, code: int) -> None:
        """Record the end of the instance's life: how (``status``), why, and its exit code."""
        assert not status.live, status
        self.status = status
        self.reason = reason
        self.exitcode = code
        self.ended = time.time()
        self.restart_at = None

    @property
    def terminated(self) -> dict[str, Any] | None:
        """STH's ``terminated``: ``{exitcode, reason}`` once ended."""
        if self.exitcode is None:
            return None
        return {"exitcode": self.exitcode, "reason": self.reason}

    # -- instance.json ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sequence_id": self.sequence_id,
            "sequence": self.sequence,
            "args": self.args,
            "app_config": self.app_config,
            "payload": self.payload,
            "status": str(self.status),
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "terminated": self.terminated,
            "pid": self.pid,
            "topics": {
                "provides": self.provides.to_json() if self.provides else None,
                "requires": self.requires.to_json() if self.requires else None,
            },
            "name": self.name,
            "labels": self.labels,
            "restart_policy": self.restart_policy.to_json(),
            "restart_state": self.restart_state.to_json(),
            "last_exit": self.last_exit,
            "run_started": self.run_started,
            "restart_at": self.restart_at,
            "output_base": self.output_base,
            "output_reserved": self.output_reserved,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceRecord:
        """Read a saved record.

        Raises:
            KeyError, ValueError, TypeError: the record is not one the hub wrote.
        """
        terminated = data.get("terminated") or {}
        topics = data.get("topics") or {}
        return cls(
            id=str(data["id"]),
            sequence_id=str(data["sequence_id"]),
            sequence=dict(data.get("sequence") or {}),
            args=list(data.get("args") or []),
            app_config=dict(data.get("app_config") or {}),
            payload=dict(data.get("payload") or {}),
            status=InstanceStatus(data.get("status", "starting")),
            created=float(data.get("created") or time.time()),
            started=_optional_float(data.get("started")),
            ended=_optional_float(data.get("ended")),
            exitcode=terminated.get("exitcode"),
            reason=terminated.get("reason"),
            pid=data.get("pid"),
            provides=Route.from_json(topics.get("provides")),
            requires=Route.from_json(topics.get("requires")),
            name=data.get("name") if isinstance(data.get("name"), str) else None,
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            restart_policy=RestartPolicy.from_json(data.get("restart_policy")),
            restart_state=RestartState.from_json(data.get("restart_state")),
            last_exit=data.get("last_exit") if isinstance(data.get("last_exit"), dict) else None,
            run_started=_optional_float(data.get("run_started")),
            restart_at=_optional_float(data.get("restart_at")),
            output_base=int(data.get("output_base") or 0),
            output_reserved=int(data.get("output_reserved") or 0),
        )

    @classmethod
    def unreadable(cls, instance_id: str, error: Exception) -> InstanceRecord:
        """The record shown for an instance whose instance.json cannot be read: lost."""
        record = cls(id=instance_id, sequence_id="")
        record.end(InstanceStatus.LOST, f"Instance record unreadable: {error}", -1)
        return record

    # -- the API's view --------------------------------------------------------------------

    def sth_view(self, *, connected: bool) -> dict[str, Any]:
        """The instance as STH's API shows it, plus si's ``pid``, ``connected`` (whether the
        hub holds a live link to the runner right now) and topic names."""
        body: dict[str, Any] = {
            "id": self.id,
            "appConfig": self.app_config,
            "args": self.args,
            "sequence": self.sequence,
            "created": iso(self.created),
            "started": iso(self.started),
            "ended": iso(self.ended),
            "status": str(self.status),
            "terminated": self.terminated,
            "pid": self.pid,
            "connected": connected,
            "restartPolicy": self.restart_policy.to_json(),
            "restarts": self.restarts,
            "lastExit": self.last_exit,
        }
        body["limits"] = Limits.from_record(self).view()
        body["name"] = self.name
        if self.labels:
            body["labels"] = self.labels
        if self.provides is not None:
            body["provides"] = self.provides.topic
        if self.requires is not None:
            body["requires"] = self.requires.topic
        return {key: value for key, value in body.items() if value is not None}


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
