"""What every command group shares: the global options' state, the hub client, group set-up.

Kept free of heavy imports (httpx, the daemon): ``si --help`` imports this module.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from si.cli import render
from si.cli.render import OutputFormat, Renderer
from si.cli.session import Session, SessionKey
from si.errors import SiError

if TYPE_CHECKING:
    from si.client import HubClient

# Settings shared by every Typer app of the CLI: plain click help (rich is slow to import and
# the help is short) and -h as in STH.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@dataclass
class CliState:
    """The root options, handed to every command through ``ctx.obj``."""

    hub: str | None = None
    output_format: OutputFormat = OutputFormat.pretty
    session: Session = field(default_factory=Session)

    @property
    def renderer(self) -> Renderer:
        return Renderer(self.output_format)

    def hub_address(self) -> str:
        """``--hub``, else ``SI_HUB`` (both parsed by the root), else the default socket."""
        if self.hub:
            return self.hub
        from si.paths import default_hub_address

        return default_hub_address()

    def client(self) -> HubClient:
        """A client of the selected hub; use it in a ``with`` block."""
        _import_httpcore_without_trio()
        from si.client import HubClient

        return HubClient(self.hub_address())


def _import_httpcore_without_trio() -> None:
    """Import httpcore while hiding trio, which httpcore probes for at import time.

    The probe costs every hub command ~75 ms, and the synchronous client never uses trio. Safe
    only in a CLI process: there nothing runs httpx's async client under trio (``si hub serve``,
    which runs trio, never builds a client).
    """
    if "httpcore" in sys.modules or "trio" in sys.modules:
        return
    sys.modules["trio"] = None  # type: ignore[assignment]  # makes "import trio" fail fast
    try:
        import httpcore  # noqa: F401
    finally:
        del sys.modules["trio"]


def state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` the root callback stored (a default one when run standalone)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def new_group(help_text: str) -> typer.Typer:
    """A command group that, called without a subcommand, shows its help on stderr and fails."""
    group = typer.Typer(
        help=help_text,
        context_settings=CONTEXT_SETTINGS,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @group.callback(invoke_without_command=True)
    def _require_subcommand(ctx: typer.Context) -> None:
        require_subcommand(ctx)

    return group


def require_subcommand(ctx: typer.Context) -> None:
    """STH prints a group's help to stderr and exits 1 when no subcommand is given."""
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        render.help_to_stderr(ctx.get_help())
        raise typer.Exit(1)


def existing_file(path: str) -> Path:
    """``path`` as a Path; STH's message when it does not exist."""
    candidate = Path(path)
    if not candidate.exists():
        raise SiError(f'File "{path}" not found.')
    return candidate


def remember(cli: CliState, **values: str) -> None:
    """Record "last" values. The hub already acted, so a failure here only warns."""
    try:
        cli.session.update(**values)
    except (OSError, SiError) as exc:
        render.warning(f"cannot record {', '.join(values)} in {cli.session.path}: {exc}")


def forget(cli: CliState, key: SessionKey, value: str) -> None:
    """Clear a "last" value that named something now gone; failures only warn."""
    try:
        cli.session.clear_if(key, value)
    except (OSError, SiError) as exc:
        render.warning(f"cannot update {key} in {cli.session.path}: {exc}")
