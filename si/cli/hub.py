"""``si hub``: run a local hub (``serve``, ``stop``, ``status``) and ask a hub about itself.

``serve`` imports the daemon only when it runs, so the rest of the CLI stays quick to start.
``serve --detach`` is for scripts and CI: it returns once the hub answers and prints a line to
``eval`` (``eval "$(si hub serve --detach --home /tmp/h)"``).
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from si.cli import render
from si.cli.common import DIRECTORY, FILE, AliasGroup, command, group, hub_paths, state
from si.errors import SiError

if TYPE_CHECKING:
    from si.daemon.tokens import TokenStore
    from si.service import ServiceUnit

app: AliasGroup = group("hub", "Run a local hub, or ask the hub about itself.")

# ``si hub status`` exits with this when no hub runs (systemctl's "not running" code), so
# ``si hub status || si hub serve --detach`` works in scripts.
EXIT_NOT_RUNNING = 3

home_option = click.option(
    "--home",
    metavar="DIR",
    type=DIRECTORY,
    help="The hub's home directory (default: SI_HOME, else per-user directories).",
)

port_option = click.option(
    "--port", metavar="N", type=click.IntRange(0, 65535), help="Also serve on TCP."
)
host_option = click.option(
    "--host", metavar="ADDR", help="TCP address to bind (default 127.0.0.1)."
)


@command(
    app,
    "serve",
    example=["si hub serve --home ./h", 'eval "$(si hub serve --detach --home /tmp/h)"'],
)
@home_option
@port_option
@host_option
@click.option("-K", "--kill-on-exit", is_flag=True, help="Kill every instance when the hub stops.")
@click.option(
    "--retention",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    help="How long a finished instance stays readable (default 180).",
)
@click.option(
    "--reader-lag-bytes",
    metavar="N",
    type=click.IntRange(min=1),
    help="An output reader may be this many bytes behind the fastest (default 524288)...",
)
@click.option(
    "--reader-lag-seconds",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    help="...and is cut off once further behind for this long (default 2).",
)
@click.option(
    "--max-package-size",
    metavar="SIZE",
    callback=lambda _ctx, _param, value: _size(value),
    help="Largest package upload accepted, e.g. 512M (the default) or 2G.",
)
@click.option(
    "--head-timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    help="How long a client has to send a request head, 0 for ever (default 10).",
)
@click.option(
    "--body-idle-timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    help="Longest pause in a request body of known length, 0 for ever (default 30).",
)
@click.option(
    "--keep-alive-timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    help="How long an idle client connection stays open, 0 for ever (default 60).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    default=None,
    help="Serve TCP without tokens (only on a loopback --host).",
)
@click.option("--tls-cert", metavar="FILE", type=FILE, help="Serve TCP over TLS: the PEM chain.")
@click.option("--tls-key", metavar="FILE", type=FILE, help="...and its PEM private key.")
@click.option(
    "--token-rate",
    metavar="N",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests a second per token over TCP (default 100, bursts of twice that).",
)
@click.option(
    "--token-concurrency",
    metavar="N",
    type=click.IntRange(min=1),
    help="Requests in flight per token over TCP (default 64).",
)
@click.option(
    "--max-connections",
    metavar="N",
    type=click.IntRange(min=1),
    help="TCP connections open at once (default 1024); more get 503.",
)
@click.option(
    "--nats",
    metavar="URLS",
    callback=lambda _c, _p, value: _nats_urls(value),
    help="Join a cluster through these NATS servers (nats://host:4222[,...]; needs si[cluster]).",
)
@click.option("--nats-creds", metavar="FILE", type=FILE, help="NATS credentials file.")
@click.option("--hub-name", metavar="NAME", help="This hub's name in the cluster.")
@click.option("--advertise-url", metavar="URL", help="Where other machines reach this hub's API.")
@click.option(
    "--cluster-topics",
    is_flag=True,
    default=None,
    help="Topics created on this hub are cluster-wide unless created --local.",
)
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Run in the background; print 'export SI_HUB=...' once the hub answers.",
)
def serve(home: str | None, kill_on_exit: bool, detach: bool, **tuning: Any) -> None:
    """Run the hub (in the foreground until interrupted, or in the background with -d)."""
    # Unset options are left out so HubOptions' own defaults stay the single source of truth.
    given = {key: value for key, value in tuning.items() if value is not None}
    if detach:
        _serve_detached(home, kill_on_exit, given)
        return
    import gc

    gc.disable()  # during the hub's imports, as python -m si.daemon does (see run_hub)
    from si.daemon.options import HubOptions
    from si.daemon.serve import serve_hub

    for key in ("tls_cert", "tls_key", "nats_creds"):
        if key in given:
            given[key] = Path(given[key])
    options = HubOptions(home=Path(home) if home else None, kill_on_exit=kill_on_exit, **given)
    raise SystemExit(serve_hub(options))


def _serve_detached(home: str | None, kill_on_exit: bool, given: dict[str, Any]) -> None:
    """Start ``python -m si.daemon`` in the background with the same options: each one is
    spelt there as here (``--reader-lag-bytes``), so they pass through by name."""
    from si.cli import hubctl

    paths = hub_paths(home)
    args: list[str] = []
    if home:
        args += ["--home", str(Path(home).absolute())]
    if kill_on_exit:
        args.append("--kill-on-exit")
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif key in ("tls_cert", "tls_key", "nats_creds"):
            args += [flag, str(Path(value).absolute())]
        elif key == "nats":
            args += [flag, ",".join(value)]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    pid = hubctl.detach(args, paths)
    render.message(f"hub started in the background (pid {pid}); stop it with 'si hub stop'")
    cli = state()
    if cli.format.value == "json":
        cli.renderer.show({"SI_HUB": str(paths.socket), "pid": pid})
    else:
        render.write_line(f"export SI_HUB={shlex.quote(str(paths.socket))}")


def _nats_urls(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    from si.daemon.options import parse_nats_urls

    try:
        return parse_nats_urls(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    from si.daemon.options import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@command(app, "stop", example=["si hub stop --home /tmp/h"])
@home_option
@click.option(
    "--timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=15,
    show_default=True,
    help="How long the hub gets to shut down.",
)
@click.option("--force", is_flag=True, help="Kill the hub if it has not stopped in time.")
def stop(home: str | None, timeout: float, force: bool) -> None:
    """Stop the local hub of a home (its instances keep running unless it was started -K)."""
    from si.cli import hubctl

    paths = hub_paths(home)
    running = hubctl.find_hub(paths)
    if running is None:
        render.message(f"no hub is running (lock: {paths.lock})")
        return
    if not hubctl.stop(running, timeout, force):
        raise SiError(f"the hub (pid {running.pid}) did not stop within {timeout:g} s; try --force")
    render.message(f"hub stopped (pid {running.pid})")


@command(app, "status", example=["si hub status --home /tmp/h --format json"])
@home_option
def status(home: str | None) -> None:
    """Tell whether a local hub runs on a home, and what it serves (exit 3 if none runs)."""
    from si.cli import hubctl
    from si.client import HubClient, HubError

    cli = state()
    paths = hub_paths(home)
    running = hubctl.find_hub(paths)
    report: dict[str, Any] = {"running": running is not None}
    if running is not None:
        report["pid"] = running.pid
    report["socket"] = str(paths.socket)
    report["lock"] = str(paths.lock)
    if running is None:
        cli.renderer.show(report)
        raise click.exceptions.Exit(EXIT_NOT_RUNNING)
    began = hubctl.started_at(running.pid)
    if began is not None:
        report["uptime"] = _duration(time.time() - began)
    try:
        with HubClient(str(paths.socket), connect_timeout=2) as client:
            report["version"] = client.version().get("version")
            report["sequences"] = len(client.list_sequences())
            report["instances"] = len(client.list_instances())
    except HubError as exc:
        report["answering"] = False
        report["error"] = str(exc)
    cli.renderer.show(report)


def _duration(seconds: float) -> str:
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@command(app, "version", example="si hub version")
def version() -> None:
    """Show the hub's service name and version."""
    cli = state()
    with cli.client() as client:
        reply = client.version()
    cli.renderer.show(reply)


@command(app, "load", example="si hub load --format json")
def load() -> None:
    """Show the hub machine's load, memory and disk space."""
    cli = state()
    with cli.client() as client:
        reply = client.load_check()
    cli.renderer.show(reply)


@command(app, "ls", "list", example=["si hub ls", "si hub ls --format json"])
def list_hubs() -> None:
    """List the hubs of this hub's cluster: state (stale after 6 s without a heartbeat),
    heartbeat age, load, instances, URL (* marks the hub asked)."""
    cli = state()
    with cli.client() as client:
        records = client.cluster_hubs()
    cli.renderer.hubs(records)


@command(app, "logs", example="si hub logs | si util lf")
def logs() -> None:
    """Copy the hub's log (NDJSON) to stdout: its history, then new lines (until interrupted)."""
    cli = state()
    with cli.client() as client:
        cli.renderer.stream(client.hub_log())


@command(app, "audit", example="si hub audit")
def audit() -> None:
    """Copy the hub's audit stream (NDJSON) to stdout (until interrupted)."""
    cli = state()
    with cli.client() as client:
        cli.renderer.stream(client.audit())


@command(app, "console", example=["si hub console", "si hub console --open --port 8080"])
@click.option(
    "--port",
    metavar="N",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Loopback port for the page (0: any free one).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
def console(port: int, open_browser: bool) -> None:
    """Open the web console on a loopback port and print its one-time link (until interrupted)."""
    cli = state()
    address = cli.hub_address()
    with cli.client() as client:
        client.version()  # a clear "no hub" error now, rather than a page that says so later
    from si.console.run import run_console

    token = None
    if not address.startswith("/"):
        token = os.environ.get("SI_TOKEN") or cli.profile.token or None
    run_console(address, port, token=token, ca=cli.ca, open_browser=open_browser)


# -- service -----------------------------------------------------------------------------------

service = group("service", "Start the hub at boot with systemd (install, uninstall).", parent=app)
user_option = click.option(
    "--user", is_flag=True, help="A unit of your own systemd session, not a system-wide one."
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print what would be done; change nothing."
)


def _unit(
    user: bool, home: str | None = None, port: int | None = None, host: str | None = None
) -> ServiceUnit:
    from si.service import ServiceUnit

    home = home or os.environ.get("SI_HOME") or None
    return ServiceUnit(user=user, home=Path(home) if home else None, port=port, host=host)


@command(
    service,
    "install",
    example=["si hub service install --user", "si hub service install --dry-run"],
)
@home_option
@port_option
@host_option
@user_option
@dry_run_option
def service_install(
    home: str | None, port: int | None, host: str | None, user: bool, dry_run: bool
) -> None:
    """Write a systemd unit that starts this hub at boot, and enable it.

    After a reboot the hub starts again every instance whose restart policy is on-failure or
    always; the others are shown lost.
    """
    unit = _unit(user, home, port, host)
    if dry_run:
        render.message(f"would write {unit.path}:")
        render.write_line(unit.text().rstrip("\n"))
        return
    try:
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        unit.path.write_text(unit.text())
    except OSError as exc:
        hint = "" if user else " (write it as root, or install with --user)"
        raise SiError(f"cannot write {unit.path}: {exc.strerror or exc}{hint}") from None
    render.message(f"wrote {unit.path}")
    _systemctl(unit, ["daemon-reload"], ["enable", "--now", unit.path.name])


@command(service, "uninstall", example="si hub service uninstall --user")
@user_option
@dry_run_option
def service_uninstall(user: bool, dry_run: bool) -> None:
    """Disable and remove the unit `si hub service install` wrote (instances keep running)."""
    unit = _unit(user)
    if not unit.path.exists():
        raise SiError(f"no si hub unit at {unit.path}")
    if dry_run:
        render.message(f"would disable and remove {unit.path}")
        return
    _systemctl(unit, ["disable", unit.path.name])
    try:
        unit.path.unlink()
    except OSError as exc:
        raise SiError(f"cannot remove {unit.path}: {exc.strerror or exc}") from None
    render.message(f"removed {unit.path}")
    _systemctl(unit, ["daemon-reload"])


def _systemctl(unit: ServiceUnit, *calls: list[str]) -> None:
    """Run systemctl when this machine runs systemd; else say what to run once it does."""
    import subprocess

    from si.service import systemd_runs

    for args in calls:
        command_line = unit.systemctl(*args)
        if not systemd_runs():
            render.message(f"systemd is not running here; later, run: {shlex.join(command_line)}")
            continue
        done = subprocess.run(command_line, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problem = (done.stderr or done.stdout).strip().splitlines()
            detail = problem[-1] if problem else f"exit {done.returncode}"
            raise SiError(f"{shlex.join(command_line)} failed: {detail}")


# -- tokens ------------------------------------------------------------------------------------

tokens = group("token", "Tokens for the hub's TCP API (create, ls, revoke).", parent=app)


def _token_store(home: str | None) -> TokenStore:
    from si.daemon.tokens import TokenStore

    paths = hub_paths(home)
    paths.lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return TokenStore(paths.lock.parent)


@command(tokens, "create", example=["si hub token create --name ci --read-only"])
@home_option
@click.option("--name", metavar="NAME", default="", help="A name to know it by (and revoke it).")
@click.option("--read-only", is_flag=True, help="May list and read, never change anything.")
def token_create(home: str | None, name: str, read_only: bool) -> None:
    """Make a token and print it; it is shown this once (the hub keeps only its hash)."""
    from si.daemon.tokens import Scope, TokenError

    try:
        token, entry = _token_store(home).create(name, Scope.READ if read_only else Scope.ADMIN)
    except (TokenError, OSError) as exc:
        raise SiError(str(exc)) from None
    render.message(f"token {entry.id} ({entry.scope}); it is not shown again")
    cli = state()
    if cli.format.value == "json":
        cli.renderer.show({**entry.public(), "token": token})
    else:
        render.write_line(token)


@command(tokens, "ls", "list", example="si hub token ls")
@home_option
def token_list(home: str | None) -> None:
    """List the home's tokens: id, name, scope, when made, whether revoked (never the token)."""
    from si.cli.render import iso_or_blank

    cli = state()
    try:
        entries = [entry.public() for entry in _token_store(home).entries()]
    except (OSError, ValueError) as exc:
        raise SiError(f"cannot read the tokens: {exc}") from None
    rows = [
        [e["id"], e["name"], e["scope"], iso_or_blank(e["created"]), iso_or_blank(e["revoked"])]
        for e in entries
    ]
    cli.renderer.table(["ID", "NAME", "SCOPE", "CREATED", "REVOKED"], rows, entries)


@command(tokens, "revoke", example="si hub token revoke ci")
@home_option
@click.argument("which", metavar="ID|NAME")
def token_revoke(home: str | None, which: str) -> None:
    """Revoke a token: requests with it get 403 from now on."""
    from si.daemon.tokens import TokenError

    try:
        entry = _token_store(home).revoke(which)
    except (TokenError, OSError) as exc:
        raise SiError(str(exc)) from None
    render.message(f"revoked token {entry.id} ({entry.name or 'no name'})")
