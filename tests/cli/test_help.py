"""Every command has help with an example, and the tree has STH's commands and aliases."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import pytest

from si.cli.app import cli, run
from si.cli.common import AliasGroup


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None
        found.append((*path, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
    return found


ALL = _commands(cli)


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*path, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Usage: si {' '.join(path)}")


def test_every_leaf_command_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    missing = []
    for path in ALL:
        run([*path, "--help"])
        text = capsys.readouterr().out
        if "Commands:" not in text and not re.search(r"Example:\n +.*\bsi ", text):
            missing.append(" ".join(path))
    assert missing == []


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("sequence", "seq"),
        ("instance", "inst"),
        ("c", "config"),
        ("i", "init"),
        ("u", "util"),
        ("seq list", "seq ls"),
        ("seq delete", "seq rm"),
        ("seq run", "seq deploy"),
        ("seq select", "seq use"),
        ("seq get", "seq info"),
        ("inst list", "inst ls"),
        ("inst attach", "inst stdio"),
        ("inst event invoke", "inst event emit"),
        ("topic list", "topic ls"),
        ("topic delete", "topic rm"),
        ("config p", "config print"),
        ("config s", "config session"),
        ("config pr ls", "config profile ls"),
        ("util lf", "util log-format"),
    ],
)
def test_sth_aliases(alias: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*alias.split(), "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"Usage: si {name}")


def test_group_help_lists_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["seq", "--help"]) == 0
    text = capsys.readouterr().out
    assert "deploy (run)" in text
    assert "ls (list)" in text
    assert "get" not in text.split("Commands:")[1].split()  # hidden old name


def test_groups_are_alias_groups() -> None:
    for path in ALL:
        command: click.Command | None = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.get_command(click.Context(command), name)
        if isinstance(command, click.Group):
            assert isinstance(command, AliasGroup)


def test_root_help_matches_each_groups_own_help() -> None:
    from si.cli.app import GROUP_HELP

    for name, text in GROUP_HELP.items():
        group = cli.get_command(click.Context(cli), name)
        assert group is not None
        assert group.help is not None
        # A command's help may go on; the root lists its first paragraph.
        assert group.help.split("\n\n")[0].strip() == text


def test_a_command_loads_only_its_own_group(si_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from si.cli.app import run\n"
        "run(['inst', 'ls', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('si.cli.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=si_env, timeout=30, check=True
    )
    loaded = result.stdout.decode().splitlines()[-1]
    assert "si.cli.inst" in loaded
    for other in ("seq", "topic", "config", "init", "completion", "profile"):
        assert f"si.cli.{other}'" not in loaded
