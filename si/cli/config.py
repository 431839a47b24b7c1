"""``si config|c``: show and change the CLI's profile, and show the session's "last" values.

See :mod:`si.cli.profile` for where profiles live and which one a command uses. Changes go to
the profile in use; a profile given with ``--config-path`` is read-only.
"""

from __future__ import annotations

import json
from typing import Any

import click

from si.cli import render
from si.cli.common import AliasGroup, CliState, command, group, state
from si.errors import SiError

app: AliasGroup = group("config", "Show and change profiles (which hub, output format, debug).")
setter: AliasGroup = group("set", "Change a setting of the profile in use.", parent=app)
resetter: AliasGroup = group(
    "reset", "Put a setting of the profile back to its default.", parent=app
)
profiles: AliasGroup = group(
    "profile", "List, create, remove and switch profiles.", "pr", parent=app
)


def _save(cli: CliState, change: dict[str, Any]) -> None:
    from si.cli.profile import validate

    profile = cli.profile
    data = json.loads(json.dumps(profile.data))
    for key, value in change.items():
        if key == "log" and isinstance(value, dict):
            data["log"].update(value)
        else:
            data[key] = value
    profile.data = validate(data, profile.name)
    profile.save()


@command(app, "print", "p", example="si config print --format json")
def print_profile() -> None:
    """Print the profile in use (its name goes to stderr)."""
    cli = state()
    profile = cli.profile
    if profile.read_only:
        render.message(f"Current configuration: {profile.path}")
    else:
        render.message(f"Current profile: {profile.name}")
    render.message("")
    cli.renderer.show(profile.data)


@command(app, "session", "s", example="si config session")
def session() -> None:
    """Print this terminal session's "last" values (what - stands for)."""
    cli = state()
    data = {
        key: cli.session.get(key) for key in ("lastPackagePath", "lastSequenceId", "lastInstanceId")
    }
    data["sessionId"] = cli.session.session_id
    cli.renderer.show(data)


# -- set -------------------------------------------------------------------------------------------


@command(setter, "json", example='si config set json \'{"log": {"format": "json"}}\'')
@click.argument("value", metavar="JSON")
def set_json(value: str) -> None:
    """Merge a JSON object into the profile."""
    try:
        change = json.loads(value)
    except ValueError:
        raise SiError("Parsing error: Invalid JSON format") from None
    if not isinstance(change, dict):
        raise SiError("Invalid configuration in json object")
    try:
        _save(state(), change)
    except SiError as exc:
        raise SiError(f"Invalid configuration in json object: {exc}") from None


@command(
    setter,
    "apiUrl",
    "api-url",
    example=[
        "si config set apiUrl http://127.0.0.1:8000/api/v1",
        "si config set apiUrl /tmp/h/hub.sock",
    ],
)
@click.argument("url", metavar="URL|SOCKET")
def set_api_url(url: str) -> None:
    """Point the profile at a hub: an http(s) URL with a port, or a hub's Unix socket path."""
    from si.cli.profile import normalise_hub_url

    _save(state(), {"apiUrl": normalise_hub_url(url)})


@command(setter, "log", example="si config set log --format json --debug false")
@click.option("--debug", metavar="BOOLEAN", help="true/false: print hub errors in full on stdout.")
@click.option("--format", "output_format", metavar="FORMAT", help="pretty or json.")
def set_log(debug: str | None, output_format: str | None) -> None:
    """Set the output format and debug mode."""
    from si.cli.profile import FORMATS, parse_bool

    change: dict[str, Any] = {}
    if debug is not None:
        change["debug"] = parse_bool(debug)
    if output_format is not None:
        if output_format not in FORMATS:
            raise SiError("Unable to set format value")
        change["format"] = output_format
    if not change:
        raise SiError("give --debug and/or --format")
    _save(state(), {"log": change})


@command(
    setter, "middlewareApiUrl", example="si config set middlewareApiUrl https://example.com:443"
)
@click.argument("url", metavar="URL")
def set_middleware(url: str) -> None:
    """Set the cloud middleware's URL (kept for STH profiles; a local hub ignores it)."""
    from si.cli.profile import normalise_hub_url

    _save(state(), {"middlewareApiUrl": normalise_hub_url(url) if url else ""})


@command(setter, "scope", example="si config set scope my-scope")
@click.argument("name", metavar="NAME")
def set_scope(name: str) -> None:
    """Set the cloud scope (kept for STH profiles; a local hub ignores it)."""
    _save(state(), {"scope": name})


@command(setter, "token", example="si config set token eyJhbGciOi...")
@click.argument("token", metavar="JWT")
def set_token(token: str) -> None:
    """Set the cloud token (kept for STH profiles; a local hub ignores it)."""
    from si.cli.profile import check_token

    _save(state(), {"token": check_token(token)})


@command(setter, "env", example="si config set env development")
@click.argument("env", type=click.Choice(["development", "production"]))
def set_env(env: str) -> None:
    """Set the environment (production is STH's cloud platform, which si does not serve)."""
    _save(state(), {"env": env})


# -- reset -----------------------------------------------------------------------------------------


def _reset(*keys: str) -> None:
    from si.cli.profile import defaults

    initial = defaults()
    _save(state(), {key: initial[key] for key in keys})


for _key in ("apiUrl", "log", "middlewareApiUrl", "token", "env"):

    def _make(key: str) -> None:
        @command(resetter, key, example=f"si config reset {key}")
        def reset_one() -> None:
            _reset(key)

        reset_one.help = f"Put {key} back to its default."

    _make(_key)


@command(resetter, "all", example="si config reset all")
def reset_all() -> None:
    """Put the whole profile back to its defaults and clear the session's "last" values."""
    from si.cli.profile import defaults

    cli = state()
    cli.profile.data = defaults()
    cli.profile.save()
    cli.session.update(lastPackagePath="", lastSequenceId="", lastInstanceId="")


# -- profiles --------------------------------------------------------------------------------------


@command(profiles, "ls", "list", example="si config profile ls")
def profile_list() -> None:
    """List the profiles (stderr; -> marks the one in use)."""
    from si.cli.profile import list_profiles

    cli = state()
    current = cli.profile.name
    names = list_profiles()
    if cli.format.value == "json":
        cli.renderer.show({"current": current, "profiles": names})
        return
    render.message("Available profiles:")
    for name in names:
        render.message(f"{'-> ' if name == current else '   '}{name}")


@command(profiles, "use", example="si config profile use ci")
@click.argument("name", metavar="NAME")
def profile_use(name: str) -> None:
    """Make NAME the profile every shell uses (switching clears the session's "last" values)."""
    from si.cli.profile import load_named, select_name, selected_name

    load_named(name)  # exists and is valid
    cli = state()
    if name != selected_name():
        cli.session.update(lastPackagePath="", lastSequenceId="", lastInstanceId="")
    select_name(name)


@command(profiles, "create", example="si config profile create ci")
@click.argument("name", metavar="NAME")
def profile_create(name: str) -> None:
    """Create a profile with the default settings."""
    from si.cli.profile import defaults, profile_file, write_json

    path = profile_file(name)
    if path.exists():
        raise SiError(f"Profile {name} already exists")
    write_json(path, defaults())


@command(profiles, "remove", "rm", example="si config profile remove ci")
@click.argument("name", metavar="NAME")
def profile_remove(name: str) -> None:
    """Remove a profile (not default); removing the selected one selects default."""
    from si.cli.profile import DEFAULT_PROFILE, profile_file, select_name, selected_name

    if name == DEFAULT_PROFILE:
        raise SiError("The default profile cannot be removed")
    path = profile_file(name)
    if not path.exists():
        raise SiError(f"Unknown profile: {name}")
    path.unlink()
    if selected_name() == name:
        select_name(DEFAULT_PROFILE)
