"""A sequence returning its input moves whole blocks: the bytes must be the per-line ones."""

from __future__ import annotations

import os

import pytest

from si.client import HubClient
from si.testing import python_package

pytestmark = pytest.mark.system

RETURN_INPUT = "def run(context, input):\n    return input\n"
PER_LINE = "async def run(context, input):\n    async for line in input:\n        yield line\n"
READ_ONE_FIRST = "async def run(context, input):\n    await input.read()\n    return input\n"
UTF8 = "zażółć gęślą jaźń\n".encode()
# Split multibyte characters, invalid bytes, and an incomplete character at the very end.
TEXT_BLOCKS = [b"plain ascii\n" * 1000, UTF8[:3], UTF8[3:] * 500, b"bad \xff\xfe\n", b"\xe2\x82"]


def output_of(client: HubClient, source: str, blocks: list[bytes], content_type: str) -> bytes:
    sequence = client.send_sequence(python_package(source))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    client.send_input(instance, iter(blocks), content_type=content_type, end=True)
    return b"".join(client.stream(f"instance/{instance}/output", follow=False))


@pytest.mark.parametrize(
    ("blocks", "content_type"),
    [
        (TEXT_BLOCKS, "text/plain"),
        ([os.urandom(300_000), os.urandom(5)], "application/octet-stream"),
        ([b'{"a": 1}\n"text"\n', b"[1, 2]\n"], "application/x-ndjson"),
    ],
)
def test_returning_the_input_gives_the_bytes_of_iterating_it(
    client: HubClient, blocks: list[bytes], content_type: str
) -> None:
    per_line = output_of(client, PER_LINE, blocks, content_type)
    assert output_of(client, RETURN_INPUT, blocks, content_type) == per_line


def test_text_passthrough_replaces_invalid_bytes(client: HubClient) -> None:
    expected = b"".join(TEXT_BLOCKS).decode("utf-8", "replace").encode()
    assert expected.endswith("\ufffd".encode())
    assert output_of(client, RETURN_INPUT, TEXT_BLOCKS, "text/plain") == expected


def test_an_input_read_from_before_it_is_returned_goes_item_by_item(client: HubClient) -> None:
    lines = [b"first\n", b"second\n", b"third\n"]
    assert output_of(client, READ_ONE_FIRST, lines, "text/plain") == b"second\nthird\n"
