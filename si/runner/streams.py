"""The sequence's input stream and the encoding of its output.

Input arrives as raw bytes on the INPUT channel, preceded (STH's convention) by a small header
block ``Content-Type: <type>\\r\\n\\r\\n`` unless the type is known otherwise. The stream hands
the sequence chunks as STH's Python runner does: ``text/plain`` one decoded line per chunk with
its newline kept, ``application/octet-stream`` raw ``bytes``; and, beyond STH,
``application/x-ndjson`` one parsed JSON value per line.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

TEXT = "text/plain"
BINARY = "application/octet-stream"
NDJSON_TYPES = ("application/x-ndjson", "text/x-ndjson")

# A header block longer than this is not a header block: refuse instead of buffering forever.
MAX_HEADER_BLOCK = 8192


class InputError(Exception):
    """The input cannot be decoded (unknown content type, malformed header)."""


class InputStream:
    """An async iterable of input chunks, fed by the runner as bytes arrive.

    ``on_consumed(n)`` is called once ``n`` raw bytes have been handed to the sequence, which
    is what lets the hub send more: a sequence that stops reading stops its input.
    """

    def __init__(self, on_consumed: Callable[[int], None], content_type: str | None = None) -> None:
        self._on_consumed = on_consumed
        self._raw: deque[bytes] = deque()
        self._items: deque[Any] = deque()
        self._ended = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._header = bytearray()
        self._content_type: str | None = content_type
        self._partial = ""
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def content_type(self) -> str | None:
        return self._content_type

    # -- feeding (runner side) -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._raw.append(data)
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading (sequence side) -----------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._items:
                return self._items.popleft()
            if self._error is not None:
                raise self._error
            if self._raw:
                self._decode(self._raw.popleft())
                continue
            if self._ended:
                self._flush_partial()
                if self._items:
                    continue
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> Any:
        """The next chunk, or ``None`` at the end of input."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None

    async def readline(self) -> Any:
        """``sys.stdin``-style: the next line, or ``""`` at the end."""
        chunk = await self.read()
        return "" if chunk is None else chunk

    def map(self, function: Callable[[Any], Any]) -> AsyncIterator[Any]:
        """A derived stream applying ``function`` (sync or async) to every chunk."""

        async def mapped() -> AsyncIterator[Any]:
            async for chunk in self:
                result = function(chunk)
                if asyncio.iscoroutine(result):
                    result = await result
                yield result

        return mapped()

    # -- decoding --------------------------------------------------------------------------

    def _decode(self, raw: bytes) -> None:
        self._on_consumed(len(raw))
        if self._content_type is None:
            raw = self._take_header(raw)
            if self._content_type is None or not raw:
                return
        content_type = self._content_type
        if content_type == BINARY:
            self._items.append(raw)
            return
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # Split on "\n" only: str.splitlines would also break on form feeds and the like.
        parts = (self._partial + self._decoder.decode(raw)).split("\n")
        self._partial = parts.pop()
        lines = [part + "\n" for part in parts]
        if content_type == TEXT:
            self._items.extend(lines)
        else:
            self._items.extend(json.loads(line) for line in lines if line.strip())

    def _flush_partial(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            if self._content_type == TEXT:
                self._items.append(line)
            elif line.strip():
                self._items.append(json.loads(line))

    def _take_header(self, raw: bytes) -> bytes:
        self._header += raw
        end = self._header.find(b"\r\n\r\n")
        if end < 0:
            if len(self._header) > MAX_HEADER_BLOCK:
                self._error = InputError("input does not start with a Content-Type header block")
            return b""
        headers: dict[str, str] = {}
        for line in self._header[:end].decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        rest = bytes(self._header[end + 4 :])
        self._header.clear()
        self.set_content_type(headers.get("content-type", ""))
        return rest

    def set_content_type(self, content_type: str) -> None:
        media = content_type.split(";")[0].strip().lower()
        if media in NDJSON_TYPES:
            media = "application/x-ndjson"
        elif media not in (TEXT, BINARY):
            self._error = InputError(f"unsupported input content type {content_type!r}")
        self._content_type = media


def output_encoder(content_type: str | None) -> Callable[[Any], bytes]:
    """How output items become bytes.

    ``str`` is UTF-8 encoded as is, ``bytes`` pass unchanged, anything else is JSON plus a newline
    (so a generator of numbers prints one per line); a declared NDJSON output JSON-encodes
    everything, strings included.
    """
    dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
    if content_type in NDJSON_TYPES:
        return lambda item: (dumps(item) + "\n").encode()

    def encode(item: Any) -> bytes:
        if type(item) is str:
            return item.encode()
        if isinstance(item, bytes | bytearray | memoryview):
            return bytes(item)
        if isinstance(item, str):
            return item.encode()
        return (dumps(item) + "\n").encode()

    return encode
