"""The keeper's kill request: how a hub that cannot watch a runner it started stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio

from si.daemon.spawn import Spawner, SpawnError
from si.identity import process_start_time


@pytest.mark.timeout(30)
async def test_the_keeper_kills_its_runner_on_request_and_no_other_process(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    instance = home / "instances" / "one"
    instance.mkdir(parents=True)
    (instance / "spawn.json").write_text("{}")
    spawner = Spawner(home)
    outsider = subprocess.Popen(["sleep", "60"])  # noqa: ASYNC220 (returns at once)
    try:
        runner = await spawner.spawn(instance, ["sleep", "60"])
        assert process_start_time(runner) is not None
        with pytest.raises(SpawnError, match="not a runner of this keeper"):
            await spawner.kill(outsider.pid)
        assert outsider.poll() is None
        await spawner.kill(runner)
        with trio.fail_after(10):
            while not (instance / "wait.json").exists():
                await trio.sleep(0.02)
        assert json.loads((instance / "wait.json").read_text())["code"] == 128 + signal.SIGKILL
        assert process_start_time(runner) is None
    finally:
        outsider.kill()
        outsider.wait()
        keeper = json.loads((home / "keeper.json").read_text())["pid"]
        os.kill(keeper, signal.SIGTERM)
