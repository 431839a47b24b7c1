"""The keeper's warm spares: a start is handed to a spare only when the spare answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from si.runner import spares
from si.runner.spares import SPARE_FILES, SparePool

# Stand-in spares: each reads its assignment line on the control socket (fd argv[1]), then
# behaves as the test asks.
ANSWERS = "import os, sys; c = int(sys.argv[1]); os.read(c, 4096); os.write(c, b'ok\\n')"
DIES = "import os; os._exit(9)"
SILENT = "import os, sys, time; os.read(int(sys.argv[1]), 4096); time.sleep(30)"


def pool_of(tmp_path: Path, code: str) -> tuple[SparePool, list[subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []

    def start(directory: Path, argv: list[str], control: socket.socket) -> int:
        for name in SPARE_FILES:
            (directory / name).write_bytes(b"")
        fd = control.fileno()
        child = subprocess.Popen([sys.executable, "-c", code, str(fd)], pass_fds=(fd,))
        children.append(child)
        return child.pid

    return SparePool(tmp_path / "spares", start, size=1), children


def take(pool: SparePool, tmp_path: Path) -> tuple[int | None, Path]:
    instance = tmp_path / "instance"
    instance.mkdir()
    argv = ["spare"]
    assert pool.take(argv, instance) is None  # the first request only names the kind
    pool.fill()
    return pool.take(argv, instance), instance


@pytest.mark.timeout(30)
def test_a_spare_that_answers_takes_the_instance(tmp_path: Path) -> None:
    pool, children = pool_of(tmp_path, ANSWERS)
    pid, instance = take(pool, tmp_path)
    assert pid == children[0].pid
    assert all((instance / name).exists() for name in SPARE_FILES)
    assert children[0].wait(10) == 0


@pytest.mark.timeout(30)
def test_a_dead_unreaped_spare_is_not_given_the_instance(tmp_path: Path) -> None:
    pool, children = pool_of(tmp_path, DIES)
    instance = tmp_path / "instance"
    instance.mkdir()
    assert pool.take(["spare"], instance) is None
    pool.fill()
    os.waitid(os.P_PID, children[0].pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
    assert pool.take(["spare"], instance) is None
    assert not any((instance / name).exists() for name in SPARE_FILES)  # it starts cold
    assert pool.spares == []
    children[0].wait(10)


@pytest.mark.timeout(30)
def test_a_spare_that_does_not_answer_is_killed_and_the_instance_starts_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spares, "HANDOVER_TIMEOUT", 0.2)
    pool, children = pool_of(tmp_path, SILENT)
    pid, instance = take(pool, tmp_path)
    assert pid is None
    assert not any((instance / name).exists() for name in SPARE_FILES)
    assert children[0].wait(10) == -9
