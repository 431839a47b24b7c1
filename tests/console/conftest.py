"""Fixtures for the console's tests: a real hub, `si hub console` as a process, a browser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient
from si.testing import HubProcess

REPO = Path(__file__).resolve().parents[2]
COUNTER = REPO / "examples" / "counter"
# A Python sequence that counts up, a number every 10 ms, until stopped.
COUNTING = """
import asyncio
async def run(context, input):
    n = 0
    while True:
        yield n
        n += 1
        await asyncio.sleep(0.01)
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "home").start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def client(hub: HubProcess) -> Iterator[HubClient]:
    with HubClient(hub.address) as hub_client:
        yield hub_client


class ConsoleProcess:
    """``si hub console`` run as a user runs it; ``url`` is the one-time link it printed."""

    def __init__(self, hub_address: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "si", "--hub", hub_address, "hub", "console", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url:
            self.process.wait(10)
            assert self.process.stderr is not None
            why = self.process.stderr.read().decode(errors="replace")
            self.close()
            raise AssertionError(f"si hub console printed no link: {why}")
        self.base = self.url.split("/console/")[0]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def console(hub: HubProcess) -> Iterator[ConsoleProcess]:
    running = ConsoleProcess(hub.address)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium; skipped where it is not installed, except in CI, which must run it."""
    from tests.console.browser import browser_missing, chromium

    missing = browser_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the console's browser tests must run in CI: {missing}")
        pytest.skip(missing)
    with chromium() as driver:
        yield driver
