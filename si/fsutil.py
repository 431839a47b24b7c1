"""Small file-system helpers shared by the hub and the runners."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Every state file carries this so that a later hub can recognise and migrate old layouts.
SCHEMA_VERSION = 1


def write_json_atomic(
    path: Path, body: dict[str, Any], *, mode: int = 0o600, durable: bool = True
) -> None:
    """Write ``body`` plus ``schema`` to ``path``: readers see the old file or the new, never half.

    The temporary file is fsynced before ``os.replace`` so a machine crash cannot leave an empty
    file behind the new name.
    """
    data = json.dumps({"schema": SCHEMA_VERSION, **body}, indent=1).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        if durable:  # not needed against a process crash, only against a machine crash
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """Read a state file written by :func:`write_json_atomic`.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a JSON object (a corrupt or foreign file).
    """
    body = json.loads(path.read_bytes())
    if not isinstance(body, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return body
