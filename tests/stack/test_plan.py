"""Stack files and plans, without a hub: parsing, digests, the plan, the schema."""

from __future__ import annotations

import importlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

import si
from si.package.pack import pack_directory
from si.stack import (
    SPEC_LABEL,
    StackError,
    load_stack,
    make_plan,
    package_digest,
    parse_stack,
    summary,
)

pytestmark = pytest.mark.timeout(10)

SCHEMA = json.loads((Path(si.__file__).parent / "stack.schema.json").read_text())


def package_dir(root: Path, text: str = "async def run(context, input):\n    yield 'x'\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.py").write_text(text)
    manifest = {"name": "p", "version": "1.0.0", "main": "index.py", "engines": {"python3": "3"}}
    (root / "package.json").write_text(json.dumps(manifest))
    return root


def digest_of(directory: Path) -> str:
    out = io.BytesIO()
    pack_directory(directory, out)
    return package_digest(out.getvalue())


STACK: dict[str, Any] = {
    "sequences": {"counter": "./counter", "other": {"path": "./other"}},
    "topics": {"numbers": {"contentType": "text/plain"}},
    "instances": {
        "web": {
            "sequence": "counter",
            "args": [1, "two"],
            "appConfig": {"k": "v"},
            "restart": "on-failure",
            "maxRestarts": 3,
            "limits": {"memory": 64},
            "provides": "numbers",
        },
        "worker": {"sequence": "other", "requires": "numbers"},
    },
}


def test_the_example_stack_meets_the_schema_and_parses(tmp_path: Path) -> None:
    jsonschema.validate(STACK, SCHEMA)
    stack = parse_stack(STACK, tmp_path / "stack.yaml")
    assert stack.sequences["counter"].path == tmp_path / "counter"
    body = stack.instances["web"].start_body("d1")
    assert body["outputTopic"] == "numbers"
    assert body["name"] == "web"
    assert body["labels"][SPEC_LABEL] == stack.instances["web"].spec_digest("d1")
    assert body["limits"] == {"memory": 64}
    assert stack.instances["worker"].start_body("d2")["inputTopic"] == "numbers"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instances": {"a": {"sequence": "nope"}}}, "instances.a.sequence: 'nope' is not"),
        ({"instances": {"a": {"sequence": "counter", "bogus": 1}}}, "instances.a.bogus: not an"),
        ({"instances": {"a": {"sequence": "counter", "restart": "sometimes"}}}, "restart: must"),
        ({"instances": {"bad name": {"sequence": "counter"}}}, "names are letters"),
        ({"sequences": {"x": {}}}, "sequences.x: needs a path"),
        ({"extra": {}}, "extra: not a stack section"),
    ],
)
def test_a_bad_stack_names_the_field_and_the_schema_agrees(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = {"sequences": {"counter": "./c"}, **change}
    with pytest.raises(StackError, match=message):
        parse_stack(data, tmp_path / "s.yaml")
    if "'nope' is not" in message:
        return  # a reference between sections: beyond what a JSON Schema says
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_yaml_and_json_files_load_alike(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(STACK))
    yaml: Any = importlib.import_module("yaml")  # no type stubs installed
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STACK))
    assert load_stack(tmp_path / "s.json").instances == load_stack(tmp_path / "s.yaml").instances


def test_the_content_digest_ignores_timestamps_and_sees_every_byte(tmp_path: Path) -> None:
    first = digest_of(package_dir(tmp_path / "a"))
    later = time.time() + 1000
    for path in (tmp_path / "a").iterdir():
        os.utime(path, (later, later))
    assert digest_of(tmp_path / "a") == first  # a fresh clone: same content, new mtimes
    assert digest_of(package_dir(tmp_path / "b")) == first
    changed = package_dir(tmp_path / "c", "async def run(context, input):\n    yield 'y'\n")
    assert digest_of(changed) != first


def hub_instance(name: str, stack_digest: str, status: str = "running") -> dict[str, Any]:
    return {
        "id": f"id-{name}",
        "name": name,
        "status": status,
        "labels": {SPEC_LABEL: stack_digest},
    }


def test_the_plan_creates_then_finds_everything_unchanged(tmp_path: Path) -> None:
    stack = parse_stack(STACK, tmp_path / "s.yaml")
    digests = {"counter": "d1", "other": "d2"}
    fresh = make_plan(stack, digests, [], [], [])
    assert [(s.action, s.kind, s.name) for s in fresh] == [
        ("create", "topic", "numbers"),
        ("create", "sequence", "counter"),
        ("create", "sequence", "other"),
        ("create", "instance", "web"),
        ("create", "instance", "worker"),
    ]
    assert summary(fresh) == "5 to create"
    applied = make_plan(
        stack,
        digests,
        [{"id": "s1", "digest": "d1"}, {"id": "s2", "digest": "d2"}],
        [
            hub_instance("web", stack.instances["web"].spec_digest("d1")),
            hub_instance("worker", stack.instances["worker"].spec_digest("d2")),
        ],
        [{"topic": "numbers"}],
    )
    assert {s.action for s in applied} == {"unchanged"}
    assert summary(applied) == "nothing to change"


def test_a_changed_package_updates_only_the_instances_using_it(tmp_path: Path) -> None:
    stack = parse_stack(STACK, tmp_path / "s.yaml")
    hub_instances = [
        hub_instance("web", stack.instances["web"].spec_digest("d1")),
        hub_instance("worker", stack.instances["worker"].spec_digest("d2")),
        hub_instance("leftover", "x"),
        {"id": "by-hand", "name": "manual", "status": "running"},  # not a stack's
    ]
    sequences = [{"id": "s1", "digest": "d1"}, {"id": "s2", "digest": "d2"}]
    steps = make_plan(
        stack, {"counter": "d1-new", "other": "d2"}, sequences, hub_instances, [], prune=True
    )
    by_name = {(s.kind, s.name): s for s in steps}
    assert by_name[("sequence", "counter")].action == "create"
    assert by_name[("instance", "web")].action == "update"
    assert by_name[("instance", "web")].hub_id == "id-web"
    assert by_name[("instance", "worker")].action == "unchanged"
    assert by_name[("instance", "leftover")].action == "delete"
    assert ("instance", "manual") not in by_name  # prune touches only what a stack made


def test_a_failed_instance_is_started_again_and_a_completed_one_is_not(tmp_path: Path) -> None:
    stack = parse_stack(STACK, tmp_path / "s.yaml")
    wanted = stack.instances["web"].spec_digest("d1")
    for status, action in (("errored", "update"), ("lost", "update"), ("completed", "unchanged")):
        ended = hub_instance("web", wanted, status=status)
        steps = make_plan(stack, {"counter": "d1", "other": "d2"}, [], [ended], [])
        web = next(s for s in steps if s.name == "web")
        assert web.action == action, status
