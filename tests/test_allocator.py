"""The allocator tuning that keeps stream buffers from being faulted in afresh."""

from __future__ import annotations

import platform
import sys

import pytest

from si.allocator import keep_freed_memory


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc only",
)
def test_glibc_takes_the_thresholds() -> None:
    assert keep_freed_memory() is True
