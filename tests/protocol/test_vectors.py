"""The Python link against the shared vectors (tests/vectors/link.json).

The JavaScript link replays the same file (si/runner/node/test/link.test.js, run below with
``node --test``): what passes here and there is one protocol.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from si.protocol.frames import Frame, FrameDecoder, FrameError, FrameKind, encode_frame
from si.protocol.link import Link
from tests.vectors.make_link_vectors import RESULT_KEYS, VECTORS, Pair, build

REPO = Path(__file__).resolve().parents[2]
NODE_TESTS = REPO / "si" / "runner" / "node" / "test"
VECTOR_DATA: dict[str, Any] = json.loads(VECTORS.read_text())


def test_the_vectors_file_is_what_the_generator_makes() -> None:
    assert build() == VECTOR_DATA, "run: python -m tests.vectors.make_link_vectors"


@pytest.mark.parametrize("vector", VECTOR_DATA["frames"], ids=lambda v: v["hex"][:8])
def test_frames_encode_and_decode(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload"])
    encoded = encode_frame(vector["kind"], vector["channel"], vector["offset"], payload)
    assert encoded.hex() == vector["hex"]
    frame = Frame(FrameKind(vector["kind"]), vector["channel"], vector["offset"], payload)
    assert FrameDecoder().feed(encoded) == [frame]


@pytest.mark.parametrize("vector", VECTOR_DATA["decoder_errors"], ids=lambda v: v["why"])
def test_decoder_refuses(vector: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize(
    "vector", VECTOR_DATA["proofs"], ids=lambda v: f"{v['role']}-{v['nonce'][:4]}"
)
def test_auth_carries_the_hmac_proof(vector: dict[str, Any]) -> None:
    role = vector["role"]
    link = Link(role, vector["instance"], bytes.fromhex(vector["token"]), {}, {})
    link.connection_made()
    link.data_to_send()
    peer_hello = {
        "role": "runner" if role == "hub" else "hub",
        "instance": vector["instance"],
        "version": 1,
        "nonce": vector["nonce"],
    }
    link.receive_data(encode_frame(FrameKind.HELLO, 0, 0, json.dumps(peer_hello).encode()))
    [auth] = FrameDecoder().feed(link.data_to_send())
    assert auth.kind is FrameKind.AUTH
    assert json.loads(auth.payload)["proof"] == vector["proof"]


@pytest.mark.parametrize(
    "scenario", VECTOR_DATA["scenarios"], ids=[s["name"] for s in VECTOR_DATA["scenarios"]]
)
def test_scenario(scenario: dict[str, Any]) -> None:
    pair = Pair(scenario["links"])
    for number, step in enumerate(scenario["steps"]):
        plain = {k: v for k, v in step.items() if k not in RESULT_KEYS}
        expected = {k: v for k, v in step.items() if k in RESULT_KEYS}
        assert pair.run(plain) == expected, f"step {number}: {plain}"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_javascript_link_passes_the_same_vectors() -> None:
    result = subprocess.run(
        ["node", "--test", str(NODE_TESTS / "link.test.js")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SI_LINK_VECTORS": str(VECTORS)},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
