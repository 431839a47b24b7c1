"""``si seq|sequence``: pack, send, start, list, inspect and remove sequences.

Each command parses its arguments, calls :mod:`si.package` or the hub client, and hands the result
to the renderer. ``-`` in place of an id or package path means "the last one" (see
:mod:`si.cli.session`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from si.cli import render
from si.cli.common import CliState, existing_file, forget, new_group, remember, state
from si.errors import SiError

app = new_group("Pack, send, start and manage sequences (alias: sequence).")

# The keys of a start request (sth-cli.md §6.1); a startup-config file may hold any of them.
START_KEYS = ("appConfig", "args", "instanceId", "inputTopic", "outputTopic", "limits")
# STH checks the length of a caller-chosen instance id (a UUID's textual length).
INSTANCE_ID_LENGTH = 36


def _print_manifest_warnings(directory: Path) -> None:
    """Warn about package.json fields the hub will not like, before packing."""
    from si.package.manifest import manifest_warnings, read_manifest

    for message in manifest_warnings(read_manifest(directory)):
        render.warning(message)


@app.command("pack")
def pack(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The sequence's directory.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE", help="Archive path (default: DIR.tar.gz)."),
    ] = None,
    to_stdout: Annotated[
        bool, typer.Option("-c", "--stdout", help="Write the archive to stdout (ignores -o).")
    ] = False,
) -> None:
    """Pack a sequence directory into a .tar.gz package."""
    from si.package.pack import pack_directory, pack_to_file

    cli = state(ctx)
    _print_manifest_warnings(directory)
    if to_stdout:
        with render.binary_stdout() as out:
            if out.isatty():
                raise SiError("refusing to write an archive to a terminal; use -o or a pipe")
            pack_directory(directory, out)
        return
    archive = pack_to_file(directory, output)
    remember(cli, lastPackagePath=str(Path(archive).absolute()))


@app.command("send")
def send(
    ctx: typer.Context,
    package: Annotated[
        str,
        typer.Argument(
            metavar="FILE|DIR|-", help="A .tar.gz package, a directory to pack, or - (last packed)."
        ),
    ],
) -> None:
    """Upload a package to the hub; prints the new sequence's _id."""
    cli = state(ctx)
    path = Path(cli.session.resolve(package, "lastPackagePath"))
    if path.is_dir():
        import tempfile

        from si.package.pack import pack_to_file

        _print_manifest_warnings(path)
        with tempfile.TemporaryDirectory(prefix="si-send-") as scratch:
            archive = pack_to_file(path, Path(scratch) / f"{path.absolute().name}.tar.gz")
            sequence_id, api_base = _upload(cli, Path(archive))
    else:
        sequence_id, api_base = _upload(cli, existing_file(str(path)))
    remember(cli, lastSequenceId=sequence_id)
    cli.renderer.show(render.sequence_handle(sequence_id, api_base))


def _upload(cli: CliState, archive: Path) -> tuple[str, str]:
    with cli.client() as client, archive.open("rb") as body:
        reply = client.send_sequence(body)
        return _reply_id(reply, "sequence"), client.address


def _reply_id(reply: dict[str, Any], what: str) -> str:
    identifier = reply.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise SiError(f"the hub did not return the new {what}'s id")
    return identifier


@app.command("start")
def start(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="ID|-", help="Sequence id, or - (last sent).")],
    positional: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ARGS",
            help="Arguments for the sequence, each a string (put -- before ones starting with -).",
            show_default=False,
        ),
    ] = None,
    args_json: Annotated[
        str | None,
        typer.Option("--args", metavar="JSON", help="Arguments as a JSON array (any values)."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "-f", "--config-file", metavar="FILE", help="appConfig from a JSON/YAML file."
        ),
    ] = None,
    config_string: Annotated[
        str | None,
        typer.Option("-s", "--config-string", metavar="JSON", help="appConfig as a JSON string."),
    ] = None,
    inst_id: Annotated[
        str | None, typer.Option("--inst-id", metavar="ID", help="A 36-character instance id.")
    ] = None,
    output_topic: Annotated[
        str | None,
        typer.Option("--output-topic", metavar="TOPIC", help="Send the output to this topic."),
    ] = None,
    input_topic: Annotated[
        str | None,
        typer.Option("--input-topic", metavar="TOPIC", help="Read the input from this topic."),
    ] = None,
    limits: Annotated[
        str | None,
        typer.Option("--limits", metavar="JSON", help='Limits, e.g. {"memory": 512}.'),
    ] = None,
    startup_config: Annotated[
        Path | None,
        typer.Option(
            "--startup-config", metavar="FILE", help="A JSON/YAML file with any start options."
        ),
    ] = None,
) -> None:
    """Start an instance of a sequence; prints the new instance's _id."""
    payload = start_payload(
        positional=positional or [],
        args_json=args_json,
        config_file=config_file,
        config_string=config_string,
        instance_id=inst_id,
        output_topic=output_topic,
        input_topic=input_topic,
        limits_json=limits,
        startup_config=startup_config,
    )
    cli = state(ctx)
    sequence_id = cli.session.resolve(sequence, "lastSequenceId")
    with cli.client() as client:
        instance_id = _reply_id(client.start_sequence(sequence_id, payload), "instance")
        api_base = client.address
    remember(cli, lastInstanceId=instance_id)
    cli.renderer.show(render.instance_handle(instance_id, api_base))


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
        given["appConfig"] = _read_structured(config_file, "Unable to read configuration file")
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

    payload: dict[str, Any] = {}
    if startup_config is not None:
        stored = _read_structured(startup_config, "Unable to read startup configuration file")
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


def _read_structured(path: Path, unreadable: str) -> Any:
    """A JSON or (by extension) YAML file's content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise SiError(f"{unreadable}: {path}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import importlib

        try:
            yaml = importlib.import_module("yaml")
        except ImportError:
            raise SiError(
                f"{path} is YAML, which needs PyYAML (pip install pyyaml); or use JSON"
            ) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SiError(f"{path}: invalid YAML: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SiError(f"{path}: invalid JSON: {exc}") from None


@app.command("ls")
@app.command("list", hidden=True)
def list_sequences(ctx: typer.Context) -> None:
    """List the hub's sequences (alias: list)."""
    cli = state(ctx)
    with cli.client() as client:
        records = client.list_sequences()
    cli.renderer.sequences(records)


@app.command("info")
@app.command("get", hidden=True)
def info(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="ID|-", help="Sequence id, or - (last sent).")],
) -> None:
    """Show one sequence."""
    cli = state(ctx)
    sequence_id = cli.session.resolve(sequence, "lastSequenceId")
    with cli.client() as client:
        record = client.get_sequence(sequence_id)
    cli.renderer.show(record)


@app.command("rm")
@app.command("delete", hidden=True)
def remove(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="ID|-", help="Sequence id, or - (last sent).")],
    force: Annotated[
        bool, typer.Option("-f", "--force", help="Kill the sequence's instances first.")
    ] = False,
) -> None:
    """Remove a sequence from the hub (alias: delete)."""
    cli = state(ctx)
    sequence_id = cli.session.resolve(sequence, "lastSequenceId")
    with cli.client() as client:
        reply = client.delete_sequence(sequence_id, force=force)
    forget(cli, "lastSequenceId", sequence_id)
    cli.renderer.show(reply)
