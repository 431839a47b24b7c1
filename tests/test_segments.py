"""Segmented, size-rotated streams: exact offsets across rotations, tails, plain files."""

from __future__ import annotations

from pathlib import Path

from si.segments import SegmentWriter, list_segments, offset_of_last_lines, read_from, stream_end


def read_all(directory: Path, offset: int = 0) -> tuple[int, bytes]:
    first, data = read_from(directory, offset, 1 << 30)
    out = bytearray(data)
    position = first + len(data)
    while True:
        start, more = read_from(directory, position, 1 << 30)
        if not more:
            return first, bytes(out)
        out += more
        position = start + len(more)


def test_rotation_keeps_offsets_exact_and_drops_the_oldest(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "log", segment_bytes=100, keep=3)
    lines = [f"{n:05d}\n".encode() for n in range(200)]  # 6 bytes each, 1200 bytes
    for line in lines:
        writer.write(line)
    writer.close()
    segments = list_segments(tmp_path / "log")
    # A segment is closed once it holds 100 bytes or more: 17 lines, 102 bytes each.
    assert [start for start, _ in segments] == [918, 1020, 1122]
    first, data = read_all(tmp_path / "log")
    assert first == segments[0][0]
    assert data == b"".join(lines)[first:]
    assert stream_end(tmp_path / "log") == 1200


def test_reading_from_a_rotated_away_offset_starts_at_the_oldest_kept(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "log", segment_bytes=10, keep=2)
    for n in range(10):
        writer.write(f"{n}\n".encode() * 3)
    everything = b"".join(f"{n}\n".encode() * 3 for n in range(10))
    first, data = read_all(tmp_path / "log", 0)
    assert first == 36  # segments of 12 bytes (rotation at >= 10); the last two: 36, 48
    assert data == everything[36:]


def test_a_writer_reopened_continues_at_the_end(tmp_path: Path) -> None:
    SegmentWriter(tmp_path / "log").write(b"abc")
    writer = SegmentWriter(tmp_path / "log")
    writer.write(b"def")
    assert writer.offset == 6
    assert read_all(tmp_path / "log") == (0, b"abcdef")


def test_last_lines(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "log", segment_bytes=7)
    for n in range(10):
        writer.write(f"line{n}\n".encode())
    offset = offset_of_last_lines(tmp_path / "log", 3)
    assert read_all(tmp_path / "log", offset)[1] == b"line7\nline8\nline9\n"
    assert offset_of_last_lines(tmp_path / "log", 0) == stream_end(tmp_path / "log")


def test_a_plain_file_is_one_segment(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"hello\nworld\n")
    assert read_all(tmp_path / "stdout", 6) == (6, b"world\n")
    assert offset_of_last_lines(tmp_path / "stdout", 1) == 6
