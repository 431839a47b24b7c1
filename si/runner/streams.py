"""The sequence's input stream and the encoding of its output.

Input arrives as raw bytes on the INPUT channel, preceded (STH's convention) by a small header
block ``Content-Type: <type>\\r\\n\\r\\n`` unless the type is known otherwise. The stream hands
the sequence chunks as STH's Python runner does: ``text/plain`` one decoded line per chunk with
its newline kept, ``application/octet-stream`` raw ``bytes``; and, beyond STH,
``application/x-ndjson`` one parsed JSON value per line.

A sequence that returns its input untouched (``return input``) gets the block path
(:meth:`InputStream.output_blocks`): whole received blocks go to the output, already encoded,
with exactly the bytes the item-by-item path would produce, so a passthrough costs per block
instead of per line.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

TEXT = "text/plain"
BINARY = "application/octet-stream"
NDJSON_TYPES = ("application/x-ndjson", "text/x-ndjson")

# The largest block of output a passthrough hands on at once (see InputStream.output_blocks):
# large enough to cost little per byte, small enough for a window of 1 MiB to take several.
BLOCK_LIMIT = 256 * 1024
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
        # Set by the first read: from then on items may be decoded and the block path is off.
        self._reading = False

    @property
    def content_type(self) -> str | None:
        return self._content_type

    @property
    def untouched(self) -> bool:
        """Nothing was read yet: :meth:`output_blocks` may take the stream over."""
        return not self._reading

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
            self._reading = True
            if self._error is not None:
                raise self._error
            if self._raw:
                raw = self._take()
                if raw:
                    self._decode(raw)
                continue
            if self._ended:
                self._flush_partial()
                if self._items:
                    continue
                raise StopAsyncIteration
            await self._wait()

    async def _wait(self) -> None:
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

    async def output_blocks(self, content_type: str | None) -> AsyncIterator[bytes | memoryview]:
        """The output of a sequence that returned this stream untouched, in blocks.

        The bytes are exactly what encoding each item with ``output_encoder(content_type)``
        would give, in order: binary input passes as it is, text input is its UTF-8 decoding
        (invalid bytes replaced) encoded again, which for ASCII or valid UTF-8 is the input
        itself; other cases are decoded into items and encoded here. The blocks are cut where
        items end (text: after a newline; a last line without one comes at the end), so the
        runner, which never splits a block across frames, ends any frame where the item path
        would; a block is at most ``BLOCK_LIMIT`` unless one line is longer.

        Raises:
            InputError: as reading the items would (bad header block, unknown content type).
        """
        encode = output_encoder(content_type)
        as_is = content_type not in NDJSON_TYPES  # str as UTF-8, bytes unchanged
        held: list[bytes] = []  # text after the last newline so far
        while True:
            if self._error is not None:
                raise self._error
            if self._items:  # decoded below: NDJSON input, or a declared NDJSON output
                yield encode(self._items.popleft())
                continue
            if self._raw:
                raw = self._take(everything=True)
                if not raw:
                    continue
                media = self._content_type
                if as_is and media == BINARY:
                    if len(raw) <= BLOCK_LIMIT:
                        yield raw
                    else:
                        view = memoryview(raw)
                        for start in range(0, len(raw), BLOCK_LIMIT):
                            yield view[start : start + BLOCK_LIMIT]
                elif as_is and media == TEXT:
                    for block in _line_blocks(self._reencode(raw), held):
                        yield block
                else:
                    self._decode(raw)
                continue
            if self._ended:
                if as_is and self._content_type == TEXT:
                    held.append(self._reencode(b"", final=True))
                    tail = b"".join(held)
                    if tail:
                        yield tail
                else:
                    self._flush_partial()
                    if self._items:
                        continue
                return
            await self._wait()

    # -- decoding --------------------------------------------------------------------------

    def _take(self, *, everything: bool = False) -> bytes:
        """The next block received (or ``everything`` received so far), past the header
        block, counted as consumed."""
        raw_blocks = self._raw
        if everything and len(raw_blocks) > 1:
            raw = b"".join(raw_blocks)
            raw_blocks.clear()
        else:
            raw = raw_blocks.popleft()
        self._on_consumed(len(raw))
        if self._content_type is None:
            raw = self._take_header(raw)
            if self._content_type is None or self._error is not None:
                return b""
        return raw

    def _reencode(self, raw: bytes, *, final: bool = False) -> bytes:
        """``raw`` decoded as the text path decodes it, encoded back to UTF-8."""
        decoder = self._decoder
        if raw.isascii() and not final and (decoder is None or not decoder.getstate()[0]):
            return raw  # nothing pending in the decoder and nothing to decode: unchanged
        if decoder is None:
            decoder = self._decoder = _text_decoder()
        return decoder.decode(raw, final).encode()

    def _decode(self, raw: bytes) -> None:
        content_type = self._content_type
        if content_type == BINARY:
            self._items.append(raw)
            return
        if self._decoder is None:
            self._decoder = _text_decoder()
        # Split on "\n" only: str.splitlines would also break on form feeds and the like.
        parts = (self._partial + self._decoder.decode(raw)).split("\n")
        self._partial = parts.pop()
        lines = [part + "\n" for part in parts]
        if content_type == TEXT:
            self._items.extend(lines)
        else:
            self._items.extend(json.loads(line) for line in lines if line.strip())

    def _flush_partial(self) -> None:
        if self._decoder is not None:
            # An incomplete character at the very end becomes U+FFFD, like any invalid byte.
            self._partial += self._decoder.decode(b"", True)
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


def _line_blocks(text: bytes, held: list[bytes]) -> Iterator[bytes | memoryview]:
    """``text`` in blocks of whole lines, each at most ``BLOCK_LIMIT`` unless one line is
    longer; ``held`` carries what follows the last newline to the next call."""
    end = text.rfind(b"\n") + 1
    if not end:
        held.append(text)
        return
    view = memoryview(text)
    start = 0
    if held:
        start = text.find(b"\n") + 1
        yield b"".join([*held, view[:start]])
        held.clear()
    while end - start > BLOCK_LIMIT:
        cut = text.rfind(b"\n", start, start + BLOCK_LIMIT) + 1
        if cut <= start:  # one line longer than the limit: whole
            cut = text.find(b"\n", start + BLOCK_LIMIT) + 1
        yield view[start:cut]
        start = cut
    if end > start:
        yield text if start == 0 and end == len(text) else view[start:end]
    if end < len(text):
        held.append(text[end:])


def _text_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("replace")


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
