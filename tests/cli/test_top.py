"""`si top`: rates from two samples, a plain table off a terminal, and a live view in tmux."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from si.cli.top import Row, rows, size, sort_rows
from si.testing import wait_for
from tests.cli.conftest import RunSi
from tests.cli.hubproxy import HubUnderTest

pytestmark = pytest.mark.timeout(60)

TMUX = shutil.which("tmux")
# Writes a line every 10 ms until stopped: a steady output rate.
STEADY = """\
import asyncio

async def run(context, input):
    while True:
        yield "x" * 99 + "\\n"
        await asyncio.sleep(0.01)
"""


def sample(at: float, **by_id: tuple[float, int, int, int | None]) -> dict[str, object]:
    """A ``GET top`` answer: id -> (cpuSeconds, outputBytes, inputBytes, pid)."""
    return {
        "at": at,
        "instances": [
            {
                "id": key,
                "status": "running",
                "pid": pid,
                "cpuSeconds": cpu,
                "rssBytes": 1 << 20,
                "outputBytes": out,
                "inputBytes": in_,
                "restarts": 0,
                "started": 0.0,
            }
            for key, (cpu, out, in_, pid) in by_id.items()
        ],
    }


def test_rates_are_differences_over_the_time_between_samples() -> None:
    first = sample(10.0, a=(1.0, 1000, 0, 7), b=(0.0, 0, 0, 8))
    second = sample(12.0, a=(1.5, 5000, 2048, 7), b=(0.1, 0, 0, 9))
    (a, b) = rows(first, second)
    assert (a.cpu, a.out, a.in_, a.age) == (25.0, 2000.0, 1024.0, 12.0)
    # b restarted between the samples (another pid): its counters are not comparable.
    assert (b.cpu, b.out) == (None, None)
    assert rows(None, second)[0].cpu is None  # one sample: no rates yet


def test_sorting_puts_the_busiest_first_and_names_in_order() -> None:
    def row(name: str, cpu: float | None) -> Row:
        return Row(name, "running", 1, cpu, 0, 0.0, 0.0, 0, 0.0)

    found = [row("b", 1.0), row("a", None), row("c", 50.0)]
    assert [r.id for r in sort_rows(found, "cpu")] == ["c", "b", "a"]
    assert [r.id for r in sort_rows(found, "id")] == ["a", "b", "c"]


def test_sizes_read_like_top() -> None:
    assert [size(512), size(1536), size(12 << 20), size(3.2 * (1 << 30))] == [
        "512",
        "1.5K",
        "12.0M",
        "3.2G",
    ]


def test_off_a_terminal_it_prints_one_table(run_si: RunSi, hub: HubUnderTest) -> None:
    busy = hub.add_instance(hub.add_sequence(STEADY))
    idle = hub.add_instance(hub.add_sequence())
    lines = run_si("top", "--interval", "0.5", "--sort", "id").stdout.decode().splitlines()
    header = lines[0].split()
    assert header == ["ID", "STATUS", "CPU%", "RSS", "OUT/s", "IN/s", "RESTARTS", "AGE", "PID"]
    by_id = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(by_id) == {busy, idle}
    assert by_id[busy][1] == "running"
    assert by_id[busy][3].endswith("M")  # an interpreter's RSS
    assert by_id[busy][4].endswith("K")  # ~10 KB/s of output
    assert by_id[idle][4] == "0"


def test_json_rows_for_scripts(run_si: RunSi, hub: HubUnderTest) -> None:
    busy = hub.add_instance(hub.add_sequence(STEADY))
    result = run_si("top", "--interval", "0.3", "--format", "json")
    (row,) = json.loads(result.stdout)
    assert row["id"] == busy
    assert row["rssBytes"] > 1 << 20
    assert row["outputBytesPerSecond"] > 0


@pytest.fixture
def terminal(si_env: dict[str, str]) -> Iterator[str]:
    """A tmux session running `si top` in a 150x30 terminal; its name."""
    if TMUX is None:
        pytest.skip("tmux is not installed")
    name = f"si-top-{time.monotonic_ns()}"
    exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in si_env.items())
    command = f"env {exports} {shlex.quote(sys.executable)} -m si top"
    subprocess.run(
        [TMUX, "new-session", "-d", "-s", name, "-x", "150", "-y", "30", command], check=True
    )
    try:
        yield name
    finally:
        subprocess.run([TMUX, "kill-session", "-t", name], capture_output=True, check=False)


def screen(name: str) -> str:
    assert TMUX is not None
    done = subprocess.run(
        [TMUX, "capture-pane", "-p", "-t", name], capture_output=True, text=True, check=False
    )
    return done.stdout


def session_alive(name: str) -> bool:
    assert TMUX is not None
    return subprocess.run([TMUX, "has-session", "-t", name], capture_output=True).returncode == 0


def test_the_live_view_refreshes_sorts_on_a_key_and_quits_on_q(
    hub: HubUnderTest, terminal: str
) -> None:
    busy = hub.add_instance(hub.add_sequence(STEADY))
    idle = hub.add_instance(hub.add_sequence())
    wait_for(lambda: busy in screen(terminal) and idle in screen(terminal))
    assert "sorted by cpu" in screen(terminal)
    # Rates appear from the second refresh on: the busy one's output rate in K/s.
    wait_for(lambda: any(busy in line and "K " in line for line in screen(terminal).splitlines()))

    assert TMUX is not None
    subprocess.run([TMUX, "send-keys", "-t", terminal, "n"], check=True)
    wait_for(lambda: "sorted by id" in screen(terminal))
    listed = [line.split()[0] for line in screen(terminal).splitlines()[3:] if line.strip()]
    assert listed == sorted([busy, idle])

    subprocess.run([TMUX, "send-keys", "-t", terminal, "q"], check=True)
    wait_for(lambda: not session_alive(terminal))
