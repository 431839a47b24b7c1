"""``si inst|instance``: list, inspect, feed, read, stop and kill instances.

Every ``ID`` accepts ``-`` for the instance started last in this session. ``output`` copies the
instance's output stream to stdout byte for byte; ``input`` streams a file (or stdin) into it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from si.cli.common import existing_file, forget, new_group, state

app = new_group("Inspect and control running instances (alias: instance).")

InstanceArg = Annotated[
    str, typer.Argument(metavar="ID|-", help="Instance id, or - (last started).")
]


@app.command("ls")
@app.command("list", hidden=True)
def list_instances(ctx: typer.Context) -> None:
    """List the hub's instances (alias: list)."""
    cli = state(ctx)
    with cli.client() as client:
        records = client.list_instances()
    cli.renderer.instances(records)


@app.command("info")
def info(ctx: typer.Context, instance: InstanceArg) -> None:
    """Show one instance."""
    cli = state(ctx)
    instance_id = cli.session.resolve(instance, "lastInstanceId")
    with cli.client() as client:
        record = client.get_instance(instance_id)
    cli.renderer.show(record)


@app.command("output")
def output(ctx: typer.Context, instance: InstanceArg) -> None:
    """Copy the instance's output to stdout until it ends (follows hub restarts)."""
    cli = state(ctx)
    instance_id = cli.session.resolve(instance, "lastInstanceId")
    with cli.client() as client:
        cli.renderer.stream(client.instance_stream(instance_id, "output"))


@app.command("input")
def input_(
    ctx: typer.Context,
    instance: InstanceArg,
    file: Annotated[
        str | None,
        typer.Argument(metavar="FILE", help="Data to send (default: stdin).", show_default=False),
    ] = None,
    content_type: Annotated[
        str,
        typer.Option(
            "-t", "--content-type", metavar="TYPE", help="How the sequence should read the data."
        ),
    ] = "text/plain",
    end: Annotated[
        bool, typer.Option("-e", "--end", help="Close the instance's input after this data.")
    ] = False,
) -> None:
    """Send a file, or stdin, to the instance's input."""
    cli = state(ctx)
    instance_id = cli.session.resolve(instance, "lastInstanceId")
    with cli.client() as client:
        if file is None:
            client.send_input(instance_id, sys.stdin.buffer, content_type, end=end)
        else:
            with existing_file(file).open("rb") as body:
                client.send_input(instance_id, body, content_type, end=end)


@app.command("kill")
def kill(
    ctx: typer.Context,
    instance: InstanceArg,
    remove_immediately: Annotated[
        bool,
        typer.Option(
            "--removeImmediately", help="Drop the instance at once, without the retention period."
        ),
    ] = False,
) -> None:
    """Kill an instance."""
    cli = state(ctx)
    instance_id = cli.session.resolve(instance, "lastInstanceId")
    with cli.client() as client:
        reply = client.kill_instance(instance_id, remove_immediately=remove_immediately)
    forget(cli, "lastInstanceId", instance_id)
    cli.renderer.show(reply)


@app.command("stop")
def stop(
    ctx: typer.Context,
    instance: InstanceArg,
    timeout_ms: Annotated[
        int,
        typer.Argument(
            metavar="TIMEOUT_MS", min=0, help="Milliseconds the sequence gets to finish."
        ),
    ],
) -> None:
    """Ask an instance to stop gracefully; replies after the timeout."""
    cli = state(ctx)
    instance_id = cli.session.resolve(instance, "lastInstanceId")
    with cli.client() as client:
        reply = client.stop_instance(instance_id, timeout_ms)
    cli.renderer.show(reply)
