"""The CI recipe's si overhead: `si hub serve --detach -K`, `si apply -f` of a 5-instance
stack, `si hub stop`, each timed as a user's shell runs them.

    python bench/stack.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SEQUENCE = "import asyncio\n\nasync def run(context, input):\n    await asyncio.Future()\n"


def make_stack(directory: Path) -> Path:
    package = directory / "idle"
    package.mkdir()
    (package / "index.py").write_text(SEQUENCE)
    manifest = {"name": "idle", "version": "1.0.0", "main": "index.py", "engines": {"python3": "3"}}
    (package / "package.json").write_text(json.dumps(manifest))
    stack = {
        "sequences": {"idle": "./idle"},
        "topics": {"events": {"contentType": "application/x-ndjson"}},
        "instances": {f"worker-{n}": {"sequence": "idle", "args": [n]} for n in range(5)},
    }
    path = directory / "stack.json"
    path.write_text(json.dumps(stack))
    return path


def si(*args: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "si", *args], env=env, check=True, capture_output=True, timeout=60
    )
    return time.perf_counter() - started


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="si-bench-") as tmp:
        home = Path(tmp) / "home"
        stack = make_stack(Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SI_HUB": str(home / "hub.sock")}
        # -K: the instances end with the hub, as a CI job wants.
        serve = si("hub", "serve", "--detach", "-K", "--home", str(home), env=env)
        apply = si("apply", "-f", str(stack), env=env)
        again = si("apply", "-f", str(stack), env=env)
        stop = si("hub", "stop", "--home", str(home), env=env)
        return {"serve": serve, "apply": apply, "again": again, "stop": stop}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    runs = [one_run() for _ in range(options.runs)]
    figures = {
        key: round(statistics.median(run[key] for run in runs) * 1000, 1)
        for key in ("serve", "apply", "again", "stop")
    }
    figures["total"] = round(figures["serve"] + figures["apply"] + figures["stop"], 1)
    figures["runs"] = options.runs
    if options.json:
        print(json.dumps(figures))
        return
    print(
        f"CI recipe, 5-instance stack (median of {options.runs}): serve --detach "
        f"{figures['serve']} ms + apply {figures['apply']} ms + hub stop {figures['stop']} ms "
        f"= {figures['total']} ms; a second apply (nothing to change) {figures['again']} ms"
    )


if __name__ == "__main__":
    main()
