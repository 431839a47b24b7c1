"""The ``si`` command: the root group, its global options and the entry point.

``main`` owns the process's exit: whatever goes wrong becomes one ``Error: ...`` line on stderr
and exit code 1 (130 after Ctrl-C, 0 when a pipe reader such as ``head`` leaves early), never a
traceback. Set ``SI_DEBUG=1`` to see the traceback of an unexpected exception.

The global options (``--hub``, ``--format``, ``--config``, ``--config-path``, ``--progress``) may
stand anywhere on the line, as STH's root options do (``si --format json seq ls`` and
``si seq ls --format json``): ``main`` moves them in front of the subcommand before parsing.

Exit codes: 0 success; 1 any error (STH's single failure code); 3 ``si hub status`` when no hub
runs; 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

import si
from si.cli import render
from si.cli.common import (
    COMPLETE_VAR,
    CONTEXT_SETTINGS,
    AliasGroup,
    CliState,
    hoist_global_options,
)
from si.cli.render import OutputClosed, OutputFormat
from si.errors import SiError

EXIT_FAILURE = 1
# The shell's code for death by SIGINT.
EXIT_INTERRUPTED = 130

# The running command's state, for error reporting after click has left its context.
_current: list[CliState] = []


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        sys.stdout.write(f"SI version: {si.__version__}\n")
        ctx.exit(0)


# The command groups, each in its own module (si.cli.<name>) loaded only when used, with
# their aliases and the one-line help ``si --help`` shows without loading them.
GROUPS: dict[str, tuple[str, ...]] = {
    "seq": ("sequence",),
    "inst": ("instance",),
    "topic": (),
    "hub": (),
    "top": (),
    "apply": (),
    "delete": (),
    "export": (),
    "config": ("c",),
    "init": ("i",),
    "util": ("u",),
    "completion": (),
}
GROUP_HELP = {
    "seq": "Pack, send, start and manage sequences.",
    "inst": "Inspect, feed, read and control instances.",
    "topic": "Create, list, feed and read topics.",
    "hub": "Run a local hub, or ask the hub about itself.",
    "top": "Show every instance live: status, CPU %, RSS, output and input rates, restarts, age.",
    "apply": "Make the hub what a stack file says (sequences, instances, topics).",
    "delete": "Remove what a stack file names from the hub.",
    "export": "Write the hub's instances and topics as a stack file.",
    "config": "Show and change profiles (which hub, output format, debug).",
    "init": "Start a new sequence from a template.",
    "util": "Helpers for working with si's output.",
    "completion": "Shell completion for bash, zsh and fish.",
}


# Commands that share a module: name -> (module under si.cli, its attribute).
MODULES = {
    "apply": ("stack", "apply"),
    "delete": ("stack", "delete"),
    "export": ("stack", "export"),
}


class RootGroup(AliasGroup):
    """The root: command groups are imported on first use, so a command pays only for its own
    group (``si inst ls`` never imports the packing or profile commands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self.aliases.get(cmd_name, cmd_name)
        if name not in GROUPS:
            return None
        if name not in self.commands:
            module_name, attribute = MODULES.get(name, (name, "app"))
            module = importlib.import_module(f"si.cli.{module_name}")
            self.add_command(getattr(module, attribute), name)
        return self.commands[name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name, aliases in GROUPS.items():
            label = f"{name} ({', '.join(aliases)})" if aliases else name
            rows.append((label, GROUP_HELP[name]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=RootGroup,
    name="si",
    context_settings=CONTEXT_SETTINGS,
    epilog=(
        "\b\nGlobal options may also follow the subcommand. Example:\n"
        "  si seq deploy ./my-sequence && si inst output -"
    ),
)
@click.option(
    "--hub",
    envvar="SI_HUB",
    metavar="ADDR",
    help="The hub: a Unix socket path or an http://host:port URL [env SI_HUB; default: the "
    "profile's apiUrl, else the local hub's socket].",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "pretty"], case_sensitive=False),
    envvar="SI_FORMAT",
    help="json: one compact JSON value per line; pretty: tables and key/value lines "
    "[env SI_FORMAT; default: the profile's log.format].",
)
@click.option(
    "--ca",
    envvar="SI_CA",
    metavar="FILE",
    help="Verify an https:// hub against this CA (PEM) instead of the system's [env SI_CA].",
)
@click.option(
    "--config", "profile_name", metavar="NAME", help="Use the profile NAME for this command."
)
@click.option(
    "--config-path",
    "profile_path",
    metavar="FILE",
    help="Use the profile in FILE (read-only) for this command.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show an upload progress bar on stderr (default: on a terminal, for packages over 1 MiB).",
)
@click.option(
    "-v",
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_print_version,
    help="Print si's version and exit.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    hub: str | None,
    output_format: str | None,
    ca: str | None,
    profile_name: str | None,
    profile_path: str | None,
    progress: bool | None,
) -> None:
    """si: run long-lived stream programs (sequences) on a hub, STH's CLI in Python."""
    state = CliState(
        hub=hub or None,
        ca=ca or None,
        output_format=OutputFormat(output_format.lower()) if output_format else None,
        profile_name=profile_name,
        profile_path=profile_path,
        progress=progress,
    )
    ctx.obj = state
    _current[:] = [state]
    if not ctx.resilient_parsing:
        # STH (re)creates the session file at every start; we create it when missing.
        state.session.prepare()


assert isinstance(cli, AliasGroup)
for _name, _aliases in GROUPS.items():
    cli.add_alias(_name, *_aliases)

app = cli


def run(args: Sequence[str]) -> int:
    """Run the CLI on ``args`` (without the program name) and return the exit code."""
    try:
        # make_context + invoke rather than main(): click's main turns Ctrl-C into Abort and
        # writes to stderr; here every outcome is decided below.
        with cli.make_context("si", hoist_global_options(cli, args)) as ctx:
            result = cli.invoke(ctx)
        return result if isinstance(result, int) else 0
    except OutputClosed:
        return 0
    except SiError as exc:
        _report(exc)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        render.error("aborted")
        return EXIT_FAILURE
    except click.ClickException as exc:  # usage and parameter errors
        render.error(_usage_message(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        render.silence_stdout()
        return 0
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


def _report(exc: SiError) -> None:
    """One error line on stderr; with the profile's ``log.debug``, hub errors also go to stdout
    as an object (STH's debug output, which scripts parse for ``apiStatusCode``)."""
    render.error(str(exc))
    status = getattr(exc, "status", None)
    if not _current or not hasattr(exc, "reply"):
        return
    state = _current[0]
    try:
        if not state.profile.debug:
            return
        renderer = state.renderer
    except SiError:
        return
    renderer.show(
        {
            "error": True,
            "message": str(exc),
            "url": getattr(exc, "url", None),
            "apiStatusCode": str(status) if status is not None else None,
            "apiError": getattr(exc, "reply", None),
        }
    )


def _usage_message(exc: click.ClickException) -> str:
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
        if COMPLETE_VAR in os.environ:
            from si.cli import completion

            code = completion.complete(cli, os.environ[COMPLETE_VAR])
        else:
            code = run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # arrived outside the command, e.g. while importing
        code = EXIT_INTERRUPTED
    sys.exit(code)
