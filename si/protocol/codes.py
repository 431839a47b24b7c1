"""The numbers of the hub <-> runner contract: STH's message codes and the runner's exit codes.

Apart from ``si.protocol.messages`` (the typed messages) so that a client that only needs a
number, such as the CLI's ``si inst event emit``, does not pay for the dataclasses.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Message codes, in STH's numbering."""

    PING = 3000  # runner: the sequence loaded and runs
    MONITORING = 3001  # runner: health report (an unnumbered link message)
    SEQUENCE_STOPPED = 3006  # runner: the stop handlers ran; it exits next
    ALIVE = 3010  # runner: the sequence asked to be kept alive after STOP
    PANG = 3012  # runner: the sequence's topic declaration
    STOP = 4001  # hub: stop gracefully within a timeout
    KILL = 4002  # hub: exit now
    MONITORING_RATE = 4003  # hub: health reports per second
    EVENT = 5001  # either way: a named event with a payload


class ExitCode(enum.IntEnum):
    """How a runner exits; the hub maps each to a status and a reason."""

    COMPLETED = 0
    INVALID_PATH = 21
    FAILED_ON_START = 22
    FAILED_DURING_EXECUTION = 23
    KILLED = 137
    STOPPED = 138

    @property
    def is_load_failure(self) -> bool:
        """The sequence never loaded (a bad ``main``, an import or syntax error)."""
        return self in (ExitCode.INVALID_PATH, ExitCode.FAILED_ON_START)

    @property
    def errored(self) -> bool:
        """The instance ends ``errored`` (a stop or a kill ends it ``completed``)."""
        return self in (
            ExitCode.INVALID_PATH,
            ExitCode.FAILED_ON_START,
            ExitCode.FAILED_DURING_EXECUTION,
        )

    @property
    def reason(self) -> str:
        """STH's words for this exit, used when the runner recorded none of its own."""
        return _EXIT_REASONS[self]

    @classmethod
    def of(cls, code: int) -> ExitCode | None:
        try:
            return cls(code)
        except ValueError:
            return None


_EXIT_REASONS = {
    ExitCode.COMPLETED: "Instance completed",
    ExitCode.INVALID_PATH: (
        "Sequence entrypoint path is invalid. Check `main` field in package.json"
    ),
    ExitCode.FAILED_ON_START: "Sequence failed on start",
    ExitCode.FAILED_DURING_EXECUTION: "Sequence failed during execution",
    ExitCode.KILLED: "Instance killed",
    ExitCode.STOPPED: "Instance stopped",
}
