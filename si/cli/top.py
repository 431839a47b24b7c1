"""``si top``: every instance of the hub, live: status, CPU %, RSS, output and input rates,
restarts, age.

The hub answers ``GET top`` with counters (CPU seconds, output and input bytes) and each
runner's RSS; rates are the difference of two answers over the time between them, so the view
is the same against a remote hub. On a terminal it is a full-screen view (curses, imported
only then) refreshed every ``--interval`` seconds: ``q`` quits, a sort key re-sorts. Anywhere
else (a pipe, a script) it prints one table from two samples ``--interval`` apart, or the rows
as JSON with ``--format json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from si.cli import render
from si.cli.common import CONTEXT_SETTINGS, state
from si.cli.render import duration
from si.errors import SiError

if TYPE_CHECKING:
    from si.client import HubClient

# Key -> (column sorted by, highest first?)
SORT_KEYS: dict[str, tuple[str, bool]] = {
    "c": ("cpu", True),
    "m": ("rss", True),
    "o": ("out", True),
    "i": ("in", True),
    "r": ("restarts", True),
    "a": ("age", True),
    "s": ("status", False),
    "n": ("id", False),
}
COLUMNS = ("cpu", "rss", "out", "in", "restarts", "age", "status", "id")
HEADER = ["ID", "STATUS", "CPU%", "RSS", "OUT/s", "IN/s", "RESTARTS", "AGE", "PID"]
HELP_LINE = "q quit   sort: c cpu  m rss  o out/s  i in/s  r restarts  a age  s status  n id"


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    status: str
    pid: int | None
    cpu: float | None  # percent of one core, over the last interval
    rss: int | None
    out: float | None  # bytes per second
    in_: float | None
    restarts: int
    age: float

    def sort_value(self, column: str) -> Any:
        value = {"in": self.in_}.get(column, getattr(self, column, None))
        return -1 if value is None else value

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "cpuPercent": self.cpu,
            "rssBytes": self.rss,
            "outputBytesPerSecond": self.out,
            "inputBytesPerSecond": self.in_,
            "restarts": self.restarts,
            "ageSeconds": self.age,
        }

    def cells(self) -> list[str]:
        return [
            self.id,
            self.status,
            "" if self.cpu is None else f"{self.cpu:.1f}",
            "" if self.rss is None else size(self.rss),
            "" if self.out is None else size(self.out),
            "" if self.in_ is None else size(self.in_),
            str(self.restarts),
            duration(self.age),
            "" if self.pid is None else str(self.pid),
        ]


def size(value: float) -> str:
    """Bytes the way top shows them: ``512``, ``1.5K``, ``12.0M``, ``3.2G``."""
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}" if not unit else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rows(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[Row]:
    """The view's rows from two ``GET top`` answers (rates need ``previous``)."""
    before: dict[str, dict[str, Any]] = {}
    elapsed = 0.0
    if previous is not None:
        before = {item["id"]: item for item in previous.get("instances", [])}
        elapsed = float(current["at"]) - float(previous["at"])

    def rate(item: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
        old = before.get(item["id"])
        if old is None or elapsed <= 0 or item.get(key) is None or old.get(key) is None:
            return None
        if old.get("pid") != item.get("pid"):
            return None  # a restart between the samples: the counters are another runner's
        return max(0.0, (float(item[key]) - float(old[key])) / elapsed * scale)

    found = []
    for item in current.get("instances", []):
        found.append(
            Row(
                id=str(item["id"]),
                status=str(item["status"]),
                pid=item.get("pid"),
                cpu=rate(item, "cpuSeconds", 100.0),
                rss=item.get("rssBytes"),
                out=rate(item, "outputBytes"),
                in_=rate(item, "inputBytes"),
                restarts=int(item.get("restarts") or 0),
                age=_age(current["at"], item.get("started")),
            )
        )
    return found


def _age(at: Any, started: Any) -> float:
    return 0.0 if started is None else max(0.0, float(at) - float(started))


def sort_rows(found: list[Row], column: str) -> list[Row]:
    descending = next((d for c, d in SORT_KEYS.values() if c == column), True)
    return sorted(found, key=lambda row: (row.sort_value(column), row.id), reverse=descending)


def table(found: list[Row]) -> list[str]:
    cells = [HEADER, *(row.cells() for row in found)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


@click.command(
    "top",
    context_settings=CONTEXT_SETTINGS,
    epilog="\b\nExample:\n  si top\n  si top --sort rss | head",
)
@click.option(
    "--interval",
    metavar="SECONDS",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Refresh period; without a terminal, the time between the two samples.",
)
@click.option(
    "--sort",
    "column",
    type=click.Choice(COLUMNS),
    default="cpu",
    show_default=True,
    help="The column to sort by (keys in the live view: c m o i r a s n).",
)
@click.option("--once", is_flag=True, help="Print one table and exit, even on a terminal.")
def app(interval: float, column: str, once: bool) -> None:
    """Show every instance live: status, CPU %, RSS, output and input rates, restarts, age."""
    cli = state()
    with cli.client() as client:
        if once or not (sys.stdout.isatty() and sys.stdin.isatty()):
            first = client.top()
            time.sleep(interval)
            found = sort_rows(rows(first, client.top()), column)
            if cli.format.value == "json":
                cli.renderer.show([row.to_json() for row in found])
            else:
                for line in table(found):
                    render.write_line(line)
            return
        _live(client, interval, column)


def _live(client: HubClient, interval: float, column: str) -> None:
    import curses

    def loop(screen: Any) -> None:
        curses.curs_set(0)
        screen.timeout(100)  # getch waits this long: keys answer within 0.1 s
        sort = column
        previous: dict[str, Any] | None = None
        found: list[Row] = []
        problem = ""
        due = 0.0
        while True:
            now = time.monotonic()
            if now >= due:
                due = now + interval
                try:
                    current = client.top()
                except SiError as exc:
                    problem = str(exc)  # a hub restarting: keep trying, say why
                else:
                    found, previous, problem = rows(previous, current), current, ""
                _draw(screen, client.address, sort_rows(found, sort), sort, problem)
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key >= 0 and chr(key) in SORT_KEYS:
                sort = SORT_KEYS[chr(key)][0]
                _draw(screen, client.address, sort_rows(found, sort), sort, problem)

    try:
        curses.wrapper(loop)
    except KeyboardInterrupt:
        pass


def _draw(screen: Any, address: str, found: list[Row], sort: str, problem: str) -> None:
    import curses

    height, width = screen.getmaxyx()
    screen.erase()

    def put(y: int, text: str, attr: int) -> None:
        screen.addnstr(y, 0, text, max(0, width - 1), attr)  # the last cell would scroll

    statuses: dict[str, int] = {}
    for row in found:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "none"
    put(0, f"si top - {address} - {len(found)} instances ({counts}) - sorted by {sort}", 0)
    put(1, problem or HELP_LINE, curses.A_BOLD if problem else 0)
    lines = table(found)
    put(2, lines[0], curses.A_REVERSE)
    for y, line in enumerate(lines[1:], start=3):
        if y >= height:
            break
        put(y, line, 0)
    screen.refresh()
