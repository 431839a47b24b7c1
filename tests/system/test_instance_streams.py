"""stdout, stderr, log, health and events of real instances through a real hub."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for

pytestmark = pytest.mark.system

CHATTY = """
import asyncio, sys

async def run(context, input, count, delay):
    for n in range(int(count)):
        print(f"out {n}")
        print(f"err {n}", file=sys.stderr)
        context.logger.info("log %d", n)
        await asyncio.sleep(float(delay))
    return None
"""

EVENTS = """
import asyncio

async def run(context, input):
    def reply(message):
        context.emit("reply", f"reply to {message}")
    context.on("ping", reply)
    context.set_health_check(lambda: {"healthy": True, "mood": "fine"})
    while True:
        await asyncio.sleep(0.05)
"""


def read(client: HubClient, path: str) -> bytes:
    return b"".join(client.stream(path, follow=False))


def test_stdout_stderr_and_log_replay_history_then_end_with_the_instance(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(CHATTY))["id"]
    instance = client.start_sequence(sequence, {"args": ["5", "0.01"]})["id"]
    stdout = read(client, f"instance/{instance}/stdout").decode().splitlines()
    assert stdout == [f"out {n}" for n in range(5)]
    stderr = read(client, f"instance/{instance}/stderr").decode().splitlines()
    assert stderr == [f"err {n}" for n in range(5)]
    log = [json.loads(line) for line in read(client, f"instance/{instance}/log").splitlines()]
    assert [entry["msg"] for entry in log] == [f"log {n}" for n in range(5)]
    assert {entry["level"] for entry in log} == {"INFO"}
    tail = read(client, f"instance/{instance}/log?tail=2").splitlines()
    assert [json.loads(line)["msg"] for line in tail] == ["log 3", "log 4"]


def test_log_follower_survives_a_hub_crash(client: HubClient, hub: HubProcess) -> None:
    sequence = client.send_sequence(python_package(CHATTY))["id"]
    instance = client.start_sequence(sequence, {"args": ["150", "0.01"]})["id"]
    received = bytearray()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for chunk in HubClient(hub.address, follow_timeout=30).stream(
                f"instance/{instance}/log"
            ):
                received.extend(chunk)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    wait_for(lambda: received.count(b"\n") >= 20)
    hub.crash()
    hub.start()
    thread.join(30)
    assert not errors
    messages = [json.loads(line)["msg"] for line in bytes(received).splitlines()]
    assert messages == [f"log {n}" for n in range(150)]


def test_log_rotation_keeps_a_gap_free_tail(hub: HubProcess, client: HubClient) -> None:
    source = (
        "def run(context, input):\n"
        "    for n in range(20000):\n"
        "        context.logger.info('%06d', n)\n"
    )
    sequence = client.send_sequence(python_package(source))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "completed")
    segments = sorted((hub.home / "instances" / instance / "log").iterdir())
    assert 2 <= len(segments) <= 5  # rotated at 1 MiB, five kept
    numbers = [
        int(json.loads(line)["msg"])
        for line in read(client, f"instance/{instance}/log").splitlines()
    ]
    assert numbers == list(range(numbers[0], 20000))


def test_events_both_ways_and_health(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(EVENTS))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    reply: list[object] = []
    waiter = threading.Thread(
        target=lambda: reply.append(client._request("GET", f"instance/{instance}/once/reply")),
        daemon=True,
    )
    waiter.start()

    def ping() -> list[object]:
        # Sent until the waiter has its answer: a ping before it asked is not "the next".
        answer = client._request(
            "POST",
            f"instance/{instance}/_event",
            json=[5001, {"eventName": "ping", "message": "hello"}],
        )
        assert answer == {"accepted": "OK"}
        waiter.join(0.1)
        return reply

    assert wait_for(ping) == ["reply to hello"]
    assert client._request("GET", f"instance/{instance}/event/reply") == "reply to hello"
    health = wait_for(
        lambda: (h := client._request("GET", f"instance/{instance}/health")).get("mood") and h
    )
    assert health["healthy"] is True
    assert health["processId"] == client.get_instance(instance)["pid"]


def test_events_travel_between_instances(client: HubClient) -> None:
    listener = """
import asyncio

async def run(context, input):
    context.on("news", lambda message: context.emit("heard", message))
    while True:
        await asyncio.sleep(0.05)
"""
    speaker = """
import asyncio

async def run(context, input):
    await asyncio.sleep(0.5)
    context.emit("news", "from the speaker")
    while True:
        await asyncio.sleep(0.05)
"""
    listening = client.start_sequence(client.send_sequence(python_package(listener))["id"], {})[
        "id"
    ]
    heard: list[object] = []
    waiter = threading.Thread(
        target=lambda: heard.append(client._request("GET", f"instance/{listening}/once/heard")),
        daemon=True,
    )
    waiter.start()
    client.start_sequence(client.send_sequence(python_package(speaker))["id"], {})
    waiter.join(10)
    assert heard == ["from the speaker"]


def test_hub_level_endpoints(client: HubClient) -> None:
    load = client._request("GET", "load-check")
    assert {"avgLoad", "currentLoad", "memFree", "memUsed", "fsSize"} <= set(load)
    assert client._request("GET", "status") == {"cpm": {}}
    sequence = client.send_sequence(python_package("def run(context, input):\n    return ['a']\n"))[
        "id"
    ]
    entities = client._request("GET", "entities")
    assert [s["id"] for s in entities["sequences"]] == [sequence]
    assert entities["instances"] == []


def test_put_replaces_a_package_and_keeps_the_id(client: HubClient) -> None:
    sequence = client.send_sequence(
        python_package("def run(context, input):\n    return ['old\\n']\n")
    )["id"]
    new_package = python_package(
        "def run(context, input):\n    return ['new\\n']\n", name="renewed"
    )
    answer = client._request(
        "PUT",
        f"sequence/{sequence}",
        content=new_package,
        headers={"content-type": "application/octet-stream"},
    )
    assert answer == {"id": sequence}
    assert client.get_sequence(sequence)["config"]["name"] == "renewed"
    instance = client.start_sequence(sequence, {})["id"]
    assert read(client, f"instance/{instance}/output") == b"new\n"


def test_event_stream_and_monitoring_rate(client: HubClient) -> None:
    source = """
import asyncio

async def run(context, input):
    for n in range(3):
        await asyncio.sleep(0.3)
        context.emit("tick", {"n": n})
    while True:
        await asyncio.sleep(0.05)
"""
    instance = client.start_sequence(client.send_sequence(python_package(source))["id"], {})["id"]
    received = bytearray()
    for chunk in client.stream(f"instance/{instance}/events/tick", follow=False):
        received += chunk
        if received.count(b"\n") >= 3:
            break
    assert [json.loads(line) for line in received.splitlines()] == [{"n": 0}, {"n": 1}, {"n": 2}]
    accepted = client._request(
        "POST", f"instance/{instance}/_monitoring_rate", json=[4003, {"monitoringRate": 10}]
    )
    assert accepted == {"accepted": True}
    with pytest.raises(HubError, match="monitoringRate"):
        client._request("POST", f"instance/{instance}/_monitoring_rate", json=[4003, {}])


ECHO_LINES = """
async def run(context, input):
    async for line in input:
        yield line
"""


@pytest.mark.timeout(30)
def test_an_inout_body_that_fails_ends_the_call_with_that_error(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(ECHO_LINES))["id"]
    instance = client.start_sequence(sequence, {})["id"]

    def body() -> Iterator[bytes]:
        yield b"one\n"
        raise OSError(5, "Input/output error")

    seen: list[bytes] = []
    answer = client.inout(instance, body(), content_type="text/plain")
    with pytest.raises(HubError, match="cannot read the input: Input/output error"):
        seen.extend(answer)
    assert b"".join(seen) in (b"", b"one\n")
    # The instance and the hub are unharmed: the next call is answered.
    assert client.get_instance(instance)["id"] == instance
