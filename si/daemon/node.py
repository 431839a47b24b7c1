"""The Node.js runner as the hub starts it: ``node <si>/runner/node/runner.js <instance dir>``.

The runner is a small Node.js program shipped inside the si package (``si/runner/node/``, no
npm dependencies). It is started like the Python runner (detached, stdio to the instance's
files, the listening socket on fd 3) and speaks the same link protocol, so the rest of the hub
does not know which language an instance runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import si

RUNNER_JS = Path(si.__file__).resolve().parent / "runner" / "node" / "runner.js"
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


def node_spare_argv() -> list[str]:
    """The command line of a warm spare Node.js runner (booted, waiting for an instance).

    The keeper keeps a few of these running and hands a start to one (``si.runner.spares``):
    Node's own boot is most of a cold start's latency.

    Raises:
        NodeNotFound: see :func:`node_executable`.
    """
    return [node_executable(), *NODE_FLAGS, str(RUNNER_JS), "--spare"]
