"""``GET /metrics``: the hub and its instances in Prometheus' text format (issue 15).

Two steps, so the event loop never waits on /proc or on an import: ``gather`` copies what the
hub knows (ids, statuses, byte counts, pids) in the loop, which is all memory; ``render`` then
runs in a worker thread, reads each runner's CPU time and RSS from /proc and writes the text
with ``prometheus_client`` (imported there, ~40 ms once: never on the CLI's path, nor on the
hub's start).

A runner's pid is safe to read /proc by: the hub holds a pidfd on every runner it watches, so
the pid cannot be recycled under it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from si.daemon.record import InstanceStatus
from si.protocol.frames import Channel

if TYPE_CHECKING:
    from si.daemon.hub import Hub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class InstanceFigures:
    id: str
    sequence_id: str
    status: str
    pid: int | None  # only while the hub watches a live runner
    output_bytes: int
    input_bytes: int
    reconnects: int
    restarts: int
    started: float  # when the instance started (its first run), or was created


@dataclasses.dataclass(frozen=True)
class TopicFigures:
    name: str
    depth_bytes: int
    producers: int
    readers: int


@dataclasses.dataclass(frozen=True)
class Snapshot:
    uptime: float
    statuses: dict[str, int]
    instances: list[InstanceFigures]
    topics: list[TopicFigures]


def gather(hub: Hub) -> Snapshot:
    """What the hub knows now (in the event loop: memory only)."""
    instances = []
    for instance in hub.instances.values():
        runner_link = instance.runner_link
        watched = instance.pidfd is not None and not instance.exited
        instances.append(
            InstanceFigures(
                id=instance.id,
                sequence_id=instance.state.sequence_id,
                status=str(instance.state.status),
                pid=instance.state.pid if watched else None,
                output_bytes=instance.output.tail,
                input_bytes=(
                    runner_link.link.outbound[Channel.INPUT].next_offset if runner_link else 0
                ),
                # The first dial is the connection, every later one a reconnect.
                reconnects=max(0, runner_link.dials - 1) if runner_link else 0,
                restarts=instance.state.restarts,
                started=instance.state.started or instance.state.created,
            )
        )
    statuses = Counter({str(status): 0 for status in InstanceStatus})
    statuses.update(figures.status for figures in instances)
    topics = [
        TopicFigures(
            name=topic.name,
            depth_bytes=topic.pipe.tail - topic.pipe.head,
            producers=topic.producers,
            readers=topic.pipe.reader_count,
        )
        for topic in hub.topics.topics.values()
    ]
    return Snapshot(time.time() - hub.started_at, dict(statuses), instances, topics)


def process_figures(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of ``pid`` from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
        with open(f"/proc/{pid}/statm", "rb") as statm_file:
            statm = statm_file.read()
    except OSError:
        return None
    # Fields after the command name, which may hold spaces and parentheses.
    fields = stat[stat.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
    rss = int(statm.split()[1]) * _PAGE_SIZE
    return cpu, rss


def top_view(snapshot: Snapshot) -> dict[str, Any]:
    """``GET /api/v1/top``: per instance, the counters ``si top`` turns into rates, read now
    (blocking: run it in a worker thread). ``at`` is when, by the hub's clock."""
    rows = []
    for figures in snapshot.instances:
        measured = process_figures(figures.pid) if figures.pid is not None else None
        rows.append(
            {
                "id": figures.id,
                "sequence": figures.sequence_id,
                "status": figures.status,
                "pid": figures.pid,
                "cpuSeconds": measured[0] if measured else None,
                "rssBytes": measured[1] if measured else None,
                "outputBytes": figures.output_bytes,
                "inputBytes": figures.input_bytes,
                "restarts": figures.restarts,
                "started": figures.started,
            }
        )
    return {"at": time.time(), "uptime": snapshot.uptime, "instances": rows}


def render(snapshot: Snapshot) -> bytes:
    """The text exposition of ``snapshot`` (blocking: run it in a worker thread)."""
    from prometheus_client.core import (
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import generate_latest

    def collect() -> list[Metric]:
        labels = ["instance", "sequence"]
        uptime = GaugeMetricFamily("si_hub_uptime_seconds", "Seconds since the hub started.")
        uptime.add_metric([], snapshot.uptime)
        by_status = GaugeMetricFamily(
            "si_instances", "Instances the hub lists, by status.", labels=["status"]
        )
        for status, count in sorted(snapshot.statuses.items()):
            by_status.add_metric([status], count)
        cpu = CounterMetricFamily(
            "si_instance_cpu_seconds", "CPU time of the instance's runner.", labels=labels
        )
        rss = GaugeMetricFamily(
            "si_instance_rss_bytes", "Resident memory of the instance's runner.", labels=labels
        )
        output = CounterMetricFamily(
            "si_instance_output_bytes", "Bytes of output the instance produced.", labels=labels
        )
        input_ = CounterMetricFamily(
            "si_instance_input_bytes", "Bytes sent to the instance's input.", labels=labels
        )
        reconnects = CounterMetricFamily(
            "si_instance_link_reconnects",
            "Times the hub connected to the runner again (hub restarts, broken connections).",
            labels=labels,
        )
        restarts = CounterMetricFamily(
            "si_instance_restarts",
            "Times the restart policy started the instance again.",
            labels=labels,
        )
        for figures in snapshot.instances:
            values = [figures.id, figures.sequence_id]
            restarts.add_metric(values, figures.restarts)
            output.add_metric(values, figures.output_bytes)
            input_.add_metric(values, figures.input_bytes)
            reconnects.add_metric(values, figures.reconnects)
            measured = process_figures(figures.pid) if figures.pid is not None else None
            if measured is not None:
                cpu.add_metric(values, measured[0])
                rss.add_metric(values, measured[1])
        depth = GaugeMetricFamily(
            "si_topic_depth_bytes",
            "Bytes in a topic not yet taken by its readers.",
            labels=["topic"],
        )
        producers = GaugeMetricFamily(
            "si_topic_producers", "Instances producing into a topic.", labels=["topic"]
        )
        readers = GaugeMetricFamily(
            "si_topic_readers", "Readers attached to a topic.", labels=["topic"]
        )
        for topic in snapshot.topics:
            depth.add_metric([topic.name], topic.depth_bytes)
            producers.add_metric([topic.name], topic.producers)
            readers.add_metric([topic.name], topic.readers)
        return [
            *(uptime, by_status, cpu, rss, output, input_, reconnects, restarts),
            *(depth, producers, readers),
        ]

    class SnapshotCollector:
        def collect(self) -> Any:
            return collect()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector())
    return bytes(generate_latest(registry))
