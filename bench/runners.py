"""The Python and the Node.js runner side by side, through a real hub.

For each runner: time from ``POST /sequence/:id/start`` to the first output byte (median, min,
max over N starts back to back, and over N starts 0.2 s apart), and passthrough throughput of
a sequence that returns its input: lines/s for short text lines and MB/s for binary data, each
measured from the first byte sent to the last byte read back (and checked to be identical);
and, for Python, lines/s of a sequence that iterates its input and yields every line
(``async for line in input: yield line``).

    python bench/runners.py [--starts 20] [--lines 200000] [--mib 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from si.client import HubClient
from si.testing import make_package, python_package, running_hub

FIRST_OUTPUT = {
    "python": python_package("def run(context, input, *args):\n    return ['ready\\n']\n"),
    "node": make_package(
        {"index.js": "module.exports = async function* () { yield 'ready'; };\n"},
        {"name": "bench", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}},
    ),
}
PASSTHROUGH = {
    "python": python_package("def run(context, input, *args):\n    return input\n"),
    "node": make_package(
        {"index.js": "module.exports = (input) => input;\n"},
        {"name": "bench", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}},
    ),
}
# The per-line path, Python only: the Node.js runner encodes yielded strings differently.
PER_LINE = python_package(
    "async def run(context, input, *args):\n    async for line in input:\n        yield line\n"
)
# Starts are timed back to back, and again this far apart: the time a start takes when the
# machine is not busy starting the previous ones (the keeper's warm Node.js spares have booted).
PACED_PAUSE = 0.2
# Uploads go in blocks of this size: the figure is the runners', not the HTTP client's per-chunk
# cost.
UPLOAD_BLOCK = 64 * 1024


def first_output_ms(
    client: HubClient, sequence: str, starts: int, pause: float = 0.0
) -> list[float]:
    """Start to first output byte of ``starts`` starts, ``pause`` seconds before each."""
    timings = []
    for _ in range(starts):
        time.sleep(pause)
        began = time.perf_counter()
        instance = client.start_sequence(sequence, {})["id"]
        for chunk in client.stream(f"instance/{instance}/output", follow=False):
            if chunk:
                break
        timings.append((time.perf_counter() - began) * 1000)
    return timings


def blocks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)  # slices without copies: the client's cost is not the figure
    for start in range(0, len(data), UPLOAD_BLOCK):
        yield view[start : start + UPLOAD_BLOCK]  # type: ignore[misc]


class RunnerCpu:
    """The CPU seconds (user + system) an instance's runner used, sampled every few ms from
    /proc while it lives: the last sample stands for its whole life (it may end any moment)."""

    def __init__(self, client: HubClient, instance: str) -> None:
        self.seconds = 0.0
        self._done = threading.Event()
        pid = client.get_instance(instance).get("pid")
        self._thread = threading.Thread(target=self._sample, args=(pid,), daemon=True)
        self._thread.start()

    def _sample(self, pid: int | None) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        while pid and not self._done.wait(0.005):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                return  # it ended: the last sample stands
            self.seconds = (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.seconds


def passthrough_seconds(
    client: HubClient,
    sequence: str,
    data: bytes,
    content_type: str,
    decode: Callable[[bytes], bytes] | None = None,
    settle: float = 0.0,
    runner_cpu: list[float] | None = None,
) -> float:
    """Seconds to send ``data`` through a passthrough instance and read all of it back.

    ``decode`` turns what came back into what went in (an NDJSON output, say); the result must
    equal ``data``. ``settle``: seconds to let the new instance come up before the clock starts
    (0: its start is part of the time). ``runner_cpu``: the runner's CPU seconds are appended.
    """
    instance = client.start_sequence(sequence, {})["id"]
    cpu = RunnerCpu(client, instance) if runner_cpu is not None else None
    time.sleep(settle)
    # Touched before the clock starts: first-touch page faults are the benchmark's cost.
    received = bytearray(1) * len(data)
    size = 0

    def read() -> None:
        nonlocal size
        for chunk in client.stream(f"instance/{instance}/output", follow=False):
            received[size : size + len(chunk)] = chunk
            size += len(chunk)

    reader = threading.Thread(target=read, daemon=True)
    began = time.perf_counter()
    reader.start()
    client.send_input(instance, blocks(data), content_type=content_type, end=True)
    reader.join(600)
    elapsed = time.perf_counter() - began
    if cpu is not None and runner_cpu is not None:
        runner_cpu.append(cpu.stop())
    back = memoryview(received)[:size]  # no copy of what may be a GiB
    if (back if decode is None else decode(bytes(back))) != data:
        raise RuntimeError(f"{content_type} passthrough lost or changed data")
    return elapsed


def measure(starts: int, lines: int, mib: int) -> dict[str, dict[str, Any]]:
    text = b"".join(b"line %d\n" % n for n in range(lines))
    binary = os.urandom(mib << 20)
    figures: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        client = HubClient(hub.address)
        for runner in ("python", "node"):
            first = client.send_sequence(FIRST_OUTPUT[runner])["id"]
            client.start_sequence(first, {})  # warm-up: keeper, page cache, node binary
            timings = first_output_ms(client, first, starts)
            paced = first_output_ms(client, first, starts, PACED_PAUSE)
            passthrough = client.send_sequence(PASSTHROUGH[runner])["id"]
            text_seconds = passthrough_seconds(client, passthrough, text, "text/plain")
            binary_seconds = passthrough_seconds(
                client, passthrough, binary, "application/octet-stream"
            )
            figures[runner] = {
                "first_output_ms": summary(timings),
                "paced_first_output_ms": summary(paced),
                "lines_per_s": round(lines / text_seconds),
                "binary_mb_per_s": round(len(binary) / 1e6 / binary_seconds, 1),
            }
        per_line = client.send_sequence(PER_LINE)["id"]
        per_line_seconds = passthrough_seconds(client, per_line, text, "text/plain")
        figures["python"]["per_line_lines_per_s"] = round(lines / per_line_seconds)
    return figures


def summary(timings: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(timings), 1),
        "min": round(min(timings), 1),
        "max": round(max(timings), 1),
        "starts": len(timings),
    }


def table(figures: dict[str, dict[str, Any]], lines: int, mib: int) -> str:
    rows = [
        ("start -> first output, median (ms)", lambda f: f["first_output_ms"]["median"]),
        ("start -> first output, min (ms)", lambda f: f["first_output_ms"]["min"]),
        ("start -> first output, max (ms)", lambda f: f["first_output_ms"]["max"]),
        (
            f"same, {PACED_PAUSE} s apart, median (ms)",
            lambda f: f["paced_first_output_ms"]["median"],
        ),
        (f"same, {PACED_PAUSE} s apart, min (ms)", lambda f: f["paced_first_output_ms"]["min"]),
        (f"same, {PACED_PAUSE} s apart, max (ms)", lambda f: f["paced_first_output_ms"]["max"]),
        (f"passthrough {lines:,} lines (lines/s)", lambda f: f"{f['lines_per_s']:,}"),
        (f"passthrough {mib} MiB binary (MB/s)", lambda f: f["binary_mb_per_s"]),
        (
            f"async for/yield {lines:,} lines (lines/s)",
            lambda f: f"{f['per_line_lines_per_s']:,}" if "per_line_lines_per_s" in f else "-",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    out = [f"{'':{width}}  {'python':>10}  {'node':>10}"]
    for label, value in rows:
        out.append(
            f"{label:{width}}  {value(figures['python'])!s:>10}  {value(figures['node'])!s:>10}"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    options = parser.parse_args()
    figures = measure(options.starts, options.lines, options.mib)
    if options.json:
        print(json.dumps(figures))
    else:
        print(table(figures, options.lines, options.mib))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
