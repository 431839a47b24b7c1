"""Small file-system helpers shared by the hub and the runners."""

from __future__ import annotations

import contextlib
import errno
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
    file behind the new name. A write that fails (a full disk) removes its temporary file and
    leaves the old file as it was.

    Raises:
        OSError: the file could not be written; ``path`` is untouched.
    """
    data = json.dumps({"schema": SCHEMA_VERSION, **body}, indent=1).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            write_all(fd, data)
            if durable:  # not needed against a process crash, only against a machine crash
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may take less than asked near a full disk or quota."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` means there is no room left: the disk is full or a quota is used up."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_exhaustion(exc: BaseException) -> bool:
    """Whether ``exc`` means no file descriptor is left, to this process or to the system:
    a statement about the caller, never about the file or process it tried to open."""
    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


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
