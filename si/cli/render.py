"""Everything the CLI prints goes through here: objects, tables, streams, warnings and errors.

Two formats, chosen with ``--format`` / ``SI_FORMAT``:

- ``json``: each printed object is compact JSON on one line (STH's ``log.format json``), so
  scripts read one object per line;
- ``pretty`` (default): a table for lists of sequences or instances, indented key/value lines for
  single objects.

Streams are written byte for byte whatever the format. Results go to stdout; warnings and errors
go to stderr as one line each. A reader that closes stdout early (``| head``) is not an error:
it surfaces as :class:`OutputClosed`, which the entry point turns into a quiet exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, BinaryIO

# Column gap in tables: two spaces read as a separator even when a cell is empty.
COLUMN_GAP = "  "
# Nesting step for pretty objects.
INDENT = "  "


class OutputFormat(StrEnum):
    """How objects are printed."""

    json = "json"
    pretty = "pretty"


class OutputClosed(Exception):
    """Whoever read stdout went away (a closed pipe); the command should end quietly."""


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again.

    This is the remedy the Python docs give for SIGPIPE-less programs writing into a closed pipe.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@contextmanager
def binary_stdout() -> Iterator[BinaryIO]:
    """stdout as a byte stream; a closed pipe becomes :class:`OutputClosed`."""
    try:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed from None


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed from None


def write_text(text: str) -> None:
    """Text on stdout as it is."""
    _write_stdout(text)


def write_line(text: str) -> None:
    """One line on stdout, flushed at once (a pipe reader sees it as it happens)."""
    _write_stdout(text + "\n")


def _stderr_colour(text: str, code: str) -> str:
    """Colour only a terminal, and only when the user has not opted out (NO_COLOR)."""
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error(message: str) -> None:
    """Print ``Error: <message>`` as exactly one line on stderr."""
    sys.stderr.write(f"{_stderr_colour('Error:', '31')} {_one_line(message)}\n")
    sys.stderr.flush()


def warning(message: str) -> None:
    """Print ``Warning: <message>`` as one line on stderr."""
    sys.stderr.write(f"{_stderr_colour('Warning:', '33')} {_one_line(message)}\n")
    sys.stderr.flush()


def message(text: str) -> None:
    """An informational line on stderr (STH prints its notices there, results on stdout)."""
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def help_to_stderr(text: str) -> None:
    """Help shown because a command was incomplete (``si seq``): stderr, as STH does."""
    sys.stderr.write(text.rstrip("\n") + "\n")


def sequence_handle(sequence_id: str, api_base: str) -> dict[str, Any]:
    """What ``seq send`` prints: the shape of STH's SequenceClient (scripts read ``_id``)."""
    return {
        "_id": sequence_id,
        "host": {"apiBase": api_base},
        "sequenceURL": f"sequence/{sequence_id}",
    }


def instance_handle(instance_id: str, api_base: str) -> dict[str, Any]:
    """What ``seq start`` prints: the shape (and key order) of STH's InstanceClient."""
    return {
        "host": {"apiBase": api_base},
        "_id": instance_id,
        "instanceURL": f"instance/{instance_id}",
    }


class Renderer:
    """Prints results in one output format."""

    def __init__(self, output_format: OutputFormat) -> None:
        self.format = output_format

    def show(self, value: Any) -> None:
        """Print one result. ``None`` and ``""`` print nothing (STH skips falsy results)."""
        if value is None or value == "":
            return
        if self.format is OutputFormat.json:
            _write_stdout(_compact(value) + "\n")
            return
        lines = _pretty_lines(value, 0)
        if lines:
            _write_stdout("\n".join(lines) + "\n")

    def lines(self, values: Sequence[Any]) -> None:
        """A list of scalars (ids): one per line in pretty format, a JSON array in json."""
        if self.format is OutputFormat.json:
            _write_stdout(_compact(list(values)) + "\n")
            return
        if values:
            _write_stdout("".join(f"{_cell(value)}\n" for value in values))

    def json_value(self, value: Any) -> None:
        """One value as JSON whatever the format (STH's ``inst event on``); falsy prints nothing."""
        if value is None or value == "" or value is False:
            return
        _write_stdout(_compact(value) + "\n")

    def table(self, header: list[str], rows: list[list[Any]], records: Sequence[Any]) -> None:
        """A table in pretty format; the records as one JSON array in json."""
        if self.format is OutputFormat.json:
            _write_stdout(_compact(list(records)) + "\n")
            return
        self._table(header, [[_cell(cell) for cell in row] for row in rows])

    def sequences(self, records: Sequence[Any]) -> None:
        """A list of sequence records: a table in pretty format."""
        if self.format is OutputFormat.json:
            _write_stdout(_compact(list(records)) + "\n")
            return
        rows = []
        for record in records:
            config = _dict(_dict(record).get("config"))
            rows.append(
                [
                    _cell(_dict(record).get("id")),
                    _cell(config.get("name") or _dict(record).get("name")),
                    _cell(config.get("version")),
                    _cell(config.get("language")),
                    _cell(len(_list(_dict(record).get("instances")))),
                ]
            )
        self._table(["ID", "NAME", "VERSION", "LANGUAGE", "INSTANCES"], rows)

    def instances(
        self,
        records: Sequence[Any],
        now: Callable[[], float] | None = None,
        *,
        with_hub: bool = False,
    ) -> None:
        """A list of instance records: a table in pretty format (``with_hub``: a HUB column,
        for a cluster's instances)."""
        if self.format is OutputFormat.json:
            _write_stdout(_compact(list(records)) + "\n")
            return
        rows = []
        for record in records:
            item = _dict(record)
            sequence = item.get("sequence")
            sequence_id = _dict(sequence).get("id") if isinstance(sequence, dict) else sequence
            started = item.get("started") or item.get("created")
            row = [
                _cell(item.get("id")),
                _cell(sequence_id),
                _cell(item.get("status")),
                _cell(item.get("restarts", 0)),
                _age(started, now),
                _cell(item.get("pid")),
            ]
            rows.append([_cell(item.get("hub")), *row] if with_hub else row)
        header = ["ID", "SEQUENCE", "STATUS", "RESTARTS", "AGE", "PID"]
        self._table(["HUB", *header] if with_hub else header, rows)

    def hubs(self, records: Sequence[Any]) -> None:
        """The cluster's hub registry: name, state, heartbeat age, load, instances, URL."""
        if self.format is OutputFormat.json:
            _write_stdout(_compact(list(records)) + "\n")
            return
        rows = []
        for record in records:
            item = _dict(record)
            load = _dict(item.get("load"))
            name = _cell(item.get("name")) + (" *" if item.get("self") else "")
            rows.append(
                [
                    name,
                    "stale" if item.get("stale") else "live",
                    f"{float(item.get('age') or 0):.1f}s",
                    f"{float(load.get('currentLoad') or 0):.2f}",
                    _cell(item.get("cpus")),
                    _cell(item.get("instances")),
                    _cell(item.get("url")),
                ]
            )
        self._table(["HUB", "STATE", "AGE", "LOAD", "CPUS", "INSTANCES", "URL"], rows)

    def cluster_sequences(self, records: Sequence[Any]) -> None:
        """The sequences in a cluster's store."""
        if self.format is OutputFormat.json:
            _write_stdout(_compact(list(records)) + "\n")
            return
        rows = [
            [
                _cell(item.get("id")),
                _cell(item.get("name")),
                _cell(item.get("version")),
                _cell(item.get("uploadedTo")),
                "yes" if item.get("here") else "no",
                _cell(item.get("size")),
            ]
            for item in map(_dict, records)
        ]
        self._table(["ID", "NAME", "VERSION", "UPLOADED TO", "HERE", "SIZE"], rows)

    def stream(self, chunks: Iterable[bytes]) -> None:
        """Copy a byte stream to stdout as it arrives, flushing every chunk."""
        try:
            with binary_stdout() as out:
                for chunk in chunks:
                    out.write(chunk)
                    out.flush()
        finally:
            # Stop a streaming response now rather than when the generator is collected.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _table(self, header: list[str], rows: list[list[str]]) -> None:
        widths = [len(title) for title in header]
        for row in rows:
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
        lines = []
        for row in [header, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            lines.append(COLUMN_GAP.join(cells).rstrip())
        _write_stdout("\n".join(lines) + "\n")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return _one_line(str(value))


def _scalar(value: Any) -> str:
    """A leaf value in pretty format: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    return _compact(value)


def _is_leaf(value: Any) -> bool:
    """Printed on the key's own line: scalars, empty containers, lists of scalars."""
    if isinstance(value, dict):
        return not value
    if isinstance(value, list):
        return all(not isinstance(item, dict | list) for item in value)
    return True


def _pretty_lines(value: Any, depth: int) -> list[str]:
    pad = INDENT * depth
    if isinstance(value, dict):
        width = max((len(str(key)) for key in value), default=0)
        lines = []
        for key, item in value.items():
            if _is_leaf(item):
                lines.append(f"{pad}{str(key).ljust(width)}  {_scalar(item)}".rstrip())
            else:
                lines.append(f"{pad}{key}")
                lines.extend(_pretty_lines(item, depth + 1))
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if _is_leaf(item):
                lines.append(f"{pad}- {_scalar(item)}")
            else:
                block = _pretty_lines(item, depth + 1)
                # "- " takes the place of the first line's indent, YAML style.
                lines.append(f"{pad}- {block[0].lstrip()}")
                lines.extend(block[1:])
        return lines
    return [f"{pad}{_scalar(value)}"]


def _age(timestamp: Any, now: Callable[[], float] | None) -> str:
    """How long ago an ISO-8601 time was, e.g. ``42s``, ``5m``, ``3h``, ``2d``."""
    if not isinstance(timestamp, str) or not timestamp:
        return ""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return ""
    if moment.tzinfo is None:
        # The hub writes UTC; a naive time is taken as UTC rather than local time.
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    import time

    return duration((now or time.time)() - moment.timestamp())


def iso_or_blank(timestamp: float | None) -> str:
    """A Unix time as ISO 8601 in UTC, to the second; "" for None."""
    if timestamp is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """A duration in its largest whole unit: ``42s``, ``5m``, ``3h``, ``2d``."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"
