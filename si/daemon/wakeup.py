"""Two ways one task wakes others, named once (each is a trio.Event re-armed at the right time).

``Changes``: "something changed, look again" to every task waiting at that moment; tasks that
wait later wait for the next change. ``WorkFlag``: "there is work" to the one worker that
drains it; any number of ``set`` calls before it looks count as one.
"""

from __future__ import annotations

import trio


class Changes:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        """Wake every task in ``wait`` now."""
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        """Wait for the next ``notify``. Callers re-check their condition after it."""
        await self._event.wait()


class WorkFlag:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        """There is work (again)."""
        self._event.set()

    async def take(self) -> None:
        """Wait until there is work, and clear the flag for the next round."""
        await self._event.wait()
        self._event = trio.Event()
