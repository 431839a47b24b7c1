"""Time from `POST /sequence/:id/start` to the first output byte, Python sequence.

Runs a temporary hub, sends a sequence that yields one line at once, starts it N times and
reads each instance's output until its first byte. Prints median, min and max in ms.

    python bench/start_latency.py [--starts 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from runners import first_output_ms  # bench/ is this script's directory, first on sys.path

from si.client import HubClient
from si.testing import python_package, running_hub

SOURCE = "def run(context, input, *args):\n    return ['ready\\n']\n"


def measure(starts: int) -> list[float]:
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(SOURCE))["id"]
        return first_output_ms(client, sequence, starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    options = parser.parse_args()
    timings = measure(options.starts)
    figures = {
        "figure": "start to first output byte, Python (ms)",
        "median": round(statistics.median(timings), 1),
        "min": round(min(timings), 1),
        "max": round(max(timings), 1),
        "starts": len(timings),
        "target": 20,
    }
    if options.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['figure']}: median {figures['median']}  min {figures['min']}  "
            f"max {figures['max']}  over {figures['starts']} starts  (target <= 20)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
