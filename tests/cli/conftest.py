"""Fixtures for CLI tests: a hub on a short Unix socket, and ``si`` run as a user runs it."""

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
from tests.cli.hubproxy import HubUnderTest

REPO = Path(__file__).resolve().parents[2]

RunSi = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: pytest's tmp_path can exceed the 107-byte socket limit."""
    path = Path(tempfile.mkdtemp(prefix="si-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hub(short_dir: Path) -> Iterator[HubUnderTest]:
    """A real hub on a temporary home, reached through a recording, fault-injecting proxy."""
    with HubUnderTest(str(short_dir / "hub.sock"), short_dir / "home") as real:
        yield real


@pytest.fixture
def fake_hub(short_dir: Path) -> Iterator[FakeHub]:
    """A scripted server for what no real hub does on purpose: resuming a stream earlier or
    later than asked, or without offsets."""
    with FakeHub(str(short_dir / "fake.sock")) as fake:
        yield fake


@pytest.fixture
def si_env(request: pytest.FixtureRequest, tmp_path: Path, hub: HubUnderTest) -> dict[str, str]:
    """The environment of a user whose session files live in tmp_path and whose hub is ``hub``
    (``fake_hub`` in a test that asks for it)."""
    address = (
        request.getfixturevalue("fake_hub").address
        if "fake_hub" in request.fixturenames
        else hub.address
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("SI_")}
    env.pop("NO_COLOR", None)
    env["PYTHONPATH"] = str(REPO)
    env["TMPDIR"] = str(tmp_path)
    env["SI_HUB"] = address
    env["SI_HOME"] = str(tmp_path / "home")
    # Profiles live under the user's config dir: a fresh one per test.
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


@pytest.fixture
def run_si(si_env: dict[str, str], tmp_path: Path) -> RunSi:
    """Run ``si ARGS...`` in this process, through click's CliRunner, as a shell in tmp_path
    with ``si_env`` would; keyword ``env`` adds or (with None) removes variables.

    The result is shaped like a finished process (exit code, stdout and stderr as bytes). The
    few tests that need a real process (a closed pipe, a terminal, the import cost) use
    ``run_si_process``.
    """
    from click.testing import CliRunner

    from si.cli.app import main

    def run(
        *args: str,
        input: bytes | None = None,
        env: dict[str, str | None] | None = None,
        timeout: float = 30,  # the test's own timeout bounds it in process
    ) -> subprocess.CompletedProcess[bytes]:
        del timeout
        changes: dict[str, str | None] = {k: None for k in os.environ if k not in si_env}
        changes.update({k: v for k, v in si_env.items() if os.environ.get(k) != v})
        changes.update(env or {})
        runner = CliRunner()
        before = os.getcwd()
        os.chdir(tmp_path)
        try:
            with runner.isolation(input=input or b"", env=changes) as (out, err, _):
                try:
                    main(list(args))  # as the console script runs, completion included
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
        finally:
            os.chdir(before)
        return subprocess.CompletedProcess(
            ["si", *args], code, stdout=out.getvalue(), stderr=err.getvalue()
        )

    return run


@pytest.fixture
def run_si_process(si_env: dict[str, str], tmp_path: Path) -> RunSi:
    """Run ``python -m si ARGS...`` as a process; keyword ``env`` adds or (with None) removes
    variables."""

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


def first_lines(
    si_env: dict[str, str], *args: str, count: int = 1, input: bytes | None = None
) -> list[bytes]:
    """The first ``count`` lines ``python -m si ARGS...`` prints, then it is killed: for
    commands that follow a stream until interrupted."""
    process = subprocess.Popen(
        [sys.executable, "-m", "si", *args],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=si_env,
    )
    try:
        assert process.stdout is not None
        if input is not None:
            assert process.stdin is not None
            process.stdin.write(input)
            process.stdin.flush()
        return [process.stdout.readline() for _ in range(count)]
    finally:
        process.kill()
        process.wait(10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


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
