"""``si hub``: run a hub (``serve``) and ask one about itself (``version``).

``serve`` imports the daemon only when it runs, so the rest of the CLI stays quick to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from si.cli.common import new_group, state

app = new_group("Run a hub, or ask the hub about itself.")


@app.command("serve")
def serve(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            metavar="DIR",
            help="Keep all state under DIR (default: SI_HOME, else per-user directories).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="N", min=0, max=65535, help="Also serve the API on TCP."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="ADDR", help="TCP address to bind (default 127.0.0.1)."),
    ] = None,
    kill_on_exit: Annotated[
        bool,
        typer.Option("-K", "--kill-on-exit", help="Kill every instance when the hub stops."),
    ] = False,
    retention: Annotated[
        float | None,
        typer.Option(
            "--retention",
            metavar="SECONDS",
            min=0,
            help="How long a finished instance stays readable (default 180).",
        ),
    ] = None,
) -> None:
    """Run the hub in the foreground until interrupted."""
    from si.daemon.options import HubOptions
    from si.daemon.serve import serve_hub

    # Unset options are left out so HubOptions' own defaults stay the single source of truth.
    given: dict[str, Any] = {"home": home, "port": port, "host": host, "retention": retention}
    options = HubOptions(
        kill_on_exit=kill_on_exit,
        **{key: value for key, value in given.items() if value is not None},
    )
    raise SystemExit(serve_hub(options))


@app.command("version")
def version(ctx: typer.Context) -> None:
    """Show the hub's service name and version."""
    cli = state(ctx)
    with cli.client() as client:
        reply = client.version()
    cli.renderer.show(reply)
