"""Frames of the hub <-> runner link: a fixed 16-byte header, then the payload.

Header layout (network byte order)::

    kind     u8   what the frame is (FrameKind)
    channel  u8   which stream it belongs to (Channel); 0 for link-level frames
    flags    u16  reserved, always 0
    length   u32  payload length in bytes
    offset   u64  DATA: stream offset of the payload's first byte
                  END:  final stream offset (total bytes ever sent on the channel)
                  ACK:  consumed offset (every byte before it was taken by the application)

Data is numbered by byte offset rather than by frame count so that a replay after a reconnect
can be cut at any byte and duplicates are recognised by arithmetic alone.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass

HEADER = struct.Struct("!BBHIQ")
HEADER_SIZE = HEADER.size

# Large enough for a 1 GiB/s stream to need few frames, small enough that one frame never
# monopolises the link for long; senders split bigger writes.
MAX_PAYLOAD = 1 << 20


class FrameKind(enum.IntEnum):
    HELLO = 1  # JSON: who I am, protocol version, a fresh nonce
    AUTH = 2  # JSON: proof of the shared token over the peer's nonce, plus my stream positions
    DATA = 3  # bytes of a channel, numbered by offset
    END = 4  # the channel ends at `offset`
    ACK = 5  # the receiver has consumed the channel up to `offset`
    MSG = 6  # JSON, not numbered and not replayed (heartbeats, notices)


class Channel(enum.IntEnum):
    """Numbered streams; numbers follow STH's channel list where one exists."""

    STDIN = 0  # hub -> runner: bytes for the sequence's stdin
    CONTROL = 3  # hub -> runner: JSON messages [code, payload]
    MONITORING = 4  # runner -> hub: JSON messages [code, payload]
    INPUT = 5  # hub -> runner: the sequence's input stream
    OUTPUT = 6  # runner -> hub: the sequence's output stream


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame stream; the connection must be dropped."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    channel: int
    offset: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.kind, self.channel, self.offset, self.payload)


def encode_frame(kind: int, channel: int, offset: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, channel, 0, len(payload), offset) + payload


class FrameDecoder:
    """Turns a byte stream into frames; feed it whatever the socket returned.

    Every payload is copied exactly once, from the pieces it arrived in: what was fed is kept
    as read-only views until its frame is complete, never gathered into a growing buffer.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._max_payload = max_payload
        self._pieces: deque[memoryview] = deque()
        self._size = 0  # bytes in _pieces
        # (kind, channel, offset, length) of the frame whose payload is still arriving
        self._header: tuple[FrameKind, int, int, int] | None = None

    def feed(self, data: bytes) -> list[Frame]:
        if data:
            self._pieces.append(memoryview(data))
            self._size += len(data)
        frames: list[Frame] = []
        while True:
            header = self._header
            if header is None:
                if self._size < HEADER_SIZE:
                    return frames
                header = self._header = self._parse_header(self._take(HEADER_SIZE))
            kind, channel, offset, length = header
            if self._size < length:
                return frames
            self._header = None
            frames.append(Frame(kind, channel, offset, self._take(length) if length else b""))

    def _parse_header(self, raw: bytes) -> tuple[FrameKind, int, int, int]:
        kind, channel, _flags, length, offset = HEADER.unpack(raw)
        if length > self._max_payload:
            raise FrameError(f"frame payload of {length} bytes exceeds {self._max_payload}")
        try:
            return FrameKind(kind), channel, offset, length
        except ValueError:
            raise FrameError(f"unknown frame kind {kind}") from None

    def _take(self, size: int) -> bytes:
        """The next ``size`` bytes (all fed already) as one object, in a single copy."""
        pieces = self._pieces
        self._size -= size
        first = pieces[0]
        if len(first) > size:
            pieces[0] = first[size:]
            return bytes(first[:size])
        if len(first) == size:
            pieces.popleft()
            whole = first.obj
            # A piece that is one whole bytes object is handed on as it is.
            return whole if type(whole) is bytes and len(whole) == size else bytes(first)
        parts: list[memoryview] = []
        while size:
            piece = pieces.popleft()
            if len(piece) > size:
                pieces.appendleft(piece[size:])
                piece = piece[:size]
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    @property
    def buffered(self) -> int:
        return self._size + (HEADER_SIZE if self._header is not None else 0)
