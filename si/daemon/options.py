"""The settings of one hub, as ``si hub serve`` parses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# How long a finished instance's output, logs and status stay readable (STH's default 180 s).
DEFAULT_RETENTION_SECONDS = 180.0


@dataclass(frozen=True)
class HubOptions:
    """What ``si hub serve`` was asked for.

    Args:
        home: the hub's home directory; ``None`` means platformdirs' per-user directories.
        port: also serve the API on TCP at this port (``None``: Unix socket only).
        host: the TCP address to bind when ``port`` is given.
        kill_on_exit: kill every instance when the hub stops (STH's ``-K``).
        retention: seconds a finished instance stays readable before it is removed.
    """

    home: Path | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    kill_on_exit: bool = False
    retention: float = DEFAULT_RETENTION_SECONDS
