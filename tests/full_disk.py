"""A real full disk for tests: a small tmpfs mounted on a temporary directory (we run as root).

``small_disk`` skips the test when mounting is not permitted and always unmounts, lazily if a
process still holds a file there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = ".filler"


@contextlib.contextmanager
def small_disk(mount_point: Path, size: str = "16m") -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'mount failed'}")
    try:
        yield mount_point
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until there is no space left; returns it (unlink it to free)."""
    filler = disk / FILLER
    block = b"\0" * (1 << 20)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]  # take the last pages too
    finally:
        os.close(fd)
    return filler


def assert_full(disk: Path) -> None:
    probe = disk / ".probe"
    with pytest.raises(OSError, match="No space left"):
        probe.write_bytes(b"x")
    probe.unlink(missing_ok=True)


def temp_files(root: Path) -> list[Path]:
    """Left-over temporary files of atomic writes under ``root``."""
    return [path for path in root.rglob("*.tmp")]
