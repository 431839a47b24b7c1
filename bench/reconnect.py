"""Hub restart to all instances re-adopted, and what the followers lost or saw twice.

For each instance count: start that many counters (100 lines/s each), follow every output
with the client's follow mode, kill -9 the hub, start it again, and time from "the hub accepts
requests" to "every instance is linked again" (GET /instances shows ``connected``). After the
restarts, the followers' numbers are checked: lost and duplicated lines must both be 0.

    python bench/reconnect.py [--instances 20 100] [--restarts 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from si.client import HubClient
from si.testing import HubProcess, python_package

COUNTER = """
import asyncio

async def run(context, input):
    n = 0
    while True:
        yield n
        n += 1
        await asyncio.sleep(0.01)
"""


class Follower(threading.Thread):
    def __init__(self, address: str, instance: str) -> None:
        super().__init__(daemon=True)
        self.client = HubClient(address, follow_timeout=60)
        self.instance = instance
        self.data = bytearray()

    def run(self) -> None:
        try:
            for chunk in self.client.stream(f"instance/{self.instance}/output", follow=True):
                self.data += chunk
        except Exception:
            pass

    def lost_and_duplicated(self) -> tuple[int, int]:
        numbers = [int(n) for n in self.data.split()]
        if not numbers:
            return 0, 0
        seen = set(numbers)
        duplicated = len(numbers) - len(seen)
        lost = (max(numbers) + 1) - len(seen)
        return lost, duplicated


def followed_counters(
    address: str, instances: int, followers_each: int
) -> tuple[list[str], list[Follower]]:
    """Start ``instances`` counters with ``followers_each`` followers each, reading."""
    client = HubClient(address)
    sequence = client.send_sequence(python_package(COUNTER))["id"]
    ids = [client.start_sequence(sequence, {})["id"] for _ in range(instances)]
    followers = [Follower(address, i) for i in ids for _ in range(followers_each)]
    for follower in followers:
        follower.start()
    return ids, followers


def until_all_linked(address: str, instances: int, since: float) -> float:
    """Milliseconds from ``since`` (a perf_counter) until every instance is linked again."""
    probe = HubClient(address)
    while True:
        listed = probe.list_instances()
        if len(listed) == instances and all(i.get("connected") for i in listed):
            return (time.perf_counter() - since) * 1000
        time.sleep(0.005)


def run_case(instances: int, restarts: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="si-bench-") as tmp:
        hub = HubProcess(Path(tmp) / "home").start()
        try:
            ids, followers = followed_counters(hub.address, instances, 1)
            time.sleep(1.0)
            timings = []
            for _ in range(restarts):
                hub.crash()
                hub.start()  # returns once the hub answers requests
                timings.append(until_all_linked(hub.address, instances, time.perf_counter()))
                time.sleep(1.0)
            for instance in ids:
                client = HubClient(hub.address)
                client.kill_instance(instance)
            for follower in followers:
                follower.join(30)
            losses = [f.lost_and_duplicated() for f in followers]
            return {
                "instances": instances,
                "restarts": restarts,
                "readopt_ms_median": round(statistics.median(timings), 1),
                "readopt_ms_max": round(max(timings), 1),
                "lines_lost": sum(lost for lost, _ in losses),
                "lines_duplicated": sum(dup for _, dup in losses),
                "lines_read": sum(len(f.data.split()) for f in followers),
            }
        finally:
            hub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    for count in options.instances:
        result = run_case(count, options.restarts)
        if options.json:
            print(json.dumps(result))
        else:
            print(
                f"{count:4d} instances: re-adopted in median {result['readopt_ms_median']} ms, "
                f"max {result['readopt_ms_max']} ms over {options.restarts} kill -9 restarts "
                f"(target < 1000); lines lost {result['lines_lost']}, duplicated "
                f"{result['lines_duplicated']} (of {result['lines_read']} read)"
            )


if __name__ == "__main__":
    main()
