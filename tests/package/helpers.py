"""Builders for package directories and (hostile) archives used by the package tests."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from si.errors import PackageError
from si.package.unpack import safe_extract

PY_MANIFEST: dict[str, Any] = {
    "name": "seq",
    "version": "1.0.0",
    "main": "index.py",
    "engines": {"python3": "3.11"},
}
ENTRY = b"async def run(context, input):\n    return input\n"

Member = tuple[tarfile.TarInfo, bytes]


def write_package(
    root: Path, manifest: dict[str, Any] | None = None, files: dict[str, bytes] | None = None
) -> Path:
    """A package directory: package.json (default :data:`PY_MANIFEST`), index.py and ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(json.dumps(PY_MANIFEST if manifest is None else manifest))
    (root / "index.py").write_bytes(ENTRY)
    for name, data in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def regular(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return info, b""


def good_members(prefix: str = "") -> list[Member]:
    return [
        regular(f"{prefix}package.json", json.dumps(PY_MANIFEST).encode()),
        regular(f"{prefix}index.py", ENTRY),
    ]


def build_archive(path: Path, members: Iterable[Member]) -> Path:
    """Write ``members`` verbatim (tarfile's writer does not sanitise names) as a tar.gz."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def assert_refused(archive: Path, tmp_path: Path, message: str, **limits: int) -> None:
    """safe_extract refuses ``archive`` with ``message`` and leaves its target's parent empty."""
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(PackageError, match=re.escape(message)) as refused:
        safe_extract(archive, store / "pkg", **limits)
    assert list(store.iterdir()) == []
    assert "\n" not in str(refused.value)
