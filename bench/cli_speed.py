"""How long ``si`` takes from the shell: median, min and max wall time over repeated runs.

Runs each command RUNS times (after one warm-up run) against a temporary hub started with
``si.testing.running_hub``, as a user's shell runs it: a fresh process each time, through the
``si`` console script installed beside this interpreter (``python -m si`` if there is none).
Budget: ``si --help`` and ``si inst ls`` under 150 ms median.

Two columns of figures: with Python's bytecode cache, as any installed si runs (the cache
goes to a temporary PYTHONPYCACHEPREFIX, the warm-up run fills it), and without it, as under
PYTHONDONTWRITEBYTECODE=1, where every run compiles si's modules from source again.

    python bench/cli_speed.py [RUNS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from si.client import HubClient
from si.testing import python_package, running_hub

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
BUDGET_MS = 150.0
COUNTER = """
import asyncio

async def run(context, input):
    while True:
        await asyncio.sleep(1)
        yield "tick\\n"
"""


def si_command() -> list[str]:
    script = Path(sys.executable).parent / "si"
    return [str(script)] if script.exists() else [sys.executable, "-m", "si"]


def measure(args: list[str], env: dict[str, str]) -> list[float]:
    times = []
    for index in range(RUNS + 1):
        began = time.perf_counter()
        subprocess.run(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        if index:  # the first run warms the page cache
            times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="si-bench-", dir="/tmp"))
    over_budget = []
    try:
        with running_hub(home / "h") as hub:
            client = HubClient(hub.address)
            sequence = client.send_sequence(python_package(COUNTER))["id"]
            for _ in range(3):
                client.start_sequence(sequence, {})
            client.close()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SI_")}
            env["SI_HUB"] = hub.address
            env["XDG_CONFIG_HOME"] = str(home / "config")
            cached = dict(env, PYTHONPYCACHEPREFIX=str(home / "pycache"))
            cached.pop("PYTHONDONTWRITEBYTECODE", None)
            uncached = dict(env, PYTHONDONTWRITEBYTECODE="1")
            si = si_command()
            tab = {
                "_SI_COMPLETE": "bash_complete",
                "COMP_WORDS": "si inst info ",
                "COMP_CWORD": "3",
            }
            cases = [
                ("si --help", [*si, "--help"], {}, True),
                ("si inst ls", [*si, "inst", "ls"], {}, True),
                ("si inst ls --format json", [*si, "inst", "ls", "--format", "json"], {}, False),
                ("si seq ls", [*si, "seq", "ls"], {}, False),
                ("si --version", [*si, "--version"], {}, False),
                ("TAB: si inst info <ids>", si, tab, False),
                ("python -c pass (floor)", [sys.executable, "-c", "pass"], {}, False),
            ]
            print(f"{RUNS} runs each, via {' '.join(si)}; milliseconds")
            print(f"{'':<28}{'with bytecode cache':^27}{'without (compiles)':^27}")
            print(f"{'command':<28}" + f"{'median':>9}{'min':>9}{'max':>9}" * 2)
            for label, args, extra, budgeted in cases:
                warm = measure(args, dict(cached, **extra))
                cold = measure(args, dict(uncached, **extra))
                figures = "".join(
                    f"{statistics.median(t):9.1f}{min(t):9.1f}{max(t):9.1f}" for t in (warm, cold)
                )
                mark = ""
                if budgeted:
                    median = statistics.median(warm)
                    mark = "  ok" if median < BUDGET_MS else f"  OVER {BUDGET_MS:g} ms"
                    if median >= BUDGET_MS:
                        over_budget.append(label)
                print(f"{label:<28}{figures}{mark}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
