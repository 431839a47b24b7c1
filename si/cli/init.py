"""``si init|i seq``: write a new sequence from a template, with no network access."""

from __future__ import annotations

import re
from pathlib import Path

import click

from si.cli import render
from si.cli.common import DIRECTORY, AliasGroup, command, group
from si.errors import SiError

app: AliasGroup = group("init", "Start a new sequence from a template.")

# npm's rule for package names, roughly: lower case, no spaces.
_UNSAFE = re.compile(r"[^a-z0-9._\-]+")


@command(
    app,
    "seq",
    "sequence",
    example=["si init seq py generator -p ./numbers", "si init seq ts transformer"],
)
@click.argument("language", type=click.Choice(["py", "js", "ts"]), default="js", required=False)
@click.argument(
    "kind",
    metavar="[generator|transformer|consumer]",
    type=click.Choice(["generator", "transformer", "consumer"]),
    default="transformer",
    required=False,
)
@click.option(
    "-p", "--path", "path", metavar="DIR", type=DIRECTORY, default=".", help="Where to write it."
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init_sequence(language: str, kind: str, path: str, force: bool) -> None:
    """Write a ready-to-pack sequence (LANGUAGE py, js or ts; default js transformer)."""
    from si.cli.templates import template_files

    target = Path(path)
    name = _UNSAFE.sub("-", target.absolute().name.lower()).strip("-.") or "sequence"
    files = template_files(language, kind, name)
    existing = sorted(rel for rel in files if (target / rel).exists())
    if existing and not force:
        raise SiError(f"{target} already has {', '.join(existing)}; use --force to overwrite")
    for relative, content in files.items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(content, encoding="utf-8")
    render.message(f"wrote a {language} {kind} sequence to {target}: {', '.join(sorted(files))}")
