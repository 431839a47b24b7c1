"""Restart policies against a real hub: real runners that crash, real backoff, one stream."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for
from tests.system.conftest import hub_http

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

# Each run says who it is and when it began, writes three numbered lines, then crashes.
CRASHER = """
import asyncio, os, time

async def run(context, input):
    yield f"run {os.getpid()} {time.time():.3f}\\n"
    for i in range(3):
        yield f"{os.getpid()} {i}\\n"
    await asyncio.sleep(0.05)
    raise RuntimeError("boom")
"""
# Runs until killed, counting; says who it is first.
STEADY = """
import asyncio, os

async def run(context, input):
    yield f"run {os.getpid()}\\n"
    n = 0
    while True:
        yield f"{os.getpid()} {n}\\n"
        n += 1
        await asyncio.sleep(0.01)
"""
DONE = """
async def run(context, input):
    yield "done\\n"
"""


def runs(text: str) -> list[tuple[str, list[str]]]:
    """The stream cut into runs: (the run's header, its lines), checking each run's lines are
    all its own, numbered from 0 with no gap or repeat."""
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("run "):
            found.append((line, []))
            continue
        assert found, f"a line before any run: {line!r}"
        header, lines = found[-1]
        pid, number = line.split()
        assert pid == header.split()[1], f"{line!r} inside the run of {header!r}"
        assert int(number) == len(lines), f"{line!r} after {len(lines)} lines"
        lines.append(line)
    return found


def test_a_crashing_sequence_restarts_with_backoff_then_ends_flapping(
    client: HubClient,
) -> None:
    sequence = client.send_sequence(python_package(CRASHER))["id"]
    instance = client.start_sequence(sequence, {"restart": "on-failure", "maxRestarts": 3})["id"]
    output = b"".join(client.instance_stream(instance, "output")).decode()

    every = runs(output)
    assert len(every) == 4  # the first run and three restarts, in one stream
    assert all(len(lines) == 3 for _, lines in every)
    assert len({header.split()[1] for header, _ in every}) == 4  # four processes
    # Each restart waited at least its backoff (0.1, 0.2, 0.4 s) after the crash before it.
    began = [float(header.split()[2]) for header, _ in every]
    for n, (before, after) in enumerate(itertools.pairwise(began)):
        assert after - before >= 0.05 + 0.1 * 2**n

    record = wait_for(lambda: (r := client.get_instance(instance))["status"] == "errored" and r)
    assert record["terminated"] == {"exitcode": 23, "reason": "flapping"}
    assert record["restarts"] == 3
    assert record["restartPolicy"] == {
        "restart": "on-failure",
        "maxRestarts": 3,
        "restartWindow": 60,
    }
    last = record["lastExit"]
    assert (last["code"], last["signal"]) == (23, None)
    assert last["reason"] == "Sequence failed during execution"


def test_on_failure_leaves_a_completed_run_and_always_restarts_it(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(DONE))["id"]
    once = client.start_sequence(sequence, {"restart": "on-failure"})["id"]
    again = client.start_sequence(sequence, {"restart": "always", "maxRestarts": 2})["id"]

    assert b"".join(client.instance_stream(once, "output")) == b"done\n"
    assert b"".join(client.instance_stream(again, "output")) == b"done\n" * 3
    first = wait_for(lambda: (r := client.get_instance(once))["status"] == "completed" and r)
    assert first["restarts"] == 0
    second = wait_for(lambda: (r := client.get_instance(again))["status"] == "errored" and r)
    assert (second["restarts"], second["terminated"]["reason"]) == (2, "flapping")


def test_a_runner_killed_from_outside_is_restarted_and_a_user_kill_is_not(
    hub: HubProcess, client: HubClient
) -> None:
    sequence = client.send_sequence(python_package(STEADY))["id"]
    instance = client.start_sequence(sequence, {"restart": "on-failure"})["id"]
    first = wait_for(lambda: hub.runner_identities().get(instance))
    os.kill(first.pid, signal.SIGKILL)

    record = wait_for(
        lambda: (
            (r := client.get_instance(instance))["restarts"] == 1 and r["status"] == "running" and r
        )
    )
    assert record["pid"] != first.pid
    assert record["lastExit"]["signal"] == "SIGKILL"
    assert record["lastExit"]["code"] == 137

    client.kill_instance(instance)
    ended = wait_for(lambda: (r := client.get_instance(instance))["status"] == "completed" and r)
    assert ended["restarts"] == 1
    time.sleep(0.5)  # past the first backoff: nothing restarts it
    assert client.get_instance(instance)["status"] == "completed"


def test_a_stop_during_the_backoff_ends_the_instance_there(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(CRASHER))["id"]
    payload = {"restart": "always", "maxRestarts": 10}
    instance = client.start_sequence(sequence, payload)["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "restarting")
    client.stop_instance(instance, 0, False)
    record = client.get_instance(instance)
    assert record["status"] == "completed"
    assert record["terminated"] == {"exitcode": 138, "reason": "Instance stopped"}


def test_a_kill_during_the_backoff_ends_the_instance_there(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(CRASHER))["id"]
    payload = {"restart": "always", "maxRestarts": 10}
    instance = client.start_sequence(sequence, payload)["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "restarting")
    client.kill_instance(instance)
    record = wait_for(lambda: (r := client.get_instance(instance))["status"] == "completed" and r)
    assert record["terminated"] == {"exitcode": 137, "reason": "Instance killed"}
    time.sleep(0.5)
    assert client.get_instance(instance)["status"] == "completed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("restart", "sometimes"), ("maxRestarts", -1), ("restartWindow", "soon")],
)
def test_a_bad_policy_is_refused_and_nothing_starts(
    client: HubClient, field: str, value: object
) -> None:
    sequence = client.send_sequence(python_package(DONE))["id"]
    with pytest.raises(HubError) as refused:
        client.start_sequence(sequence, {field: value})
    assert refused.value.status == 400
    assert field in str(refused.value)
    assert client.list_instances() == []


def follow(client: HubClient, instance: str, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        for chunk in client.instance_stream(instance, "output"):
            into.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def record_when(client: HubClient, instance: str, status: str, restarts: int) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (r := client.get_instance(instance))["status"] == status
            and r["restarts"] == restarts
            and r
        )
    )


def test_one_stream_over_a_restart_and_a_hub_crash(hub: HubProcess, client: HubClient) -> None:
    """A follower reads across a runner crash, its restart, and a hub crash while the new
    runner writes: every run's lines, in order, none twice."""
    sequence = client.send_sequence(python_package(STEADY))["id"]
    payload = {"restart": "on-failure", "maxRestarts": 10}
    instance = client.start_sequence(sequence, payload)["id"]
    chunks: list[bytes] = []
    reader = follow(client, instance, chunks)
    wait_for(lambda: b"".join(chunks).count(b"\n") > 20)

    os.kill(hub.runner_identities()[instance].pid, signal.SIGKILL)
    record_when(client, instance, "running", 1)
    wait_for(lambda: b"".join(chunks).count(b"run ") == 2)
    hub.crash()
    time.sleep(0.2)  # the restarted runner goes on writing while no hub reads
    hub.start()
    count = b"".join(chunks).count(b"\n")
    wait_for(lambda: b"".join(chunks).count(b"\n") > count + 30)

    client.kill_instance(instance)
    reader.join(10)
    assert not reader.is_alive()
    every = runs(b"".join(chunks).decode())
    assert len(every) == 2
    assert all(len(lines) >= 20 for _, lines in every), [len(lines) for _, lines in every]


def test_a_runner_that_dies_while_no_hub_watches_is_restarted_by_the_next(
    hub: HubProcess, client: HubClient
) -> None:
    sequence = client.send_sequence(python_package(STEADY))["id"]
    instance = client.start_sequence(sequence, {"restart": "on-failure"})["id"]
    before = next(client.instance_stream(instance, "output", follow=False))
    assert before.startswith(b"run ")
    hub.crash()
    os.kill(hub.runner_identities()[instance].pid, signal.SIGKILL)
    time.sleep(0.1)
    hub.start()
    record = record_when(client, instance, "running", 1)
    assert (record["lastExit"]["code"], record["lastExit"]["signal"]) == (137, "SIGKILL")
    # What the dead runner wrote while no hub read is gone with it; the new run's offsets
    # start past every offset a reader was given, so a reader resuming is told of the gap.
    with (
        hub_http(hub) as http,
        http.stream(
            "GET", f"/instance/{instance}/output", headers={"x-si-offset": "0"}, timeout=10
        ) as reply,
    ):
        assert reply.status_code == 200
        assert int(reply.headers["x-si-offset"]) >= 64 << 20
        assert next(reply.iter_bytes()).startswith(b"run ")


def test_a_pending_restart_survives_a_hub_restart(hub: HubProcess, client: HubClient) -> None:
    sequence = client.send_sequence(python_package(CRASHER))["id"]
    payload = {"restart": "on-failure", "maxRestarts": 2}
    instance = client.start_sequence(sequence, payload)["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "restarting")
    hub.crash()
    hub.start()
    output = b"".join(client.instance_stream(instance, "output")).decode()
    # Whatever the first hub had read of it, the stream from offset 0 is all three runs.
    every = runs(output)
    assert len(every) == 3
    assert all(len(lines) == 3 for _, lines in every)
    record = wait_for(lambda: (r := client.get_instance(instance))["status"] == "errored" and r)
    assert (record["restarts"], record["terminated"]["reason"]) == (2, "flapping")


def test_after_a_reboot_only_instances_with_a_policy_start_again(
    hub: HubProcess, client: HubClient
) -> None:
    sequence = client.send_sequence(python_package(STEADY))["id"]
    kept = client.start_sequence(sequence, {"restart": "always"})["id"]
    failing = client.start_sequence(sequence, {"restart": "on-failure"})["id"]
    plain = client.start_sequence(sequence, {})["id"]
    for instance in (kept, failing, plain):
        assert next(client.instance_stream(instance, "output")).startswith(b"run ")
    args_before = client.get_instance(kept)["args"]

    # A reboot: every process gone, the keeper's records with them, the boot id new. The
    # records are given another boot id, as the machine's would differ after one.
    hub.stop()
    hub.kill_runners()
    for directory in (hub.home / "instances").iterdir():
        (directory / "wait.json").unlink(missing_ok=True)
        runner = directory / "runner.json"
        body = json.loads(runner.read_text())
        body["boot_id"] = "0" * 32
        runner.write_text(json.dumps(body))
    hub.start()

    for instance in (kept, failing):
        record = record_when(client, instance, "running", 1)
        assert record["lastExit"]["reason"] == "Instance lost: the machine rebooted"
        assert record["args"] == args_before
    lost = client.get_instance(plain)
    assert lost["status"] == "lost"
    assert lost["terminated"]["reason"] == "Instance lost: the machine rebooted"


def test_a_restarted_instance_keeps_feeding_its_topic(hub: HubProcess, client: HubClient) -> None:
    sequence = client.send_sequence(python_package(CRASHER))["id"]
    payload = {"restart": "on-failure", "maxRestarts": 1, "outputTopic": "crashes"}
    instance = client.start_sequence(sequence, payload)["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "errored")
    topic = client.topic_stream("crashes", "application/x-ndjson", follow=False)
    text = b""
    for chunk in topic:
        text += chunk
        if text.count(b"\n") >= 8:
            break
    every = runs(text.decode())
    assert len(every) == 2
    assert all(len(lines) == 3 for _, lines in every)


def test_kill_on_exit_ends_an_instance_waiting_for_its_restart(home: Path) -> None:
    hub = HubProcess(home, "--kill-on-exit").start()
    try:
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(CRASHER))["id"]
        payload = {"restart": "always", "maxRestarts": 20}
        instance = client.start_sequence(sequence, payload)["id"]
        wait_for(lambda: client.get_instance(instance)["status"] == "restarting")
        hub.stop()
        hub.start()
        record = client.get_instance(instance)
        assert record["status"] == "completed"
        time.sleep(0.5)  # past any backoff: nothing started it again
        assert client.get_instance(instance)["status"] == "completed"
    finally:
        hub.close()
