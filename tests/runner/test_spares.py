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
from tests.fakeclock import FakeClock

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


# A spare still booting: it answers its assignment only after a while.
BOOTING = (
    "import os, sys, time; c = int(sys.argv[1]); os.read(c, 4096); time.sleep(0.1);"
    " os.write(c, b'ok\\n')"
)
# A booted spare left idle: it exits when the keeper closes its control socket.
IDLE = "import os, sys; c = int(sys.argv[1]); os.read(c, 4096)"


@pytest.mark.timeout(30)
def test_a_start_that_waits_for_a_booting_spare_grows_the_pool_up_to_its_limit(
    tmp_path: Path,
) -> None:
    pool, children = pool_of(tmp_path, BOOTING)
    pool.limit = 4
    sizes = []
    for n in range(3):
        instance = tmp_path / f"instance-{n}"
        instance.mkdir()
        pool.take(["spare"], instance)
        pool.fill()
        sizes.append((pool.size, len(pool.spares)))
    # The first request only names the kind; each start after it waited, and doubled the
    # pool, which the fill then booted, never past the limit.
    assert sizes == [(1, 1), (2, 2), (4, 4)]
    pool.close()
    for child in children:
        child.wait(10)


@pytest.mark.timeout(30)
def test_a_quiet_pool_shrinks_back_and_retires_the_extra_spares(tmp_path: Path) -> None:
    clock = FakeClock()
    children: list[subprocess.Popen[bytes]] = []

    def start(directory: Path, argv: list[str], control: socket.socket) -> int:
        fd = control.fileno()
        child = subprocess.Popen([sys.executable, "-c", IDLE, str(fd)], pass_fds=(fd,))
        children.append(child)
        return child.pid

    pool = SparePool(tmp_path / "spares", start, size=2, limit=8, clock=clock)
    assert pool.take(["spare"], tmp_path) is None
    pool.demand_outran_boots()
    pool.demand_outran_boots()
    pool.fill()
    assert (pool.size, len(pool.spares)) == (8, 8)
    clock.now += spares.SHRINK_AFTER - 1
    pool.shrink_when_quiet()
    assert len(pool.spares) == 8  # not quiet for long enough yet
    clock.now += 1
    pool.shrink_when_quiet()
    assert (pool.size, len(pool.spares)) == (2, 2)
    kept = {spare.pid for spare in pool.spares}
    assert kept == {children[0].pid, children[1].pid}  # the oldest stay: they have booted
    for child in children[2:]:
        assert child.wait(10) == 0  # end-of-file on its control socket: it exits
    pool.close()
    for child in children[:2]:
        child.wait(10)  # reaped by close() already; this only settles the Popen objects
