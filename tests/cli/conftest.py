"""Fixtures for CLI tests: a fake hub on a short Unix socket, and ``si`` run as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.fakehub import FakeHub

REPO = Path(__file__).resolve().parents[2]

RunSi = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: pytest's tmp_path can exceed the 107-byte socket limit."""
    path = Path(tempfile.mkdtemp(prefix="si-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hub(short_dir: Path) -> Iterator[FakeHub]:
    with FakeHub(str(short_dir / "hub.sock")) as fake:
        yield fake


@pytest.fixture
def si_env(tmp_path: Path, hub: FakeHub) -> dict[str, str]:
    """The environment of a user whose session files live in tmp_path and whose hub is ``hub``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SI_")}
    env.pop("NO_COLOR", None)
    env["PYTHONPATH"] = str(REPO)
    env["TMPDIR"] = str(tmp_path)
    env["SI_HUB"] = hub.address
    env["SI_HOME"] = str(tmp_path / "home")
    # Profiles live under the user's config dir: a fresh one per test.
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


@pytest.fixture
def run_si(si_env: dict[str, str], tmp_path: Path) -> RunSi:
    """Run ``python -m si ARGS...``; keyword ``env`` adds or (with None) removes variables."""

    def run(
        *args: str,
        input: bytes | None = None,
        env: dict[str, str | None] | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[bytes]:
        environment = dict(si_env)
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return subprocess.run(
            [sys.executable, "-m", "si", *args],
            input=input if input is not None else b"",
            capture_output=True,
            env=environment,
            cwd=tmp_path,
            timeout=timeout,
            check=False,
        )

    return run


def session_file(tmp_path: Path) -> Path:
    """Where ``si`` run with TMPDIR=tmp_path keeps this test session's "last" values."""
    return tmp_path / ".si-tmp" / str(os.getsid(0)) / "session-config.json"


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """Assert the failure is exit 1 with exactly one ``Error:`` line and no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, stderr)
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0][len("Error: ") :]
