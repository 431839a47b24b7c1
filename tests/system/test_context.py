"""The Python AppContext and the instance lifecycle around it, through a real hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for

pytestmark = pytest.mark.system


def output(client: HubClient, instance: str) -> bytes:
    return b"".join(client.stream(f"instance/{instance}/output", follow=False))


def test_config_instance_id_and_logger_levels(client: HubClient) -> None:
    source = """
def run(context, input):
    context.logger.debug("d")
    context.logger.warning("w")
    context.logger.critical("c")
    return [{"config": context.config, "id": context.instance_id}]
"""
    sequence = client.send_sequence(python_package(source))["id"]
    instance = client.start_sequence(sequence, {"appConfig": {"answer": 42}})["id"]
    assert json.loads(output(client, instance)) == {"config": {"answer": 42}, "id": instance}
    log = b"".join(client.stream(f"instance/{instance}/log", follow=False)).splitlines()
    assert [json.loads(line)["level"] for line in log] == ["DEBUG", "WARN", "FATAL"]


STOPPABLE = """
import asyncio

async def run(context, input):
    async def on_stop(timeout, can_keep_alive):
        context.logger.info(f"stop {timeout} {can_keep_alive}")
        if can_keep_alive:
            await context.keep_alive(0)
    context.set_stop_handler(on_stop)
    while True:
        await asyncio.sleep(0.05)
"""


def test_stop_runs_the_handler_with_seconds_and_ends_completed(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(STOPPABLE))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    client.stop_instance(instance, 1500, can_call_keepalive=False)
    info = wait_for(lambda: (i := client.get_instance(instance))["status"] == "completed" and i)
    assert info["terminated"] == {"exitcode": 138, "reason": "Instance stopped"}
    log = b"".join(client.stream(f"instance/{instance}/log", follow=False)).splitlines()
    assert json.loads(log[-1])["msg"] == "stop 1.5 False"


def test_keep_alive_during_stop_keeps_the_instance_running(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(STOPPABLE))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    reply = client.stop_instance(instance, 500, can_call_keepalive=True)
    assert reply["id"] == instance
    time.sleep(1.0)
    assert client.get_instance(instance)["status"] == "stopping"  # alive, as STH keeps it
    client.kill_instance(instance)
    wait_for(lambda: client.get_instance(instance)["status"] == "completed")


def test_kill_with_remove_immediately_drops_the_record(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(STOPPABLE))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    client.kill_instance(instance, remove_immediately=True)

    def gone() -> bool:
        try:
            client.get_instance(instance)
        except HubError as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=5)
    assert instance not in client.get_sequence(sequence)["instances"]


def test_a_finished_instance_stays_readable_for_the_retention_period(home: Path) -> None:
    hub = HubProcess(home, "--retention", "1.5").start()
    try:
        client = HubClient(hub.address)
        source = "def run(context, input):\n    print('bye')\n    return ['done\\n']\n"
        sequence = client.send_sequence(python_package(source))["id"]
        instance = client.start_sequence(sequence, {})["id"]
        wait_for(lambda: client.get_instance(instance)["status"] == "completed")
        assert output(client, instance) == b"done\n"
        assert b"".join(client.stream(f"instance/{instance}/stdout", follow=False)) == b"bye\n"
        assert client.get_instance(instance)["terminated"]["exitcode"] == 0
        ended = time.monotonic()
        wait_for(lambda: not client.list_instances(), timeout=10)
        assert time.monotonic() - ended > 0.5
        assert not (home / "instances" / instance).exists()
    finally:
        hub.close()


def test_an_exception_while_running_ends_errored_with_the_traceback_on_stderr(
    client: HubClient,
) -> None:
    source = (
        "async def run(context, input):\n    yield 1\n    raise ValueError('broken on purpose')\n"
    )
    sequence = client.send_sequence(python_package(source))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    info = wait_for(lambda: (i := client.get_instance(instance))["status"] == "errored" and i)
    assert info["terminated"] == {"exitcode": 23, "reason": "Sequence failed during execution"}
    stderr = b"".join(client.stream(f"instance/{instance}/stderr", follow=False))
    assert b"ValueError: broken on purpose" in stderr
    assert output(client, instance) == b"1\n"
