"""`si apply -f`, `si delete -f`, `si export` against a real hub: idempotence, updates, prune,
partial failure and resume, the lock, and an export's round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from si.client import HubClient
from si.testing import HubProcess, running_hub, wait_for
from tests.cli.conftest import RunSi, one_error_line

pytestmark = pytest.mark.timeout(90)

COUNTER = """\
import asyncio

async def run(context, input, start=0):
    n = int(start)
    while True:
        yield f"{n}\\n"
        n += 1
        await asyncio.sleep(0.05)
"""


def make_sequence(folder: Path, source: str = COUNTER) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.py").write_text(source)
    manifest = {"name": "counter", "version": "1.0.0", "main": "index.py"}
    (folder / "package.json").write_text(json.dumps({**manifest, "engines": {"python3": "3"}}))


def write_stack(path: Path, instances: dict[str, Any], **extra: Any) -> Path:
    path.write_text(
        json.dumps({"sequences": {"counter": "./counter"}, "instances": instances, **extra})
    )
    return path


@pytest.fixture
def hub(short_dir: Path) -> Any:
    with running_hub(short_dir / "stack-hub") as process:
        yield process


@pytest.fixture
def si_hub(run_si: RunSi, hub: HubProcess) -> RunSi:
    def run(*args: str, **kwargs: Any) -> Any:
        return run_si(*args, env={"SI_HUB": hub.address}, **kwargs)

    return run


def test_apply_creates_then_a_second_apply_changes_nothing(
    si_hub: RunSi, hub: HubProcess, tmp_path: Path
) -> None:
    make_sequence(tmp_path / "counter")
    stack = write_stack(
        tmp_path / "stack.json",
        {"web": {"sequence": "counter", "args": [100]}, "api": {"sequence": "counter"}},
        topics={"numbers": {"contentType": "text/plain"}},
    )
    first = si_hub("apply", "-f", str(stack))
    assert first.returncode == 0, first.stderr
    assert "+ instance web" in first.stderr.decode()
    assert first.stdout.decode().strip() == "applied: 4 to create"
    names = {i["name"]: i for i in HubClient(hub.address).list_instances()}
    assert set(names) == {"web", "api"}
    assert names["web"]["args"] == [100]

    again = si_hub("apply", "-f", str(stack))
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().strip() == "applied: nothing to change"
    assert {i["id"] for i in HubClient(hub.address).list_instances()} == {
        i["id"] for i in names.values()
    }
    # An instance is known by its name.
    output = si_hub("inst", "info", "web", "--format", "json")
    assert json.loads(output.stdout)["id"] == names["web"]["id"]


def test_changed_args_restart_only_that_instance_and_prune_removes_the_dropped(
    si_hub: RunSi, hub: HubProcess, tmp_path: Path
) -> None:
    make_sequence(tmp_path / "counter")
    stack = write_stack(
        tmp_path / "stack.json",
        {
            "web": {"sequence": "counter"},
            "api": {"sequence": "counter"},
            "old": {"sequence": "counter"},
        },
    )
    assert si_hub("apply", "-f", str(stack)).returncode == 0
    before = {i["name"]: i["id"] for i in HubClient(hub.address).list_instances()}
    write_stack(
        stack, {"web": {"sequence": "counter", "args": [5]}, "api": {"sequence": "counter"}}
    )

    plan = si_hub("apply", "-f", str(stack), "--prune", "--dry-run", "--format", "json")
    steps = {(s["kind"], s["name"]): s["action"] for s in json.loads(plan.stdout)["plan"]}
    assert steps[("instance", "web")] == "update"
    assert steps[("instance", "api")] == "unchanged"
    assert steps[("instance", "old")] == "delete"
    assert {i["name"]: i["id"] for i in HubClient(hub.address).list_instances()} == before

    applied = si_hub("apply", "-f", str(stack), "--prune")
    assert applied.returncode == 0, applied.stderr
    client = HubClient(hub.address)
    live = {i["name"]: i for i in client.list_instances() if i["status"] in ("starting", "running")}
    assert set(live) == {"web", "api"}
    assert live["api"]["id"] == before["api"]
    assert live["web"]["id"] != before["web"]
    assert live["web"]["args"] == [5]


def test_a_failed_step_stops_with_one_line_and_a_rerun_goes_on(
    si_hub: RunSi, hub: HubProcess, tmp_path: Path
) -> None:
    make_sequence(tmp_path / "counter")
    bad = tmp_path / "broken"
    make_sequence(bad, "this is not python(\n")
    stack = tmp_path / "stack.json"
    stack.write_text(
        json.dumps(
            {
                "sequences": {"counter": "./counter", "broken": "./broken"},
                "instances": {
                    "good": {"sequence": "counter"},
                    "bad": {"sequence": "broken"},
                    "later": {"sequence": "counter"},
                },
            }
        )
    )
    failed = si_hub("apply", "-f", str(stack))
    assert failed.returncode == 1
    *progress, error = failed.stderr.decode().splitlines()  # the plan and steps done, then why
    assert "done: create instance good" in progress
    assert error.startswith("Error: create instance bad failed: Sequence failed on start")
    assert "Traceback" not in failed.stderr.decode()
    names = {i["name"] for i in HubClient(hub.address).list_instances()}
    assert "good" in names
    assert "later" not in names

    (bad / "index.py").write_text(COUNTER)
    rerun = si_hub("apply", "-f", str(stack))
    assert rerun.returncode == 0, rerun.stderr
    assert "= instance good" in rerun.stderr.decode()
    running = {
        i["name"] for i in HubClient(hub.address).list_instances() if i["status"] == "running"
    }
    assert running == {"good", "bad", "later"}


def test_a_second_apply_while_one_holds_the_lock_is_refused(
    si_hub: RunSi, hub: HubProcess, tmp_path: Path
) -> None:
    make_sequence(tmp_path / "counter")
    stack = write_stack(tmp_path / "stack.json", {"web": {"sequence": "counter"}})
    client = HubClient(hub.address)
    held = client.take_lock("stack", "another apply", 60)
    refused = si_hub("apply", "-f", str(stack))
    assert one_error_line(refused).startswith(
        "another apply is changing this hub: lock stack is held by another apply"
    )
    assert client.list_instances() == []
    client.release_lock("stack", held["key"])
    assert si_hub("apply", "-f", str(stack)).returncode == 0


def test_delete_removes_what_the_stack_names(
    si_hub: RunSi, hub: HubProcess, tmp_path: Path
) -> None:
    make_sequence(tmp_path / "counter")
    stack = write_stack(
        tmp_path / "stack.json",
        {"web": {"sequence": "counter"}},
        topics={"numbers": {"contentType": "text/plain"}},
    )
    assert si_hub("apply", "-f", str(stack)).returncode == 0
    removed = si_hub("delete", "-f", str(stack))
    assert removed.returncode == 0, removed.stderr
    client = HubClient(hub.address)
    wait_for(lambda: client.list_instances() == [])
    assert client.list_sequences() == []
    assert client.list_topics() == []
    assert si_hub("delete", "-f", str(stack)).stdout.decode().strip() == "nothing to delete"


def test_export_then_apply_on_an_empty_hub_makes_the_same(
    si_hub: RunSi, run_si: RunSi, hub: HubProcess, tmp_path: Path, short_dir: Path
) -> None:
    make_sequence(tmp_path / "counter")
    stack = write_stack(
        tmp_path / "stack.json",
        {
            "web": {"sequence": "counter", "args": [7], "restart": "on-failure", "maxRestarts": 2},
            "api": {"sequence": "counter", "appConfig": {"k": "v"}, "limits": {"memory": 256}},
        },
        topics={"numbers": {"contentType": "text/plain"}},
    )
    assert si_hub("apply", "-f", str(stack)).returncode == 0
    out = tmp_path / "export" / "stack.yaml"
    out.parent.mkdir()
    exported = si_hub("export", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert (out.parent / "packages" / "counter.tar.gz").is_file()

    def shape(address: str) -> dict[str, Any]:
        client = HubClient(address)
        return {
            i["name"]: (i["args"], i["appConfig"], i["restartPolicy"], i.get("limits"))
            for i in client.list_instances()
        } | {"topics": sorted(t["topic"] for t in client.list_topics())}

    with running_hub(short_dir / "empty-hub") as other:
        applied = run_si("apply", "-f", str(out), env={"SI_HUB": other.address})
        assert applied.returncode == 0, applied.stderr
        assert shape(other.address) == shape(hub.address)
        # The exported stack applied to the hub it came from changes nothing.
    same = si_hub("apply", "-f", str(out))
    assert same.stdout.decode().strip() == "applied: nothing to change"


def test_a_bad_stack_file_is_one_line_naming_the_field(si_hub: RunSi, tmp_path: Path) -> None:
    stack = tmp_path / "stack.yaml"
    stack.write_text("sequences: {c: ./c}\ninstances:\n  web: {sequence: nope}\n")
    result = si_hub("apply", "-f", str(stack))
    assert one_error_line(result) == (
        f"{stack}: instances.web.sequence: 'nope' is not a sequence of this stack"
    )
