"""Cluster topics: a producer instance on one hub and a consumer instance on another see every
message once, in order, through kill -9 of either hub and of one NATS node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from si.client import HubClient
from si.testing import HubProcess, NatsCluster, python_package, wait_for
from tests.cluster.conftest import MakeHub, json_out

pytestmark = pytest.mark.system

PRODUCER = """
import asyncio

async def run(context, input, total, pause):
    async def numbers():
        for n in range(int(total)):
            yield f"{n}\\n"
            if n % 20 == 0:
                await asyncio.sleep(float(pause))
    return numbers()
"""

# Writes what reaches it to a file: the record survives its hub's crash, unlike a follower.
CONSUMER = """
async def run(context, input, path):
    with open(path, "a") as out:
        async for item in input:
            text = item.decode() if isinstance(item, bytes) else str(item)
            for line in text.splitlines():
                out.write(line + "\\n")
            out.flush()
"""
TOTAL = 1500


def _received(path: Path) -> list[int]:
    return [int(n) for n in path.read_text().split()] if path.exists() else []


def _start_pair(
    producer_hub: HubProcess, consumer_hub: HubProcess, out: Path, total: int = TOTAL
) -> None:
    with HubClient(producer_hub.address) as on_a, HubClient(consumer_hub.address) as on_b:
        consumer = on_b.send_sequence(python_package(CONSUMER))["id"]
        on_b.start_sequence(consumer, {"args": [str(out)], "inputTopic": "nums"})
        producer = on_a.send_sequence(python_package(PRODUCER))["id"]
        on_a.start_sequence(producer, {"args": [str(total), "0.02"], "outputTopic": "nums"})


def _all_arrive(out: Path, total: int = TOTAL) -> None:
    try:
        wait_for(lambda: len(_received(out)) >= total, timeout=60, interval=0.1)
    finally:
        got = _received(out)
    assert got == list(range(total)), (len(got), _first_wrong(got))


def _first_wrong(got: list[int]) -> Any:
    for index, value in enumerate(got):
        if value != index:
            return index, got[max(0, index - 3) : index + 3]
    return None


RunSi = Callable[..., Any]


def test_a_cluster_topic_carries_an_instance_on_one_hub_to_an_instance_on_another(
    make_hub: MakeHub, run_si: RunSi, short_dir: Path
) -> None:
    a, b = make_hub("a"), make_hub("b")
    created = json_out(run_si(a, "topic", "create", "nums", "-t", "text/plain", "--cluster"))
    assert created["cluster"] is True
    out = short_dir / "got.txt"
    _start_pair(a, b, out, total=500)
    _all_arrive(out, 500)
    with HubClient(b.address) as on_b:
        assert "nums" not in [t["topic"] for t in on_b.list_topics()]  # not a local topic


@pytest.mark.parametrize("crashed", ["producer", "consumer"])
def test_nothing_is_lost_or_repeated_through_kill_9_of_either_hub(
    make_hub: MakeHub, short_dir: Path, crashed: str
) -> None:
    a, b = make_hub("a"), make_hub("b")
    with HubClient(a.address) as on_a:
        on_a.create_topic("nums", "text/plain", cluster=True)
    out = short_dir / "got.txt"
    _start_pair(a, b, out)
    wait_for(lambda: len(_received(out)) >= 300, timeout=30)
    victim = a if crashed == "producer" else b
    victim.crash()
    assert len(_received(out)) < TOTAL  # the crash was mid-stream
    victim.start()
    _all_arrive(out)


def test_nothing_is_lost_or_repeated_through_kill_9_of_a_nats_node(
    make_hub: MakeHub, nats_cluster: NatsCluster, short_dir: Path
) -> None:
    a, b = make_hub("a"), make_hub("b")
    with HubClient(a.address) as on_a:
        on_a.create_topic("nums", "text/plain", cluster=True)
        server = on_a.cluster_status()["server"]
    out = short_dir / "got.txt"
    _start_pair(a, b, out)
    wait_for(lambda: len(_received(out)) >= 300, timeout=30)
    # The node the producer's hub publishes through.
    node = next(n for n in nats_cluster.nodes if n.url == server)
    node.kill()
    assert len(_received(out)) < TOTAL
    _all_arrive(out)
