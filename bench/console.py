"""The web console with a thousand instances, in headless Chromium; and its screenshots.

A real hub runs ``--instances`` idle Python instances; the page is opened through a real
``si hub console`` several times, and for each load the script reads what the page measured
itself (``window.siConsole``):

- ``listed_ms``: from the page's navigation start to the first full instance list on screen
  (the target is under 1 s for 1,000 instances);
- ``first_render_ms``: the part of that spent building the table's rows;
- ``update_ms``: one later update of every row from the watch feed (once a second).

It also prints the size of one watch line, which is what the hub sends each second.

    python bench/console.py [--instances 1000] [--loads 3] [--json]
    python bench/console.py --screenshots docs/console   # the PNGs in docs/ and the README
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from si.client import HubClient  # noqa: E402
from si.testing import python_package, running_hub  # noqa: E402
from tests.console.browser import chromium  # noqa: E402

IDLE = "import asyncio\n\nasync def run(context, input):\n    await asyncio.Future()\n"
TICKER = """
import asyncio
async def run(context, input, every="0.2"):
    context.emit("ready", {"pid": "up"})
    n = 0
    while True:
        yield f"tick {n}\\n"
        context.logger.info(f"tick {n} sent")
        n += 1
        await asyncio.sleep(float(every))
"""


def open_console(address: str) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "si", "--hub", address, "hub", "console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()
    if not url:
        raise RuntimeError("si hub console printed no link")
    return process, url


def wait(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.02)
    raise RuntimeError("the page did not get there in time")


def measure(instances: int, loads: int) -> dict[str, Any]:
    with running_hub(Path(tempfile.mkdtemp(prefix="si-bench-console-")) / "home") as hub:
        with HubClient(hub.address) as client:
            sequence = client.send_sequence(python_package(IDLE))["id"]
            for _ in range(instances):
                client.start_sequence(sequence, {})
        line_bytes = watch_line_bytes(hub.address)
        assert hub.process is not None
        idle_cpu = hub_cpu_percent(hub.process.pid, hub.address, watchers=0)
        watched_cpu = hub_cpu_percent(hub.process.pid, hub.address, watchers=3)
        figures: dict[str, list[float]] = {"listed_ms": [], "first_render_ms": [], "update_ms": []}
        with chromium(1920, 1080) as driver:
            for _ in range(loads):
                console, url = open_console(hub.address)
                try:
                    driver.get(url)
                    wait(
                        lambda: (
                            driver.execute_script(
                                "return window.siConsole.firstListedMs !== undefined "
                                "&& document.querySelectorAll('tbody[data-rows] tr').length"
                            )
                            == instances
                        )
                    )
                    wait_for_update(driver)
                    page = driver.execute_script(
                        "const s = window.siConsole; return [s.firstListedMs, s.firstRenderMs, "
                        "s.lastRenderMs]"
                    )
                finally:
                    console.terminate()
                    console.wait(10)
                for key, value in zip(figures, page, strict=True):
                    figures[key].append(round(float(value), 1))
    result: dict[str, Any] = {
        "instances": instances,
        "loads": loads,
        "watch_line_bytes": line_bytes,
        "hub_cpu_idle_percent": idle_cpu,
        "hub_cpu_three_watchers_percent": watched_cpu,
    }
    for key, values in figures.items():
        result[key] = statistics.median(values)
        result[f"{key}_min"] = min(values)
        result[f"{key}_max"] = max(values)
    return result


def wait_for_update(driver: Any) -> None:
    """Until the list was updated once more from the feed (its update time is then known)."""
    renders = driver.execute_script("return window.siConsole.renders")
    wait(lambda: driver.execute_script("return window.siConsole.renders") > renders)


def hub_cpu_percent(pid: int, address: str, watchers: int, seconds: float = 10) -> float:
    """The hub's CPU use (% of one core) over ``seconds`` with ``watchers`` watch feeds open."""
    import threading

    import httpx

    stop = threading.Event()

    def watch() -> None:
        transport = httpx.HTTPTransport(uds=address)
        with (
            httpx.Client(transport=transport, base_url="http://si", timeout=None) as http,
            http.stream("GET", "/api/v1/watch") as feed,
        ):
            for _ in feed.iter_lines():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(watchers)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # every feed has sent its first line

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, start = cpu(), time.monotonic()
    time.sleep(seconds)
    used = cpu() - before
    percent = round(100 * used / (time.monotonic() - start), 1)
    stop.set()
    for thread in threads:
        thread.join(5)
    return percent


def watch_line_bytes(address: str) -> int:
    import httpx

    transport = httpx.HTTPTransport(uds=address)
    with (
        httpx.Client(transport=transport, base_url="http://si") as http,
        http.stream("GET", "/api/v1/watch") as feed,
    ):
        for line in feed.iter_lines():
            return len(line) + 1
    return 0


def screenshots(directory: Path) -> None:
    """One PNG per view, of a small hub doing something, at 1280 px and at 360 px."""
    directory.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="si-shots-"))
    package = work / "counter.tar.gz"
    with tarfile.open(package, "w:gz") as archive:
        for name in ("index.py", "package.json"):
            archive.add(ROOT / "examples" / "counter" / name, arcname=name)
    with running_hub(work / "home") as hub, HubClient(hub.address) as client:
        ticker = client.send_sequence(python_package(TICKER, name="ticker"))["id"]
        counter = client.send_sequence(package.read_bytes())["id"]
        first = client.start_sequence(ticker, {"args": ["0.2"], "outputTopic": "ticks"})["id"]
        client.start_sequence(ticker, {"args": ["0.5"], "restart": "on-failure"})
        client.start_sequence(counter, {"args": ["1", "20", "0"]})
        for _ in range(3):
            client.start_sequence(ticker, {"args": ["1"]})
        client.send_topic("orders", b'{"order":1}\n{"order":2}\n', "application/x-ndjson")
        console, url = open_console(hub.address)
        try:
            with chromium(1280, 800) as driver:
                driver.get(url)
                time.sleep(3)  # two lines of the feed: rates show
                driver.save_screenshot(str(directory / "instances.png"))
                driver.get(url.split("/console/")[0] + "/console/#/sequences")
                time.sleep(1.5)
                driver.execute_script(
                    "document.querySelector('button[data-act=start]').click();"
                    "document.querySelector('[data-start] [name=args]').value = '0.2';"
                    "document.activeElement.blur();"
                )
                time.sleep(0.3)
                driver.save_screenshot(str(directory / "sequences.png"))
                driver.get(url.split("/console/")[0] + f"/console/#/instance/{first}")
                time.sleep(3)
                driver.save_screenshot(str(directory / "instance.png"))
                driver.get(url.split("/console/")[0] + "/console/#/topics")
                time.sleep(1.5)
                driver.execute_script("document.querySelector('button[data-act=peek]').click()")
                time.sleep(2)
                driver.save_screenshot(str(directory / "topics.png"))
                driver.set_window_size(360, 740)
                driver.get(url.split("/console/")[0] + "/console/#/instances")
                time.sleep(2.5)
                driver.save_screenshot(str(directory / "instances-360.png"))
        finally:
            console.terminate()
            console.wait(10)
    for path in sorted(directory.glob("*.png")):
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--screenshots", type=Path, metavar="DIR")
    args = parser.parse_args()
    if args.screenshots is not None:
        screenshots(args.screenshots)
        return
    result = measure(args.instances, args.loads)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['instances']} instances, {result['loads']} page loads: "
        f"list on screen {result['listed_ms']} ms after navigation "
        f"({result['listed_ms_min']}-{result['listed_ms_max']}), "
        f"rows built in {result['first_render_ms']} ms, an update of every row "
        f"{result['update_ms']} ms; one watch line {result['watch_line_bytes'] / 1024:.0f} KiB; "
        f"hub CPU {result['hub_cpu_idle_percent']} % idle, "
        f"{result['hub_cpu_three_watchers_percent']} % with three pages watching"
    )


if __name__ == "__main__":
    main()
