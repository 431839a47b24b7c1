"""Limits from a start body, and the RSS watchdog on real /proc files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from si.daemon.limits import MIB, Limits, LimitsError, MemoryWatchdog, breach, read_rss

pytestmark = pytest.mark.timeout(10)


def test_sth_start_bodies_have_no_limits() -> None:
    assert Limits.from_payload({}) == Limits()
    assert Limits.from_payload({"limits": {}}) == Limits()
    assert Limits().view() is None


def test_memory_is_in_mib_and_shown_with_its_enforcer() -> None:
    limits = Limits.from_payload({"limits": {"memory": 64}})
    assert limits.memory_bytes == 64 * MIB
    assert limits.view() == {"memory": 64, "enforcedBy": "rss-watchdog"}


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ([], "limits must be a JSON object"),
        ({"memory": 0}, "limits.memory"),
        ({"cpu": True}, "cpu"),
    ],
)
def test_bad_limits_name_the_field(limits: object, message: str) -> None:
    with pytest.raises(LimitsError, match=message):
        Limits.from_payload({"limits": limits})


def test_a_breach_is_only_past_the_limit() -> None:
    assert breach(64 * MIB, 64 * MIB) is None
    reason = breach(65 * MIB, 64 * MIB)
    assert reason == "memory-limit: RSS 65.0 MiB over the 64 MiB limit"


def test_the_watchdog_reports_a_breach_once_and_forgets_the_runner() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()  # up, and an interpreter's size
        reasons: list[str] = []
        watchdog = MemoryWatchdog()
        assert watchdog.watch(child.pid, 1 * MIB, reasons.append)  # an interpreter is larger
        watchdog.sample()
        watchdog.sample()
        assert len(reasons) == 1
        assert reasons[0].startswith("memory-limit: RSS ")
        assert len(watchdog) == 0
    finally:
        child.kill()
        child.communicate()


def test_a_runner_that_ended_leaves_the_watch_quietly() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    watchdog = MemoryWatchdog()
    assert watchdog.watch(child.pid, 1 << 40, lambda reason: pytest.fail(reason))
    child.wait()
    watchdog.sample()
    assert len(watchdog) == 0
    assert not watchdog.watch(child.pid, 1 << 40, lambda reason: None)


def test_rss_is_read_from_a_held_descriptor() -> None:
    fd = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        first = read_rss(fd)
        assert first is not None
        assert first > MIB
        assert read_rss(fd) is not None  # re-read from the same descriptor
    finally:
        os.close(fd)
