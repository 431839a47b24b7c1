"""Every si benchmark in one run: one table, each figure beside its target, and a JSON file.

    python bench/run.py            # the full run (about ten minutes on a 2-core machine)
    python bench/run.py --quick    # a smoke run: fewer repetitions, smaller data (a minute or two)
    python bench/run.py --only throughput memory   # some sections only

Each section runs against temporary hubs of its own (``si.testing``) and leaves no process
behind. Figures are medians of repeated runs with min and max; a section that fails prints
why and the others still run. The scripts beside this one (``start_latency.py``,
``runners.py``, ``reconnect.py``, ``fault.py``, ``cli_speed.py``, ``topics.py``,
``supervision.py``, ``stack.py``, ``js_text.py``, ``console.py``, ``cluster.py``) are run as
they are, in a subprocess each, and their figures taken from their output.

The JSON file (``bench/results/latest.json`` unless ``--json`` says otherwise; git-ignored)
holds every figure with its min, max, target and whether it met it, plus the machine and the
commit, for tracking over time. Benchmarks print figures; tests never assert timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from si.client import HubClient  # noqa: E402
from si.testing import HubProcess, make_package, python_package, running_hub  # noqa: E402

PASSTHROUGH = "def run(context, input):\n    return input\n"
PER_LINE = "async def run(context, input):\n    async for line in input:\n        yield line\n"
IDLE_PYTHON = "import asyncio\n\nasync def run(context, input):\n    await asyncio.Future()\n"
IDLE_NODE = make_package(
    {"index.js": "module.exports = async function () { await new Promise(() => {}); };\n"},
    {"name": "idle", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}},
)
# Say "up" once, then idle: the first output byte marks a start done.
_UP_JS = (
    "module.exports = async function* () {\n  yield 'up\\n';\n  await new Promise(() => {});\n};\n"
)
_UP_PY = (
    "import asyncio\n\n"
    "async def run(context, input):\n    yield 'up\\n'\n    await asyncio.Future()\n"
)
IDLE_NODE_SAYS_UP = make_package(
    {"index.js": _UP_JS},
    {"name": "up", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}},
)
IDLE_PYTHON_SAYS_UP = python_package(_UP_PY)
MIB = 1 << 20


# -- figures ----------------------------------------------------------------------------------


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    median: float | None
    min: float | None = None
    max: float | None = None
    runs: int = 1
    target: str = ""
    # "<=", ">=", "<" or ">" and a number; None for figures without a target (printed only)
    goal: tuple[str, float] | None = None
    note: str = ""
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.goal is not None and self.median is not None:
            op, bound = self.goal
            value = self.median
            self.met = {
                "<=": value <= bound,
                ">=": value >= bound,
                "<": value < bound,
                ">": value > bound,
            }[op]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


class Results:
    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.notes: list[str] = []

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(f"  {render_row(figure)}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_row(f: Figure) -> str:
    mark = {True: "ok", False: "SHORT", None: ""}[f.met]
    spread = f"{fmt(f.min)} .. {fmt(f.max)}" if f.runs > 1 else ""
    line = (
        f"{f.name:<60} {fmt(f.median):>10} {f.unit:<9} {spread:>21} {f.runs:>4}  "
        f"{f.target:<20} {mark}"
    )
    return line + (f"  ({f.note})" if f.note else "")


def render_table(results: Results) -> str:
    head = (
        f"{'figure':<60} {'median':>10} {'unit':<9} {'min .. max':>21} {'runs':>4}  {'target':<20}"
    )
    lines = [head, "-" * len(head)]
    section = None
    for figure in results.figures:
        if figure.section != section:
            section = figure.section
            lines.append(f"[{section}]")
        lines.append(render_row(figure))
    for note in results.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# -- helpers ----------------------------------------------------------------------------------


def script_cases(
    results: Results, section: str, name: str, *args: str, timeout: float = 1800
) -> list[dict[str, Any]] | None:
    """The JSON lines ``bench/<name> <args>`` prints; None, with a note that ``section`` was
    skipped and why, when it failed or ran out of time."""
    try:
        return json_lines(script(name, *args, timeout=timeout))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        results.note(f"{section} skipped: {exc}")
        return None


def script(name: str, *args: str, timeout: float = 1800, unset: tuple[str, ...] = ()) -> str:
    """Run ``bench/<name>`` as its own process (without the variables ``unset``); its output."""
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode not in (0, 1):  # cli_speed.py exits 1 when over budget
        raise RuntimeError(f"{name} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def temporary_hub() -> Iterator[HubProcess]:
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-", dir="/tmp") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        yield hub


@contextlib.contextmanager
def bytecode_cache(cached: bool) -> Iterator[None]:
    """Child interpreters with Python's bytecode cache, as an installed si has one (in a
    temporary PYTHONPYCACHEPREFIX, filled by the first run), or without it, as under
    PYTHONDONTWRITEBYTECODE=1, where every start compiles si's modules again."""
    keys = ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="si-bench-pycache-", dir="/tmp") as prefix:
        if cached:
            os.environ["PYTHONPYCACHEPREFIX"] = prefix
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        else:
            os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
            os.environ.pop("PYTHONPYCACHEPREFIX", None)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def processes_of(home: Path) -> list[int]:
    """Pids whose command line names ``home``: its hub, keeper, runners (forked from the
    keeper, they keep its command line) and Node.js runners."""
    found = []
    needle = os.fsencode(home)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    if needle in file.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def kib(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file, in KiB."""
    with open(path) as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def wait_running(client: HubClient, ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while time.monotonic() < deadline:
        running = {i["id"] for i in client.list_instances() if i.get("status") == "running"}
        if wanted <= running:
            return
        time.sleep(0.05)
    raise TimeoutError("instances did not start")


# -- start latency, runners, reconnect, CLI, topics: the existing scripts ----------------------


def bench_start(results: Results, quick: bool) -> None:
    starts = 10 if quick else 50
    py = json_lines(script("start_latency.py", "--starts", str(starts), "--json"))[0]
    results.add(
        Figure(
            "start",
            f"POST /start -> first output byte, Python (p50 of {starts})",
            "ms",
            py["median"],
            py["min"],
            py["max"],
            starts,
            "<= 20 ms",
            ("<=", 20),
        )
    )
    lines, mib = (20_000, 8) if quick else (200_000, 64)
    runners = json_lines(
        script(
            "runners.py",
            "--starts",
            str(starts),
            "--lines",
            str(lines),
            "--mib",
            str(mib),
            "--json",
        )
    )[0]
    node = runners["node"]["first_output_ms"]
    results.add(
        Figure(
            "start",
            f"POST /start -> first output byte, JavaScript (p50 of {starts})",
            "ms",
            node["median"],
            node["min"],
            node["max"],
            starts,
            "<= 30 ms",
            ("<=", 30),
            note="back to back",
        )
    )
    paced = runners["node"].get("paced_first_output_ms")
    if paced:
        results.add(
            Figure(
                "start",
                f"  the same, starts 0.2 s apart (p50 of {starts})",
                "ms",
                paced["median"],
                paced["min"],
                paced["max"],
                starts,
                note="the keeper's warm Node spares have booted",
            )
        )
    if os.environ.get("NODE_EXTRA_CA_CERTS"):
        # Node would parse the whole bundle NODE_EXTRA_CA_CERTS names at every start (~30 ms of
        # CPU here); runners defer it to their first TLS use (runner.js deferExtraCaCerts), so
        # the two figures should match. A machine without the variable is measured by dropping
        # it.
        bare = json_lines(
            script(
                "runners.py",
                *("--starts", str(starts), "--lines", "1000", "--mib", "1", "--json"),
                unset=("NODE_EXTRA_CA_CERTS",),
            )
        )[0]["node"]["first_output_ms"]
        results.add(
            Figure(
                "start",
                "  the same, back to back, without NODE_EXTRA_CA_CERTS",
                "ms",
                bare["median"],
                bare["min"],
                bare["max"],
                starts,
                note="this machine sets it; runners read it at their first TLS use",
            )
        )
    for label, package in (("JavaScript", IDLE_NODE_SAYS_UP), ("Python", IDLE_PYTHON_SAYS_UP)):
        last, median = burst_start(package, 50)
        results.add(
            Figure(
                "start",
                f"50 {label} starts at once -> the last one's first output byte",
                "s",
                last,
                runs=50,
                target="<= 1.5 s",
                goal=("<=", 1.5),
                note=f"median {median:.2f} s",
            )
        )
    for runner in ("python", "node"):
        figures = runners[runner]
        results.add(
            Figure(
                "start",
                f"runners.py: {runner} passthrough, {lines:,} short lines",
                "lines/s",
                figures["lines_per_s"],
                note="one run; see [throughput]",
            )
        )
        results.add(
            Figure(
                "start",
                f"runners.py: {runner} passthrough, {mib} MiB binary",
                "MB/s",
                figures["binary_mb_per_s"],
                note="one run; see [throughput]",
            )
        )


def bench_reconnect(results: Results, quick: bool) -> None:
    counts = ["20"] if quick else ["100"]
    restarts = "1" if quick else "3"
    for case in json_lines(
        script("reconnect.py", "--instances", *counts, "--restarts", restarts, "--json")
    ):
        results.add(
            Figure(
                "reconnect",
                f"hub kill -9 + restart -> all {case['instances']} instances re-adopted",
                "ms",
                case["readopt_ms_median"],
                None,
                case["readopt_ms_max"],
                int(restarts),
                "< 1000 ms",
                ("<", 1000),
                note=f"max {case['readopt_ms_max']} ms",
            )
        )
        results.add(
            Figure(
                "reconnect",
                "  output lines lost + duplicated over the restarts",
                "lines",
                case["lines_lost"] + case["lines_duplicated"],
                target="0",
                goal=("<=", 0),
                note=f"of {case['lines_read']:,} read",
            )
        )


def bench_fault(results: Results, quick: bool) -> None:
    instances, cycles = ("5", "2") if quick else ("10", "5")
    (case,) = json_lines(script("fault.py", "--instances", instances, "--cycles", cycles, "--json"))
    crash, slow = case["crash"], case["slow"]
    for name, count, note in (
        (
            f"kill -9 cycles: {crash['followers']} followers, lines lost + repeated",
            crash["follower_lines_lost"] + crash["follower_lines_repeated"],
            f"of {crash['follower_lines_read']:,} read",
        ),
        (
            f"  {crash['fresh_readers']} readers attached during re-adoption: gaps + repeats",
            crash["fresh_gaps"] + crash["fresh_repeats"] + crash["fresh_reader_errors"],
            f"of {crash['fresh_lines_read']:,} read; errors {crash['fresh_reader_errors']}",
        ),
    ):
        results.add(
            Figure(
                "fault",
                name,
                "lines",
                count,
                runs=int(cycles),
                target="0",
                goal=("<=", 0),
                note=note,
            )
        )
    results.add(
        Figure(
            "fault",
            f"  all {crash['instances']} instances re-adopted",
            "ms",
            crash["readopt_ms_median"],
            None,
            crash["readopt_ms_max"],
            int(cycles),
            "< 1000 ms",
            ("<", 1000),
        )
    )
    before, after = slow["rate_before_mb_s"], slow["rate_after_mb_s"]
    results.add(
        Figure(
            "fault",
            "slow readers: normal reader's rate after they are cut / before",
            "%",
            round(100 * after / before, 1) if before else None,
            target=">= 95 %",
            goal=(">=", 95),
            note=f"{before} -> {slow['rate_while_lagging_mb_s']} -> {after} MB/s; "
            f"longest pause {slow['longest_pause_s']} s",
        )
    )
    results.add(
        Figure(
            "fault",
            "  hub RSS growth while two readers stall",
            "MiB",
            round(slow["hub_rss_max_mib"] - slow["hub_rss_start_mib"], 1),
            target="<= 8 MiB",
            goal=("<=", 8),
            note=f"{slow['hub_rss_start_mib']} MiB at start, peak {slow['hub_rss_max_mib']}",
        )
    )
    cuts = (slow["stopped_reader_cut_after_s"], slow["slow_reader_cut_after_s"])
    results.add(
        Figure(
            "fault",
            "  stalled readers cut off after (stopped, 64 KiB/s)",
            "s",
            max(cuts) if None not in cuts else None,
            note=f"{cuts[0]} s, {cuts[1]} s; default --reader-lag-seconds 2",
        )
    )


def bench_cli(results: Results, quick: bool) -> None:
    runs = 5 if quick else 20
    text = script("cli_speed.py", str(runs))
    number = r"\s+([\d.]+)"
    for label in ("si --help", "si inst ls"):
        match = re.search(rf"^{re.escape(label)}\s{{2,}}{number * 6}", text, re.M)
        if match is None:
            raise RuntimeError(f"cli_speed.py printed no line for {label!r}:\n{text}")
        median, low, high = (float(match.group(n)) for n in (1, 2, 3))
        results.add(
            Figure(
                "cli",
                f"`{label}` wall time (bytecode cached)",
                "ms",
                median,
                low,
                high,
                runs,
                "< 150 ms",
                ("<", 150),
            )
        )


def bench_topics(results: Results, quick: bool) -> None:
    messages = 20_000 if quick else 200_000
    cases = script_cases(
        results, "topics", "topics.py", "--messages", str(messages), "--json", timeout=600
    )
    for case in cases or []:
        results.add(
            Figure(
                "topics",
                f"topic, 1 producer -> {case['consumers']} consumer(s), "
                f"{case['message_bytes']} B messages",
                "msg/s",
                case["messages_per_s"],
                note=f"{case['mb_per_s']} MB/s",
            )
        )


def bench_cluster(results: Results, quick: bool) -> None:
    """Issue 19: a cross-hub topic beside a local one, and a NATS node's kill as a consumer
    sees it (bench/cluster.py: a real 3-node NATS cluster and two hubs)."""
    cases = script_cases(
        results,
        "cluster",
        "cluster.py",
        "--messages",
        "20000" if quick else "100000",
        "--json",
        timeout=600,
    )
    for case in cases or []:
        for label, key in (("local topic", "local"), ("cross-hub topic", "cross_hub")):
            results.add(
                Figure(
                    "cluster",
                    f"{label}, instance 1 -> 1, {case['message_bytes']} B messages",
                    "msg/s",
                    case[f"{key}_messages_per_s"],
                )
            )
        results.add(
            Figure(
                "cluster",
                "consumer's longest pause, NATS node killed",
                "s",
                case["nats_node_kill_pause_s"],
                note="every message once" if case["nats_node_kill_exact"] else "LOSS OR REPEAT",
            )
        )


def bench_js_text(results: Results, quick: bool) -> None:
    cases = script_cases(
        results, "js-text", "js_text.py", "--lines", "200000" if quick else "1000000", "--json"
    )
    for case in cases or []:
        lines, size = f"{case['lines']:,} lines of {case['line_bytes']} B", case["line_bytes"]
        bar, python = case["bar_lines_per_s"], case["python_lines_per_s"]
        results.add(
            Figure(
                "js-text",
                f"{lines}, JS generator passthrough",
                "lines/s",
                case["node_lines_per_s"],
                min=case.get("node_min"),
                max=case.get("node_max"),
                runs=case.get("runs", 1),
                target=f">= {bar:,} lines/s",
                goal=(">=", bar),
                note="2x a Node pipeline of the same lines over a socket pair, / 4 transfers",
            )
        )
        results.add(
            Figure(
                "js-text",
                f"  Node stream.pipeline of the {size} B lines, in-process, same run",
                "lines/s",
                case["reference_lines_per_s"],
            )
        )
        results.add(
            Figure(
                "js-text",
                f"  the JS rate as a share of the Python per-line rate ({python:,} lines/s)",
                "%",
                round(100 * case["node_lines_per_s"] / python, 1),
                note="clock from the start: the JS instance's later start is in it",
            )
        )
        if "node_up_lines_per_s" in case:
            python_up = case["python_up_lines_per_s"]
            results.add(
                Figure(
                    "js-text",
                    f"  the same, instances up first (JS {case['node_up_lines_per_s']:,}, "
                    f"Python {python_up:,} lines/s)",
                    "%",
                    round(100 * case["node_up_lines_per_s"] / python_up, 1),
                    target=">= 100 %",
                    goal=(">=", 100),
                    note="medians of alternating runs; both write the text back raw",
                )
            )
        if "node_runner_cpu_s" in case:
            results.add(
                Figure(
                    "js-text",
                    f"  the JS runner's CPU for the stream, beside the Python runner's "
                    f"({case['python_runner_cpu_s']} s)",
                    "s",
                    case["node_runner_cpu_s"],
                    target=f"<= {case['python_runner_cpu_s']} s",
                    goal=("<=", case["python_runner_cpu_s"]),
                    note="the hub and client, the same for both, bound the rates",
                )
            )


def bench_console(results: Results, quick: bool) -> None:
    instances = "200" if quick else "1000"
    cases = script_cases(
        results, "console", "console.py", "--instances", instances, "--json", timeout=900
    )
    for case in cases or []:
        results.add(
            Figure(
                "console",
                f"web console: {case['instances']:,}-instance list on screen after page load",
                "ms",
                case["listed_ms"],
                case["listed_ms_min"],
                case["listed_ms_max"],
                case["loads"],
                target="< 1000 ms",
                goal=("<", 1000),
                note=(
                    f"rows built in {case['first_render_ms']} ms; each 1 s update "
                    f"{case['update_ms']} ms; watch line {case['watch_line_bytes'] // 1024} KiB; "
                    f"hub CPU {case['hub_cpu_idle_percent']} % idle, "
                    f"{case['hub_cpu_three_watchers_percent']} % with 3 pages watching"
                ),
            )
        )


def bench_stack(results: Results, quick: bool) -> None:
    cases = script_cases(
        results, "stack", "stack.py", "--runs", "2" if quick else "5", "--json", timeout=600
    )
    for case in cases or []:
        results.add(
            Figure(
                "stack",
                "CI recipe: serve --detach -K + apply (5 instances) + hub stop",
                "ms",
                case["total"],
                runs=case["runs"],
                target="< 1000 ms",
                goal=("<", 1000),
                note=(
                    f"serve {case['serve']}, apply {case['apply']}, stop {case['stop']} ms; "
                    f"a second apply {case['again']} ms"
                ),
            )
        )


def bench_supervision(results: Results, quick: bool) -> None:
    instances, runners = ("3", "200") if quick else ("10", "1000")
    cases = script_cases(
        results,
        "supervision",
        "supervision.py",
        "--instances",
        instances,
        "--runners",
        runners,
        "--json",
        timeout=600,
    )
    for case in cases or []:
        restart, watchdog = case["restart"], case["watchdog"]
        results.add(
            Figure(
                "supervision",
                "restart: crash -> new runner's first byte, beyond the 100 ms backoff",
                "ms",
                restart["beyond_backoff_ms"],
                restart["beyond_backoff_min_ms"],
                restart["beyond_backoff_max_ms"],
                restart["instances"] * 3,
                note=f"first restart {restart['first_restart_ms']} ms in all",
            )
        )
        results.add(
            Figure(
                "supervision",
                f"memory watchdog CPU at {watchdog['runners']} runners (4 passes/s)",
                "% core",
                watchdog["core_percent"],
                note=f"{watchdog['per_runner_us']} us a runner a pass",
            )
        )


def burst_start(package: bytes, count: int) -> tuple[float, float]:
    """``count`` starts fired at once from as many threads: (seconds until the last one's first
    output byte, the median of them)."""
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        client = HubClient(hub.address)
        sequence = client.send_sequence(package)["id"]
        # One start first: the keeper and its spares are up, as on a hub in use.
        client.kill_instance(client.start_sequence(sequence, {})["id"], remove_immediately=True)
        time.sleep(1.0)
        done: list[float] = []
        began = time.perf_counter()

        def one() -> None:
            with HubClient(hub.address) as own:
                instance = own.start_sequence(sequence, {})["id"]
                next(iter(own.instance_stream(instance, "output")))
                done.append(time.perf_counter() - began)

        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return max(done), statistics.median(done)


# -- throughput: passthrough of lines and of bytes, beside a plain socket copy ------------------


def passthrough(
    client: HubClient, sequence: str, data: bytes, content_type: str, block: int
) -> float:
    """Seconds from the first byte of POST /input to the last byte of GET /output; the bytes
    read back are checked to be ``data`` (after the clock stopped)."""
    instance = client.start_sequence(sequence, {})["id"]
    # Written before the clock starts: the first touch of a fresh page costs a page fault, and
    # a GiB of them would be the benchmark's cost, not si's.
    received = bytearray(1) * len(data)
    state: dict[str, Any] = {"size": 0, "error": None, "done": 0.0}
    reader_client = HubClient(client.address)

    def read() -> None:
        size = 0
        try:
            for chunk in reader_client.stream(f"instance/{instance}/output", follow=False):
                end = size + len(chunk)
                if end > len(received):
                    raise RuntimeError("more output than input")
                received[size:end] = chunk
                size = end
        except Exception as exc:
            state["error"] = exc
        state["done"] = time.perf_counter()
        state["size"] = size

    def blocks() -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(data), block):
            yield view[start : start + block]  # type: ignore[misc]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    began = time.perf_counter()
    client.send_input(instance, blocks(), content_type=content_type, end=True)
    reader.join(900)
    reader_client.close()
    if state["error"] is not None:
        raise RuntimeError(f"reading the output failed: {state['error']}")
    if state["size"] != len(data) or received != data:
        raise RuntimeError(
            f"{content_type} passthrough lost or changed data ({state['size']} of {len(data)})"
        )
    return float(state["done"]) - began


def socket_copy_seconds(data: bytes, block: int) -> float:
    """Seconds to copy ``data`` from this process to another through a Unix socket."""
    with tempfile.TemporaryDirectory(prefix="si-bench-") as tmp:
        path = os.path.join(tmp, "copy.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "s.connect(sys.argv[1])\n"
            f"total, buf = {len(data)}, bytearray({block})\n"
            "got = 0\n"
            "while got < total:\n"
            "    n = s.recv_into(buf)\n"
            "    if not n: break\n"
            "    got += n\n"
            "s.sendall(b'k')\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code, path])
        connection, _ = listener.accept()
        listener.close()
        view = memoryview(data)
        with connection:
            began = time.perf_counter()
            for start in range(0, len(data), block):
                connection.sendall(view[start : start + block])
            connection.recv(1)
            elapsed = time.perf_counter() - began
        child.wait()
    return elapsed


def bench_throughput(results: Results, quick: bool) -> None:
    repeats = 1 if quick else 3
    short_lines = 100_000 if quick else 1_000_000
    long_lines = 10_000 if quick else 100_000
    binary_mib = 64 if quick else 1024
    short = b"".join(b"%011d\n" % n for n in range(short_lines))  # 12 bytes a line
    long = b"".join(b"%01023d\n" % n for n in range(long_lines))  # 1 KiB a line
    binary = os.urandom(binary_mib * MIB)
    with temporary_hub() as hub:
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(PASSTHROUGH))["id"]
        passthrough(client, sequence, short[: 12 * 1000], "text/plain", 64 * 1024)  # warm-up

        def repeat(measure: Callable[[], float]) -> list[float]:
            return [measure() for _ in range(repeats)]

        seconds = repeat(lambda: passthrough(client, sequence, short, "text/plain", 64 * 1024))
        rates = [short_lines / s for s in seconds]
        results.add(
            Figure(
                "throughput",
                f"{short_lines:,} lines of 12 B, Python passthrough",
                "lines/s",
                **summary(rates),
                target=">= 250,000 lines/s",
                goal=(">=", 250_000),
            )
        )
        per_line = client.send_sequence(python_package(PER_LINE))["id"]
        seconds = repeat(lambda: passthrough(client, per_line, short, "text/plain", 64 * 1024))
        rates = [short_lines / s for s in seconds]
        results.add(
            Figure(
                "throughput",
                f"{short_lines:,} lines of 12 B, Python async for/yield",
                "lines/s",
                **summary(rates),
                target=">= 150,000 lines/s",
                goal=(">=", 150_000),
            )
        )
        seconds = repeat(lambda: passthrough(client, sequence, long, "text/plain", 64 * 1024))
        rates = [len(long) / 1e6 / s for s in seconds]
        results.add(
            Figure(
                "throughput",
                f"{long_lines:,} lines of 1 KiB, Python passthrough",
                "MB/s",
                **summary(rates),
                target=">= 100 MB/s",
                goal=(">=", 100),
            )
        )
        si_rates: list[float] = []
        copy_rates: list[float] = []
        for _ in range(repeats):
            seconds_si = passthrough(client, sequence, binary, "application/octet-stream", MIB)
            si_rates.append(len(binary) / 1e6 / seconds_si)
            copy_rates.append(len(binary) / 1e6 / socket_copy_seconds(binary, MIB))
        client.close()
    results.add(
        Figure(
            "throughput",
            f"{binary_mib:,} MiB octet-stream, Python passthrough",
            "MB/s",
            **summary(si_rates),
            target=">= 300 MB/s",
            goal=(">=", 300),
        )
    )
    results.add(
        Figure(
            "throughput",
            f"  plain Unix-socket copy of {binary_mib:,} MiB, same run",
            "MB/s",
            **summary(copy_rates),
            note="1 MiB writes, one process to another",
        )
    )
    ratios = [100 * s / c for s, c in zip(si_rates, copy_rates, strict=True)]
    results.add(
        Figure(
            "throughput",
            "  passthrough as a share of the plain copy",
            "%",
            **summary(ratios),
            target=">= 30 %",
            goal=(">=", 30),
        )
    )


# -- memory -------------------------------------------------------------------------------------


def bench_memory(results: Results, quick: bool) -> None:
    count = 5 if quick else 20
    with temporary_hub() as hub:
        assert hub.process is not None
        time.sleep(1.0)
        rss = kib(f"/proc/{hub.process.pid}/status", "VmRSS") / 1024
        results.add(
            Figure(
                "memory",
                "hub RSS, idle (no instances)",
                "MiB",
                rss,
                target="<= 40 MiB",
                goal=("<=", 40),
            )
        )
        client = HubClient(hub.address)
        for label, package, bound in (
            ("Python", python_package(IDLE_PYTHON), 6),
            ("JavaScript", IDLE_NODE, 10),
        ):
            sequence = client.send_sequence(package)["id"]
            ids = [client.start_sequence(sequence, {})["id"] for _ in range(count)]
            wait_running(client, ids)
            time.sleep(1.0)
            pids = [i["pid"] for i in client.list_instances() if i["id"] in ids]
            pss = [kib(f"/proc/{pid}/smaps_rollup", "Pss") / 1024 for pid in pids]
            uss = [
                sum(
                    kib(f"/proc/{pid}/smaps_rollup", key)
                    for key in ("Private_Clean", "Private_Dirty")
                )
                / 1024
                for pid in pids
            ]
            results.add(
                Figure(
                    "memory",
                    f"PSS per idle instance, {label} ({count} idle instances)",
                    "MiB",
                    **summary(pss),
                    target=f"<= {bound} MiB",
                    goal=("<=", bound),
                    note="min/max over the instances",
                )
            )
            results.add(
                Figure(
                    "memory",
                    f"  of which private (USS), {label}",
                    "MiB",
                    **summary(uss),
                    note="the rest is shared with the keeper and other processes",
                )
            )
            for instance in ids:
                client.kill_instance(instance)
        rss = kib(f"/proc/{hub.process.pid}/status", "VmRSS") / 1024
        results.add(
            Figure(
                "memory",
                f"hub RSS after {2 * count} instances came and went",
                "MiB",
                rss,
            )
        )
        client.close()


# -- hub start, and instances one after another ----------------------------------------------


def hub_answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(path)
            probe.sendall(b"GET /api/v1/version HTTP/1.1\r\nHost: si\r\nConnection: close\r\n\r\n")
            return probe.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def hub_start_ms(repeats: int) -> list[float]:
    """Spawn to first answered request of ``python -m si.daemon`` on fresh homes."""
    timings = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="si-bench-", dir="/tmp") as tmp:
            hub = HubProcess(Path(tmp) / "home")
            began = time.perf_counter()
            hub.start(wait=False)
            path = str(hub.socket)
            deadline = began + 30
            while not hub_answers(path):
                if time.perf_counter() > deadline:
                    raise TimeoutError("hub did not answer")
                time.sleep(0.001)
            timings.append((time.perf_counter() - began) * 1000)
            hub.close()
    return timings


def detached_start_ms(repeats: int) -> list[float]:
    """Wall time of ``si hub serve --detach``, which returns once its hub answers."""
    timings = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="si-bench-", dir="/tmp") as tmp:
            home = Path(tmp) / "home"
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "si", "hub", "serve", "--detach", "--home", str(home)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
            )
            timings.append((time.perf_counter() - began) * 1000)
            HubProcess(home).kill_runners()
            for pid in processes_of(home):
                os.kill(pid, 15)
            if done.returncode != 0:
                raise RuntimeError(f"si hub serve --detach failed: {done.stderr.strip()}")
    return timings


def bench_hub_start(results: Results, quick: bool) -> None:
    repeats = 5 if quick else 15
    with bytecode_cache(True):
        hub_start_ms(1)  # fills the cache
        cached = hub_start_ms(repeats)
        detached = detached_start_ms(repeats)
    with bytecode_cache(False):
        uncached = hub_start_ms(repeats)
    results.add(
        Figure(
            "hub",
            "hub start -> first answered request (fresh home, bytecode cached)",
            "ms",
            **summary(cached),
            target="<= 150 ms",
            goal=("<=", 150),
            note="python -m si.daemon, as an installed si runs",
        )
    )
    results.add(
        Figure(
            "hub",
            "  the same without the bytecode cache",
            "ms",
            **summary(uncached),
            note="PYTHONDONTWRITEBYTECODE=1: si's modules compiled at every start",
        )
    )
    results.add(
        Figure(
            "hub",
            "  `si hub serve --detach` until it returns (cached)",
            "ms",
            **summary(detached),
            note="the CLI, the hub's start, the CLI's check that it answers",
        )
    )


def bench_scale(results: Results, quick: bool) -> None:
    limit = 100 if quick else 1000
    with temporary_hub() as hub:
        home = hub.home
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(IDLE_PYTHON))["id"]
        timings: list[float] = []
        began = time.perf_counter()
        while len(timings) < limit:
            start = time.perf_counter()
            client.start_sequence(sequence, {})
            timings.append(time.perf_counter() - start)
            if timings[-1] > 5:
                break
        total = time.perf_counter() - began
        count = len(timings)
        results.add(
            Figure(
                "scale",
                f"instances started one after another (limit {limit:,})",
                "instances",
                count,
                target=f">= {limit:,}, none > 5 s",
                goal=(">=", limit),
                note=f"{total:.1f} s in all",
            )
        )
        ms = [t * 1000 for t in timings]
        results.add(
            Figure("scale", "  time per start", "ms", **summary(ms), note="over every start")
        )
        last = ms[-max(1, count // 10) :]
        results.add(Figure("scale", "  time per start, last tenth", "ms", **summary(last)))
        time.sleep(1.0)
        lists: list[float] = []
        for _ in range(10):
            start = time.perf_counter()
            listed = client.list_instances()
            lists.append((time.perf_counter() - start) * 1000)
        results.add(
            Figure(
                "scale",
                f"GET /instances at {len(listed):,} instances",
                "ms",
                **summary(lists),
                target="< 100 ms",
                goal=("<", 100),
            )
        )
        assert hub.process is not None
        rss = kib(f"/proc/{hub.process.pid}/status", "VmRSS") / 1024
        results.add(Figure("scale", f"hub RSS at {len(listed):,} instances", "MiB", rss))
        client.close()
        restarts: list[float] = []
        listings: list[float] = []
        for _ in range(3):
            hub.stop()
            began = time.perf_counter()
            hub.start(wait=False)
            while not hub_answers(str(hub.socket)):
                time.sleep(0.001)
            restarts.append((time.perf_counter() - began) * 1000)
            with HubClient(hub.address) as client:
                client.list_instances()
            listings.append((time.perf_counter() - began) * 1000)
        results.add(
            Figure(
                "scale",
                f"hub restart under {len(listed):,} instances -> first answer",
                "ms",
                **summary(restarts),
                note="re-adoption goes on in the background",
            )
        )
        results.add(
            Figure(
                "scale",
                "  -> first full listing (every instance settled)",
                "ms",
                **summary(listings),
            )
        )
    deadline = time.monotonic() + 10
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        results.note(f"scale: {len(left)} processes of the test home left behind: {left[:10]}")


# -- main -----------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Results, bool], None]] = {
    "start": bench_start,
    "throughput": bench_throughput,
    "memory": bench_memory,
    "hub": bench_hub_start,
    "scale": bench_scale,
    "reconnect": bench_reconnect,
    "fault": bench_fault,
    "cli": bench_cli,
    "topics": bench_topics,
    "supervision": bench_supervision,
    "stack": bench_stack,
    "js-text": bench_js_text,
    "console": bench_console,
    "cluster": bench_cluster,
}


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and fast")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections")
    parser.add_argument(
        "--json",
        type=Path,
        default=BENCH / "results" / "latest.json",
        help="where to write the figures (default: bench/results/latest.json)",
    )
    options = parser.parse_args()
    results = Results()
    began = time.perf_counter()
    for name in options.only or list(SECTIONS):
        print(f"[{name}]", flush=True)
        section_began = time.perf_counter()
        try:
            SECTIONS[name](results, options.quick)
        except Exception as exc:
            results.note(f"section {name} failed: {type(exc).__name__}: {exc}")
        print(f"  ({time.perf_counter() - section_began:.0f} s)", flush=True)
    elapsed = time.perf_counter() - began
    print()
    print(render_table(results))
    met = [f.met for f in results.figures if f.met is not None]
    print(f"\n{met.count(True)} of {len(met)} targets met; {elapsed:.0f} s in all")
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "commit": commit(),
                "quick": options.quick,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "seconds": round(elapsed, 1),
                "figures": [asdict(f) for f in results.figures],
                "notes": results.notes,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"figures written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
