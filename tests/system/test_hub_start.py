"""Hub start-up: it answers while it re-adopts in the background, yet never reports an
instance it has not settled; it lifts its own open-file limit."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import pytest

from si.client import HubClient
from si.testing import HubProcess, python_package

pytestmark = pytest.mark.system

IDLE = "import asyncio\n\nasync def run(context, input):\n    await asyncio.Future()\n"
# More than one settling batch (hub.SETTLE_BATCH), so the listing races the background pass.
INSTANCES = 45


def kill_and_wait(pid: int) -> None:
    pidfd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the keeper reaps it and records how it ended


def test_the_first_answers_of_a_restarted_hub_report_proven_state(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package(IDLE))["id"]
    ids = [client.start_sequence(sequence, {})["id"] for _ in range(INSTANCES)]
    hub.stop()
    runners = hub.runner_identities()
    first, last = ids[0], ids[-1]  # settled first and last by the background pass
    for victim in (first, last):
        kill_and_wait(runners[victim].pid)
    hub.start()
    listed = {i["id"]: i["status"] for i in HubClient(hub.address).list_instances()}
    assert listed[first] != "running"
    assert listed[last] != "running"
    assert all(listed[i] == "running" for i in ids if i not in (first, last))


def test_a_request_about_one_instance_settles_it_first(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package(IDLE))["id"]
    ids = [client.start_sequence(sequence, {})["id"] for _ in range(INSTANCES)]
    hub.stop()
    kill_and_wait(hub.runner_identities()[ids[-1]].pid)
    hub.start()
    assert HubClient(hub.address).get_instance(ids[-1])["status"] != "running"


def test_the_hub_lifts_its_soft_open_file_limit(home: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        hub = HubProcess(home).start()  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert hub.process is not None
        limits = Path(f"/proc/{hub.process.pid}/limits").read_text().splitlines()
        [line] = [line for line in limits if line.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)]
    finally:
        hub.close()


def test_an_upload_starts_the_keeper_before_any_instance(hub: HubProcess) -> None:
    HubClient(hub.address).send_sequence(python_package(IDLE))
    deadline = time.monotonic() + 30
    while (keeper := hub.keeper_identity()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keeper is not None
    assert keeper.is_alive()
