"""A starting hub settles what it loaded in the background, and at once for whoever asks.

Real Hub, real files, no runners: every loaded instance recorded a runner that is gone.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio
import trio.testing

from si.daemon.hub import SETTLE_BATCH, Hub
from si.daemon.options import HubOptions
from si.paths import HubPaths

INSTANCES = 3 * SETTLE_BATCH


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def loaded_hub(home: Path) -> tuple[Hub, list[str]]:
    paths = HubPaths.under(home)
    paths.make_dirs()
    pid = gone_pid()
    ids = [f"instance-{number:03d}" for number in range(INSTANCES)]
    for instance_id in ids:
        directory = paths.instances / instance_id
        directory.mkdir()
        record = {"id": instance_id, "sequence_id": "", "status": "running", "pid": pid}
        (directory / "instance.json").write_text(json.dumps(record))
        runner = {"pid": pid, "start_time": 1, "boot_id": "", "token": "00", "socket": "none"}
        (directory / "runner.json").write_text(json.dumps(runner))
        # What the keeper leaves for a runner it reaped while no hub was watching.
        (directory / "wait.json").write_text(json.dumps({"pid": pid, "code": 137}))
    hub = Hub(HubOptions(home=home), paths)
    hub.load()
    return hub, ids


async def test_loaded_instances_are_settled_in_the_background(tmp_path: Path) -> None:
    hub, ids = loaded_hub(tmp_path / "home")
    async with trio.open_nursery() as nursery:
        hub.begin(nursery)
        # Nothing settled before the hub's first chance to answer a request...
        assert all(hub.instances[i].state.status == "running" for i in ids)
        await trio.testing.wait_all_tasks_blocked()
        # ...and everything once it is idle.
        assert all(hub.instances[i].state.status != "running" for i in ids)
        nursery.cancel_scope.cancel()


async def test_settle_proves_an_instance_before_the_background_pass_reaches_it(
    tmp_path: Path,
) -> None:
    hub, ids = loaded_hub(tmp_path / "home")
    async with trio.open_nursery() as nursery:
        hub.begin(nursery)
        await trio.lowlevel.checkpoint()  # the pass settles its first batch, no more
        last = hub.instances[ids[-1]]
        assert last.state.status == "running"
        hub.settle(ids[-1])
        assert last.state.status != "running"
        assert last.exited
        hub.settle()
        assert all(hub.instances[i].exited for i in ids)
        nursery.cancel_scope.cancel()
