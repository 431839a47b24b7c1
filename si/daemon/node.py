"""The Node.js runner as the hub starts it: ``node <si>/runner/node/runner.js <instance dir>``.

The runner is a small Node.js program shipped inside the si package (``si/runner/node/``, no
npm dependencies). It is started like the Python runner (detached, stdio to the instance's
files, the listening socket on fd 3) and speaks the same link protocol, so the rest of the hub
does not know which language an instance runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import si

RUNNER_DIR = Path(si.__file__).resolve().parent / "runner" / "node"
RUNNER_JS = RUNNER_DIR / "runner.js"
SNAPSHOT_JS = RUNNER_DIR / "snapshot.js"
# SI_NODE_SNAPSHOT=0: spares boot from runner.js, with no startup snapshot.
SNAPSHOT_ENV = "SI_NODE_SNAPSHOT"
# Building one takes ~0.2 s here; a machine that takes this long has something wrong.
SNAPSHOT_BUILD_TIMEOUT = 60.0
# Which node to run, when not the first `node` on PATH (a test pinning a version, say).
NODE_ENV = "SI_NODE"
# V8 grows its young generation up to 16 MiB per semi-space by default: ~30 MiB of resident
# memory per instance that a streaming runner (short-lived garbage, bounded buffers) does not
# need. 4 MiB keeps a runner near Node's own baseline for little cost in throughput
# (bench/runners.py).
#
# V8 hands a function to its optimising compiler after a budget of work (132 KiB of bytecode
# by default). A streaming runner's hot path is short JavaScript around native work (decoding,
# socket writes), and on two cores compiling some 60 functions in the first 100 MB of a stream
# cost as much CPU as the streaming itself (a 1 KiB-line passthrough: 0.22 s of CPU for the
# first 100 MB, 0.14 s with this budget; docs/node-runner.md). A larger budget optimises only
# what stays hot; compute-bound sequences reach the same code a little later, as fast.
NODE_FLAGS = ("--max-semi-space-size=4", "--interrupt-budget=1000000")


class NodeNotFound(Exception):
    """No Node.js to run JavaScript sequences with; the message says what to do."""


def node_executable() -> str:
    """The absolute path of the node binary runners are started with.

    Raises:
        NodeNotFound: neither ``$SI_NODE`` nor a ``node`` on PATH is executable.
    """
    configured = os.environ.get(NODE_ENV)
    found = shutil.which(configured or "node")
    if found is None:
        where = f"{NODE_ENV}={configured}" if configured else "no `node` on PATH"
        raise NodeNotFound(f"cannot run a JavaScript sequence: {where} (install Node.js 20+)")
    return str(Path(found).resolve())


def node_runner_argv(instance_dir: Path) -> list[str]:
    """The command line of the Node.js runner of ``instance_dir``.

    Raises:
        NodeNotFound: see :func:`node_executable`.
    """
    return [node_executable(), *NODE_FLAGS, str(RUNNER_JS), str(instance_dir)]


def node_spare_argv(snapshot: Path | None = None) -> list[str]:
    """The command line of a warm spare Node.js runner (booted, waiting for an instance).

    The keeper keeps a few of these running and hands a start to one (``si.runner.spares``):
    Node's own boot is most of a cold start's latency. ``snapshot``: a blob from
    :class:`NodeSnapshot` to boot from instead of loading runner.js.

    Raises:
        NodeNotFound: see :func:`node_executable`.
    """
    if snapshot is not None:
        # "--": with no script named, node would take --spare for one of its own options.
        return [node_executable(), *NODE_FLAGS, "--snapshot-blob", str(snapshot), "--", "--spare"]
    return [node_executable(), *NODE_FLAGS, str(RUNNER_JS), "--spare"]


class NodeSnapshot:
    """The runner's V8 startup snapshot, for spares: a spare booted from it skips loading the
    runner's modules (~10 ms of CPU of each boot here, which back-to-back starts pay as the
    pool refills while they run; docs/node-runner.md).

    One blob per node binary, flags and runner source, in ``directory``, named by a hash of
    them, so a changed one is never booted. Built off the start path (``build`` runs in a
    worker thread) and used once it exists; a build that fails is logged by the caller and not
    tried again by this hub: spares then boot from runner.js as before.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.enabled = os.environ.get(SNAPSHOT_ENV, "1") != "0"
        self.building = False
        self.failed = False
        self._ready: Path | None = None
        self._keys: dict[str, str] = {}  # node binary -> the blob's name for it

    def ready(self) -> Path | None:
        """The blob for the current node, if built."""
        if not self.enabled or self.failed:
            return None
        try:
            path = self.directory / self._name(node_executable())
        except (NodeNotFound, OSError):
            return None
        if self._ready == path or path.is_file():
            self._ready = path
            return path
        return None

    def wanted(self) -> bool:
        """True when a build should start now (none built, none under way, none failed)."""
        return self.enabled and not self.failed and not self.building and self.ready() is None

    def claim_build(self) -> bool:
        """True if a build should start now, which the caller then runs (``build``); until it
        ends, no other build is wanted."""
        if not self.wanted():
            return False
        self.building = True
        return True

    def build(self) -> Path:
        """Build the blob for the current node (blocking: run it in a thread). A failed build
        is not tried again: spares boot from runner.js.

        Raises:
            NodeNotFound, OSError, subprocess.SubprocessError: no blob was built (a partial
                one never takes the final name).
        """
        try:
            return self._build()
        except (NodeNotFound, OSError, subprocess.SubprocessError):
            self.failed = True
            raise
        finally:
            self.building = False

    def _build(self) -> Path:
        node = node_executable()
        target = self.directory / self._name(node)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.directory, prefix=".build-") as scratch:
            bundle = Path(scratch) / "runner-bundle.js"
            blob = Path(scratch) / "runner.blob"
            for argv in (
                [node, str(SNAPSHOT_JS), str(bundle)],
                [node, *NODE_FLAGS, "--snapshot-blob", str(blob), "--build-snapshot", str(bundle)],
            ):
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=SNAPSHOT_BUILD_TIMEOUT,
                    cwd=scratch,
                )
                if done.returncode != 0 or done.stderr.strip():
                    why = done.stderr.decode(errors="replace").strip().splitlines()
                    raise OSError(f"{argv[-1]}: {why[-1] if why else f'exit {done.returncode}'}")
            os.replace(blob, target)
        for stale in self.directory.glob("runner-*.blob"):
            if stale != target:
                stale.unlink(missing_ok=True)
        self._ready = target
        return target

    def _name(self, node: str) -> str:
        if node not in self._keys:
            digest = hashlib.sha256()
            found = os.stat(node)
            digest.update(f"{node}\0{found.st_size}\0{found.st_mtime_ns}\0".encode())
            digest.update("\0".join(NODE_FLAGS).encode())
            # Every runner source, not only what snapshot.js bundles: no list to keep in step.
            for source in sorted(RUNNER_DIR.glob("*.js")):
                digest.update(f"{source.name}\0".encode() + source.read_bytes())
            self._keys[node] = f"runner-{digest.hexdigest()[:16]}.blob"
        return self._keys[node]
