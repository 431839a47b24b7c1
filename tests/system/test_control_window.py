"""Messages to a runner that does not read them are bounded by its control window."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

ECHO_LAST = """
import asyncio

async def run(context, input):
    context.on("ping", lambda message: context.emit("pong", message[:16]))
    while True:
        await asyncio.sleep(0.05)
"""
MESSAGE = "x" * 60_000  # a 1 MiB window holds about seventeen of these


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_events_to_a_stopped_runner_are_refused_once_its_window_is_full(
    hub: HubProcess, client: HubClient
) -> None:
    sequence = client.send_sequence(python_package(ECHO_LAST))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "running")
    runner = hub.runner_identities()[instance].pid
    assert hub.process is not None
    os.kill(runner, signal.SIGSTOP)
    try:
        accepted, refusal = 0, None
        for _ in range(200):
            try:
                client.emit_event(instance, "ping", MESSAGE)
            except HubError as error:
                refusal = error
                break
            accepted += 1
        assert refusal is not None
        assert refusal.status == 503
        assert "not reading its control messages" in str(refusal)
        assert 10 <= accepted <= 20
        # Refused messages are not held: another 200 tries leave the hub's memory as it was.
        before = rss_kib(hub.process.pid)
        for _ in range(200):
            with pytest.raises(HubError):
                client.emit_event(instance, "ping", MESSAGE)
        assert rss_kib(hub.process.pid) - before < 4096
    finally:
        os.kill(runner, signal.SIGCONT)

    def accepted_again() -> bool:
        try:
            client.emit_event(instance, "ping", "after " + MESSAGE)
        except HubError as error:
            if error.status != 503:
                raise
            return False
        return True

    wait_for(accepted_again)
    assert wait_for(lambda: client.get_event(instance, "pong") == "after xxxxxxxxxx")
    client.stop_instance(instance, 1000)
    wait_for(lambda: client.get_instance(instance)["status"] in {"completed", "killed"})
