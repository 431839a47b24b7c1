"""The runner's input decoding and output encoding, without processes or sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from si.runner.streams import BLOCK_LIMIT, InputError, InputStream, output_encoder


def read_all(
    chunks: list[bytes], content_type: str | None, read: Callable[[InputStream], AsyncIterator[Any]]
) -> tuple[list[Any], int]:
    """Feed raw chunks and an end into a stream; return what ``read`` gave and the bytes
    consumed."""
    consumed = 0

    def on_consumed(n: int) -> None:
        nonlocal consumed
        consumed += n

    async def main() -> list[Any]:
        stream = InputStream(on_consumed, content_type)
        assert stream.untouched
        for chunk in chunks:
            stream.feed(chunk)
        stream.end()
        return [item async for item in read(stream)]

    return asyncio.run(main()), consumed


def drain(chunks: list[bytes], *, content_type: str | None = None) -> tuple[list[Any], int]:
    """The items read from a stream fed ``chunks``, and the bytes consumed."""
    return read_all(chunks, content_type, lambda stream: stream)


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


def test_an_incomplete_character_at_the_end_becomes_a_replacement_character() -> None:
    items, _ = drain([b"Content-Type: text/plain\r\n\r\nok\n\xc5"])
    assert items == ["ok\n", "\ufffd"]


def blocks_and_items(
    chunks: list[bytes], output_type: str | None, content_type: str | None = None
) -> tuple[list[bytes], bytes, int]:
    """The block path's output blocks and consumed count, beside the item path's output."""
    items, _ = drain(chunks, content_type=content_type)
    encode = output_encoder(output_type)
    blocks, consumed = read_all(
        chunks, content_type, lambda stream: stream.output_blocks(output_type)
    )
    return blocks, b"".join(encode(item) for item in items), consumed


TEXT_HEADER = b"Content-Type: text/plain\r\n\r\n"
UTF8 = "zażółć gęślą jaźń\n".encode()


@pytest.mark.parametrize(
    ("chunks", "output_type"),
    [
        ([TEXT_HEADER + b"a\nb", b"c\n", b"no newline at the end"], None),
        ([TEXT_HEADER + UTF8[:3], UTF8[3:7], UTF8[7:] + b"x\n"], None),
        ([TEXT_HEADER + b"bad \xff\xfe bytes\n\xc5", b"\x82\n\xe2\x82"], None),
        ([b"Content-Ty", b"pe: application/octet-stream\r\n", b"\r\n\x00\xff", b"\x01"], None),
        ([b'Content-Type: application/x-ndjson\r\n\r\n{"a": 1}\n"s"\n', b"[2]"], None),
        ([TEXT_HEADER + b"one\ntwo\n", b"three"], "application/x-ndjson"),
        ([b"Content-Type: application/octet-stream\r\n\r\n\x00\x01"], "application/x-ndjson"),
    ],
)
def test_the_block_path_gives_the_bytes_of_the_item_path(
    chunks: list[bytes], output_type: str | None
) -> None:
    blocks, expected, consumed = blocks_and_items(chunks, output_type)
    assert b"".join(blocks) == expected
    assert consumed == sum(len(chunk) for chunk in chunks)


def test_the_block_path_hands_on_ascii_text_and_binary_without_copies() -> None:
    chunk = b"a line\n" * 100

    async def main(content_type: str) -> list[bytes | memoryview]:
        stream = InputStream(lambda n: None, content_type)
        stream.feed(chunk)
        stream.end()
        return [block async for block in stream.output_blocks(None)]

    for content_type in ("text/plain", "application/octet-stream"):
        [block] = asyncio.run(main(content_type))
        assert block is chunk


def test_the_block_path_takes_everything_received_at_once() -> None:
    blocks, expected, _ = blocks_and_items([b"a\n", b"b", b"c\n"], None, "text/plain")
    assert blocks == [b"a\nbc\n"] == [expected]


def test_the_block_path_fails_as_reading_would() -> None:
    async def main() -> list[bytes | memoryview]:
        stream = InputStream(lambda n: None)
        stream.feed(b"Content-Type: image/png\r\n\r\nx\ny\n")
        stream.end()
        return [block async for block in stream.output_blocks(None)]

    with pytest.raises(InputError, match="unsupported input content type"):
        asyncio.run(main())


def test_reading_touches_the_stream() -> None:
    async def main() -> bool:
        stream = InputStream(lambda n: None, "text/plain")
        stream.feed(b"a\n")
        await stream.read()
        return stream.untouched

    assert asyncio.run(main()) is False


def test_text_blocks_end_where_lines_end() -> None:
    lines = [b"x" * (n * 7919 % 3000) + b"\n" for n in range(2000)]
    lines.append(b"y" * 600_000 + b"\n")  # one line longer than a block
    data = b"".join(lines) + b"no newline"
    chunks = [data[n : n + 100_000] for n in range(0, len(data), 100_000)]
    blocks, expected, _ = blocks_and_items(chunks, None, "text/plain")

    assert b"".join(blocks) == expected
    assert all(bytes(block).endswith(b"\n") for block in blocks[:-1])
    assert bytes(blocks[-1]).endswith(b"no newline")
    assert all(len(block) <= BLOCK_LIMIT or bytes(block).count(b"\n") == 1 for block in blocks[:-1])
