"""The input as a scramjet-framework Stream: direct reads while nothing is attached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from si.runner.framework import passthrough_source, scramjet_stream
from si.runner.streams import InputStream

streams = pytest.importorskip("scramjet.streams")


def fed(*lines: bytes) -> InputStream:
    source = InputStream(lambda n: None, "text/plain")
    for line in lines:
        source.feed(line)
    source.end()
    return source


def test_the_input_is_a_framework_stream_that_iterates_its_source_directly() -> None:
    async def main() -> tuple[list[Any], bool]:
        source = fed(b"a\nb\n", b"c\n")
        stream = scramjet_stream(source)
        assert isinstance(stream, streams.Stream)
        iterator = stream.__aiter__()
        return [item async for item in iterator], iterator is source

    assert asyncio.run(main()) == (["a\n", "b\n", "c\n"], True)


def test_read_is_direct_too_and_ends_with_none() -> None:
    async def main() -> list[Any]:
        stream = scramjet_stream(fed(b"a\n"))
        return [await stream.read(), await stream.read()]

    assert asyncio.run(main()) == ["a\n", None]


def test_a_transform_goes_through_the_framework_from_where_direct_reads_stopped() -> None:
    async def main() -> list[Any]:
        stream = scramjet_stream(fed(b"a\nb\nc\n"))
        first = await stream.read()
        mapped = stream.map(str.upper)
        return [first, *(await mapped.to_list())]

    assert asyncio.run(main()) == ["a\n", "B\n", "C\n"]


def test_only_the_untouched_input_itself_is_a_passthrough() -> None:
    async def main() -> list[bool]:
        plain = fed(b"a\n")
        wrapped_source = fed(b"a\n")
        wrapped = scramjet_stream(wrapped_source)
        mapped_source = fed(b"a\n")
        mapped = scramjet_stream(mapped_source)
        derived = mapped.map(str.upper)
        verdicts = [
            passthrough_source(plain, plain) is plain,
            passthrough_source(wrapped, wrapped_source) is wrapped_source,
            passthrough_source(derived, mapped_source) is None,
            passthrough_source(mapped, mapped_source) is None,  # a transform is attached
            passthrough_source(["a\n"], plain) is None,
        ]
        await wrapped.read()
        verdicts.append(passthrough_source(wrapped, wrapped_source) is None)
        return verdicts

    assert asyncio.run(main()) == [True] * 6
