"""Warm spares: runners the keeper boots ahead of time and hands the next instance to.

A Python runner starts by ``fork`` from the keeper in a few milliseconds; a Node.js runner has
to boot Node (~40-70 ms here) and load the runner before it can do anything. So the keeper
keeps a few Node runners booted and waiting (``node runner.js --spare``), and a start hands
one of them the instance instead of exec'ing a new one; a replacement boots once the start has
been answered.

A spare is started exactly like a runner, in its own directory ``<home>/spares/<random>/``: own
session, fd 0 = /dev/null, fd 1/2 = that directory's ``stdout``/``stderr`` files, fd 3 = the
listening socket bound at its ``runner.sock``; and fd 4 = the spare's end of a socketpair with
the keeper. To assign it an instance, the keeper *renames* those three files into the
instance directory (the descriptors follow the inodes, so the spare's stdout, stderr and
listener become the instance's, and the hub can dial the socket at once), then writes one line
``{"instance_dir": "..."}`` on the socketpair, waits for the spare's ``ok`` and closes its
end (no answer: the spare is killed and the instance starts cold). The spare closes fd 4 and
from then on is an ordinary runner with exactly the descriptors of a cold-started one; its
runner.json records its own pid and start time.

A spare that reads end-of-file on fd 4 exits: that is how spares never outlive their keeper
(idle exit, removed home, crash: the kernel closes the keeper's ends) and how the keeper
retires them. Spares are the keeper's children like runners, and are reaped like them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from si.protocol.instance_dir import FILE_NAMES

# How many spares the keeper keeps booted per kind of runner while starts are few. Each costs
# an idle Node.js process (~9 MiB PSS); one more than one lets back-to-back starts find a
# booted spare.
SPARES = 2
# The pool grows with demand up to this many: a start that had to wait for its spare to
# finish booting doubles the pool, so a burst of starts has boots running ahead of it on every
# core instead of two at a time. Spares boot only after a start has its answer (never on a
# start's path), so the bound is on the memory of idle spares after a burst, not on latency.
SPARES_LIMIT = 8
# A start waited for its spare when the answer took longer than this (a booted spare answers
# in well under a millisecond).
BOOTING_WAIT = 0.005
# Back to SPARES once no start has waited for a spare for this long: the extra spares retire.
SHRINK_AFTER = 60.0
# The files a spare owns until its assignment moves them into the instance directory.
SPARE_FILES = tuple(FILE_NAMES[role] for role in ("stdout", "stderr", "socket"))
# How long a start waits for a spare to answer its assignment (one still booting answers
# once it has booted) before it starts the instance cold instead.
HANDOVER_TIMEOUT = 5.0
# How long a retiring keeper waits for its spares to see end-of-file and exit.
RETIRE_TIMEOUT = 2.0

# start(directory, argv, control): fork and exec a runner in ``directory`` with ``control``
# as its fd 4; returns its pid. The keeper's, so that it stays every runner's parent.
StartChild = Callable[[Path, list[str], socket.socket], int]


@dataclass
class Spare:
    pid: int
    directory: Path
    control: socket.socket  # the keeper's end of the spare's fd 4


class SparePool:
    """The spares of one keeper: all of one kind (the argv of the latest request that asked)."""

    def __init__(
        self,
        directory: Path,
        start: StartChild,
        size: int = SPARES,
        limit: int = SPARES_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.start = start
        self.base = size
        self.limit = max(limit, size)
        self.size = size  # the current target: base, or more while starts outrun the boots
        self.clock = clock
        self.last_wait = -SHRINK_AFTER  # when a start last waited for its spare to boot
        self.argv: list[str] | None = None
        self.spares: list[Spare] = []  # oldest first: the likeliest to have finished booting
        # Leftovers of a keeper that was killed: their spares saw end-of-file and exited.
        shutil.rmtree(directory, ignore_errors=True)

    def take(self, argv: list[str], instance_dir: Path) -> int | None:
        """Hand ``instance_dir`` to a spare started with ``argv``; its pid, or None (none fits).

        Also remembers ``argv`` as the kind to keep spares of (see :meth:`fill`).
        """
        if argv != self.argv:
            self.retire()  # another node, other flags, a newer si: the old spares are stale
            self.argv = list(argv)
            return None
        if not self.spares or any((instance_dir / name).exists() for name in SPARE_FILES):
            return None
        spare = self.spares.pop(0)
        moved: list[str] = []
        try:
            for name in SPARE_FILES:
                os.rename(spare.directory / name, instance_dir / name)
                moved.append(name)
            line = json.dumps({"instance_dir": str(instance_dir)}).encode() + b"\n"
            spare.control.sendall(line)
            # The spare answers once it has the assignment. A spare that died (killed, out of
            # memory) since it booted may still be unreaped, and the line may fit the socket's
            # buffer: only its answer proves it took the instance.
            spare.control.settimeout(HANDOVER_TIMEOUT)
            asked = self.clock()
            taken = spare.control.recv(16).startswith(b"ok")
            if taken and self.clock() - asked > BOOTING_WAIT:
                self.demand_outran_boots()
        except OSError:
            taken = False  # another filesystem, a removed directory, a dead or stuck spare
        if not taken:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spare.pid, signal.SIGKILL)  # our child: reaped like any other
            for name in moved:  # the instance starts cold, with files of its own
                with contextlib.suppress(OSError):
                    os.unlink(instance_dir / name)
            self._retire(spare)
            return None
        spare.control.close()
        with contextlib.suppress(OSError):
            spare.directory.rmdir()
        return spare.pid

    def demand_outran_boots(self) -> None:
        """A start waited for its spare to boot: keep more booted ahead (up to the limit)."""
        self.last_wait = self.clock()
        self.size = min(self.limit, self.size * 2)

    def shrink_when_quiet(self) -> None:
        """Back to the base size once no start has waited for a while; the newest extra spares
        retire (the oldest are the likeliest to have booted)."""
        if self.size == self.base or self.clock() - self.last_wait < SHRINK_AFTER:
            return
        self.size = self.base
        while len(self.spares) > self.size:
            self._retire(self.spares.pop())

    def fill(self) -> None:
        """Boot spares until there are ``size`` of the remembered kind."""
        while self.argv is not None and len(self.spares) < self.size:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            directory = Path(tempfile.mkdtemp(dir=self.directory))
            keeper_end, spare_end = socket.socketpair()
            try:
                pid = self.start(directory, self.argv, spare_end)
            except OSError:
                keeper_end.close()
                shutil.rmtree(directory, ignore_errors=True)
                return
            finally:
                spare_end.close()
            self.spares.append(Spare(pid, directory, keeper_end))

    def exited(self, pid: int) -> None:
        """A child that was no instance's runner exited: if it was a spare, forget it."""
        for spare in self.spares:
            if spare.pid == pid:
                self.spares.remove(spare)
                spare.control.close()
                shutil.rmtree(spare.directory, ignore_errors=True)
                return

    def retire(self) -> None:
        """Tell every spare to exit (end-of-file on its fd 4); the keeper reaps them."""
        for spare in self.spares:
            self._retire(spare)
        self.spares = []

    def _retire(self, spare: Spare) -> None:
        spare.control.close()
        shutil.rmtree(spare.directory, ignore_errors=True)

    def close(self) -> None:
        """The keeper is leaving: retire the spares and wait (bounded) until they are gone."""
        pids = [spare.pid for spare in self.spares]
        self.retire()
        deadline = time.monotonic() + RETIRE_TIMEOUT
        for pid in pids:
            while True:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    break
                if time.monotonic() >= deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                    break
                time.sleep(0.005)
        shutil.rmtree(self.directory, ignore_errors=True)
