"""Memory limits against a real hub: a leaking sequence is killed within a second of its limit."""

from __future__ import annotations

import datetime

import pytest

from si.client import HubClient, HubError
from si.testing import python_package, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

# Grows by 4 MiB every 50 ms, saying when and how large it is after each step.
LEAKER = """
import asyncio, os, time

PAGE = os.sysconf("SC_PAGE_SIZE")

async def run(context, input):
    hoard = []
    while True:
        hoard.append(b"x" * (4 << 20))
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * PAGE
        yield f"{time.time():.3f} {rss}\\n"
        await asyncio.sleep(0.05)
"""
SMALL = """
import asyncio

async def run(context, input):
    yield "small\\n"
    await asyncio.sleep(30)
"""
LIMIT_MIB = 64


def parse_iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_leaking_sequence_is_killed_within_a_second_of_its_limit(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(LEAKER))["id"]
    instance = client.start_sequence(sequence, {"limits": {"memory": LIMIT_MIB}})["id"]
    output = b"".join(client.instance_stream(instance, "output")).decode()
    record = wait_for(lambda: (r := client.get_instance(instance))["status"] == "errored" and r)

    assert record["terminated"]["reason"].startswith("memory-limit: RSS ")
    assert record["terminated"]["reason"].endswith(f"over the {LIMIT_MIB} MiB limit")
    assert record["lastExit"]["signal"] == "SIGKILL"
    assert record["limits"] == {"memory": LIMIT_MIB, "enforcedBy": "rss-watchdog"}
    samples = [(float(t), int(rss)) for t, rss in (line.split() for line in output.splitlines())]
    crossed = next(t for t, rss in samples if rss > LIMIT_MIB << 20)
    assert parse_iso(record["lastExit"]["at"]) - crossed < 1.0
    assert samples[-1][1] < (LIMIT_MIB + 64) << 20  # it did not get far past it


def test_a_limit_breach_is_a_failure_the_restart_policy_restarts(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(LEAKER))["id"]
    payload = {"limits": {"memory": LIMIT_MIB}, "restart": "on-failure", "maxRestarts": 1}
    instance = client.start_sequence(sequence, payload)["id"]
    record = wait_for(
        lambda: (r := client.get_instance(instance))["status"] == "errored" and r, timeout=30
    )
    assert record["restarts"] == 1
    assert record["terminated"]["reason"] == "flapping"
    assert record["lastExit"]["reason"].startswith("memory-limit")


def test_an_instance_within_its_limit_runs_on(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(SMALL))["id"]
    payload = {"limits": {"memory": 256, "cpu": 0.5}}
    instance = client.start_sequence(sequence, payload)["id"]
    assert next(client.instance_stream(instance, "output")) == b"small\n"
    record = client.get_instance(instance)
    assert record["status"] == "running"
    assert record["limits"] == {
        "memory": 256,
        "enforcedBy": "rss-watchdog",
        "cpu": 0.5,
        "cpuEnforced": False,
    }
    client.kill_instance(instance)


@pytest.mark.parametrize("limits", [{"memory": -1}, {"memory": "64"}, {"cpu": 0}, []])
def test_bad_limits_are_refused(client: HubClient, limits: object) -> None:
    sequence = client.send_sequence(python_package(SMALL))["id"]
    with pytest.raises(HubError) as refused:
        client.start_sequence(sequence, {"limits": limits})
    assert refused.value.status == 400
    assert "limits" in str(refused.value)
    assert client.list_instances() == []


def test_sth_s_empty_limits_mean_none(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(SMALL))["id"]
    instance = client.start_sequence(sequence, {"limits": {}})["id"]
    assert "limits" not in client.get_instance(instance)
    client.kill_instance(instance)
