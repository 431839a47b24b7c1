"""The CLI against a real hub process (``si.testing.running_hub``): deploy, streams, and the
``hub serve --detach`` / ``status`` / ``stop`` flow a CI script uses."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.identity import ProcessIdentity
from si.testing import HubProcess, running_hub
from tests.cli.conftest import RunSi, one_error_line

pytestmark = pytest.mark.system

COUNTER = """
async def run(context, input, start=0, count=5):
    for number in range(int(start), int(start) + int(count)):
        yield f"{number}\\n"
"""


@pytest.fixture
def real_hub(short_dir: Path) -> Iterator[HubProcess]:
    with running_hub(short_dir / "h") as hub:
        yield hub


@pytest.fixture
def si_real(run_si: RunSi, real_hub: HubProcess) -> RunSi:
    def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        return run_si(*args, env={"SI_HUB": real_hub.address}, timeout=timeout)

    return run


def _sequence(folder: Path) -> Path:
    folder.mkdir()
    manifest = {
        "name": "counter",
        "version": "1.0.0",
        "main": "main.py",
        "engines": {"python3": "3"},
    }
    (folder / "package.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(COUNTER)
    return folder


def test_deploy_a_directory_then_read_its_output(si_real: RunSi, tmp_path: Path) -> None:
    _sequence(tmp_path / "counter")
    deployed = si_real("seq", "deploy", "counter", "--args", "[10, 3]")
    assert deployed.returncode == 0, deployed.stderr
    output = si_real("inst", "output", "-", timeout=60)
    assert output.returncode == 0, output.stderr
    assert output.stdout == b"10\n11\n12\n"
    table = si_real("inst", "ls").stdout.decode().splitlines()
    assert table[0].split() == ["ID", "SEQUENCE", "STATUS", "RESTARTS", "AGE", "PID"]
    assert len(table) == 2
    info = json.loads(si_real("inst", "info", "-", "--format", "json").stdout)
    assert info["sequence"]["id"] in table[1]


def test_deploy_a_package_file_with_positional_args(si_real: RunSi, tmp_path: Path) -> None:
    _sequence(tmp_path / "counter")
    assert si_real("seq", "pack", "counter", "-o", "counter.tar.gz").returncode == 0
    deployed = si_real("seq", "run", "counter.tar.gz", "7", "2", "--format", "json")
    assert deployed.returncode == 0, deployed.stderr
    sequence, instance = (json.loads(line) for line in deployed.stdout.splitlines())
    assert si_real("inst", "output", instance["_id"]).stdout == b"7\n8\n"
    listed = json.loads(si_real("seq", "ls", "--format", "json").stdout)
    assert [item["id"] for item in listed] == [sequence["_id"]]


def test_output_into_head_exits_zero(
    si_real: RunSi, real_hub: HubProcess, si_env: dict[str, str], tmp_path: Path
) -> None:
    _sequence(tmp_path / "counter")
    assert si_real("seq", "deploy", "counter", "--args", "[0, 100000]").returncode == 0
    result = subprocess.run(
        f"{shlex.quote(sys.executable)} -m si inst output - | head -3; "
        'echo "si=${PIPESTATUS[0]}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        env=dict(si_env, SI_HUB=real_hub.address),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.stdout == b"0\n1\n2\nsi=0\n"
    assert b"Traceback" not in result.stderr


def test_killing_an_unknown_instance_again_and_again_is_an_error_not_a_hub_crash(
    si_real: RunSi, real_hub: HubProcess
) -> None:
    # The hub answers 404 before it reads the kill's body; when that answer beats the body, the
    # CLI stops sending and closes. Draining the unread body used to raise out of the
    # connection and stop the hub (a race: on a busy machine within a few runs;
    # tests/system/test_http_hardening.py makes the same client move deterministically).
    assert real_hub.process is not None
    pid = real_hub.process.pid
    unknown = "0" * 36
    for _ in range(20):
        result = si_real("inst", "kill", unknown)
        assert "not found" in one_error_line(result)
    assert real_hub.process.poll() is None, real_hub.log()
    assert real_hub.process.pid == pid
    assert si_real("hub", "version").returncode == 0
    assert "Traceback" not in real_hub.log()


# -- hub serve --detach / status / stop --------------------------------------------------------


def _identity_of(pid: int) -> ProcessIdentity | None:
    return ProcessIdentity.of(pid)


def test_detach_status_stop(run_si: RunSi, short_dir: Path) -> None:
    home = short_dir / "detached"
    tuning = ["--retention", "5", "--reader-lag-seconds", "1.5", "--max-package-size", "1M"]
    started = run_si("hub", "serve", "--detach", "--home", str(home), *tuning, timeout=60)
    pid = None
    try:
        assert started.returncode == 0, started.stderr
        [line] = started.stdout.decode().splitlines()
        match = re.fullmatch(r"export SI_HUB=(.+)", line)
        assert match is not None
        assert shlex.split(match.group(1)) == [str(home / "hub.sock")]
        pid = int(re.search(rb"pid (\d+)", started.stderr).group(1))  # type: ignore[union-attr]
        # The options reach the background hub, which accepted them (it answers below).
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        for option, value in [
            ("--retention", "5.0"),
            ("--reader-lag-seconds", "1.5"),
            ("--max-package-size", "1048576"),
        ]:
            assert argv[argv.index(option) + 1] == value

        # The printed line works when eval'ed by a shell.
        shell = subprocess.run(
            ["bash", "-c", f'eval "{line}"; "$0" -m si seq ls --format json', sys.executable],
            capture_output=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SI_")},
            timeout=30,
            check=False,
        )
        assert shell.stdout == b"[]\n", shell.stderr

        status = run_si("hub", "status", "--home", str(home), "--format", "json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert (report["running"], report["pid"], report["instances"]) == (True, pid, 0)

        again = run_si("hub", "serve", "--detach", "--home", str(home))
        assert f"already running on this home (pid {pid})" in one_error_line(again)

        stopped = run_si("hub", "stop", "--home", str(home), timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stderr.decode() == f"hub stopped (pid {pid})\n"
        assert not Path(f"/proc/{pid}").exists() or _identity_of(pid) is None

        after = run_si("hub", "status", "--home", str(home), "--format", "json")
        assert after.returncode == 3
        assert json.loads(after.stdout)["running"] is False
        assert run_si("hub", "stop", "--home", str(home)).stderr.startswith(b"no hub is running")
    finally:
        if pid is not None and _identity_of(pid) is not None:
            run_si("hub", "stop", "--home", str(home), "--force", "--timeout", "5")


def test_stop_never_signals_a_process_that_does_not_hold_the_lock(
    run_si: RunSi, short_dir: Path
) -> None:
    home = short_dir / "stale"
    home.mkdir()
    # A stale lock file naming a live process (this test) that holds no lock on it.
    (home / "hub.lock").write_text(f"{os.getpid()}\n")
    result = run_si("hub", "stop", "--home", str(home))
    assert result.returncode == 0
    assert result.stderr.startswith(b"no hub is running")
    assert run_si("hub", "status", "--home", str(home)).returncode == 3


def test_detach_reports_a_hub_that_cannot_start(run_si: RunSi, short_dir: Path) -> None:
    home = short_dir / "blocked"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        result = run_si("hub", "serve", "--detach", "--home", str(home), "--port", str(port))
    assert result.returncode == 1
    assert "the hub exited with code 1" in result.stderr.decode()
    assert time.monotonic() - began < 30
    assert run_si("hub", "status", "--home", str(home)).returncode == 3


@pytest.mark.timeout(60)
def test_topic_ls_and_topic_completion_name_the_hubs_topics(
    si_real: RunSi, run_si: RunSi, real_hub: HubProcess
) -> None:
    for name in ("alpha", "beta-2"):
        assert si_real("topic", "create", name, "-t", "text/plain").returncode == 0
    listed = si_real("topic", "ls")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.decode().splitlines()[1:]]
    assert sorted(row[:2] for row in rows) == [["alpha", "text/plain"], ["beta-2", "text/plain"]]
    as_json = json.loads(si_real("--format", "json", "topic", "ls").stdout)
    assert {t["topic"] for t in as_json} == {"alpha", "beta-2"}
    completed = run_si(
        env={
            "SI_HUB": real_hub.address,
            "_SI_COMPLETE": "bash_complete",
            "COMP_WORDS": "si topic get be",
            "COMP_CWORD": "3",
        }
    )
    assert completed.stdout.decode().split() == ["plain,beta-2"]


@pytest.mark.timeout(60)
def test_inout_from_an_unreadable_file_exits_with_one_error_line(
    si_real: RunSi, run_si: RunSi, real_hub: HubProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps({"name": "echo", "main": "main.py"}))
    (folder / "main.py").write_text(
        "async def run(context, input):\n    async for line in input:\n        yield line\n"
    )
    started = si_real("seq", "deploy", str(folder))
    assert started.returncode == 0, started.stderr
    # /proc/self/mem opens as a regular file but reading it at offset 0 fails with EIO.
    result = si_real("inst", "inout", "-", "/proc/self/mem", "-t", "text/plain")
    assert result.returncode != 0
    assert "cannot read the input: Input/output error" in one_error_line(result)
