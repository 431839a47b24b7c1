"""``si seq|sequence``: pack, send, start, deploy, list, inspect, update and remove sequences.

Each command parses its arguments, calls :mod:`si.package` or the hub client, and hands the result
to the renderer. ``-`` in place of an id or package path means "the last one" (see
:mod:`si.cli.session`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from si.cli import common, render
from si.cli.common import (
    DIRECTORY,
    FILE,
    SEQUENCE_ID,
    AliasGroup,
    CliState,
    binary_stdin,
    command,
    existing_file,
    forget,
    group,
    remember,
    sequence_argument,
    state,
)
from si.errors import SiError
from si.structured import read_structured

app: AliasGroup = group("seq", "Pack, send, start and manage sequences.")

# The keys of a start request (STH's `seq start` options); a startup-config file may
# hold any of them.
START_KEYS = (
    "appConfig",
    "args",
    "instanceId",
    "inputTopic",
    "outputTopic",
    "limits",
    # si's supervision (the hub's si.daemon.restart):
    "restart",
    "maxRestarts",
    "restartWindow",
)
# STH checks the length of a caller-chosen instance id (a UUID's textual length).
INSTANCE_ID_LENGTH = 36
# Bytes per read when a directory is packed straight into an upload.
PACK_CHUNK = 64 * 1024

F = TypeVar("F", bound=Callable[..., Any])


def _print_manifest_warnings(directory: Path) -> None:
    """Warn about package.json fields the hub will not like, before packing."""
    from si.package.manifest import manifest_warnings, read_manifest

    for message in manifest_warnings(read_manifest(directory)):
        render.warning(message)


# -- pack ------------------------------------------------------------------------------------------


@command(app, "pack", example=["si seq pack ./my-sequence -o my-sequence.tar.gz"])
@click.argument("directory", metavar="DIR", type=DIRECTORY)
@click.option(
    "-o", "--output", metavar="FILE", type=FILE, help="Archive path (default: DIR.tar.gz)."
)
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the archive to stdout.")
def pack(directory: str, output: str | None, to_stdout: bool) -> None:
    """Pack a sequence directory into a .tar.gz package (-c ignores -o)."""
    from si.package.pack import pack_directory, pack_to_file

    cli = state()
    source = Path(directory)
    _print_manifest_warnings(source)
    if to_stdout:
        with render.binary_stdout() as out:
            if out.isatty():
                raise SiError("refusing to write an archive to a terminal; use -o or a pipe")
            pack_directory(source, out)
        return
    archive = pack_to_file(source, Path(output) if output is not None else None)
    remember(cli, lastPackagePath=str(Path(archive).absolute()))


# -- uploads ---------------------------------------------------------------------------------------


def packed_chunks(directory: Path, tee: Path | None = None) -> Generator[bytes, None, None]:
    """The package of ``directory`` as it is packed, without a temporary file.

    A thread packs into a pipe while the caller reads (and uploads) the other end; ``tee``
    also keeps a copy of the archive there.

    Raises:
        PackageError: the directory cannot be packed (checked before the first byte).
    """
    from si.package.pack import pack_directory

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb") as sink:
                pack_directory(directory, sink)
        except BaseException as exc:  # handed to the reading side
            failure.append(exc)

    producer = threading.Thread(target=produce, name="si-pack", daemon=True)
    producer.start()
    copy = open(tee, "wb") if tee is not None else None  # noqa: SIM115 - closed below
    try:
        with open(read_fd, "rb") as source:
            while chunk := source.read1(PACK_CHUNK):
                if copy is not None:
                    copy.write(chunk)
                yield chunk
        producer.join()
        if failure:
            raise failure[0]
    finally:
        if copy is not None:
            copy.close()


def _counted(chunks: Iterator[bytes], bar: Any) -> Iterator[bytes]:
    for chunk in chunks:
        bar.advance(len(chunk))
        yield chunk


def upload_package(
    cli: CliState,
    source: Path | None,
    send: Callable[[Any], dict[str, Any]],
    *,
    tee: Path | None = None,
) -> str:
    """Upload a package (file, directory packed on the fly, or stdin when ``source`` is None)
    with ``send`` (a HubClient method); returns the sequence id the hub answered."""
    from si.cli import progress

    if source is None:
        with binary_stdin("the package", allow_terminal=False) as stdin:
            return _reply_id(send(stdin), "sequence")
    if source.is_dir():
        _print_manifest_warnings(source)
        chunks = packed_chunks(source, tee)
        try:
            if progress.wanted(cli.progress, lambda: _unpacked_size(source)):
                bar = progress.ProgressBar(None)
                reply = send(_counted(chunks, bar))
                bar.finish()
            else:
                reply = send(chunks)
        finally:
            chunks.close()
        return _reply_id(reply, "sequence")
    path = existing_file(str(source))
    size = path.stat().st_size
    with path.open("rb") as body:
        if progress.wanted(cli.progress, size):
            bar = progress.ProgressBar(size)
            reply = send(progress.CountingReader(body, bar))
            bar.finish()
        else:
            reply = send(body)
    return _reply_id(reply, "sequence")


def _unpacked_size(directory: Path) -> int:
    """What a directory's files weigh before compression: decides whether to draw a bar."""
    from si.package.pack import iter_package_members

    total = 0
    for _name, path in iter_package_members(directory):
        try:
            total += path.lstat().st_size
        except OSError:
            continue
    return total


def _reply_id(reply: dict[str, Any], what: str) -> str:
    identifier = reply.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise SiError(f"the hub did not return the new {what}'s id")
    return identifier


def _package_source(cli: CliState, package: str | None) -> Path | None:
    if package is None:
        return None
    return Path(cli.session.resolve(package, "lastPackagePath"))


@command(
    app,
    "send",
    example=["si seq send my-sequence.tar.gz", "si seq pack ./dir -c | si seq send"],
)
@click.argument("package", metavar="[FILE|DIR|-]", required=False, type=FILE)
def send(package: str | None) -> None:
    """Upload a package (a .tar.gz, a directory packed on the fly, - for the last packed one,
    or stdin when none is given); prints the new sequence's _id."""
    cli = state()
    with cli.client() as client:
        sequence_id = upload_package(cli, _package_source(cli, package), client.send_sequence)
        api_base = client.address
    remember(cli, lastSequenceId=sequence_id)
    cli.renderer.show(render.sequence_handle(sequence_id, api_base))


@command(app, "update", example="si seq update - ./my-sequence")
@sequence_argument
@click.argument("package", metavar="FILE|DIR|-", type=FILE)
def update(sequence: str, package: str) -> None:
    """Replace a sequence's package, keeping its id (refused while it has instances)."""
    cli = state()
    sequence_id = cli.session.resolve(sequence, "lastSequenceId")
    source = _package_source(cli, package)
    with cli.client() as client:

        def put(body: Any) -> dict[str, Any]:
            return client.update_sequence(sequence_id, body)

        updated = upload_package(cli, source, put)
        api_base = client.address
    remember(cli, lastSequenceId=updated)
    cli.renderer.show(render.sequence_handle(updated, api_base))


# -- start and deploy ------------------------------------------------------------------------------


def start_options(function: F) -> F:
    """The options ``seq start`` and ``seq deploy`` share, as STH's CLI has them."""
    options = [
        click.argument("positional", metavar="[ARGS]...", nargs=-1),
        click.option("--args", "args_json", metavar="JSON", help="Arguments as a JSON array."),
        click.option(
            "-f",
            "--config-file",
            metavar="FILE",
            type=FILE,
            help="appConfig from a JSON/YAML file.",
        ),
        click.option("-s", "--config-string", metavar="JSON", help="appConfig as a JSON string."),
        click.option("--inst-id", metavar="ID", help="A 36-character instance id."),
        click.option("--output-topic", metavar="TOPIC", help="Send the output to this topic."),
        click.option("--input-topic", metavar="TOPIC", help="Read the input from this topic."),
        click.option("--limits", metavar="JSON", help='Limits, e.g. {"memory": 512} (MB).'),
        click.option(
            "--restart",
            type=click.Choice(["no", "on-failure", "always"]),
            help="Start it again when it ends: never (default), when it fails, or always.",
        ),
        click.option(
            "--max-restarts",
            metavar="N",
            type=click.IntRange(min=0),
            help="Give up (errored, flapping) past N restarts within the window (default 5).",
        ),
        click.option(
            "--restart-window",
            metavar="SECONDS",
            type=click.FloatRange(min=0, min_open=True),
            help="The window --max-restarts counts in (default 60).",
        ),
        click.option(
            "--startup-config",
            metavar="FILE",
            type=FILE,
            help="A JSON/YAML file with any of the start options; options given here win.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _payload_from(options: dict[str, Any]) -> dict[str, Any]:
    startup = options.get("startup_config")
    config_file = options.get("config_file")
    return start_payload(
        positional=list(options.get("positional") or ()),
        args_json=options.get("args_json"),
        config_file=Path(config_file) if config_file else None,
        config_string=options.get("config_string"),
        instance_id=options.get("inst_id"),
        output_topic=options.get("output_topic"),
        input_topic=options.get("input_topic"),
        limits_json=options.get("limits"),
        startup_config=Path(startup) if startup else None,
        restart=options.get("restart"),
        max_restarts=options.get("max_restarts"),
        restart_window=options.get("restart_window"),
    )


def _start(
    cli: CliState, sequence_id: str, payload: dict[str, Any], hub: str | None = None
) -> None:
    with cli.client() as client:
        if hub is None:
            reply = client.start_sequence(sequence_id, payload)
        else:
            reply = client.cluster_start(sequence_id, payload, hub)
        instance_id = _reply_id(reply, "instance")
        api_base = client.address
    remember(cli, lastInstanceId=instance_id)
    handle = render.instance_handle(instance_id, api_base)
    if hub is not None:
        handle["hub"] = reply.get("hub")
    cli.renderer.show(handle)


@command(
    app,
    "start",
    example=[
        "si seq start - --args '[3000, 10]'",
        "si seq start - 3000 10",
        "si seq start - --hub auto",
    ],
)
@sequence_argument
@start_options
@click.option(
    "--hub",
    metavar="NAME|auto",
    help="Start on this hub of the cluster, or on the least loaded live one (auto).",
)
def start(sequence: str, hub: str | None, **options: Any) -> None:
    """Start an instance of a sequence; prints the new instance's _id.

    Positional ARGS reach the sequence as strings (put -- before ones starting with -);
    --args keeps JSON types.
    """
    payload = _payload_from(options)
    cli = state()
    _start(cli, cli.session.resolve(sequence, "lastSequenceId"), payload, hub)


@command(app, "deploy", "run", example='si seq deploy ./my-sequence -s \'{"greeting": "hi"}\'')
@click.argument("path", metavar="DIR|FILE", type=FILE)
@click.option(
    "-o", "--output", metavar="FILE", type=FILE, help="Also save the packed archive (DIR only)."
)
@start_options
def deploy(path: str, output: str | None, **options: Any) -> None:
    """Pack (a directory), send and start in one step; takes seq start's options.

    A directory is packed straight into the upload; a .tar.gz is sent as it is (and, as in
    STH, its sequence is printed before the instance).
    """
    payload = _payload_from(options)
    cli = state()
    source = Path(path)
    if not source.exists():
        raise SiError(f'File "{path}" not found.')
    tee = Path(output) if output is not None and source.is_dir() else None
    with cli.client() as client:
        sequence_id = upload_package(cli, source, client.send_sequence, tee=tee)
        api_base = client.address
    updates = {"lastSequenceId": sequence_id}
    if tee is not None:
        updates["lastPackagePath"] = str(tee.absolute())
    remember(cli, **updates)
    if not source.is_dir():
        cli.renderer.show(render.sequence_handle(sequence_id, api_base))
    _start(cli, sequence_id, payload)


def start_payload(
    *,
    positional: list[str],
    args_json: str | None = None,
    config_file: Path | None = None,
    config_string: str | None = None,
    instance_id: str | None = None,
    output_topic: str | None = None,
    input_topic: str | None = None,
    limits_json: str | None = None,
    startup_config: Path | None = None,
    restart: str | None = None,
    max_restarts: int | None = None,
    restart_window: float | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST sequence/<id>/start`` from ``seq start``'s options.

    Options given on the command line override the startup-config file (objects are merged);
    ``args`` is left out when empty and ``limits`` is always present, as STH sends them.
    """
    if config_file is not None and config_string is not None:
        raise SiError("Provide one source of configuration")
    if positional and args_json is not None:
        raise SiError("Give the sequence's arguments either positionally or with --args, not both")

    given: dict[str, Any] = {}
    if config_file is not None:
        given["appConfig"] = read_structured(config_file, "Unable to read configuration file")
    if config_string is not None:
        try:
            given["appConfig"] = json.loads(config_string)
        except ValueError:
            raise SiError("Unable to parse configuration string") from None
    if positional:
        given["args"] = list(positional)
    if args_json is not None:
        try:
            parsed = json.loads(args_json)
        except ValueError as exc:
            raise SiError(f"Error while parsing the provided Instance arguments. '{exc}'") from None
        if not isinstance(parsed, list):
            raise SiError("Arguments must be in array")
        given["args"] = parsed
    if instance_id is not None:
        given["instanceId"] = instance_id
    if output_topic is not None:
        given["outputTopic"] = output_topic
    if input_topic is not None:
        given["inputTopic"] = input_topic
    if limits_json is not None:
        try:
            given["limits"] = json.loads(limits_json)
        except ValueError:
            raise SiError("Unable to parse --limits: it must be a JSON object") from None
    for key, value in (
        ("restart", restart),
        ("maxRestarts", max_restarts),
        ("restartWindow", restart_window),
    ):
        if value is not None:
            given[key] = value

    payload: dict[str, Any] = {}
    if startup_config is not None:
        stored = read_structured(startup_config, "Unable to read startup configuration file")
        if not isinstance(stored, dict):
            raise SiError(f"{startup_config}: the startup configuration must be an object")
        payload = {key: stored[key] for key in START_KEYS if stored.get(key) is not None}
    payload = _merge(payload, given)

    app_config = payload.get("appConfig")
    if app_config is not None and not isinstance(app_config, dict):
        raise SiError(f"DTO appConfig is {_json_type(app_config)}, not an object")
    if "args" in payload and not isinstance(payload["args"], list):
        raise SiError("Arguments must be in array")
    if not payload.get("args"):
        payload.pop("args", None)
    identifier = payload.get("instanceId")
    if identifier is not None and (
        not isinstance(identifier, str) or len(identifier) != INSTANCE_ID_LENGTH
    ):
        raise SiError(f"DTO instanceId is not {INSTANCE_ID_LENGTH} long")
    payload.setdefault("limits", {})
    if not isinstance(payload["limits"], dict):
        raise SiError(f"DTO limits is {_json_type(payload['limits'])}, not an object")
    return payload


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, merging nested objects key by key."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


# -- listing, inspecting, removing -----------------------------------------------------------------


@command(
    app,
    "ls",
    "list",
    example=["si seq ls", "si seq ls -n my-sequence --format json", "si seq ls --cluster"],
)
@click.option("-n", "--name", metavar="NAME", help="Only the ids of sequences with this name.")
@click.option(
    "--cluster", is_flag=True, help="The sequences in the cluster's store (any hub starts them)."
)
def list_sequences(name: str | None, cluster: bool) -> None:
    """List the hub's sequences (a table; JSON with --format json)."""
    cli = state()
    if cluster:
        with cli.client() as client:
            shared = client.cluster_sequences()
        if name is not None:
            shared = [s for s in shared if isinstance(s, dict) and s.get("name") == name]
        cli.renderer.cluster_sequences(shared)
        return
    with cli.client() as client:
        records = client.list_sequences()
    if name is None:
        cli.renderer.sequences(records)
        return
    ids = [
        record.get("id")
        for record in records
        if isinstance(record, dict) and (record.get("config") or {}).get("name") == name
    ]
    if not ids:
        raise SiError("No results found")
    cli.renderer.lines(ids)


@command(app, "info", example="si seq info -")
@sequence_argument
def info(sequence: str) -> None:
    """Show one sequence."""
    cli = state()
    sequence_id = cli.session.resolve(sequence, "lastSequenceId")
    with cli.client() as client:
        record = client.get_sequence(sequence_id)
    cli.renderer.show(record)


# STH before 0.33 called it "get"; kept, hidden, for old scripts.
app.add_alias("info", "get")


@command(app, "use", "select", example="si seq use 6ba8a2b1-4b55-4c4a-b2a3-0bd6ed5f2b1e")
@click.argument("sequence", metavar="ID", type=SEQUENCE_ID)
def use(sequence: str) -> None:
    """Make a sequence the one - stands for (checked with the hub first)."""
    common.use(state(), "sequence", "lastSequenceId", sequence, lambda c, s: c.get_sequence(s))


@command(app, "rm", "delete", example="si seq rm - --force")
@sequence_argument
@click.option("-f", "--force", is_flag=True, help="Kill the sequence's instances first.")
def remove(sequence: str, force: bool) -> None:
    """Remove a sequence from the hub."""
    cli = state()
    sequence_id = cli.session.resolve(sequence, "lastSequenceId")
    with cli.client() as client:
        reply = client.delete_sequence(sequence_id, force=force)
    forget(cli, "lastSequenceId", sequence_id)
    cli.renderer.show(reply)


@command(app, "prune", example="si seq prune --force")
@click.option("-f", "--force", is_flag=True, help="Also remove sequences with running instances.")
def prune(force: bool) -> None:
    """Remove every sequence from the hub (messages on stderr)."""
    from si.client import HubError

    cli = state()
    with cli.client() as client:
        records = client.list_sequences()
        if not records:
            render.message("Sequence list is empty, nothing to delete.")
            return
        failures = []
        for record in records:
            identifier = record.get("id") if isinstance(record, dict) else None
            if not isinstance(identifier, str):
                continue
            try:
                client.delete_sequence(identifier, force=force)
            except HubError as exc:
                failures.append(f"{identifier}: {exc}")
        remaining = client.list_sequences()
    remember(cli, lastSequenceId="", lastInstanceId="")
    for failure in failures:
        render.warning(failure)
    if failures or remaining:
        raise SiError("Some Sequences may have not been deleted.")
    render.message("Sequences removed successfully.")
