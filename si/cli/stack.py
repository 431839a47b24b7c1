"""``si apply -f``, ``si delete -f``, ``si export``: a hub's sequences, instances and topics from
a stack file (``si.stack``; ``docs/stack.md``).

``apply`` prints its plan (``+`` create, ``~`` update, ``-`` delete, ``=`` unchanged), then
carries it out step by step under the hub's ``stack`` lock, so two applies cannot interleave.
A failed step stops the apply with one line; what was done stays, and a rerun goes on from
there (the plan of a rerun skips what is already true).
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from si.cli import render
from si.cli.common import CONTEXT_SETTINGS, FILE, CliState, state
from si.errors import SiError

if TYPE_CHECKING:
    from si.client import HubClient
    from si.stack import Stack, Step

LOCK = "stack"
LOCK_TTL = 600.0
# How long an update waits for the instance it replaces to end.
KILL_WAIT = 15.0
LIVE = ("starting", "running", "stopping", "killing", "restarting")
MARKS = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}

stack_file = click.option(
    "-f",
    "--file",
    "path",
    metavar="FILE",
    type=FILE,
    required=True,
    help="The stack file (YAML, or JSON by extension).",
)


@contextmanager
def _locked(client: HubClient) -> Iterator[None]:
    from si.client import HubError

    owner = f"si apply by {getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"
    try:
        key = client.take_lock(LOCK, owner, LOCK_TTL)["key"]
    except HubError as exc:
        if exc.status == 409:
            raise SiError(f"another apply is changing this hub: {exc}") from None
        raise
    try:
        yield
    finally:
        try:
            client.release_lock(LOCK, str(key))
        except HubError:
            pass  # it lapses by itself


def _digests(stack: Stack) -> tuple[dict[str, bytes], dict[str, str]]:
    from si.stack import package_bytes, package_digest

    packages = {name: package_bytes(spec) for name, spec in stack.sequences.items()}
    return packages, {name: package_digest(data) for name, data in packages.items()}


def _show_plan(steps: list[Step]) -> None:
    for step in steps:
        reason = f" ({step.reason})" if step.reason and step.action != "unchanged" else ""
        render.message(f"{MARKS[step.action]} {step.kind} {step.name}{reason}")


@click.command(
    "apply", context_settings=CONTEXT_SETTINGS, epilog="\b\nExample:\n  si apply -f stack.yaml"
)
@stack_file
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--prune", is_flag=True, help="Also delete stack-made instances the file no longer names."
)
def apply(path: str, dry_run: bool, prune: bool) -> None:
    """Make the hub what a stack file says (sequences, instances, topics).

    Each topic, sequence and instance is created, updated or left as it is; a second apply
    changes nothing.
    """
    from si.stack import load_stack, make_plan, summary

    stack = load_stack(Path(path))
    packages, digests = _digests(stack)
    cli = state()
    with cli.client() as client:

        def current_plan() -> list[Step]:
            return make_plan(
                stack,
                digests,
                client.list_sequences(),
                client.list_instances(),
                client.list_topics(),
                prune=prune,
            )

        if dry_run:
            steps = current_plan()
            _show_plan(steps)
            _report(cli, steps, f"dry run: {summary(steps)}; nothing changed", applied=False)
            return
        with _locked(client):
            steps = current_plan()
            _show_plan(steps)
            _carry_out(client, stack, steps, packages, digests)
    _report(cli, steps, f"applied: {summary(steps)}", applied=True)


def _report(cli: CliState, steps: list[Step], line: str, *, applied: bool) -> None:
    if cli.format.value == "json":
        cli.renderer.show({"applied": applied, "plan": [step.to_json() for step in steps]})
    else:
        render.write_line(line)


def _carry_out(
    client: HubClient,
    stack: Stack,
    steps: list[Step],
    packages: dict[str, bytes],
    digests: dict[str, str],
) -> None:
    from si.client import HubError

    sequence_ids = {s.name: s.hub_id for s in steps if s.kind == "sequence" and s.hub_id}
    for step in steps:
        if step.action == "unchanged":
            continue
        try:
            if step.kind == "topic":
                client.create_topic(step.name, stack.topics[step.name].content_type)
            elif step.kind == "sequence":
                sequence_ids[step.name] = str(client.send_sequence(packages[step.name])["id"])
            elif step.action in ("update", "delete"):
                _end(client, step.hub_id)
            if step.kind == "instance" and step.action in ("create", "update"):
                spec = stack.instances[step.name]
                body = spec.start_body(digests[spec.sequence])
                client.start_sequence(sequence_ids[spec.sequence], body)
        except HubError as exc:
            raise SiError(f"{step.action} {step.kind} {step.name} failed: {exc}") from None
        render.message(f"done: {step.action} {step.kind} {step.name}")


def _end(client: HubClient, instance_id: str) -> None:
    """Kill an instance and wait until it no longer runs (its name is then free)."""
    from si.client import HubError

    try:
        if client.get_instance(instance_id).get("status") in LIVE:
            client.kill_instance(instance_id, remove_immediately=True)
    except HubError as exc:
        if exc.status not in (400, 404):  # ended meanwhile, or gone already
            raise
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline:
        try:
            status = client.get_instance(instance_id).get("status")
        except HubError as exc:
            if exc.status == 404:
                return
            raise
        if status not in LIVE:
            return
        time.sleep(0.05)
    raise SiError(f"instance {instance_id} did not end within {KILL_WAIT:.0f} s")


@click.command(
    "delete", context_settings=CONTEXT_SETTINGS, epilog="\b\nExample:\n  si delete -f stack.yaml"
)
@stack_file
def delete(path: str) -> None:
    """Remove what a stack file names from the hub.

    Its instances, then its sequences (when nothing else uses them) and its topics.
    """
    from si.client import HubError
    from si.stack import load_stack

    stack = load_stack(Path(path))
    _, digests = _digests(stack)
    cli = state()
    removed = 0
    with cli.client() as client, _locked(client):
        for record in client.list_instances():
            if record.get("name") in stack.instances:
                _end(client, str(record["id"]))
                render.message(f"- instance {record['name']}")
                removed += 1
        wanted = {digest: name for name, digest in digests.items()}
        for record in client.list_sequences():
            name = wanted.get(str(record.get("digest") or ""))
            if name is None:
                continue
            try:
                client.delete_sequence(str(record["id"]))
            except HubError as exc:
                raise SiError(f"delete sequence {name} failed: {exc}") from None
            render.message(f"- sequence {name}")
            removed += 1
        topics = {str(t.get("topic") or t.get("name")) for t in client.list_topics()}
        for name in stack.topics:
            if name in topics:
                client.delete_topic(name)
                render.message(f"- topic {name}")
                removed += 1
    render.write_line(f"deleted {removed}" if removed else "nothing to delete")


@click.command(
    "export", context_settings=CONTEXT_SETTINGS, epilog="\b\nExample:\n  si export -o stack.yaml"
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=FILE,
    help="Write the stack here instead of stdout (YAML, or JSON by extension).",
)
def export(output: str | None) -> None:
    """Write the hub's instances and topics as a stack file.

    The live instances with their sequences and the topics; an apply of it on an empty hub
    recreates them. The packages are saved in packages/ beside the file.
    """
    import importlib
    import json

    yaml: Any = importlib.import_module("yaml")  # PyYAML has no type stubs here
    target = Path(output) if output else None
    packages_dir = (target.parent if target else Path.cwd()) / "packages"
    cli = state()
    with cli.client() as client:
        document = _exported(client, packages_dir, target.parent if target else Path.cwd())
    if target is not None and target.suffix == ".json":
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False)
    if target is None:
        render.write_text(text)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        raise SiError(f"cannot write {target}: {exc.strerror}") from None
    render.message(f"wrote {target} and {len(document['sequences'])} packages in {packages_dir}")


def _exported(client: HubClient, packages_dir: Path, base: Path) -> dict[str, Any]:
    live = ("starting", "running", "restarting")
    instances = [i for i in client.list_instances() if i.get("status") in live]
    sequences = {str(s["id"]): s for s in client.list_sequences()}
    names: dict[str, str] = {}  # hub sequence id -> stack name
    document: dict[str, Any] = {"sequences": {}, "topics": {}, "instances": {}}
    for record in instances:
        sequence_id = str((record.get("sequence") or {}).get("id"))
        if sequence_id not in names and sequence_id in sequences:
            config = sequences[sequence_id].get("config") or {}
            name = _unique(str(config.get("name") or "sequence"), set(names.values()))
            names[sequence_id] = name
            packages_dir.mkdir(parents=True, exist_ok=True)
            package = packages_dir / f"{name}.tar.gz"
            package.write_bytes(client.get_package(sequence_id))
            document["sequences"][name] = {"path": os.path.relpath(package, base)}
        if sequence_id not in names:
            continue
        name = str(record.get("name") or f"i-{str(record['id'])[:8]}")
        document["instances"][name] = _instance_entry(record, names[sequence_id])
    for topic in client.list_topics():
        document["topics"][str(topic["topic"])] = {"contentType": topic.get("contentType")}
    return document


def _instance_entry(record: dict[str, Any], sequence: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"sequence": sequence}
    if record.get("args"):
        entry["args"] = record["args"]
    if record.get("appConfig"):
        entry["appConfig"] = record["appConfig"]
    policy = record.get("restartPolicy") or {}
    if policy.get("restart", "no") != "no":
        entry["restart"] = policy["restart"]
        entry["maxRestarts"] = policy.get("maxRestarts")
        entry["restartWindow"] = policy.get("restartWindow")
    limits = {k: v for k, v in (record.get("limits") or {}).items() if k in ("memory", "cpu")}
    if limits:
        entry["limits"] = limits
    for key in ("provides", "requires"):
        if record.get(key):
            entry[key] = record[key]
    return entry


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate
