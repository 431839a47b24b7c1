"""The Node.js runner's own unit tests (si/runner/node/test/*.test.js), run with ``node --test``.

link.test.js is run by tests/protocol/test_vectors.py, next to the Python side of the vectors;
every other suite is run here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_TESTS = Path(__file__).resolve().parents[2] / "si" / "runner" / "node" / "test"
SUITES = sorted(p.name for p in NODE_TESTS.glob("*.test.js") if p.name != "link.test.js")


def test_there_are_suites() -> None:
    assert "streams.test.js" in SUITES


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("suite", SUITES)
def test_node_suite(suite: str) -> None:
    result = subprocess.run(
        ["node", "--test", str(NODE_TESTS / suite)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
