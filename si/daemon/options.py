"""The settings of one hub, as ``si hub serve`` parses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# How long a finished instance's output, logs and status stay readable (STH's default 180 s).
DEFAULT_RETENTION_SECONDS = 180.0
# A reader of an instance's output that falls this far behind the fastest reader is cut off, so
# it cannot freeze the others: below the runner's 1 MiB window, so the fastest never waits.
DEFAULT_READER_LAG_BYTES = 768 * 1024
# ... or whose next byte waited this long while another reader already took it.
DEFAULT_READER_LAG_SECONDS = 10.0


@dataclass(frozen=True)
class HubOptions:
    """What ``si hub serve`` was asked for.

    Args:
        home: the hub's home directory; ``None`` means platformdirs' per-user directories.
        port: also serve the API on TCP at this port (``None``: Unix socket only).
        host: the TCP address to bind when ``port`` is given.
        kill_on_exit: kill every instance when the hub stops (STH's ``-K``).
        retention: seconds a finished instance stays readable before it is removed.
        reader_lag_bytes: how far (bytes) a reader of an instance's output may fall behind
            the fastest reader before it is cut off.
        reader_lag_seconds: how long a reader's next byte may wait while another reader
            already took it, before the reader is cut off.
    """

    home: Path | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    kill_on_exit: bool = False
    retention: float = DEFAULT_RETENTION_SECONDS
    reader_lag_bytes: int = DEFAULT_READER_LAG_BYTES
    reader_lag_seconds: float = DEFAULT_READER_LAG_SECONDS
