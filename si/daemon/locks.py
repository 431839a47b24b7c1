"""Advisory locks on the hub (issue 18): two ``si apply`` runs on one hub cannot interleave.

``POST /api/v1/lock/:name`` takes a lock for ``ttl`` seconds (an apply that dies does not hold
it for ever) and answers a key; ``DELETE /api/v1/lock/:name`` with that key lets it go. Held in
the hub's memory: a hub restart ends every lock with the applies it interrupted. Sans-IO, with
the clock given.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

MAX_TTL = 3600.0
MAX_LOCKS = 256


@dataclasses.dataclass(frozen=True)
class Held:
    key: str
    owner: str
    since: float
    until: float


class LockBusy(Exception):
    def __init__(self, held: Held, now: float) -> None:
        super().__init__(
            f"held by {held.owner or 'someone'} for {now - held.since:.0f} s "
            f"(it lapses in {max(0.0, held.until - now):.0f} s unless released)"
        )
        self.held = held


class Locks:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._held: dict[str, Held] = {}

    def take(self, name: str, owner: str, ttl: float) -> Held:
        """Raises: LockBusy (another holds it), ValueError (too many locks)."""
        now = self.clock()
        self._held = {n: h for n, h in self._held.items() if h.until > now}
        held = self._held.get(name)
        if held is not None:
            raise LockBusy(held, now)
        if len(self._held) >= MAX_LOCKS:
            raise ValueError(f"the hub holds {MAX_LOCKS} locks already")
        taken = Held(secrets.token_hex(16), owner, now, now + min(max(ttl, 1.0), MAX_TTL))
        self._held[name] = taken
        return taken

    def release(self, name: str, key: str) -> bool:
        """False when ``key`` does not hold ``name`` (it lapsed, or it is another's)."""
        held = self._held.get(name)
        if held is None or not secrets.compare_digest(held.key, key):
            return False
        del self._held[name]
        return True
