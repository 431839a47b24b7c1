"""The hub registry's entries and placement, sans-IO (no nats, no trio).

Each hub writes one entry under its name in the ``si-hubs`` key-value bucket every
``HEARTBEAT_INTERVAL``: its URL, when it wrote it, and its ``/load-check`` figures with its
instance count. Readers judge an entry's age by its own ``at`` (the writer's wall clock: the
machines of a cluster keep NTP time; a skew of a second or two only shifts the age shown).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = 1
# Every 2 s: three heartbeats missed (6 s) makes a hub stale, inside the promised 10 s even when
# the reader's clock is a second or two ahead, and a registry of 100 hubs costs 50 small writes
# a second.
HEARTBEAT_INTERVAL = 2.0
STALE_AFTER = 3 * HEARTBEAT_INTERVAL


@dataclass(frozen=True)
class HubEntry:
    """One hub as the registry knows it.

    Args:
        name: the hub's name in the cluster (its key in the bucket).
        url: where its API is reached from other machines ("" when it serves no TCP).
        at: when the hub wrote this entry (seconds since the epoch).
        started: when the hub started.
        cpus: its machine's CPU count.
        instances: its live instances.
        load: its ``/load-check`` figures (``currentLoad``, ``avgLoad``, ``memFree``, ...).
    """

    name: str
    url: str
    at: float
    started: float = 0.0
    cpus: int = 1
    instances: int = 0
    load: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps({"schema": SCHEMA, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> HubEntry:
        """Raises ValueError for anything that is not an entry of this schema."""
        try:
            body = json.loads(data)
            if body.get("schema") != SCHEMA:
                raise ValueError(f"registry entry of schema {body.get('schema')!r}")
            return cls(
                name=str(body["name"]),
                url=str(body.get("url") or ""),
                at=float(body["at"]),
                started=float(body.get("started") or 0.0),
                cpus=max(1, int(body.get("cpus") or 1)),
                instances=int(body.get("instances") or 0),
                load=dict(body.get("load") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a registry entry: {exc}") from None

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def stale(self, now: float) -> bool:
        return self.age(now) > STALE_AFTER

    @property
    def score(self) -> float:
        """Lower is emptier: instances and the 1-minute load, each per CPU.

        Instances count as well as load because load averages trail: ten starts in a second
        would otherwise all go to the hub that looked idle a minute ago.
        """
        current = float(self.load.get("currentLoad") or 0.0)
        return (self.instances + current) / self.cpus

    def view(self, now: float) -> dict[str, Any]:
        """What ``GET /cluster/hubs`` shows of it."""
        return {
            "name": self.name,
            "url": self.url,
            "age": round(self.age(now), 1),
            "stale": self.stale(now),
            "instances": self.instances,
            "cpus": self.cpus,
            "score": round(self.score, 3),
            "load": self.load,
        }


def registry_view(read: Iterable[HubEntry], own: HubEntry | None) -> list[HubEntry]:
    """The hubs by name, from a read of the registry and this hub's last entry that reached it.

    A read may be served by a NATS replica that has not caught up with this hub's own write;
    the newer of the two entries for this hub is the one listed, so a hub always lists itself
    once a heartbeat of its own got through.
    """
    entries = {entry.name: entry for entry in read}
    if own is not None:
        listed = entries.get(own.name)
        if listed is None or listed.at < own.at:
            entries[own.name] = own
    return sorted(entries.values(), key=lambda entry: entry.name)


class NoHubAvailable(Exception):
    """No live hub to place a start on, or none of the name asked for."""


def choose_hub(entries: Iterable[HubEntry], now: float, wanted: str = "auto") -> HubEntry:
    """The hub a start goes to: the one named ``wanted``, or the least loaded live one
    (``"auto"``); ties go to the name that sorts first, so the choice is repeatable.

    Raises:
        NoHubAvailable: the named hub is unknown or stale; no hub is live.
    """
    known = list(entries)
    if wanted != "auto":
        for entry in known:
            if entry.name == wanted:
                if entry.stale(now):
                    raise NoHubAvailable(
                        f"hub {wanted} is stale (last heard {entry.age(now):.0f} s ago)"
                    )
                return entry
        raise NoHubAvailable(f"no hub named {wanted} in the cluster")
    live = [entry for entry in known if not entry.stale(now)]
    if not live:
        raise NoHubAvailable("no live hub in the cluster")
    return min(live, key=lambda entry: (entry.score, entry.name))
