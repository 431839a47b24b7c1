"""The hub <-> runner message vocabulary: STH's numbered messages, typed.

On the wire a message is a JSON array ``[code, body]`` (STH's format, which its clients also
send to ``POST /_event`` and ``/_monitoring_rate``). Control messages go from the hub to the
runner on the control channel; monitoring messages from the runner to the hub on the
monitoring channel; the health report (``MONITORING``) rides unnumbered link messages.

This module is the one place the codes, the payload shapes and the exit codes are written
down (the numbers in ``si.protocol.codes``, which the CLI imports without the rest);
:func:`parse` is the one place a received message is checked, so every receiver gets
either a typed message or a :class:`MessageError` naming what is wrong. The Node.js runner
reads the same numbers from ``contract.json`` (written from this module by
``python -m si.protocol.contract``; a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from si.protocol.codes import Code, ExitCode

__all__ = ["Code", "ExitCode"]  # defined beside, for importers that need only the numbers


class MessageError(ValueError):
    """A received value is not a well-formed message of the expected kind."""


# -- messages -------------------------------------------------------------------------------


class _NoBody:
    """A message whose body is ``{}``."""

    __slots__ = ()

    def body(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Ping:
    code: ClassVar[Code] = Code.PING
    pid: int | None = None

    def body(self) -> dict[str, Any]:
        return {} if self.pid is None else {"pid": self.pid}


@dataclass(frozen=True, slots=True)
class Health:
    code: ClassVar[Code] = Code.MONITORING
    report: Any = None

    def body(self) -> Any:
        return self.report


@dataclass(frozen=True, slots=True)
class SequenceStopped(_NoBody):
    code: ClassVar[Code] = Code.SEQUENCE_STOPPED


@dataclass(frozen=True, slots=True)
class Alive(_NoBody):
    code: ClassVar[Code] = Code.ALIVE


@dataclass(frozen=True, slots=True)
class Pang:
    """A topic declaration: ``direction`` is ``"provides"`` or ``"requires"``."""

    code: ClassVar[Code] = Code.PANG
    direction: str
    topic: str
    content_type: str = ""

    def body(self) -> dict[str, Any]:
        return {self.direction: self.topic, "contentType": self.content_type}

    @classmethod
    def from_declaration(cls, declared: dict[str, Any]) -> list[Pang]:
        """Every topic named in a PANG body or a declared.json entry."""
        content_type = str(declared.get("contentType") or "")
        return [
            cls(direction, str(declared[direction]), content_type)
            for direction in ("provides", "requires")
            if isinstance(declared.get(direction), str) and declared[direction]
        ]


@dataclass(frozen=True, slots=True)
class SequenceEvent:
    code: ClassVar[Code] = Code.EVENT
    name: str
    message: Any = None
    source: str | None = None  # the emitting instance, on events the hub forwards

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"eventName": self.name, "message": self.message}
        if self.source is not None:
            body["source"] = self.source
        return body


@dataclass(frozen=True, slots=True)
class Stop:
    code: ClassVar[Code] = Code.STOP
    timeout_ms: int = 7000
    can_keep_alive: bool = False

    def body(self) -> dict[str, Any]:
        return {"timeout": self.timeout_ms, "canCallKeepalive": self.can_keep_alive}


@dataclass(frozen=True, slots=True)
class Kill(_NoBody):
    code: ClassVar[Code] = Code.KILL


@dataclass(frozen=True, slots=True)
class MonitoringRate:
    code: ClassVar[Code] = Code.MONITORING_RATE
    rate: float = 1.0  # reports per second; 0 restores the default

    def body(self) -> dict[str, Any]:
        return {"monitoringRate": self.rate}


AnyMessage = (
    Ping | Health | SequenceStopped | Alive | Pang | SequenceEvent | Stop | Kill | MonitoringRate
)


def encode(message: AnyMessage) -> list[Any]:
    """The wire form, ``[code, body]``."""
    return [int(message.code), message.body()]


def parse(value: Any) -> AnyMessage:
    """A received ``[code, body]`` as a typed message.

    Raises:
        MessageError: not an array with a known code and a body of the right shape.
    """
    if not isinstance(value, list) or not value or not isinstance(value[0], int):
        raise MessageError("expected [code, body]")
    try:
        code = Code(value[0])
    except ValueError:
        raise MessageError(f"unknown message code {value[0]}") from None
    body = value[1] if len(value) > 1 else {}
    if code is Code.MONITORING:
        return Health(body)
    if not isinstance(body, dict):
        raise MessageError(f"message {code.value}: the body must be an object")
    if code is Code.PING:
        pid = body.get("pid")
        return Ping(pid if isinstance(pid, int) else None)
    if code is Code.SEQUENCE_STOPPED:
        return SequenceStopped()
    if code is Code.ALIVE:
        return Alive()
    if code is Code.PANG:
        declared = Pang.from_declaration(body)
        if not declared:
            raise MessageError("PANG names no topic")
        return declared[0]
    if code is Code.EVENT:
        name = body.get("eventName")
        if not isinstance(name, str):
            raise MessageError("expected [5001, {eventName, message}]")
        source = body.get("source")
        return SequenceEvent(name, body.get("message"), source if isinstance(source, str) else None)
    if code is Code.STOP:
        timeout = body.get("timeout", 7000)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise MessageError("STOP: timeout must be a number of milliseconds >= 0")
        return Stop(int(timeout), bool(body.get("canCallKeepalive", False)))
    if code is Code.KILL:
        return Kill()
    rate = body.get("monitoringRate")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
        raise MessageError("expected [4003, {monitoringRate: n >= 0}]")
    return MonitoringRate(float(rate))


M = TypeVar("M", bound=AnyMessage)


def parse_as(kind: type[M], value: Any, expected: str) -> M:
    """:func:`parse`, also requiring one kind of message; ``expected`` names the shape."""
    try:
        message = parse(value)
    except MessageError:
        raise MessageError(f"expected {expected}") from None
    if not isinstance(message, kind):
        raise MessageError(f"expected {expected}")
    return message
