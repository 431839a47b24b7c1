"""Restart policies (issue 15): when an instance whose runner ended is started again.

Sans-IO: ``RestartState.decide`` says, from the policy, how the run ended and when, whether to
restart and after how long. The hub (``si.daemon.hub``) asks it each time a runner ends and
keeps the state in the instance's record, so a restarted hub goes on counting. Times are the
wall clock's (seconds), since they outlive the hub that took them.

The rules, as pm2 and systemd users expect them:
- ``no`` (STH's behaviour, the default) never restarts; ``on-failure`` restarts a run that
  failed; ``always`` restarts any run that ended by itself. A stop or kill by a user is never
  restarted.
- The delay before a restart doubles from ``BACKOFF_FIRST`` up to ``BACKOFF_MAX``; a run that
  lasted longer than the window resets it.
- More than ``max_restarts`` restarts within ``window`` seconds is flapping: the instance ends
  ``errored`` with reason ``flapping``.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 30.0
DEFAULT_MAX_RESTARTS = 5
DEFAULT_WINDOW = 60.0


class PolicyError(ValueError):
    """A start request's restart fields are not a policy (the message says which)."""


class RestartMode(StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    mode: RestartMode = RestartMode.NO
    max_restarts: int = DEFAULT_MAX_RESTARTS
    window: float = DEFAULT_WINDOW

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RestartPolicy:
        """The policy a start request asks for (``restart``, ``maxRestarts``, ``restartWindow``).

        Raises:
            PolicyError: a field has the wrong type or value.
        """
        mode = payload.get("restart", RestartMode.NO.value)
        if isinstance(mode, bool) or mode not in {m.value for m in RestartMode}:
            raise PolicyError('restart must be "no", "on-failure" or "always"')
        max_restarts = payload.get("maxRestarts", DEFAULT_MAX_RESTARTS)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise PolicyError("maxRestarts must be a whole number, 0 or more")
        window = payload.get("restartWindow", DEFAULT_WINDOW)
        if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
            raise PolicyError("restartWindow must be a number of seconds above 0")
        return cls(RestartMode(mode), max_restarts, float(window))

    def to_json(self) -> dict[str, Any]:
        return {
            "restart": str(self.mode),
            "maxRestarts": self.max_restarts,
            "restartWindow": self.window,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RestartPolicy:
        return cls.from_payload(data or {})


@dataclasses.dataclass(frozen=True)
class Restart:
    """Start the instance again after ``delay`` seconds."""

    delay: float


@dataclasses.dataclass(frozen=True)
class GiveUp:
    """Restarted too often within the window: the instance ends ``errored`` with ``reason``."""

    reason: str = "flapping"


@dataclasses.dataclass(frozen=True)
class Stay:
    """The policy does not restart this end: the instance stays ended as it is."""


Decision = Restart | GiveUp | Stay


@dataclasses.dataclass
class RestartState:
    """What a policy remembers between runs (kept with the instance's record, on disk)."""

    restarts: int = 0
    # When the restarts within the current window happened (wall clock, seconds).
    recent: list[float] = dataclasses.field(default_factory=list)
    backoff: float = BACKOFF_FIRST

    def decide(
        self,
        policy: RestartPolicy,
        *,
        failed: bool,
        by_user: bool,
        started: float,
        now: float,
    ) -> Decision:
        """After a run that began at ``started`` ended at ``now``: restart it, and when?"""
        if by_user or policy.mode is RestartMode.NO:
            return Stay()
        if policy.mode is RestartMode.ON_FAILURE and not failed:
            return Stay()
        if now - started > policy.window:
            # A long healthy run: whatever happened before it is forgiven.
            self.backoff = BACKOFF_FIRST
            self.recent.clear()
        self.recent = [at for at in self.recent if at > now - policy.window]
        if len(self.recent) >= policy.max_restarts:
            return GiveUp()
        delay = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.recent.append(now + delay)
        self.restarts += 1
        return Restart(delay)

    def to_json(self) -> dict[str, Any]:
        return {"restarts": self.restarts, "recent": self.recent, "backoff": self.backoff}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RestartState:
        data = data or {}
        return cls(
            restarts=int(data.get("restarts", 0)),
            recent=[float(at) for at in data.get("recent", [])],
            backoff=float(data.get("backoff", BACKOFF_FIRST)),
        )
