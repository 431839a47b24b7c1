"""The upload progress bar of ``seq send``/``seq deploy``/``seq update``, drawn on stderr.

Shown with ``--progress``, never with ``--no-progress``, and by default only when stderr is a
terminal and the package is larger than :data:`AUTO_THRESHOLD` (a small upload finishes before a
bar would be readable). A package of unknown size (packed on the fly) shows bytes sent without
a percentage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any, BinaryIO

# Packages below this size upload in a blink; a bar would only flicker.
AUTO_THRESHOLD = 1024 * 1024
# Redraw at most this often: a terminal does not need more, and each redraw is a write.
REDRAW_INTERVAL = 0.1
BAR_WIDTH = 30


def wanted(
    option: bool | None, size: int | Callable[[], int], stream: IO[str] | None = None
) -> bool:
    """Whether to draw a bar for an upload of ``size`` bytes (a callable is asked only when
    the answer depends on it)."""
    if option is not None:
        return option
    if not (stream or sys.stderr).isatty():
        return False
    return (size() if callable(size) else size) > AUTO_THRESHOLD


class ProgressBar:
    """A one-line bar redrawn in place with ``\\r``; :meth:`finish` ends the line."""

    def __init__(self, total: int | None, stream: IO[str] | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self._drawn_at = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._drawn_at >= REDRAW_INTERVAL:
            self._drawn_at = now
            self._draw()

    def _draw(self) -> None:
        kib = f"{self.done // 1024} KiB"
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            line = f"Uploading [{bar}] {fraction:4.0%} {kib}/{self.total // 1024} KiB"
        else:
            line = f"Uploading {kib}"
        self.stream.write("\r" + line)
        self.stream.flush()

    def finish(self) -> None:
        self._draw()
        self.stream.write(f"\nSequence package uploaded (size {self.done // 1024} KiB)\n")
        self.stream.flush()


class CountingReader:
    """A binary file that reports what is read from it to a :class:`ProgressBar`.

    ``fileno`` and ``tell`` pass through, so the client still sends the file's length.
    """

    def __init__(self, raw: BinaryIO, bar: ProgressBar) -> None:
        self.raw = raw
        self.bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bar.advance(len(data))
        return data

    def fileno(self) -> int:
        return self.raw.fileno()

    def tell(self) -> int:
        return self.raw.tell()

    def __getattr__(self, name: str) -> Any:
        if name == "read1":  # read() is the counted path; never bypass it
            raise AttributeError(name)
        return getattr(self.raw, name)
