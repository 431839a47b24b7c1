"""``GET /api/v1/watch``: the whole hub as one NDJSON line per interval (the console's feed).

One response carries everything the console's lists show: each instance's record with its
counters, CPU time and RSS (what ``GET /top`` has), the sequences, and the topics with their
producers, consumers and depth. The console turns two lines into rates, as ``si top`` does,
so it never polls: the hub pushes, at most once a second.

Two steps, as for ``/metrics``: :func:`gather` copies what the hub knows in the event loop
(memory only); :func:`encode` reads /proc for each runner and writes the JSON line in a worker
thread, so a hub with a thousand instances does not stall its loop on file reads.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from si.daemon import metrics

if TYPE_CHECKING:
    from si.daemon.hub import Hub
    from si.daemon.instance import Instance

# The console asks for no faster than this; a smaller ``interval`` is raised to it.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 60.0
# A line this young is sent again to another watcher instead of built anew: however many pages
# are open, the hub builds at most two lines a second.
FRESH = 0.5


@dataclasses.dataclass(frozen=True)
class Overview:
    snapshot: metrics.Snapshot
    records: dict[str, dict[str, Any]]
    sequences: list[dict[str, Any]]
    topic_types: dict[str, str]


def gather(hub: Hub) -> Overview:
    """What the hub knows now (in the event loop)."""
    hub.settle()
    return Overview(
        snapshot=metrics.gather(hub),
        records={instance.id: _record(instance) for instance in hub.instances.values()},
        sequences=[sequence.record() for sequence in hub.sequences.values()],
        topic_types={name: topic.content_type for name, topic in hub.topics.topics.items()},
    )


def _record(instance: Instance) -> dict[str, Any]:
    record = instance.record()
    sequence = record.get("sequence")
    if isinstance(sequence, dict):
        # STH's record repeats the sequence's whole config in every instance; the lists need
        # its id and name, and a thousand copies a second of the rest would be most of the feed.
        record["sequence"] = {"id": sequence.get("id"), "name": sequence.get("name")}
    if instance.live and isinstance(instance.health, dict):
        record["health"] = instance.health
    return record


def encode(overview: Overview) -> bytes:
    """One NDJSON line of ``overview``, with CPU and RSS read now (blocking: a worker thread)."""
    snapshot = overview.snapshot
    instances = []
    for figures in snapshot.instances:
        measured = metrics.process_figures(figures.pid) if figures.pid is not None else None
        row = dict(overview.records.get(figures.id, {"id": figures.id}))
        row.update(
            cpuSeconds=measured[0] if measured else None,
            rssBytes=measured[1] if measured else None,
            outputBytes=figures.output_bytes,
            inputBytes=figures.input_bytes,
            reconnects=figures.reconnects,
        )
        instances.append(row)
    topics = [
        {
            "id": topic.name,
            "contentType": overview.topic_types.get(topic.name, ""),
            "producers": topic.producers,
            "consumers": topic.readers,
            "depthBytes": topic.depth_bytes,
        }
        for topic in snapshot.topics
    ]
    body = {
        "at": time.time(),
        "uptime": snapshot.uptime,
        "instances": instances,
        "sequences": overview.sequences,
        "topics": topics,
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def interval_of(value: str | None) -> float:
    """The push interval a request asks for, kept within [MIN_INTERVAL, MAX_INTERVAL].

    Raises:
        ValueError: not a number.
    """
    if value is None or value == "":
        return MIN_INTERVAL
    seconds = float(value)
    if seconds != seconds:  # NaN
        raise ValueError("interval is not a number")
    return min(max(seconds, MIN_INTERVAL), MAX_INTERVAL)


class SharedLine:
    """The latest line, built once for every watcher that asks within :data:`FRESH` seconds.

    ``build`` makes a line (for the hub: :func:`gather` in the loop, :func:`encode` in a
    worker thread; see :func:`builder`)."""

    def __init__(
        self, build: Callable[[], Awaitable[bytes]], clock: Callable[[], float] = trio.current_time
    ) -> None:
        self._build = build
        self.clock = clock
        self._lock = trio.Lock()
        self._built: tuple[float, bytes] | None = None
        self.builds = 0

    async def current(self) -> bytes:
        async with self._lock:  # watchers that ask while a line is built wait for that one
            if self._built is not None and self.clock() - self._built[0] < FRESH:
                return self._built[1]
            line = await self._build()
            self._built = (self.clock(), line)
            self.builds += 1
            return line


def builder(hub: Hub) -> Callable[[], Awaitable[bytes]]:
    async def build() -> bytes:
        return await trio.to_thread.run_sync(encode, gather(hub))

    return build
