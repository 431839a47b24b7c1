"""The hub's state files (instance records, the topic heads), written so a full disk degrades.

A record that cannot be written (no space, a quota, any I/O error) is kept in memory, latest
body per file, and written again at the next chance: the next write that succeeds, a periodic
retry, the hub's shutdown. Nothing is lost once space returns, and no failed write stops the
hub. The log gets one warning when writes start failing and one note when they succeed again,
not a line per write while the disk stays full.

Writes are small and synchronous (as before: a few hundred bytes each); only a write that
failed costs a retry.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import trio

from si.daemon.wakeup import WorkFlag
from si.fsutil import is_disk_full, write_json_atomic

log = logging.getLogger("si.hub.state")

# How often records that could not be written are tried again while the disk stays full.
RETRY_INTERVAL = 2.0
# Errors that mean the file's directory is gone (its instance was removed): nothing to retry.
GONE = (errno.ENOENT, errno.ENOTDIR)


class StateFiles:
    """Writes JSON state files; holds those that failed until they can be written."""

    def __init__(self, retry_interval: float = RETRY_INTERVAL) -> None:
        self.retry_interval = retry_interval
        # path -> (latest body, durable): what is still to be written.
        self.pending: dict[Path, tuple[dict[str, Any], bool]] = {}
        # Why writes fail, while they do (the episode's first error); None while they succeed.
        self.failing: str | None = None
        self._deferred: set[Path] = set()  # files that waited during the current episode
        self._work = WorkFlag()

    def write(self, path: Path, body: dict[str, Any], *, durable: bool = True) -> bool:
        """Write ``body`` to ``path`` now if possible; True when it is on disk.

        When it is not, the body is kept and written by a later retry (a newer body for the
        same path replaces it).
        """
        self.pending[path] = (body, durable)
        if not self._write_one(path):
            return False
        if self.pending:
            self.flush()  # a write went through: there may be room for the others too
        return path not in self.pending

    def forget(self, directory: Path) -> None:
        """Drop what is pending under ``directory`` (an instance that was removed)."""
        for path in [p for p in self.pending if p.is_relative_to(directory)]:
            del self.pending[path]

    def flush(self) -> bool:
        """Try every pending write once; True when none is left."""
        for path in list(self.pending):
            if not self._write_one(path):
                break  # still failing: the rest waits for the next retry
        return not self.pending

    async def keep_retrying(self) -> None:
        """Retry pending writes every ``retry_interval`` while there are any (runs for the
        hub's lifetime)."""
        while True:
            while not self.pending:
                await self._work.take()
            await trio.sleep(self.retry_interval)
            self.flush()

    def _write_one(self, path: Path) -> bool:
        body, durable = self.pending[path]
        try:
            write_json_atomic(path, body, durable=durable)
        except OSError as exc:
            if exc.errno in GONE:
                # Its directory was removed under it: the record has nothing left to describe.
                del self.pending[path]
                log.debug("not writing %s: %s", path, exc.strerror)
                return False
            self._note_failure(path, exc)
            return False
        del self.pending[path]
        self._note_recovery()
        return True

    def _note_failure(self, path: Path, exc: OSError) -> None:
        self._deferred.add(path)
        self._work.set()
        if self.failing is not None:
            return  # said once per episode: a full disk fails every write until it is freed
        self.failing = exc.strerror or str(exc)
        what = "the disk is full" if is_disk_full(exc) else "state files cannot be written"
        log.warning(
            "%s (%s: %s): the hub keeps serving, holds unsaved records in memory and retries "
            "every %g s",
            what,
            self.failing,
            path,
            self.retry_interval,
        )

    def _note_recovery(self) -> None:
        if self.failing is None or self.pending:
            return
        log.info("state files are written again (%d had waited)", len(self._deferred))
        self.failing = None
        self._deferred.clear()
