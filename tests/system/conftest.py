"""Fixtures for system tests: real hubs and runners as processes on temporary homes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient
from si.testing import HubProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    # Deep on purpose: runner socket paths under it exceed the 107-byte Unix socket limit.
    deep = tmp_path / ("d" * 40) / "hub-home"
    deep.parent.mkdir(parents=True)
    return deep


@pytest.fixture
def hub(home: Path) -> Iterator[HubProcess]:
    process = HubProcess(home).start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def client(hub: HubProcess) -> HubClient:
    return HubClient(hub.address)


class Cli:
    """Runs `si` as a user would, in its own POSIX session directory for the `-` values."""

    def __init__(self, hub_address: str, tmp: Path) -> None:
        self.env = {**os.environ, "SI_HUB": hub_address, "TMPDIR": str(tmp)}
        self.env.pop("SI_FORMAT", None)

    def run(
        self, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "si", *args],
            input=input,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            cwd=REPO,
        )


@pytest.fixture
def cli(hub: HubProcess, tmp_path: Path) -> Cli:
    session_tmp = tmp_path / "session-tmp"
    session_tmp.mkdir()
    return Cli(hub.address, session_tmp)
