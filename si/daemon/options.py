"""The settings of one hub, as ``si hub serve`` parses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# How long a finished instance's output, logs and status stay readable (STH's default 180 s).
DEFAULT_RETENTION_SECONDS = 180.0
# How long the HTTP server waits for a client (0 in HubOptions turns one off). A request head is
# a few hundred bytes: 10 s is ample on any link that works. A body of known length that stops
# for 30 s has stalled. 60 s keeps a connection warm between a CLI's or a script's requests.
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_BODY_IDLE_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 60.0


@dataclass(frozen=True)
class HubOptions:
    """What ``si hub serve`` was asked for.

    Args:
        home: the hub's home directory; ``None`` means platformdirs' per-user directories.
        port: also serve the API on TCP at this port (``None``: Unix socket only).
        host: the TCP address to bind when ``port`` is given.
        kill_on_exit: kill every instance when the hub stops (STH's ``-K``).
        retention: seconds a finished instance stays readable before it is removed.
        head_timeout: seconds a client has to send a request head (408 after it).
        body_idle_timeout: longest pause in a request body of declared length, or one read
            whole (408 after it); chunked streams into a sequence are never timed out.
        keep_alive_timeout: seconds an idle connection stays open between requests.
        A timeout of 0 turns it off.
    """

    home: Path | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    kill_on_exit: bool = False
    retention: float = DEFAULT_RETENTION_SECONDS
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
