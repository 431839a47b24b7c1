"""Streams, pipes, signals, terminals and start-up cost: the CLI's behaviour as a process."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import RunSi
from tests.cli.fakehub import FakeHub, OutputPlan
from tests.cli.hubproxy import ECHO, HubUnderTest

BINARY = bytes(range(256)) * 50 + b"\x00tail\xff"
BINARY_SEQUENCE = """
async def run(context, input, *args):
    data = bytes(range(256)) * 50 + b"\\x00tail\\xff"
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]
"""


TICKER = """
import asyncio

async def run(context, input, *args):
    while True:
        yield "line\\n"
        await asyncio.sleep(0.01)
"""


def _fed(hub: HubUnderTest, data: bytes) -> str:
    """An instance that echoes ``data`` and keeps its output open."""
    instance_id = hub.add_instance(hub.add_sequence(ECHO))
    with hub.client() as client:
        client.send_input(instance_id, data, "text/plain", end=False)
    return instance_id


def test_inst_output_writes_raw_bytes(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = hub.add_instance(hub.add_sequence(BINARY_SEQUENCE))
    result = run_si("inst", "output", instance_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == BINARY
    assert result.stderr == b""


def test_inst_output_resumes_after_the_hub_drops_it(run_si: RunSi, fake_hub: FakeHub) -> None:
    # Scripted: the server resumes 3 bytes earlier than asked, which the client must skip.
    hub = fake_hub
    instance_id = hub.add_instance(hub.add_sequence())
    hub.outputs[instance_id] = OutputPlan(BINARY, drops=[1000, 2000], rewind=3, chunk=500)
    result = run_si("inst", "output", instance_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == BINARY
    offsets = [r.headers.get("x-si-offset") for r in hub.requests_to("GET", "/output")]
    assert offsets == [None, "1000", "2997"]


def test_inst_output_into_head_exits_quietly(
    si_env: dict[str, str], hub: HubUnderTest, tmp_path: Path
) -> None:
    # A stream that goes on: si learns that head left when its next write fails.
    instance_id = hub.add_instance(hub.add_sequence(TICKER))
    script = (
        f"{sys.executable} -m si inst output {instance_id} 2>{tmp_path / 'err'} | head -1; "
        'echo "si=${PIPESTATUS[0]}"'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, env=si_env, timeout=30, check=False
    )
    assert result.stdout == b"line\nsi=0\n"
    assert (tmp_path / "err").read_bytes() == b""


def test_interrupt_exits_130_without_traceback(si_env: dict[str, str], hub: HubUnderTest) -> None:
    instance_id = _fed(hub, b"tick\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "si", "inst", "output", instance_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=si_env,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # streaming for sure
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert stderr == b""


def test_error_is_red_only_on_a_terminal(si_env: dict[str, str], run_si: RunSi) -> None:
    plain = run_si("seq", "info", "-")
    assert plain.stderr.startswith(b"Error: ")
    assert b"\x1b[" not in plain.stderr

    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "si", "seq", "info", "-"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env=si_env,
            timeout=30,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        seen = b""
        deadline = time.monotonic() + 5
        while not seen.endswith(b"\n") and time.monotonic() < deadline:
            try:
                seen += os.read(controller, 4096)
            except OSError:
                break
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 1
    assert seen.startswith(b"\x1b[31mError:\x1b[0m ")


def test_help_imports_no_heavy_modules(si_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "si", "--help"],
        capture_output=True,
        env=si_env,
        timeout=30,
        check=True,
    )
    assert b"Usage: si" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.decode().splitlines()}
    assert "si.cli.app" in imported  # the measurement saw our modules at all
    heavy = {
        name for name in imported if name.split(".")[0] in {"httpx", "httpcore", "trio", "h11"}
    }
    heavy |= {name for name in imported if name.startswith(("si.daemon", "si.client", "rich"))}
    assert heavy == set()


def test_group_help_imports_no_heavy_modules(si_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from si.cli.app import run\n"
        "for args in (['seq', '-h'], ['inst', 'output', '-h'], ['hub', 'serve', '-h']):\n"
        "    assert run(args) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'trio', 'h11') or m.startswith('si.daemon')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=si_env, timeout=30, check=True
    )
    assert result.stdout.decode().splitlines()[-1] == "[]"


def test_inst_ls_imports_only_what_it_needs(si_env: dict[str, str], hub: HubUnderTest) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "si", "inst", "ls"],
        capture_output=True,
        env=si_env,
        timeout=30,
        check=True,
    )
    assert result.stdout.startswith(b"ID")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.decode().splitlines()}
    assert "si.client" in imported
    unwanted = {
        name
        for name in imported
        if name.split(".")[0] in {"trio", "httpx", "httpcore", "yaml", "platformdirs", "ssl"}
        or name.startswith(("si.daemon", "si.package", "si.runner", "si.cli.seq", "si.cli.hub"))
    }
    assert unwanted == set()
