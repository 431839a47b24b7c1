"""Write ``contract.json``: the message codes, exit codes and instance-directory file names,
for the Node.js runner, which reads them at start instead of spelling them again.

    python -m si.protocol.contract      # after changing messages.py or instance_dir.py

``tests/protocol/test_contract.py`` fails while the file and these modules disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from si.protocol.codes import Code, ExitCode
from si.protocol.instance_dir import FILE_NAMES

CONTRACT_FILE = Path(__file__).with_name("contract.json")


def build() -> dict[str, Any]:
    return {
        "codes": {code.name: code.value for code in Code},
        "exitCodes": {code.name: code.value for code in ExitCode},
        "files": dict(FILE_NAMES),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    CONTRACT_FILE.write_text(render())
