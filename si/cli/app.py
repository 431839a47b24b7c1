"""The ``si`` command: the root Typer app, its global options and the entry point.

``main`` owns the process's exit: whatever goes wrong becomes one ``Error: ...`` line on stderr
and exit code 1 (130 after Ctrl-C, 0 when a pipe reader such as ``head`` leaves early), never a
traceback. Set ``SI_DEBUG=1`` to see the traceback of an unexpected exception.

``--hub`` and ``--format`` are global: like STH's root options they may stand anywhere on the
line (``si --format json seq ls`` and ``si seq ls --format json``). ``main`` moves them in front
of the subcommand before click parses the line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, NoReturn

import typer

import si
from si.cli import hub, inst, render, seq
from si.cli.common import CONTEXT_SETTINGS, CliState, require_subcommand
from si.cli.render import OutputClosed, OutputFormat
from si.errors import SiError

# Exit codes: STH uses 1 for every failure; 130 is the shell's code for death by SIGINT.
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
GLOBAL_OPTIONS = ("--hub", "--format")

app = typer.Typer(
    help=(
        "si: run long-lived stream programs (sequences) on a hub.\n\n"
        "--hub and --format may also be given after the subcommand."
    ),
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(seq.app, name="seq")
app.add_typer(seq.app, name="sequence", hidden=True)
app.add_typer(inst.app, name="inst")
app.add_typer(inst.app, name="instance", hidden=True)
app.add_typer(hub.app, name="hub")


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"si {si.__version__}\n")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    hub_address: Annotated[
        str | None,
        typer.Option(
            "--hub",
            envvar="SI_HUB",
            metavar="ADDR",
            help="The hub: a Unix socket path or an http://host:port URL.",
            show_default="the default hub's socket",
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            envvar="SI_FORMAT",
            case_sensitive=False,
            help="json: one compact JSON object per line; pretty: tables and key/value lines.",
        ),
    ] = OutputFormat.pretty,
    version: Annotated[
        bool,
        typer.Option(
            "-v",
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print si's version and exit.",
        ),
    ] = False,
) -> None:
    cli = CliState(hub=hub_address or None, output_format=output_format)
    ctx.obj = cli
    # STH (re)creates the session file at every start; we create it when missing.
    cli.session.prepare()
    require_subcommand(ctx)


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move ``--hub``/``--format`` (with their values) in front of the subcommand.

    Scanning stops at ``--``, after which everything is a positional argument.

    Raises:
        SiError: a global option is the last word, with no value.
    """
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            rest.extend(args[index:])
            break
        name = word.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in word:
                hoisted.append(word)
            elif index + 1 < len(args):
                hoisted.extend((word, args[index + 1]))
                index += 1
            else:
                raise SiError(f"Option '{word}' requires an argument.")
        else:
            rest.append(word)
        index += 1
    return hoisted + rest


def run(args: Sequence[str]) -> int:
    """Run the CLI on ``args`` (without the program name) and return the exit code."""
    try:
        command = typer.main.get_command(app)
        result = command.main(
            args=hoist_global_options(args), prog_name="si", standalone_mode=False
        )
        # Without standalone mode click returns the command's value, or an int from typer.Exit.
        return result if isinstance(result, int) else 0
    except OutputClosed:
        return 0
    except SiError as exc:
        render.error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        render.error("aborted")
        return EXIT_FAILURE
    except typer.TyperException as exc:  # click's usage and parameter errors
        render.error(_usage_message(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        render.error(_os_message(exc))
        return EXIT_FAILURE
    except Exception as exc:
        # A bug. Still one line for the user; the traceback on request.
        if os.environ.get("SI_DEBUG"):
            import traceback

            traceback.print_exc()
        render.error(f"unexpected {type(exc).__name__}: {exc} (SI_DEBUG=1 shows where)")
        return EXIT_FAILURE


def _usage_message(exc: typer.TyperException) -> str:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message = f"{message.rstrip('.')} (see '{ctx.command_path} --help')"
    return message


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (``si``, ``python -m si``)."""
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # arrived outside the command, e.g. while importing
        code = EXIT_INTERRUPTED
    sys.exit(code)
