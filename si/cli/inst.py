"""``si inst|instance``: list, inspect, feed, read, signal and restart instances.

Every ``ID`` (except in ``inst use``) accepts ``-`` for the instance used last in this session.
Streams (``output``, ``stdout``, ``stderr``, ``log``, ``event on --stream``) are copied to stdout
byte for byte as they arrive, and follow the hub through a restart. Uploads (``input``,
``stdin``, ``inout``) read a file, or stdin when no file is given.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import IO, Any

import click

from si.cli import common, render
from si.cli.common import (
    FILE,
    INSTANCE_ID,
    AliasGroup,
    CliState,
    binary_stdin,
    command,
    existing_file,
    forget,
    group,
    instance_argument,
    remember,
    state,
)
from si.errors import SiError

app: AliasGroup = group("inst", "Inspect, feed, read and control instances.")
events: AliasGroup = group(
    "event", "Send events to an instance, or wait for its events.", parent=app
)

# STH's default grace period for a stop (ms), used when the command line gives none.
DEFAULT_STOP_TIMEOUT_MS = 7000
# restart: how often and how long to wait for the killed instance to disappear.
RESTART_POLL = 0.1
RESTART_TIMEOUT = 30.0
INOUT_TYPES = ("text/plain", "application/octet-stream", "application/x-ndjson")


def _resolve(cli: CliState, instance: str) -> str:
    """An id, ``-`` (the last one), or an instance's name (a stack's, say: ``si inst output
    web``): the running one of that name, else the latest."""
    value = cli.session.resolve(instance, "lastInstanceId")
    if _ID_SHAPE.fullmatch(value) or not _NAME_SHAPE.fullmatch(value):
        return value
    with cli.client() as client:
        named = [
            i for i in client.list_instances() if isinstance(i, dict) and i.get("name") == value
        ]
    if not named:
        return value  # the hub says whether such an id exists
    live = [i for i in named if i.get("status") in ("starting", "running", "restarting")]
    chosen = (live or sorted(named, key=lambda i: str(i.get("created"))))[-1]
    return str(chosen["id"])


_ID_SHAPE = re.compile(r"[0-9a-fA-F-]{36}")
_NAME_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _stream(name: str, instance: str, query: dict[str, str] | None = None) -> None:
    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        cli.renderer.stream(client.instance_stream(instance_id, name, query=query))


def _source(file: str | None, what: str) -> Any:
    """The body to upload: the file, or stdin when no file is given."""
    if file is None:
        return binary_stdin(what)
    return existing_file(file).open("rb")


# -- listing and inspecting ------------------------------------------------------------------------


@command(app, "ls", "list", example=["si inst ls", "si inst ls --cluster"])
@click.option(
    "--cluster", is_flag=True, help="Every hub's instances in the hub's cluster, with their hub."
)
def list_instances(cluster: bool) -> None:
    """List the hub's instances: id, sequence, status, restarts, age, pid."""
    cli = state()
    with cli.client() as client:
        records = client.cluster_instances() if cluster else client.list_instances()
    cli.renderer.instances(records, with_hub=cluster)


@command(app, "use", example="si inst use 0d3f6c1e-8a4b-4c2d-9e1f-2a3b4c5d6e7f")
@click.argument("instance", metavar="ID", type=INSTANCE_ID)
def use(instance: str) -> None:
    """Make an instance the one - stands for (checked with the hub first)."""
    common.use(state(), "instance", "lastInstanceId", instance, lambda c, i: c.get_instance(i))


@command(app, "info", example="si inst info -")
@instance_argument
def info(instance: str) -> None:
    """Show one instance (status, times, exit code and reason once it ended)."""
    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        record = client.get_instance(instance_id)
    cli.renderer.show(record)


@command(app, "health", example="si inst health -")
@instance_argument
def health(instance: str) -> None:
    """Show the instance's last health report."""
    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        record = client.instance_health(instance_id)
    cli.renderer.show(record)


# -- streams out -----------------------------------------------------------------------------------


@command(app, "output", example="si inst output - | head -3")
@instance_argument
def output(instance: str) -> None:
    """Copy the instance's output to stdout until it ends."""
    _stream("output", instance)


@command(app, "stdout", example="si inst stdout -")
@instance_argument
def stdout(instance: str) -> None:
    """Copy what the sequence writes to its stdout."""
    _stream("stdout", instance)


@command(app, "stderr", example="si inst stderr -")
@instance_argument
def stderr(instance: str) -> None:
    """Copy what the sequence writes to its stderr."""
    _stream("stderr", instance)


@command(app, "log", example=["si inst log - --tail 20 | si util lf"])
@instance_argument
@click.option(
    "--tail", metavar="N", type=click.IntRange(min=0), help="Start with the last N lines only."
)
def log(instance: str, tail: int | None) -> None:
    """Copy the instance's log (NDJSON): what was logged so far, then new lines as they come."""
    _stream("log", instance, {"tail": str(tail)} if tail is not None else None)


# -- streams in ------------------------------------------------------------------------------------


@command(app, "input", example=["si inst input - data.txt --end", "seq 10 | si inst input - -e"])
@instance_argument
@click.argument("file", metavar="[FILE]", required=False, type=FILE)
@click.option(
    "-t",
    "--content-type",
    metavar="TYPE",
    default="text/plain",
    show_default=True,
    help="How the sequence reads the data (text/plain, application/octet-stream, "
    "application/x-ndjson).",
)
@click.option("-e", "--end", is_flag=True, help="Close the instance's input after this data.")
def input_(instance: str, file: str | None, content_type: str, end: bool) -> None:
    """Send a file, or stdin, to the instance's input (kept open for more unless --end)."""
    cli = state()
    instance_id = _resolve(cli, instance)
    body = _source(file, "the input")
    try:
        with cli.client() as client:
            client.send_input(instance_id, body, content_type, end=end)
    finally:
        body.close()


@command(app, "stdin", example="echo hello | si inst stdin -")
@instance_argument
@click.argument("file", metavar="[FILE]", required=False, type=FILE)
def stdin(instance: str, file: str | None) -> None:
    """Send a file, or stdin, to the sequence's process stdin."""
    cli = state()
    instance_id = _resolve(cli, instance)
    body = _source(file, "the data")
    try:
        with cli.client() as client:
            client.send_stdin(instance_id, body)
    finally:
        body.close()


@command(app, "inout", example="seq 3 | si inst inout - -t text/plain --end")
@instance_argument
@click.argument("file", metavar="[FILE]", required=False, type=FILE)
@click.option(
    "-t",
    "--content-type",
    type=click.Choice(INOUT_TYPES),
    help="How the sequence reads the data.",
)
@click.option("-e", "--end", is_flag=True, help="Close the instance's input when this data ends.")
def inout(instance: str, file: str | None, content_type: str | None, end: bool) -> None:
    """Send a file, or stdin, to the input and copy the output to stdout at the same time.

    Without --end the instance's input stays open, and so does its output: stop with Ctrl-C.
    """
    cli = state()
    instance_id = _resolve(cli, instance)
    body = _source(file, "the input")
    try:
        with cli.client() as client:
            cli.renderer.stream(client.inout(instance_id, body, content_type, end=end))
    finally:
        body.close()


@command(app, "stdio", "attach", example="si inst attach -")
@instance_argument
def stdio(instance: str) -> None:
    """Attach this terminal: stdin to the sequence's stdin, its stdout and stderr to ours.

    Ends when the instance's stdout and stderr end.
    """
    cli = state()
    instance_id = _resolve(cli, instance)
    failures: list[BaseException] = []
    with cli.client() as client:

        def copy(name: str, target: IO[bytes]) -> None:
            try:
                for chunk in client.instance_stream(instance_id, name):
                    target.write(chunk)
                    target.flush()
            except BrokenPipeError:
                pass
            except BaseException as exc:
                failures.append(exc)

        def feed() -> None:
            try:
                client.send_stdin(instance_id, binary_stdin("the data"))
            except Exception as exc:
                render.warning(f"stdin: {exc}")

        # stdin is read in a daemon thread: a terminal nobody types into must not keep us here.
        threading.Thread(target=feed, name="si-stdin", daemon=True).start()
        readers = [
            threading.Thread(target=copy, args=("stdout", sys.stdout.buffer), daemon=True),
            threading.Thread(target=copy, args=("stderr", sys.stderr.buffer), daemon=True),
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            while reader.is_alive():
                reader.join(0.2)
    if failures:
        raise failures[0]


# -- control ---------------------------------------------------------------------------------------


@command(app, "stop", example="si inst stop - 5000")
@instance_argument
@click.argument("timeout_ms", metavar="[TIMEOUT_MS]", required=False, type=click.IntRange(min=0))
def stop(instance: str, timeout_ms: int | None) -> None:
    """Ask an instance to stop within TIMEOUT_MS (default 7000); the hub replies after it."""
    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        reply = client.stop_instance(
            instance_id, DEFAULT_STOP_TIMEOUT_MS if timeout_ms is None else timeout_ms
        )
    cli.renderer.show(reply)


@command(app, "kill", example="si inst kill - --removeImmediately")
@instance_argument
@click.option(
    "--removeImmediately",
    "--remove-immediately",
    "remove_immediately",
    is_flag=True,
    help="Drop the instance at once, without the retention period.",
)
def kill(instance: str, remove_immediately: bool) -> None:
    """Kill an instance."""
    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        reply = client.kill_instance(instance_id, remove_immediately=remove_immediately)
    forget(cli, "lastInstanceId", instance_id)
    cli.renderer.show(reply)


@command(app, "restart", example="si inst restart -")
@instance_argument
def restart(instance: str) -> None:
    """Kill an instance and start its sequence again with the same id, config, args and topics."""
    from si.client import HubError

    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        record = client.get_instance(instance_id)
        sequence = record.get("sequence")
        sequence_id = sequence.get("id") if isinstance(sequence, dict) else sequence
        if not isinstance(sequence_id, str) or not sequence_id:
            raise SiError(f"the hub did not say which sequence instance {instance_id} runs")
        ended = False
        try:
            kill_reply: Any = client.kill_instance(instance_id, remove_immediately=True)
        except HubError as exc:
            # 400: it is not running. If it has ended, the hub keeps its record (and its id)
            # for the retention period: restart it under a new id instead of waiting.
            if exc.status != 400 or not _has_ended(client.get_instance(instance_id)):
                raise
            kill_reply = exc.reply
            ended = True
        if not ended:
            _wait_until_gone(client, instance_id)
        payload: dict[str, Any] = {"appConfig": record.get("appConfig") or {}}
        if not ended:
            payload["instanceId"] = instance_id
        if record.get("args"):
            payload["args"] = record["args"]
        for source, target in (("requires", "inputTopic"), ("provides", "outputTopic")):
            if isinstance(record.get(source), str) and record[source]:
                payload[target] = record[source]
        payload.update(_supervision_of(record))
        start_reply = client.start_sequence(sequence_id, payload)
    new_id = start_reply.get("id") if isinstance(start_reply.get("id"), str) else instance_id
    if ended:
        render.message(f"instance {instance_id} had ended; started {new_id} with the same settings")
    remember(cli, lastInstanceId=str(new_id))
    cli.renderer.show({"killResponse": kill_reply, "seqStartResponse": start_reply})


def _supervision_of(record: dict[str, Any]) -> dict[str, Any]:
    """The start keys that give a restarted instance its old restart policy, limits and name."""
    payload: dict[str, Any] = {}
    policy = record.get("restartPolicy")
    if isinstance(policy, dict) and policy.get("restart") not in (None, "no"):
        for key in ("restart", "maxRestarts", "restartWindow"):
            if policy.get(key) is not None:
                payload[key] = policy[key]
    limits = record.get("limits")
    if isinstance(limits, dict):
        payload["limits"] = {k: limits[k] for k in ("memory", "cpu") if limits.get(k) is not None}
    if isinstance(record.get("name"), str) and record["name"]:
        payload["name"] = record["name"]
    return payload


# Statuses of an instance whose process is gone (STH's, plus si's "lost").
ENDED_STATUSES = ("completed", "errored", "lost")


def _has_ended(record: dict[str, Any]) -> bool:
    return record.get("status") in ENDED_STATUSES or bool(record.get("terminated"))


def _wait_until_gone(client: Any, instance_id: str) -> None:
    """Poll until the hub has dropped the killed instance (its id is then free again)."""
    from si.client import HubError

    deadline = time.monotonic() + RESTART_TIMEOUT
    while True:
        try:
            client.get_instance(instance_id)
        except HubError as exc:
            if exc.status == 404:
                return
            raise
        if time.monotonic() > deadline:
            raise SiError(f"instance {instance_id} did not go away; it cannot be restarted")
        time.sleep(RESTART_POLL)


# -- events ----------------------------------------------------------------------------------------


@command(events, "emit", "invoke", example="si inst event emit - ping 'hello there'")
@instance_argument
@click.argument("name", metavar="EVENT")
@click.argument("payload", metavar="[PAYLOAD]", required=False)
@click.option("-j", "--json", "as_json", is_flag=True, help="Send PAYLOAD parsed as JSON.")
def emit(instance: str, name: str, payload: str | None, as_json: bool) -> None:
    """Send the event EVENT to the instance, with PAYLOAD as its message (a string)."""
    cli = state()
    instance_id = _resolve(cli, instance)
    message: Any = payload
    if as_json and payload is not None:
        try:
            message = json.loads(payload)
        except ValueError as exc:
            raise SiError(f"the payload is not JSON: {exc}") from None
    with cli.client() as client:
        reply = client.emit_event(instance_id, name, message)
    cli.renderer.show(reply)


@command(events, "on", example=["si inst event on - done --next", "si inst event on - tick -s"])
@instance_argument
@click.argument("name", metavar="EVENT")
@click.option("-n", "--next", "wait_next", is_flag=True, help="Wait for the next one.")
@click.option("-s", "--stream", "as_stream", is_flag=True, help="Print every one, as JSON lines.")
def on(instance: str, name: str, wait_next: bool, as_stream: bool) -> None:
    """Print the instance's last EVENT message (or wait for the first), as JSON."""
    if wait_next and as_stream:
        raise SiError("use --next or --stream, not both")
    cli = state()
    instance_id = _resolve(cli, instance)
    with cli.client() as client:
        if as_stream:
            cli.renderer.stream(client.event_stream(instance_id, name))
            return
        value = client.get_event(instance_id, name, wait_next=wait_next)
    cli.renderer.json_value(value)
