"""``seq deploy``/``send``/``update`` uploads: streamed packing, stdin, the progress bar."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from si.testing import make_package
from tests.cli.conftest import RunSi, one_error_line, session_file
from tests.cli.hubproxy import ECHO, HubUnderTest

MIB = 1024 * 1024


def _json_lines(stdout: bytes) -> list[Any]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def _sequence_dir(tmp_path: Path, payload: bytes = b"") -> Path:
    folder = tmp_path / "hello"
    folder.mkdir()
    manifest = {"name": "hello", "version": "1.0.0", "main": "main.py", "engines": {"python3": "3"}}
    (folder / "package.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text("def run(context, input):\n    return 'hi'\n")
    if payload:
        (folder / "blob.bin").write_bytes(payload)
    return folder


def _big_package(path: Path, size: int) -> Path:
    """A real package of about ``size`` bytes (random data does not compress)."""
    manifest = {"name": "big", "version": "1.0.0", "main": "index.py", "engines": {"python3": "3"}}
    path.write_bytes(make_package({"index.py": ECHO, "blob.bin": os.urandom(size)}, manifest))
    return path


def _members(body: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        return set(archive.getnames())


def test_deploy_of_a_directory_packs_sends_and_starts(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _sequence_dir(tmp_path)
    result = run_si("seq", "deploy", "hello", "-s", '{"a": 1}', "--format", "json")
    assert result.returncode == 0, result.stderr
    [instance] = _json_lines(result.stdout)  # STH prints only the instance for a directory
    [sequence_id] = hub.sequences
    upload = hub.requests_to("POST", "/sequence")[0]
    assert _members(upload.body) == {"package.json", "main.py"}
    assert upload.headers["transfer-encoding"] == "chunked"  # streamed, no temporary file
    assert hub.requests_to("POST", f"/sequence/{sequence_id}/start")[0].json() == {
        "appConfig": {"a": 1},
        "limits": {},
    }
    stored = json.loads(session_file(tmp_path).read_text())
    assert stored["lastSequenceId"] == sequence_id
    assert stored["lastInstanceId"] == instance["_id"]
    assert not list(tmp_path.glob("*.tar.gz"))


def test_run_alias_of_a_file_prints_sequence_then_instance(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _sequence_dir(tmp_path)
    assert run_si("seq", "pack", "hello").returncode == 0
    result = run_si("seq", "run", "hello.tar.gz", "--args", "[1]", "--format", "json")
    assert result.returncode == 0, result.stderr
    sequence, instance = _json_lines(result.stdout)
    assert sequence["_id"] in hub.sequences
    assert instance["_id"] in hub.instances
    assert hub.requests_to("POST", "/start")[0].json()["args"] == [1]


def test_deploy_output_keeps_the_archive(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    _sequence_dir(tmp_path)
    assert run_si("seq", "deploy", "hello", "-o", "kept.tar.gz").returncode == 0
    kept = (tmp_path / "kept.tar.gz").read_bytes()
    assert kept == hub.requests_to("POST", "/sequence")[0].body
    assert json.loads(session_file(tmp_path).read_text())["lastPackagePath"] == str(
        tmp_path / "kept.tar.gz"
    )


def test_deploy_checks_options_before_uploading(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _sequence_dir(tmp_path)
    assert "DTO instanceId" in one_error_line(run_si("seq", "deploy", "hello", "--inst-id", "x"))
    assert one_error_line(run_si("seq", "deploy", "nothere")) == 'File "nothere" not found.'
    assert hub.requests == []


def test_deploy_with_startup_config_yaml(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    _sequence_dir(tmp_path)
    (tmp_path / "start.yml").write_text(
        "appConfig:\n  k: v\nargs: [1, two]\nlimits:\n  memory: 64\n"
    )
    assert run_si("seq", "deploy", "hello", "--startup-config", "start.yml").returncode == 0
    assert hub.requests_to("POST", "/start")[0].json() == {
        "appConfig": {"k": "v"},
        "args": [1, "two"],
        "limits": {"memory": 64},
    }


def test_send_reads_the_package_from_stdin(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _sequence_dir(tmp_path)
    packed = run_si("seq", "pack", "hello", "-c").stdout
    result = run_si("seq", "send", input=packed)
    assert result.returncode == 0, result.stderr
    assert hub.requests_to("POST", "/sequence")[0].body == packed


def test_progress_bar_on_request(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    package = _big_package(tmp_path / "big.tar.gz", 3 * MIB)
    result = run_si("seq", "send", "big.tar.gz", "--progress", "--format", "json")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    assert "Uploading [" in stderr
    assert "100%" in stderr
    uploaded = re.search(r"Sequence package uploaded \(size (\d+) KiB\)\n$", stderr)
    assert uploaded is not None, stderr
    assert abs(int(uploaded.group(1)) - package.stat().st_size / 1024) <= 1
    assert len(_json_lines(result.stdout)) == 1  # stdout stays clean


def test_no_bar_in_a_pipe_or_with_no_progress(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _big_package(tmp_path / "big.tar.gz", 2 * MIB)
    assert run_si("seq", "send", "big.tar.gz").stderr == b""


def _send_on_a_terminal(si_env: dict[str, str], tmp_path: Path, *args: str) -> bytes:
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "si", "seq", "send", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env=si_env,
            cwd=tmp_path,
            timeout=30,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0, seen
    return seen


def test_bar_by_default_on_a_terminal_for_big_packages_only(
    si_env: dict[str, str], hub: HubUnderTest, tmp_path: Path
) -> None:
    _big_package(tmp_path / "big.tar.gz", 2 * MIB)
    _big_package(tmp_path / "small.tar.gz", 1000)
    assert b"Sequence package uploaded" in _send_on_a_terminal(si_env, tmp_path, "big.tar.gz")
    assert b"Uploading" not in _send_on_a_terminal(si_env, tmp_path, "small.tar.gz")
    quiet = _send_on_a_terminal(si_env, tmp_path, "big.tar.gz", "--no-progress")
    assert b"Uploading" not in quiet
