"""Supervision figures: restart latency (a crash to the new runner's first output byte) and the
memory watchdog's CPU cost at 1,000 runners.

    python bench/supervision.py [--instances N] [--runners N] [--json]

Restart latency is measured from inside the sequence: each run writes the time it began, and
the time it crashes 50 ms later. The gap from a crash to the next run's start holds the
policy's backoff (0.1 s, then 0.2 s, 0.4 s); what is beyond it is the hub's cost (noticing the
exit, collecting it, a new spawn.json, a spawn, the interpreter reaching ``run``).

The watchdog figure is a pass of ``MemoryWatchdog.sample`` over real processes (``sleep``), as
the hub runs it 4 times a second; it is reported per runner and as a share of one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from si.client import HubClient  # noqa: E402
from si.daemon.limits import SAMPLES_PER_SECOND, MemoryWatchdog  # noqa: E402
from si.daemon.restart import BACKOFF_FIRST  # noqa: E402
from si.testing import python_package, running_hub  # noqa: E402

CRASHER = """
import asyncio, time

async def run(context, input):
    yield f"start {time.time()}\\n"
    await asyncio.sleep(0.05)
    yield f"crash {time.time()}\\n"
    raise RuntimeError("crash")
"""
RESTARTS = 3


def restart_latency(instances: int) -> dict[str, float]:
    gaps: list[list[float]] = [[] for _ in range(RESTARTS)]
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(CRASHER))["id"]
        payload = {"restart": "always", "maxRestarts": RESTARTS}
        for _ in range(instances):
            instance = client.start_sequence(sequence, payload)["id"]
            text = b"".join(client.instance_stream(instance, "output")).decode()
            times = [(kind, float(at)) for kind, at in (line.split() for line in text.splitlines())]
            crashes = [at for kind, at in times if kind == "crash"]
            starts = [at for kind, at in times if kind == "start"]
            for n in range(RESTARTS):
                gaps[n].append(starts[n + 1] - crashes[n])
    first = gaps[0]
    beyond = [gap - BACKOFF_FIRST * 2**n for n, runs in enumerate(gaps) for gap in runs]
    return {
        "instances": instances,
        "first_restart_ms": round(statistics.median(first) * 1000, 1),
        "first_restart_min_ms": round(min(first) * 1000, 1),
        "first_restart_max_ms": round(max(first) * 1000, 1),
        "beyond_backoff_ms": round(statistics.median(beyond) * 1000, 1),
        "beyond_backoff_min_ms": round(min(beyond) * 1000, 1),
        "beyond_backoff_max_ms": round(max(beyond) * 1000, 1),
    }


def watchdog_cost(runners: int, passes: int = 50) -> dict[str, float]:
    processes = [
        subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL) for _ in range(runners)
    ]
    try:
        watchdog = MemoryWatchdog()
        for process in processes:
            watchdog.watch(process.pid, 1 << 40, lambda reason: None)
        assert len(watchdog) == runners
        watchdog.sample()  # warm
        cpu = []
        for _ in range(passes):
            started = time.process_time()
            watchdog.sample()
            cpu.append(time.process_time() - started)
        per_pass = statistics.median(cpu)
        return {
            "runners": runners,
            "pass_ms": round(per_pass * 1000, 2),
            "per_runner_us": round(per_pass / runners * 1e6, 2),
            "core_percent": round(per_pass * SAMPLES_PER_SECOND * 100, 2),
        }
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--runners", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    latency = restart_latency(options.instances)
    cost = watchdog_cost(options.runners)
    if options.json:
        print(json.dumps({"restart": latency, "watchdog": cost}))
        return
    print(
        f"restart latency, crash -> new runner's first byte: {latency['first_restart_ms']} ms "
        f"median over {latency['instances']} (policy backoff {BACKOFF_FIRST * 1000:.0f} ms); "
        f"beyond the backoff: {latency['beyond_backoff_ms']} ms "
        f"(min {latency['beyond_backoff_min_ms']}, max {latency['beyond_backoff_max_ms']})"
    )
    print(
        f"memory watchdog at {cost['runners']} runners: {cost['pass_ms']} ms a pass, "
        f"{cost['per_runner_us']} us a runner, {cost['core_percent']} % of one core "
        f"at {SAMPLES_PER_SECOND} passes/s"
    )


if __name__ == "__main__":
    main()
