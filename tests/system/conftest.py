"""Fixtures for system tests: real hubs and runners as processes on temporary homes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from si.client import HubClient
from si.paths import connectable_unix_path
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


@contextlib.contextmanager
def hub_http(hub: HubProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client on the hub's socket, for requests the HubClient does not make."""
    target, dirfd = connectable_unix_path(hub.socket)  # the test home is deep on purpose
    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=target), base_url="http://si/api/v1"
        ) as http:
            yield http
    finally:
        if dirfd is not None:
            os.close(dirfd)


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
