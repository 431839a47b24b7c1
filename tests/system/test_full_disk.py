"""A hub whose disk fills up degrades instead of dying, starts on a full disk, and saves what it
held back once space returns. Real hubs and runners on a real full file system (a small tmpfs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for
from tests.cli.conftest import one_error_line
from tests.full_disk import assert_full, fill, small_disk, temp_files
from tests.system.conftest import Cli

pytestmark = pytest.mark.system

TICKER = """
import asyncio

async def run(context, input):
    number = 0
    while True:
        yield f"{number}\\n"
        number += 1
        await asyncio.sleep(0.02)
"""
DISK_FULL_WARNING = "the disk is full"
RECOVERED = "state files are written again"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


def on_disk(home: Path, instance_id: str) -> dict[str, object]:
    record: dict[str, object] = json.loads(
        (home / "instances" / instance_id / "instance.json").read_bytes()
    )
    return record


def read_lines(client: HubClient, instance_id: str, count: int) -> int:
    """Follow an instance's output until ``count`` more lines came; returns the lines seen."""
    stream = client.instance_stream(instance_id, "output")
    seen = 0
    try:
        for chunk in stream:
            seen += chunk.count(b"\n")
            if seen >= count:
                break
    finally:
        stream.close()  # type: ignore[attr-defined]
    return seen


@pytest.mark.timeout(90)
def test_a_full_disk_degrades_then_recovers(disk: Path, tmp_path: Path) -> None:
    # The home is the small disk itself; the hub's log file is beside it, readable throughout.
    hub = HubProcess(disk).start()
    try:
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(TICKER))["id"]
        instance = client.start_sequence(sequence, {})["id"]
        package = tmp_path / "package.tar.gz"
        package.write_bytes(python_package(TICKER))
        sequences_before = sorted(p.name for p in (disk / "sequences").iterdir())

        filler = fill(disk)
        assert_full(disk)

        # Output keeps streaming: it never touches the disk.
        assert read_lines(client, instance, 10) >= 10
        # Uploads are refused with 507 and leave nothing; so is a new instance.
        with pytest.raises(HubError) as upload:
            client.send_sequence(package.read_bytes())
        assert upload.value.status == 507
        assert "disk is full" in str(upload.value)
        message = one_error_line(Cli(hub.address, tmp_path).run("seq", "send", str(package)))
        assert "disk is full" in message
        with pytest.raises(HubError) as start:
            client.start_sequence(sequence, {})
        assert start.value.status == 507
        assert sorted(p.name for p in (disk / "sequences").iterdir()) == sequences_before

        # Status saves fail (stopping, then the exit): the hub records them in memory.
        client.stop_instance(instance, 2000, can_call_keepalive=False)
        ended = wait_for(lambda: client.get_instance(instance)["status"] not in ("stopping",))
        assert ended
        status = client.get_instance(instance)["status"]
        assert status in ("completed", "errored")
        assert on_disk(disk, instance)["status"] == "running"  # the last record that fit
        assert client.version()["service"] == "si"
        assert temp_files(disk) == []
        assert hub.process is not None
        assert hub.process.poll() is None
        assert hub.log().count(DISK_FULL_WARNING) == 1, hub.log()

        filler.unlink()
        wait_for(lambda: on_disk(disk, instance)["status"] == status, timeout=15)
        wait_for(lambda: RECOVERED in hub.log(), timeout=5)
        assert temp_files(disk) == []
        # Space is back: uploads work again.
        assert client.send_sequence(package.read_bytes())["id"]
    finally:
        hub.close()


@pytest.mark.timeout(90)
def test_a_hub_restarts_on_a_full_disk(disk: Path) -> None:
    # The home and the hub's log file are both on the small disk.
    hub = HubProcess(disk / "home").start()
    try:
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(TICKER))["id"]
        instance = client.start_sequence(sequence, {})["id"]
        hub.crash()
        hub.kill_runners()  # ended while no hub watched: the next hub records the exit
        wait_for(lambda: (disk / "home" / "instances" / instance / "wait.json").exists())
        filler = fill(disk)

        hub.start()  # settling the instance tries to save its record
        record = client.get_instance(instance)  # settled before it answers
        assert record["status"] == "errored", record
        assert client.version()["service"] == "si"
        assert hub.process is not None
        assert hub.process.poll() is None
        assert on_disk(disk / "home", instance)["status"] == "running"
        assert temp_files(disk) == []

        filler.unlink()
        wait_for(lambda: on_disk(disk / "home", instance)["status"] == "errored", timeout=15)
    finally:
        hub.close()


@pytest.mark.timeout(60)
def test_a_hub_starts_on_a_fresh_home_on_a_full_disk(disk: Path) -> None:
    fill(disk)
    hub = HubProcess(disk / "fresh").start()  # its lock file cannot hold its pid: no matter
    try:
        client = HubClient(hub.address)
        assert client.list_instances() == []
        assert client.version()["service"] == "si"
    finally:
        hub.close()
