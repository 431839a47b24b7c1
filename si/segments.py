"""Append-only byte streams kept as size-rotated segment files, addressed by stream offset.

A stream lives in a directory; each segment file is named by the stream offset of its first
byte (20 zero-padded digits, so names sort in order)::

    log/00000000000000000000
    log/00000000000001048576      <- the current segment; the writer rotates by size

The writer (the runner, for its instance's log) is the only process that appends and rotates,
so rotation is exact and loses nothing (rename-free: a new segment is simply a new file), and
readers can follow through rotations by offset. Old segments beyond ``keep`` are deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

# Defaults for the instance log: a megabyte per segment, five segments kept.
DEFAULT_SEGMENT_BYTES = 1 << 20
DEFAULT_KEEP = 5
NAME_DIGITS = 20


def segment_name(offset: int) -> str:
    return f"{offset:0{NAME_DIGITS}d}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(start offset, path) of every segment, oldest first; [] if there is no stream.

    A plain file (an instance's stdout or stderr, never rotated) is one segment at offset 0.
    """
    try:
        names = os.listdir(directory)
    except NotADirectoryError:
        return [(0, directory)]
    except OSError:
        return []
    segments = [(int(name), directory / name) for name in names if name.isdigit()]
    segments.sort()
    return segments


class SegmentWriter:
    """Appends to a segmented stream, rotating by size. Not thread-safe; one writer per stream."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.keep = max(1, keep)
        directory.mkdir(mode=0o700, exist_ok=True)
        segments = list_segments(directory)
        if segments:
            start, path = segments[-1]
            self.offset = start + path.stat().st_size
            self._start = start
        else:
            self.offset = self._start = 0
        self._fd = self._open(self._start)

    def _open(self, start: int) -> int:
        return os.open(
            self.directory / segment_name(start), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )

    def write(self, data: bytes) -> None:
        if self.offset - self._start >= self.segment_bytes:
            self._rotate()
        os.write(self._fd, data)
        self.offset += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._start = self.offset
        self._fd = self._open(self._start)
        for _, old in list_segments(self.directory)[: -self.keep]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_from(directory: Path, offset: int, limit: int) -> tuple[int, bytes]:
    """Up to ``limit`` bytes of the stream from ``offset``.

    Returns (offset of the first byte returned, data). The offset is later than asked when
    the bytes asked for were rotated away; the caller sees the gap and may report it.
    """
    segments = list_segments(directory)
    if not segments:
        return offset, b""
    if offset < segments[0][0]:
        offset = segments[0][0]
    for index, (start, path) in enumerate(segments):
        following = segments[index + 1][0] if index + 1 < len(segments) else None
        if following is not None and offset >= following:
            continue
        try:
            with open(path, "rb") as segment:
                segment.seek(offset - start)
                data = segment.read(limit)
        except OSError:
            continue  # rotated away while we looked: the next segment has it
        if data or following is None:
            return offset, data
        offset = following  # a full segment read to its end: continue in the next one
    return offset, b""


def stream_end(directory: Path) -> int:
    """The offset after the last byte written so far."""
    segments = list_segments(directory)
    if not segments:
        return 0
    start, path = segments[-1]
    try:
        return start + path.stat().st_size
    except OSError:
        return start


def offset_of_last_lines(directory: Path, lines: int) -> int:
    """The offset where the last ``lines`` lines of the retained stream begin."""
    end = stream_end(directory)
    segments = list_segments(directory)
    if lines <= 0 or not segments:
        return end
    first = segments[0][0]
    position, found = end, 0
    block = 64 * 1024
    while position > first:
        start = max(first, position - block)
        data = _read_range(directory, start, position)
        # A newline at the very end terminates the last line; it does not start a new one.
        search_end = len(data) - 1 if position == end and data.endswith(b"\n") else len(data)
        while True:
            index = data.rfind(b"\n", 0, search_end)
            if index < 0:
                break
            found += 1
            if found == lines:
                return start + index + 1
            search_end = index
        position = start
    return first


def _read_range(directory: Path, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` across as many segments as they span."""
    parts: list[bytes] = []
    position = start
    while position < end:
        first, data = read_from(directory, position, end - position)
        if not data or first != position:
            break
        parts.append(data)
        position += len(data)
    return b"".join(parts)
