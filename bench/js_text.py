"""Text lines through a JavaScript passthrough, beside what Node and the Python runner do.

Three figures for each line size (12 B and 1 KiB), in one run:

- ``reference``: a plain Node ``stream.pipeline`` of the same lines, one string each, from
  ``Readable.from`` into one end of a Unix socket pair and counted at the other, in one process.
  A line through si crosses four such transfers (client -> hub -> runner -> hub -> client), so
  the issue's bar is twice this rate divided by four.
- ``node``: the sequence users write for a JS passthrough,
  ``input => Readable.from(async function* () { for await (const l of input) yield l }())``,
  through a real hub: text/plain in, the output read back (raw: STH pipes a Node Readable as
  it is) and checked to be exactly the bytes that went in.
- ``python``: the Python runner's per-line passthrough (``async for line in input: yield
  line``) on the same bytes.

Rates are lines/s from the first byte sent to the last byte read back, each the median of
``--repeats`` runs (a fresh instance each, JS and Python alternating) with its range: once
with the clock started as the instance is started (its start inside the time), once after
the instance has had 0.3 s to come up (the stream's own rate; the start is ``start`` figures'
business). Beside them, the median CPU seconds of each runner process over all its runs: the
hub and the client are the same for both runners and take most of the CPU, so the rates are
bound by them and the runners' own cost shows here.

    python bench/js_text.py [--lines 1000000] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from runners import passthrough_seconds  # bench/ is on the path: these scripts run as files

from si.client import HubClient
from si.daemon.node import node_executable
from si.testing import make_package, python_package, running_hub

NODE_PASSTHROUGH = make_package(
    {
        "index.js": (
            "const { Readable } = require('node:stream');\n"
            "module.exports = (input) =>\n"
            "  Readable.from(async function* () { for await (const l of input) yield l; }());\n"
        )
    },
    {"name": "bench", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}},
)
PYTHON_PASSTHROUGH = python_package(
    "async def run(context, input, *args):\n    async for line in input:\n        yield line\n"
)
# The same lines through a socket pair inside one Node process: the reference rate.
REFERENCE_JS = textwrap.dedent(
    """
    const net = require('node:net');
    const { Readable, pipeline } = require('node:stream');
    const [count, size, path] = [Number(process.argv[1]), Number(process.argv[2]), process.argv[3]];
    const lines = [];
    let total = 0;
    for (let n = 0; n < count; n++) {
      const line = `line ${n}`.padEnd(size - 1, 'x') + '\\n';
      lines.push(line);
      total += line.length;
    }
    let began;
    const server = net.createServer((socket) => {
      let received = 0;
      socket.on('data', (data) => {
        received += data.length;
        if (received < total) return;
        const seconds = Number(process.hrtime.bigint() - began) / 1e9;
        console.log(JSON.stringify({ lines_per_s: count / seconds }));
        process.exit(0);
      });
    });
    server.listen(path, () => {
      const client = net.connect(path, () => {
        began = process.hrtime.bigint();
        pipeline(Readable.from(lines), client, () => {});
      });
    });
    """
)
SIZES = (12, 1024)


def lines_of(count: int, size: int) -> bytes:
    """``count`` lines of ``size`` bytes each, newline included (as REFERENCE_JS makes them)."""
    return b"".join((b"line %d" % n).ljust(size - 1, b"x") + b"\n" for n in range(count))


def reference_rate(count: int, size: int, directory: Path) -> float:
    socket_path = directory / f"reference-{size}.sock"
    out = subprocess.run(
        [node_executable(), "-e", REFERENCE_JS, str(count), str(size), str(socket_path)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    return float(json.loads(out.stdout)["lines_per_s"])


# Seconds a new instance is given to come up before an "up" run's clock starts.
SETTLE = 0.3


def measure(count: int, repeats: int) -> list[dict[str, Any]]:
    """Each size: the reference once, then ``repeats`` runs of the JS and the Python
    passthrough, alternating (a fresh instance each), as medians with their range."""
    cases = []
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        client = HubClient(hub.address)
        node = client.send_sequence(NODE_PASSTHROUGH)["id"]
        python = client.send_sequence(PYTHON_PASSTHROUGH)["id"]
        client.start_sequence(node, {})  # warm-up: keeper, spares, page cache
        for size in SIZES:
            lines = count if size < 100 else count // 10
            data = lines_of(lines, size)
            reference = reference_rate(lines, size, Path(tmp))
            # "from start": the clock starts as the instance is started, so its start is in
            # the time; "up": it starts once the instance has had SETTLE s to come up, which
            # is the stream's own rate.
            rates: dict[str, list[float]] = {
                f"{name}{variant}": [] for name in ("node", "python") for variant in ("", "_up")
            }
            # The runner's own CPU per run (the hub and the client are the same for both).
            cpu: dict[str, list[float]] = {"node": [], "python": []}
            for _ in range(repeats):
                # A Readable's strings are written raw, as STH pipes them: the bytes come back.
                for variant, settle in (("", 0.0), ("_up", SETTLE)):
                    for name, sequence in (("node", node), ("python", python)):
                        seconds = passthrough_seconds(
                            client,
                            sequence,
                            data,
                            "text/plain",
                            settle=settle,
                            runner_cpu=cpu[name],
                        )
                        rates[f"{name}{variant}"].append(lines / seconds)
            case: dict[str, Any] = {
                "line_bytes": size,
                "lines": lines,
                "runs": repeats,
                "reference_lines_per_s": round(reference),
                "bar_lines_per_s": round(2 * reference / 4),
            }
            for name, values in rates.items():
                case[f"{name}_lines_per_s"] = round(statistics.median(values))
                case[f"{name}_min"] = round(min(values))
                case[f"{name}_max"] = round(max(values))
            for name, seconds in cpu.items():
                case[f"{name}_runner_cpu_s"] = round(statistics.median(seconds), 3)
            cases.append(case)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="12 B lines (1 KiB: /10)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each passthrough")
    parser.add_argument("--json", action="store_true", help="one JSON object per line size")
    options = parser.parse_args()
    for case in measure(options.lines, options.repeats):
        if options.json:
            print(json.dumps(case))
        else:
            print(
                f"{case['line_bytes']:>5} B lines (median of {case['runs']}): node "
                f"{case['node_lines_per_s']:,}/s ({case['node_min']:,}-{case['node_max']:,}), "
                f"python {case['python_lines_per_s']:,}/s "
                f"({case['python_min']:,}-{case['python_max']:,}), Node pipeline "
                f"{case['reference_lines_per_s']:,}/s (bar: {case['bar_lines_per_s']:,}/s); "
                f"instance up first: node {case['node_up_lines_per_s']:,}/s, "
                f"python {case['python_up_lines_per_s']:,}/s; runner CPU: node "
                f"{case['node_runner_cpu_s']} s, python {case['python_runner_cpu_s']} s"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
