"""The contract file the Node.js runner reads says what the Python modules say."""

from __future__ import annotations

from si.protocol import contract
from si.protocol.codes import Code, ExitCode


def test_contract_json_matches_the_python_definitions() -> None:
    assert contract.CONTRACT_FILE.read_text() == contract.render(), (
        "si/protocol/contract.json is stale: run python -m si.protocol.contract"
    )


def test_codes_keep_sths_numbers() -> None:
    # STH's clients and sequences speak these numbers; they are not ours to change.
    assert (Code.PING, Code.MONITORING, Code.SEQUENCE_STOPPED, Code.ALIVE, Code.PANG) == (
        3000,
        3001,
        3006,
        3010,
        3012,
    )
    assert (Code.STOP, Code.KILL, Code.MONITORING_RATE, Code.EVENT) == (4001, 4002, 4003, 5001)
    assert [int(code) for code in ExitCode] == [0, 21, 22, 23, 137, 138]
