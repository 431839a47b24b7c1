"""The ``context`` a Python sequence receives as the first argument of ``run``.

It mirrors STH's Python AppContext (``config``, ``logger``, ``on``, ``emit``,
``set_health_check``, ``set_stop_handler``, ``keep_alive``) and adds ``instance_id``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

StopHandler = Callable[..., Awaitable[Any]]
HealthCheck = Callable[[], Any]


class SequenceHost(Protocol):
    """What the context needs of the process running the sequence (the runner)."""

    instance_id: str

    def emit_event(self, event_name: str, message: Any) -> None: ...
    def send_alive(self) -> None: ...
    def spawn_task(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...


class AppContext:
    """What a running sequence can ask of its runner and, through it, of the hub."""

    def __init__(
        self, runner: SequenceHost, config: dict[str, Any], logger: logging.Logger
    ) -> None:
        self._runner = runner
        self.config = config
        self.logger = logger
        self.instance_id = runner.instance_id
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {}
        self._stop_handlers: list[StopHandler] = []
        self._health_check: HealthCheck = _always_healthy
        self.keep_alive_requested = False

    # -- events ----------------------------------------------------------------------------

    def on(self, event_name: str, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(message)`` for every event ``event_name`` from the API or instances."""
        self._handlers.setdefault(event_name, []).append(callback)

    def emit(self, event_name: str, message: Any = "") -> None:
        """Send an event to the hub (its ``/events/<name>`` readers and the other instances)."""
        self._runner.emit_event(event_name, message)

    def dispatch_event(self, event_name: str, message: Any) -> None:
        for callback in list(self._handlers.get(event_name, ())):
            result = callback(message)
            if inspect.isawaitable(result):
                self._runner.spawn_task(_await(result))

    # -- health, stop, keep-alive ----------------------------------------------------------

    def set_health_check(self, check: HealthCheck) -> None:
        self._health_check = check

    def health(self) -> Any:
        return self._health_check()

    def set_stop_handler(self, handler: StopHandler) -> None:
        self._stop_handlers.append(handler)

    async def run_stop_handlers(self, timeout_seconds: float, can_keep_alive: bool) -> None:
        for handler in list(self._stop_handlers):
            result = handler(timeout_seconds, can_keep_alive)
            if inspect.isawaitable(result):
                await result

    async def keep_alive(self, timeout: float = 0) -> None:
        """Ask the hub not to kill this instance after a stop request; then sleep ``timeout`` s."""
        self.keep_alive_requested = True
        self._runner.send_alive()
        if timeout:
            await asyncio.sleep(timeout)


def _always_healthy() -> dict[str, bool]:
    return {"healthy": True}


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable
