"""Lexical checks of package-relative paths, shared by the manifest, the packer and the unpacker."""

from __future__ import annotations

import posixpath


def contained(path: str) -> str | None:
    """``path`` (posix, relative to the package root) normalised, or None if it leaves the root.

    Absolute paths and paths whose ``..`` climb above the root leave it; ``a/../b`` is ``b``.
    A NUL byte counts as leaving too: no file system can hold it, so it is never meant.
    """
    if path.startswith("/") or "\x00" in path:
        return None
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return None
    return normal
