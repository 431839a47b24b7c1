"""Machine load figures for ``GET /load-check``, in STH's shape."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from si.daemon.hub import Hub

# STH subtracts a safety margin from free space; the same default (MiB).
SAFE_OPERATION_LIMIT_MIB = 512


def _meminfo() -> dict[str, int]:
    figures: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            figures[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return figures


def load_figures(hub: Hub) -> dict[str, Any]:
    """Blocking (reads /proc and statvfs): run it in a thread."""
    one, _five, fifteen = os.getloadavg()
    memory = _meminfo()
    total = memory.get("MemTotal", 0)
    available = memory.get("MemAvailable", 0)
    filesystems = []
    for path in (Path("/"), Path.home(), hub.paths.sequences):
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        margin = SAFE_OPERATION_LIMIT_MIB << 20
        filesystems.append(
            {
                "fs": str(path),
                "available": max(0, usage.free - margin),
                "size": usage.total,
                "used": usage.used,
                "use": usage.used / usage.total if usage.total else 0,
            }
        )
    return {
        "avgLoad": fifteen,
        "currentLoad": one,
        "memFree": available,
        "memUsed": total - available,
        "fsSize": filesystems,
    }
