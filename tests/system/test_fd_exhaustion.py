"""A hub at its file-descriptor limit: a start either runs a watched runner or fails with 503
and leaves no runner behind; it never reports a running runner as dead."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from si.client import HubClient
from si.testing import HubProcess, python_package, wait_for
from tests.system.conftest import hub_http

pytestmark = pytest.mark.system

SLEEPER = """
import asyncio

async def run(context, input):
    yield "up"
    await asyncio.sleep(600)
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def runners_of(instance_dir: Path) -> list[int]:
    """Live processes whose stdout is this instance's stdout file: its runner, if any."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stdout = os.readlink(f"/proc/{entry}/fd/1")
        except OSError:
            continue
        if stdout.startswith(str(instance_dir) + "/"):
            found.append(int(entry))
    return found


def settled_fd_count(pid: int) -> int:
    """The hub's open descriptors once closed connections are gone."""
    previous = -1
    while (count := open_fds(pid)) != previous:
        previous = count
        time.sleep(0.2)
    return count


@pytest.mark.timeout(120)
def test_at_every_fd_limit_a_start_runs_a_watched_runner_or_fails_with_503_and_none(
    hub: HubProcess, client: HubClient
) -> None:
    sequence = client.send_sequence(python_package(SLEEPER))["id"]
    # The keeper is started and the first start's lazy work done before limits are tried.
    client.kill_instance(client.start_sequence(sequence, {})["id"], remove_immediately=True)
    assert hub.process is not None
    pid = hub.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    outcomes = {}
    for headroom in range(1, 7):
        instance_id = f"{headroom:036d}"
        base = settled_fd_count(pid)
        # ``headroom`` descriptors free: the request's own connection takes the first.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (base + headroom, hard))
        try:
            with hub_http(hub) as http:
                reply = http.post(
                    f"sequence/{sequence}/start", json={"instanceId": instance_id}, timeout=40
                )
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        directory = hub.home / "instances" / instance_id
        outcomes[headroom] = reply.status_code
        if reply.status_code == 200:
            # Started: the hub watches it, so it can report and kill it.
            assert client.get_instance(instance_id)["status"] == "running"
            client.kill_instance(instance_id, remove_immediately=True)
            wait_for(lambda d=directory: not runners_of(d), timeout=10)  # type: ignore[misc]
            continue
        # Refused: nothing runs untracked, nothing of the start is kept, and the answer says why.
        wait_for(lambda d=directory: not runners_of(d), timeout=5)  # type: ignore[misc]
        assert reply.status_code == 503, (headroom, reply.text)
        assert "out of file descriptors" in reply.json()["error"]
        assert not directory.exists()
        assert instance_id not in {i["id"] for i in client.list_instances()}
    assert 503 in outcomes.values(), outcomes
    assert outcomes[max(outcomes)] == 200, outcomes
