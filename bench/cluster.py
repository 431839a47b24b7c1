"""Cluster topics (issue 19): a cross-hub topic's rate beside a local topic's, and the pause a
consumer sees while the NATS node its producer publishes through is killed.

    python bench/cluster.py [--messages 100000] [--json]

Starts a real 3-node NATS cluster on loopback and two hubs. Rates are 1 -> 1 between instances
(a producer sequence emitting 100 B lines as fast as it can, a consumer sequence counting them):
on one hub through a local topic, then from hub a to hub b through a cluster topic. Time runs
from the producer's start to the consumer's last line, so the producer's start (~20 ms) is in
both. The pause: a producer emits a numbered line every 2 ms; the NATS node its hub publishes
through is killed with SIGKILL; the figure is the longest gap between two lines arriving at the
consumer on the other hub (and it checks that none is missing or repeated).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from si.client import HubClient
from si.testing import HubProcess, NatsCluster, python_package, wait_for

FLOOD = """
async def run(context, input, total, size):
    line = "x" * (int(size) - 1) + "\\n"
    async def lines():
        for _ in range(int(total)):
            yield line
    return lines()
"""

COUNT = """
import time

async def run(context, input, total, path):
    seen = 0
    async for item in input:
        text = item.decode() if isinstance(item, bytes) else str(item)
        seen += text.count("\\n") or 1
        if seen >= int(total):
            break
    with open(path, "w") as out:
        out.write(repr(time.time()))
"""

TICKS = """
import asyncio

async def run(context, input, total):
    async def ticks():
        for n in range(int(total)):
            yield f"{n}\\n"
            await asyncio.sleep(0.002)
    return ticks()
"""

ARRIVALS = """
import time

async def run(context, input, path):
    with open(path, "a") as out:
        async for item in input:
            text = item.decode() if isinstance(item, bytes) else str(item)
            now = time.time()
            for line in text.splitlines():
                out.write(f"{now!r} {line}\\n")
            out.flush()
"""


def rate(producer: HubClient, consumer: HubClient, topic: str, messages: int, work: Path) -> float:
    done = work / f"done-{topic}"
    counter = consumer.send_sequence(python_package(COUNT))["id"]
    consumer.start_sequence(counter, {"args": [str(messages), str(done)], "inputTopic": topic})
    time.sleep(0.5)  # the consumer attached
    flood = producer.send_sequence(python_package(FLOOD))["id"]
    began = time.time()
    producer.start_sequence(flood, {"args": [str(messages), "100"], "outputTopic": topic})
    wait_for(lambda: done.exists() and done.read_text(), timeout=600, interval=0.05)
    return messages / (float(done.read_text()) - began)


def pause(
    a: HubClient, b: HubClient, nats: NatsCluster, work: Path, total: int = 3000
) -> tuple[float, bool]:
    arrivals = work / "arrivals"
    a.create_topic("ticks", "text/plain", cluster=True)
    consumer = b.send_sequence(python_package(ARRIVALS))["id"]
    b.start_sequence(consumer, {"args": [str(arrivals)], "inputTopic": "ticks"})
    time.sleep(0.5)
    producer = a.send_sequence(python_package(TICKS))["id"]
    a.start_sequence(producer, {"args": [str(total)], "outputTopic": "ticks"})
    wait_for(lambda: arrivals.exists() and arrivals.read_text().count("\n") > total // 4, 30)
    server = a.cluster_status()["server"]
    next(node for node in nats.nodes if node.url == server).kill()

    def lines() -> list[tuple[float, int]]:
        return [
            (float(t), int(n))
            for t, n in (x.split() for x in arrivals.read_text().split("\n") if x)
        ]

    wait_for(lambda: len(lines()) >= total, timeout=120, interval=0.1)
    got = lines()
    exact = [n for _, n in got] == list(range(total))
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(got)]
    return max(gaps), exact


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="si-bc-", dir="/tmp") as tmp:
        work = Path(tmp)
        nats = NatsCluster(work / "nats").start()
        hubs = [
            HubProcess(work / name, "--nats", nats.url_list, "--hub-name", name)
            for name in ("a", "b")
        ]
        try:
            for hub in hubs:
                hub.start()
            with HubClient(hubs[0].address) as a, HubClient(hubs[1].address) as b:
                wait_for(
                    lambda: a.cluster_status()["connected"] and b.cluster_status()["connected"]
                )
                a.create_topic("local-nums", "text/plain", cluster=False)
                local = rate(a, a, "local-nums", options.messages, work)
                a.create_topic("nums", "text/plain", cluster=True)
                cross = rate(a, b, "nums", options.messages, work)
                gap, exact = pause(a, b, nats, work)
        finally:
            for hub in hubs:
                hub.close()
            nats.close()
    figures = {
        "messages": options.messages,
        "message_bytes": 100,
        "local_messages_per_s": round(local),
        "cross_hub_messages_per_s": round(cross),
        "nats_node_kill_pause_s": round(gap, 3),
        "nats_node_kill_exact": exact,
    }
    if options.json:
        print(json.dumps(figures))
    else:
        print(f"local topic, 1 -> 1, 100 B:      {local:12,.0f} msg/s")
        print(f"cross-hub topic, 1 -> 1, 100 B:  {cross:12,.0f} msg/s")
        print(f"consumer pause, NATS node killed: {gap:10.3f} s (every message once: {exact})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
