"""What every command group shares: the global options' state, the hub client, command groups
with aliases, and argument types that complete live ids.

Kept free of heavy imports: ``si --help`` imports this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from si.cli import render
from si.cli.render import OutputFormat, Renderer
from si.cli.session import Session, SessionKey
from si.errors import SiError

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from si.cli.profile import Profile
    from si.client import HubClient
    from si.paths import HubPaths

# The variable through which a shell asks `si` for completions (click's protocol).
COMPLETE_VAR = "_SI_COMPLETE"
# Settings shared by every command: -h as in STH, and a wider help than click's 80 columns.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# Completion asks the hub for ids on every TAB: it must answer at once or not at all.
COMPLETION_CONNECT_TIMEOUT = 0.3

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    StringParam = click.ParamType[str]
else:  # click's ParamType is generic only for type checkers in older releases
    StringParam = click.ParamType


@dataclass
class CliState:
    """The root options, handed to every command through the root context's ``obj``.

    Attributes:
        hub: ``--hub`` (or ``SI_HUB``, which click reads for it).
        output_format: ``--format`` / ``SI_FORMAT``; ``None`` means "the profile's".
        profile_name: ``--config NAME``.
        profile_path: ``--config-path FILE``.
        progress: ``--progress`` / ``--no-progress``; ``None`` means "on a terminal, for big
            uploads".
    """

    hub: str | None = None
    ca: str | None = None  # --ca / SI_CA: the CA an https:// hub is verified against
    output_format: OutputFormat | None = None
    profile_name: str | None = None
    profile_path: str | None = None
    progress: bool | None = None
    session: Session = field(default_factory=Session)
    _profile: Profile | None = None

    @property
    def profile(self) -> Profile:
        """The profile chosen by STH's precedence (loaded once)."""
        if self._profile is None:
            from si.cli.profile import select_profile

            self._profile = select_profile(self.profile_path, self.profile_name)
        return self._profile

    @property
    def format(self) -> OutputFormat:
        """``--format``, else ``SI_FORMAT``, else the profile's ``log.format``."""
        if self.output_format is not None:
            return self.output_format
        return OutputFormat(self.profile.log_format)

    @property
    def renderer(self) -> Renderer:
        return Renderer(self.format)

    def hub_address(self) -> str:
        """``--hub``, else ``SI_HUB``, else the profile's ``apiUrl``, else the local hub."""
        if self.hub:
            return self.hub
        if self.profile.api_url:
            return self.profile.api_url
        return str(hub_paths(None).socket)

    def client(self, **options: Any) -> HubClient:
        """A client of the selected hub; use it in a ``with`` block."""
        from si.client import HubClient

        address = self.hub_address()
        if not address.startswith("/"):  # a TCP hub: its token (SI_TOKEN, else the profile's)
            options.setdefault("token", os.environ.get("SI_TOKEN") or self.profile.token or None)
            options.setdefault("ca", self.ca)
        return HubClient(address, **options)


def hub_paths(home: str | None) -> HubPaths:
    """The files of the local hub of ``home`` (``None``: ``SI_HOME``, else per-user dirs).

    platformdirs warns on stderr when ``XDG_RUNTIME_DIR`` is unset and it falls back to a
    directory under /tmp; that fallback is fine for a hub's socket, so the warning is muted.
    """
    import warnings

    from si.paths import HubPaths

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HubPaths.resolve(Path(home) if home else None)


def state(ctx: click.Context | None = None) -> CliState:
    """The :class:`CliState` the root callback stored (a default one when run standalone)."""
    root = (ctx or click.get_current_context()).find_root()
    if not isinstance(root.obj, CliState):
        # Shell completion parses without running the root callback: build it from the
        # options click parsed (SI_HUB included, through --hub's envvar).
        params = root.params
        output_format = params.get("output_format")
        root.obj = CliState(
            hub=params.get("hub") or None,
            output_format=OutputFormat(output_format.lower()) if output_format else None,
            profile_name=params.get("profile_name"),
            profile_path=params.get("profile_path"),
        )
    return root.obj


# -- groups with aliases --------------------------------------------------------------------------


class AliasGroup(click.Group):
    """A command group whose commands may have aliases (``ls``/``list``, ``rm``/``delete``).

    Aliases are accepted on the command line and shown in the help next to the command's name,
    but not listed as commands of their own. Called without a subcommand, the group prints its
    help to stderr and fails, as STH's groups do.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}

    def add_alias(self, name: str, *aliases: str) -> None:
        for alias in aliases:
            self.aliases[alias] = name

    def aliases_of(self, name: str) -> list[str]:
        return [alias for alias, target in self.aliases.items() if target == name]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Report the canonical name, so "si seq list" runs (and helps as) "si seq ls".
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing and not self.invoke_without_command:
            render.help_to_stderr(ctx.get_help())
            ctx.exit(1)
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            aliases = self.aliases_of(name)
            label = f"{name} ({', '.join(aliases)})" if aliases else name
            rows.append((label, command.get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        items = [
            CompletionItem(name, help=command.get_short_help_str())
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None
            and not command.hidden
            and name.startswith(incomplete)
        ]
        # Option names too, once the word starts with a dash.
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Registration order reads better than alphabetical (ls, info, ... rm).
        return list(self.commands)


def group(name: str, help_text: str, *aliases: str, parent: AliasGroup | None = None) -> AliasGroup:
    """A new :class:`AliasGroup`, added to ``parent`` under ``name`` and ``aliases``."""
    new = AliasGroup(name=name, help=help_text)
    if parent is not None:
        parent.add_command(new)
        parent.add_alias(name, *aliases)
    return new


def command(
    parent: AliasGroup, name: str, *aliases: str, example: str | Sequence[str]
) -> Callable[[F], click.Command]:
    """Register a command with aliases and a help epilog showing one example."""
    lines = [example] if isinstance(example, str) else list(example)
    epilog = "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)

    def decorate(function: F) -> click.Command:
        cmd = click.command(name, epilog=epilog, context_settings=CONTEXT_SETTINGS)(function)
        parent.add_command(cmd)
        parent.add_alias(name, *aliases)
        return cmd

    return decorate


# -- ids with live completion ---------------------------------------------------------------------


def _live_ids(ctx: click.Context, kind: str, incomplete: str) -> list[CompletionItem]:
    """Ids of the running hub's sequences or instances; nothing (and silence) without a hub."""
    from click.shell_completion import CompletionItem

    try:
        # Completion runs without a current context: the parsed one is handed in.
        cli = state(ctx)
        with cli.client(connect_timeout=COMPLETION_CONNECT_TIMEOUT) as client:
            records = client.list_sequences() if kind == "sequence" else client.list_instances()
    except Exception:
        return []
    items = []
    for record in records:
        identifier = record.get("id") if isinstance(record, dict) else None
        if isinstance(identifier, str) and identifier.startswith(incomplete):
            items.append(CompletionItem(identifier, help=_id_help(kind, record)))
    return items


def _id_help(kind: str, record: dict[str, Any]) -> str | None:
    if kind == "sequence":
        config = record.get("config")
        return str(config.get("name")) if isinstance(config, dict) else None
    sequence = record.get("sequence")
    name = sequence.get("config", {}).get("name") if isinstance(sequence, dict) else None
    return " ".join(str(part) for part in (name, record.get("status")) if part) or None


class SequenceId(StringParam):
    """A sequence id, or ``-`` for the last one; completes the hub's sequence ids."""

    name = "sequence_id"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return _live_ids(ctx, "sequence", incomplete)


class InstanceId(StringParam):
    """An instance id, or ``-`` for the last one; completes the hub's instance ids."""

    name = "instance_id"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return _live_ids(ctx, "instance", incomplete)


class FileOrDir(StringParam):
    """A path completed by the shell as a file (or a directory with ``directories``)."""

    def __init__(self, directories: bool = False) -> None:
        self.directories = directories
        self.name = "directory" if directories else "file"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(incomplete, type="dir" if self.directories else "file")]


SEQUENCE_ID = SequenceId()
INSTANCE_ID = InstanceId()
FILE = FileOrDir()
DIRECTORY = FileOrDir(directories=True)


def sequence_argument(function: F) -> F:
    return click.argument("sequence", metavar="ID|-", type=SEQUENCE_ID)(function)


def instance_argument(function: F) -> F:
    return click.argument("instance", metavar="ID|-", type=INSTANCE_ID)(function)


# -- small helpers --------------------------------------------------------------------------------


def existing_file(path: str) -> Path:
    """``path`` as a Path; STH's message when it does not exist."""
    candidate = Path(path)
    if not candidate.exists():
        raise SiError(f'File "{path}" not found.')
    return candidate


def binary_stdin(what: str, *, allow_terminal: bool = True) -> Any:
    """The process's stdin as bytes to upload.

    Typing into an instance's input from a terminal is fine (end with Ctrl-D); a package is
    binary, so ``allow_terminal=False`` refuses a terminal instead of waiting on it.
    """
    # Unbuffered: whatever arrives is sent at once, and a thread blocked reading a terminal
    # holds no buffer lock that would stall the interpreter's exit.
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        # Not a file: stdin replaced in process (click's CliRunner, an embedding program).
        return sys.stdin.buffer
    stream = open(fd, "rb", buffering=0, closefd=False)  # noqa: SIM115
    if not allow_terminal and stream.isatty():
        stream.close()
        raise SiError(f"give {what} as a file or pipe it in; stdin is a terminal")
    return stream


def remember(cli: CliState, **values: str) -> None:
    """Record "last" values. The hub already acted, so a failure here only warns."""
    try:
        cli.session.update(**values)
    except (OSError, SiError) as exc:
        render.warning(f"cannot record {', '.join(values)} in {cli.session.path}: {exc}")


def use(
    cli: CliState, noun: str, key: SessionKey, item_id: str, lookup: Callable[..., Any]
) -> None:
    """`si seq use` and `si inst use`: ``item_id`` becomes what `-` stands for, once the hub
    (``lookup(client, item_id)``) confirms it knows it."""
    from si.client import HubError

    with cli.client() as client:
        try:
            lookup(client, item_id)
        except HubError as exc:
            if exc.status == 404:
                raise SiError(f"Unable to find {noun} {item_id}") from None
            raise
    remember(cli, **{key: item_id})


def forget(cli: CliState, key: SessionKey, value: str) -> None:
    """Clear a "last" value that named something now gone; failures only warn."""
    try:
        cli.session.clear_if(key, value)
    except (OSError, SiError) as exc:
        render.warning(f"cannot update {key} in {cli.session.path}: {exc}")


# -- global options after the subcommand ------------------------------------------------------

# Global options with a value, and global flags; both may appear after the subcommand.
GLOBAL_OPTIONS = ("--hub", "--format", "--ca", "--config", "--config-path")
GLOBAL_FLAGS = ("--progress", "--no-progress")


def hoist_global_options(root: click.Command, args: Sequence[str]) -> list[str]:
    """Move the global options (with their values) in front of the subcommand.

    Scanning stops at ``--``, after which everything is a positional argument. An option the
    subcommand defines itself stays where it is (``si config set log --format json`` sets the
    profile's format; it is not the global ``--format``).

    Raises:
        SiError: a global option is the last word, with no value.
    """
    own = _own_options(root, args)
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            rest.extend(args[index:])
            break
        name = word.split("=", 1)[0]
        if name in own:
            rest.append(word)
        elif name in GLOBAL_OPTIONS:
            if "=" in word:
                hoisted.append(word)
            elif index + 1 < len(args):
                hoisted.extend((word, args[index + 1]))
                index += 1
            else:
                raise SiError(f"Option '{word}' requires an argument.")
        elif word in GLOBAL_FLAGS:
            hoisted.append(word)
        else:
            rest.append(word)
        index += 1
    return hoisted + rest


def _own_options(root: click.Command, args: Sequence[str]) -> set[str]:
    """The option names of the command the words lead to (global ones skipped on the way)."""
    command: click.Command = root
    index = 0
    while index < len(args) and isinstance(command, click.Group):
        word = args[index]
        if word == "--":
            break
        if word.split("=", 1)[0] in GLOBAL_OPTIONS and "=" not in word:
            index += 2
            continue
        if word.startswith("-"):
            index += 1
            continue
        found = command.get_command(click.Context(command), word)
        if found is None:
            break
        command = found
        index += 1
    if command is root:
        return set()
    names: set[str] = set()
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names
