"""State files on a real full disk (a small tmpfs): a failed write leaves the old file and no
litter, the record waits in memory, one warning is logged, and the retry saves it once space
returns. Instances save through them, so a status change on a full disk cannot fail."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from si.daemon.instance import Instance
from si.daemon.record import InstanceRecord, InstanceStatus
from si.daemon.state_files import RETRY_INTERVAL, StateFiles
from si.daemon.topics import Topics
from si.fsutil import write_json_atomic
from si.protocol.codes import Code
from tests.full_disk import fill, small_disk, temp_files


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", size="1m") as mounted:
        yield mounted


def stored(path: Path) -> dict[str, object]:
    body: dict[str, object] = json.loads(path.read_bytes())
    return body


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(disk: Path) -> None:
    path = disk / "record.json"
    write_json_atomic(path, {"version": 1})
    fill(disk)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"version": 2})
    assert stored(path)["version"] == 1
    assert temp_files(disk) == []


async def test_unsaved_records_wait_and_are_saved_once_space_returns(
    disk: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="si.hub.state")
    first, second = disk / "first.json", disk / "second.json"
    files = StateFiles()
    assert files.write(first, {"n": 0})
    filler = fill(disk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(files.keep_retrying)
        for number in range(1, 4):
            assert not files.write(first, {"n": number})
        assert not files.write(second, {"n": 1})
        await trio.sleep(3 * RETRY_INTERVAL)  # retries fail while the disk stays full
        assert stored(first)["n"] == 0
        assert not second.exists()
        assert temp_files(disk) == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "disk is full" in warnings[0].getMessage()

        filler.unlink()
        await trio.sleep(RETRY_INTERVAL + 0.1)
        assert stored(first)["n"] == 3  # the latest body, not every one
        assert stored(second)["n"] == 1
        assert files.pending == {}
        assert any("written again" in r.getMessage() for r in caplog.records)
        nursery.cancel_scope.cancel()


async def test_a_runner_ping_on_a_full_disk_is_recorded_later(disk: Path) -> None:
    directory = disk / "instance"
    directory.mkdir()
    instance = Instance(directory, InstanceRecord(id="i", sequence_id="s"), known_link=True)
    instance.state_files = StateFiles()
    instance.save()
    filler = fill(disk)
    instance.on_monitoring([Code.PING, {"pid": 1}])  # the crash of issue 13: ENOSPC from here
    assert instance.state.status == InstanceStatus.RUNNING
    assert instance.ready.is_set()
    assert stored(directory / "instance.json")["status"] == "starting"
    filler.unlink()
    assert instance.state_files.flush()
    assert stored(directory / "instance.json")["status"] == "running"


async def test_topic_producers_are_not_acknowledged_past_an_unsaved_head(
    disk: Path, autojump_clock: trio.testing.MockClock
) -> None:
    topics = Topics(disk / "topics.json", StateFiles())
    topic = topics.get_or_create("t", "text/plain")
    filler = fill(disk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(topics.state_files.keep_retrying)
        nursery.start_soon(topics.keep_committed)
        await topic.publish(b"one\ntwo\n")
        reader = topic.pipe.attach()
        data = await topic.pipe.read(reader)
        assert data is not None
        topic.pipe.delivered(reader, len(data))  # consumed: the head moves to 8
        await trio.sleep(5 * RETRY_INTERVAL)
        assert topic.committed == 0  # a restarted hub would start the topic at 0
        filler.unlink()
        await trio.sleep(2 * RETRY_INTERVAL)
        assert topic.committed == 8
        assert stored(disk / "topics.json")["topics"] == {
            "t": {"contentType": "text/plain", "head": 8, "producers": {}}
        }
        nursery.cancel_scope.cancel()
