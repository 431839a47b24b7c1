"""``si util|u``: helpers for the command line; ``log-format|lf`` prettifies NDJSON logs.

``si inst log - | si util lf`` and ``si hub logs | si util lf`` turn one JSON log object per line
(STH's ``{"level", "msg", "ts", "from", "data", ...}``) into one human line each: time, level,
source, short id, message and any extra data. Lines that are not JSON objects are dropped, as
STH's formatter does.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from si.cli import render
from si.cli.common import AliasGroup, command, group

app: AliasGroup = group("util", "Helpers for working with si's output.")

# ANSI colours per level; FATAL and ERROR in red, WARN in yellow, the chatty ones dimmed.
_LEVEL_COLOURS = {
    "FATAL": "31;1",
    "ERROR": "31",
    "WARN": "33",
    "WARNING": "33",
    "INFO": "32",
    "DEBUG": "2",
    "TRACE": "2",
}
# Ids are shortened to this many characters, enough to tell instances apart.
SHORT_ID = 8


def format_line(entry: dict[str, Any], colour: bool) -> str:
    """One log object as a human line: ``<ISO time> <LEVEL> <source> [<id>] <message> <data>``."""
    stamp = entry.get("ts")
    when = ""
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        when = datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds")
        when = when.replace("+00:00", "Z")
    elif isinstance(stamp, str):
        when = stamp
    level = str(entry.get("level", "")).upper()
    source = str(entry.get("from", ""))
    short = ""
    base = entry.get(source) if source else None
    if isinstance(base, dict) and isinstance(base.get("id"), str):
        short = base["id"][:SHORT_ID]
    elif isinstance(entry.get("id"), str):
        short = entry["id"][:SHORT_ID]
    message = str(entry.get("msg", entry.get("message", "")))
    data = entry.get("data")
    extra = ""
    if data not in (None, [], {}, ""):
        extra = " " + json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if colour and level in _LEVEL_COLOURS:
        shown_level = f"\x1b[{_LEVEL_COLOURS[level]}m{level:<5}\x1b[0m"
    else:
        shown_level = f"{level:<5}"
    parts = [when, shown_level, source]
    if short:
        parts.append(short)
    return " ".join(part for part in parts if part) + f" {message}{extra}".rstrip()


@command(app, "log-format", "lf", example="si inst log - | si util lf")
@click.option("--no-color", "no_colour", is_flag=True, help="Never colour the level.")
def log_format(no_colour: bool) -> None:
    """Read NDJSON log lines on stdin and print them for people."""
    colour = not no_colour and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for raw in sys.stdin.buffer:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            render.write_line(format_line(entry, colour))
