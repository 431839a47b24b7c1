"""Declarative stacks (issue 18): a file that says which sequences, instances and topics a hub
should have, and the plan that makes it so.

Sans-IO: ``load_stack`` reads and checks a stack file (YAML or JSON, schema in
``si/stack.schema.json`` and ``docs/stack.md``); ``make_plan`` compares it with what the hub
lists and returns the steps (create, update, unchanged, delete). ``si.cli.stack`` carries them
out against a hub.

How the hub's side is recognised, with nothing kept on the machine that applies:
- a sequence by the digest of its package's *content* (``si.package.digest``: names, modes,
  link targets and bytes of its members, not their timestamps, so a fresh clone of the same
  tree is the same package), which the hub computes at upload and lists as ``digest``;
- an instance by its ``name`` (unique per hub) and the label ``si.stack/spec``: the digest of
  everything the stack says of it plus its package's digest. An instance whose label differs
  is replaced (killed, started again under its name); one with the same label that still runs
  is left alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from si.daemon.restart import DEFAULT_MAX_RESTARTS, DEFAULT_WINDOW  # what an unset field means
from si.errors import SiError
from si.structured import read_structured

SPEC_LABEL = "si.stack/spec"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESTART_MODES = ("no", "on-failure", "always")
_INSTANCE_KEYS = {
    "sequence",
    "args",
    "appConfig",
    "restart",
    "maxRestarts",
    "restartWindow",
    "limits",
    "provides",
    "requires",
}


class StackError(SiError):
    """A stack file that is not one (the message names the file and the field)."""


@dataclasses.dataclass(frozen=True)
class SequenceSpec:
    name: str
    path: Path  # a package directory or a .tar.gz


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    name: str
    content_type: str


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
    name: str
    sequence: str
    body: dict[str, Any]  # the start body's own fields: args, appConfig, restart, limits, ...

    def spec_digest(self, package_digest: str) -> str:
        """What the hub's instance must match to be this one: its package and its settings,
        defaults filled in, so an exported stack matches the one it was made from."""
        text = json.dumps([package_digest, self.effective()], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def effective(self) -> dict[str, Any]:
        body = self.body
        restart = body.get("restart", "no")
        settings: dict[str, Any] = {
            "args": list(body.get("args") or []),
            "appConfig": dict(body.get("appConfig") or {}),
            "restart": restart,
            "limits": {k: float(v) for k, v in (body.get("limits") or {}).items()},
            "provides": body.get("provides"),
            "requires": body.get("requires"),
        }
        if restart != "no":
            settings["maxRestarts"] = int(body.get("maxRestarts", DEFAULT_MAX_RESTARTS))
            settings["restartWindow"] = float(body.get("restartWindow", DEFAULT_WINDOW))
        return settings

    def start_body(self, package_digest: str) -> dict[str, Any]:
        body = {
            key: value for key, value in self.body.items() if key not in ("provides", "requires")
        }
        if "provides" in self.body:
            body["outputTopic"] = self.body["provides"]
        if "requires" in self.body:
            body["inputTopic"] = self.body["requires"]
        body.setdefault("limits", {})
        return {
            **body,
            "name": self.name,
            "labels": {SPEC_LABEL: self.spec_digest(package_digest)},
        }


@dataclasses.dataclass(frozen=True)
class Stack:
    path: Path
    sequences: dict[str, SequenceSpec]
    topics: dict[str, TopicSpec]
    instances: dict[str, InstanceSpec]


def load_stack(path: Path) -> Stack:
    """Read and check a stack file.

    Raises:
        SiError: it cannot be read or does not parse.
        StackError: it breaks the schema (the message names the field).
    """
    data = read_structured(path, "Unable to read the stack file")
    return parse_stack(data, path)


def parse_stack(data: Any, path: Path) -> Stack:
    def fail(where: str, message: str) -> StackError:
        return StackError(f"{path}: {where}: {message}")

    if not isinstance(data, dict):
        raise fail("the file", "must be a mapping with sequences, instances and topics")
    unknown = set(data) - {"sequences", "instances", "topics", "version"}
    if unknown:
        raise fail(sorted(unknown)[0], "not a stack section (sequences, instances, topics)")

    def section(key: str) -> dict[str, Any]:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise fail(key, "must be a mapping of names")
        for name in value:
            if not isinstance(name, str) or not NAME.match(name):
                raise fail(f"{key}.{name}", "names are letters, digits, '.', '_', '-' (64 at most)")
        return value

    sequences = {}
    for name, value in section("sequences").items():
        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            raise fail(f"sequences.{name}", "needs a path (a package directory or a .tar.gz)")
        sequences[name] = SequenceSpec(name, (path.parent / value["path"]).resolve())
    topics = {}
    for name, value in section("topics").items():
        value = value or {}
        content_type = value.get("contentType", "application/x-ndjson")
        if not isinstance(content_type, str):
            raise fail(f"topics.{name}.contentType", "must be a string")
        topics[name] = TopicSpec(name, content_type)
    instances = {}
    for name, value in section("instances").items():
        where = f"instances.{name}"
        if not isinstance(value, dict):
            raise fail(where, "must be a mapping")
        extra = set(value) - _INSTANCE_KEYS
        if extra:
            raise fail(f"{where}.{sorted(extra)[0]}", "not an instance field")
        sequence = value.get("sequence")
        if sequence not in sequences:
            raise fail(f"{where}.sequence", f"{sequence!r} is not a sequence of this stack")
        body = {key: value[key] for key in _INSTANCE_KEYS - {"sequence"} if key in value}
        _check_body(body, where, fail)
        instances[name] = InstanceSpec(name, str(sequence), body)
    return Stack(path, sequences, topics, instances)


def _check_body(body: dict[str, Any], where: str, fail: Any) -> None:
    if "args" in body and not isinstance(body["args"], list):
        raise fail(f"{where}.args", "must be a list")
    if "appConfig" in body and not isinstance(body["appConfig"], dict):
        raise fail(f"{where}.appConfig", "must be a mapping")
    if "restart" in body and body["restart"] not in RESTART_MODES:
        raise fail(f"{where}.restart", 'must be "no", "on-failure" or "always"')
    if "limits" in body and not isinstance(body["limits"], dict):
        raise fail(f"{where}.limits", "must be a mapping (memory in MiB)")
    for key in ("provides", "requires"):
        if key in body and not isinstance(body[key], str):
            raise fail(f"{where}.{key}", "must be a topic name")


# -- packages -----------------------------------------------------------------------------------


def package_digest(archive: bytes) -> str:
    from si.errors import PackageError
    from si.package.digest import content_digest

    try:
        return content_digest(io.BytesIO(archive))
    except PackageError as exc:
        raise StackError(str(exc)) from None


def package_bytes(spec: SequenceSpec) -> bytes:
    """The package to upload: a directory packed now, or the .tar.gz as it is.

    Raises:
        StackError: the path is neither, or the package is refused (the packer says why).
    """
    from si.errors import PackageError

    if spec.path.is_dir():
        from si.package.pack import pack_directory

        out = io.BytesIO()
        try:
            pack_directory(spec.path, out)
        except PackageError as exc:
            raise StackError(f"sequence {spec.name}: {exc}") from None
        return out.getvalue()
    try:
        return spec.path.read_bytes()
    except OSError as exc:
        raise StackError(f"sequence {spec.name}: cannot read {spec.path}: {exc.strerror}") from None


# -- the plan -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    action: str  # "create", "update", "unchanged", "delete"
    kind: str  # "topic", "sequence", "instance"
    name: str
    reason: str = ""
    hub_id: str = ""  # the hub's id of what an update or delete replaces

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def make_plan(
    stack: Stack,
    digests: Mapping[str, str],
    hub_sequences: Iterable[Mapping[str, Any]],
    hub_instances: Iterable[Mapping[str, Any]],
    hub_topics: Iterable[Mapping[str, Any]],
    *,
    prune: bool = False,
) -> list[Step]:
    """The steps that make the hub what ``stack`` says; ``digests``: each stack sequence's
    content digest. With ``prune``, instances the hub has from a stack but this one no longer
    names are deleted."""
    steps: list[Step] = []
    topic_names = {str(topic.get("topic") or topic.get("name") or "") for topic in hub_topics}
    for name in stack.topics:
        steps.append(Step("unchanged" if name in topic_names else "create", "topic", name))
    stored = {str(s.get("digest") or ""): str(s.get("id")) for s in hub_sequences}
    for name in stack.sequences:
        present = digests[name] in stored
        steps.append(
            Step(
                "unchanged" if present else "create",
                "sequence",
                name,
                "" if present else "not on the hub with this content",
                stored.get(digests[name], ""),
            )
        )
    by_name = {str(i.get("name")): i for i in hub_instances if i.get("name")}
    for name, spec in stack.instances.items():
        current = by_name.get(name)
        wanted = spec.spec_digest(digests[spec.sequence])
        if current is None:
            steps.append(Step("create", "instance", name))
            continue
        labels = current.get("labels") or {}
        live = current.get("status") in ("starting", "running", "restarting")
        # One that completed did its job: applying again does not run it again. One that
        # errored or was lost is started again.
        done = current.get("status") == "completed"
        if labels.get(SPEC_LABEL) == wanted and (live or done):
            steps.append(Step("unchanged", "instance", name, hub_id=str(current.get("id"))))
        else:
            reason = (
                "its sequence or settings changed" if live else f"it is {current.get('status')}"
            )
            steps.append(Step("update", "instance", name, reason, str(current.get("id"))))
    if prune:
        for name, current in by_name.items():
            if name not in stack.instances and SPEC_LABEL in (current.get("labels") or {}):
                steps.append(
                    Step("delete", "instance", name, "not in the stack", str(current["id"]))
                )
    return steps


def summary(steps: Iterable[Step]) -> str:
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.action] = counts.get(step.action, 0) + 1
    if not any(counts.get(a) for a in ("create", "update", "delete")):
        return "nothing to change"
    order = ("create", "update", "delete", "unchanged")
    return ", ".join(
        f"{counts[a]} to {a}" if a != "unchanged" else f"{counts[a]} unchanged"
        for a in order
        if counts.get(a)
    )
