"""The runner's input decoding and output encoding, without processes or sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from si.runner.streams import InputError, InputStream, output_encoder


def drain(chunks: list[bytes], *, content_type: str | None = None) -> tuple[list[Any], int]:
    """Feed raw chunks and an end into a stream; return the items read and the bytes consumed."""
    consumed = 0

    def on_consumed(n: int) -> None:
        nonlocal consumed
        consumed += n

    async def main() -> list[Any]:
        stream = InputStream(on_consumed, content_type)
        for chunk in chunks:
            stream.feed(chunk)
        stream.end()
        return [item async for item in stream]

    return asyncio.run(main()), consumed


def test_text_input_is_one_chunk_per_line_with_the_newline_kept() -> None:
    items, consumed = drain([b"Content-Type: text/plain\r\n\r\nfirst\nsec", b"ond\nthird"])
    assert items == ["first\n", "second\n", "third"]
    assert consumed == len(b"Content-Type: text/plain\r\n\r\nfirst\nsec") + len(b"ond\nthird")


def test_text_lines_split_on_newline_only() -> None:
    items, _ = drain([b"Content-Type: text/plain\r\n\r\na\x0cb\nc\r\n"])
    assert items == ["a\x0cb\n", "c\r\n"]


def test_header_block_may_arrive_in_pieces() -> None:
    items, _ = drain(
        [b"Content-Ty", b"pe: application/octet-stream\r", b"\n\r\n", b"\x00\x01", b"\x02"]
    )
    assert items == [b"\x00\x01", b"\x02"]


def test_multibyte_characters_split_across_chunks_decode_whole() -> None:
    data = "zażółć\n".encode()
    items, _ = drain([b"Content-Type: text/plain\r\n\r\n" + data[:3], data[3:]])
    assert items == ["zażółć\n"]


def test_ndjson_input_is_parsed_values() -> None:
    items, _ = drain([b'Content-Type: application/x-ndjson\r\n\r\n{"a": 1}\n2\n', b'"x"\n\n[3]'])
    assert items == [{"a": 1}, 2, "x", [3]]


def test_known_content_type_needs_no_header_block() -> None:
    items, _ = drain([b"one\ntwo\n"], content_type="text/plain")
    assert items == ["one\n", "two\n"]


def test_unsupported_content_type_fails_the_read() -> None:
    with pytest.raises(InputError, match="unsupported input content type"):
        drain([b"Content-Type: image/png\r\n\r\nxx"])


def test_read_returns_none_at_the_end() -> None:
    async def main() -> list[Any]:
        stream = InputStream(lambda n: None, "text/plain")
        stream.feed(b"a\n")
        stream.end()
        return [await stream.read(), await stream.read()]

    assert asyncio.run(main()) == ["a\n", None]


def test_a_reader_waits_for_data_that_arrives_later() -> None:
    async def main() -> list[Any]:
        stream = InputStream(lambda n: None, "text/plain")
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, stream.feed, b"late\n")
        loop.call_later(0.02, stream.end)
        return [item async for item in stream]

    assert asyncio.run(main()) == ["late\n"]


@pytest.mark.parametrize(
    ("item", "encoded"),
    [
        ("text", b"text"),
        (b"\x00raw", b"\x00raw"),
        (3000, b"3000\n"),
        ({"a": [1, None]}, b'{"a":[1,null]}\n'),
        (None, b"null\n"),
    ],
)
def test_output_encoding(item: Any, encoded: bytes) -> None:
    assert output_encoder(None)(item) == encoded


def test_declared_ndjson_output_encodes_strings_as_json() -> None:
    assert output_encoder("application/x-ndjson")("text") == b'"text"\n'
