"""Frame encoding and decoding: bytes in, frames out."""

from __future__ import annotations

import itertools

import pytest

from si.protocol.frames import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Channel,
    Frame,
    FrameDecoder,
    FrameError,
    FrameKind,
    encode_frame,
)

SAMPLES = [
    Frame(FrameKind.HELLO, 0, 0, b'{"role":"hub"}'),
    Frame(FrameKind.DATA, Channel.INPUT, 7, b"payload bytes"),
    Frame(FrameKind.ACK, Channel.OUTPUT, 1 << 40, b""),
    Frame(FrameKind.END, Channel.STDIN, 2**64 - 1, b""),
    Frame(FrameKind.MSG, 0, 0, b"\x00\xff" * 100),
]


def test_header_layout_is_fixed_and_big_endian() -> None:
    encoded = encode_frame(FrameKind.DATA, Channel.OUTPUT, 0x0102030405060708, b"xyz")

    assert HEADER_SIZE == 16
    assert encoded == bytes.fromhex("03 06 0000 00000003 0102030405060708") + b"xyz"


def test_frame_encode_matches_encode_frame() -> None:
    frame = Frame(FrameKind.ACK, Channel.INPUT, 99)

    assert frame.encode() == encode_frame(FrameKind.ACK, Channel.INPUT, 99)
    assert len(frame.encode()) == HEADER_SIZE


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: f.kind.name)
def test_round_trip(frame: Frame) -> None:
    decoder = FrameDecoder()

    assert decoder.feed(frame.encode()) == [frame]
    assert decoder.buffered == 0


def test_decoded_kind_is_the_enum() -> None:
    [frame] = FrameDecoder().feed(encode_frame(5, 6, 1))

    assert frame.kind is FrameKind.ACK


def test_fed_one_byte_at_a_time() -> None:
    stream = b"".join(frame.encode() for frame in SAMPLES)
    ends = set()
    position = 0
    for frame in SAMPLES:
        position += len(frame.encode())
        ends.add(position)
    decoder = FrameDecoder()
    decoded: list[Frame] = []

    for index in range(len(stream)):
        got = decoder.feed(stream[index : index + 1])
        # A frame comes out exactly when its last byte arrives, never earlier.
        assert len(got) == (1 if index + 1 in ends else 0)
        decoded += got

    assert decoded == SAMPLES
    assert decoder.buffered == 0


def test_several_frames_in_one_feed_keep_the_partial_tail() -> None:
    stream = b"".join(frame.encode() for frame in SAMPLES)
    tail = SAMPLES[0].encode()[: HEADER_SIZE + 3]
    decoder = FrameDecoder()

    assert decoder.feed(stream + tail) == SAMPLES
    assert decoder.buffered == len(tail)
    assert decoder.feed(SAMPLES[0].encode()[HEADER_SIZE + 3 :]) == [SAMPLES[0]]
    assert decoder.buffered == 0


def test_empty_feed_yields_nothing() -> None:
    decoder = FrameDecoder()

    assert decoder.feed(b"") == []
    assert decoder.buffered == 0


def test_payload_of_exactly_max_is_accepted() -> None:
    frame = Frame(FrameKind.DATA, Channel.OUTPUT, 0, b"a" * 10)

    assert FrameDecoder(max_payload=10).feed(frame.encode()) == [frame]


def test_payload_larger_than_max_fails_on_the_header_alone() -> None:
    decoder = FrameDecoder(max_payload=10)
    header_only = encode_frame(FrameKind.DATA, Channel.OUTPUT, 0, b"a" * 11)[:HEADER_SIZE]

    with pytest.raises(FrameError, match="11 bytes exceeds 10"):
        decoder.feed(header_only)


def test_default_max_is_max_payload() -> None:
    header = encode_frame(FrameKind.DATA, Channel.OUTPUT, 0)[:4]
    oversized = header + (MAX_PAYLOAD + 1).to_bytes(4, "big") + bytes(8)

    with pytest.raises(FrameError, match=f"{MAX_PAYLOAD + 1} bytes"):
        FrameDecoder().feed(oversized)


@pytest.mark.parametrize("kind", [0, 7, 255])
def test_unknown_kind(kind: int) -> None:
    with pytest.raises(FrameError, match=f"unknown frame kind {kind}"):
        FrameDecoder().feed(encode_frame(kind, 0, 0, b"x"))


def test_unknown_kind_after_good_frames_still_fails() -> None:
    decoder = FrameDecoder()

    with pytest.raises(FrameError):
        decoder.feed(SAMPLES[1].encode() + encode_frame(9, 0, 0))


def test_frames_spanning_uneven_pieces_come_out_whole() -> None:
    frames = [Frame(FrameKind.DATA, Channel.OUTPUT, n, bytes([n]) * (1000 + n)) for n in range(5)]
    stream = b"".join(frame.encode() for frame in frames)
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    cuts = [0, 7, 15, 16, 17, 900, 2500, 2501, len(stream) - 3, len(stream)]
    for start, end in itertools.pairwise(cuts):
        decoded += decoder.feed(stream[start:end])

    assert decoded == frames
    assert decoder.buffered == 0


def test_a_payload_that_arrives_as_one_piece_is_not_copied() -> None:
    payload = b"p" * 100
    decoder = FrameDecoder()
    decoder.feed(encode_frame(FrameKind.DATA, Channel.OUTPUT, 0, payload)[:HEADER_SIZE])
    [frame] = decoder.feed(payload)

    assert frame.payload is payload
