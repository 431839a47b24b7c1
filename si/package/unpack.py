"""Unpack an uploaded package, treating the archive as hostile.

A package arrives over the network, so nothing in it may reach outside its own directory: no
absolute or ``..`` names, no links that lead out (checked by name when each link is made, and on
the real file system once all exist, since a chain of links can climb where none alone does),
no device or fifo nodes, no setuid bits. Sizes and counts are capped while streaming, so a gzip
bomb or a lying header is cut short instead of filling the disk.

Everything is unpacked into a hidden sibling of the destination and renamed into place only after
every check passed, including the manifest; on any failure the sibling is removed, so a refused
package leaves nothing behind. The archive is read strictly front to back (``tarfile`` stream
mode), so an upload can be unpacked straight from a pipe.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from si.errors import PackageError
from si.fsutil import is_disk_full
from si.package._paths import contained
from si.package.manifest import Manifest, read_manifest

# Uncompressed total: far above any real sequence with its dependencies, yet one upload cannot
# fill a disk.
MAX_PACKAGE_BYTES = 1 << 30
# Member count: a large node_modules holds tens of thousands of files; more is an inode bomb.
MAX_PACKAGE_FILES = 100_000
# Tar bytes allowed per member beyond its announced data: room for long-name pax records and for
# tarfile's 10 KiB read-ahead, while a huge pax header (tarfile reads one whole into memory) is
# cut short.
HEADER_ALLOWANCE = 64 * 1024
# Bytes copied per read while writing a member: bounds memory whatever the file's size.
COPY_CHUNK = 1 << 20

# How refused member types are named in messages; any other non-file type is "unknown".
TYPE_NAMES = {
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


class _BudgetedGunzip(io.BufferedIOBase):
    """The decompressed archive, never more of it than ``budget`` bytes in total.

    The owner raises the budget as members go by, so only a header far larger than any real one
    can exhaust it. Decompression errors become the "not a valid tar.gz" refusal here, where they
    cannot be confused with errors of writing the files.
    """

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._gunzip = gzip.GzipFile(fileobj=source, mode="rb")
        self._consumed = 0
        self.budget = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        try:
            data = self._gunzip.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise PackageError(f"not a valid tar.gz package: {exc}") from None
        self._consumed += len(data)
        if self._consumed > self.budget:
            raise PackageError(
                f"not a valid tar.gz package: a tar header is over {HEADER_ALLOWANCE} bytes"
            )
        return data


def _parts(path: str, member: str, what: str = "path") -> list[str]:
    """The components of a member name (or hardlink target), with ``./`` and ``//`` dropped."""
    if path.startswith("/"):
        raise PackageError(f"unsafe member {member!r}: absolute {what}")
    if "\x00" in path:
        raise PackageError(f"unsafe member {member!r}: {what} holds a NUL byte")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PackageError(f"unsafe member {member!r}: {what} escapes the package")
    return parts


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, with every symlink on the way followed, stays inside ``root``."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python 3.11
        return False


class _Unpacker:
    """Checks the members of one archive and writes them under ``root`` (fresh and resolved)."""

    def __init__(self, root: Path, stream: _BudgetedGunzip, max_bytes: int) -> None:
        self.root = root
        self.stream = stream
        self.max_bytes = max_bytes
        self.written = 0
        self.files: set[str] = set()  # regular files so far: the only targets a hardlink may have
        self.symlinks: list[tuple[str, Path]] = []

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _parts(member.name, member.name)
        if not parts and member.isdir():
            return  # "./", the root itself, as `tar czf x.tar.gz .` writes it
        unsafe = f"unsafe member {member.name!r}"
        if not parts:
            raise PackageError(f"{unsafe}: empty name")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            kind = TYPE_NAMES.get(member.type, "of an unknown type")
            raise PackageError(f"{unsafe}: {kind}, not a file, directory or link")
        name = "/".join(parts)
        target = self.root.joinpath(*parts)
        if not _inside(self.root, target):
            raise PackageError(f"{unsafe}: path leads out of the package through a symlink")
        try:
            if member.isdir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                return
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if member.issym():
                if contained(posixpath.join(posixpath.dirname(name), member.linkname)) is None:
                    raise PackageError(
                        f"{unsafe}: symlink to {member.linkname!r} leads out of the package"
                    )
                os.symlink(member.linkname, target)
                self.symlinks.append((member.name, target))
                return
            if member.islnk():
                source = "/".join(_parts(member.linkname, member.name, "hardlink target"))
                if source not in self.files:
                    raise PackageError(
                        f"{unsafe}: hardlink to {member.linkname!r}, "
                        "which is not an earlier file of the package"
                    )
                os.link(self.root / source, target, follow_symlinks=False)
            else:
                self._write(tar, member, target)
            self.files.add(name)
        except OSError as exc:
            if is_disk_full(exc):
                raise  # not the package's fault: the hub answers 507, not a refusal
            raise PackageError(f"cannot extract member {member.name!r}: {exc.strerror}") from None

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        if self.written + member.size > self.max_bytes:
            raise self._too_big(member)
        self.stream.budget += member.size
        data = tar.extractfile(member)
        assert data is not None  # a regular member always has data
        with open(target, "xb") as file:
            # Executable or not is all a sequence needs: no setuid, nothing world-writable.
            os.fchmod(file.fileno(), 0o755 if member.mode & 0o100 else 0o644)
            while chunk := data.read(COPY_CHUNK):
                # Counted as written, not taken from the header: a sparse member outgrows it.
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise self._too_big(member)
                file.write(chunk)

    def _too_big(self, member: tarfile.TarInfo) -> PackageError:
        return PackageError(
            f"package is over {self.max_bytes} bytes uncompressed (at member {member.name!r})"
        )

    def check_symlinks(self) -> None:
        """Refuse links that, once all exist, lead out through one another."""
        for name, link in self.symlinks:
            if not _inside(self.root, link):
                raise PackageError(f"unsafe member {name!r}: symlink resolves outside the package")


def _extract_members(source: BinaryIO, root: Path, max_bytes: int, max_files: int) -> None:
    stream = _BudgetedGunzip(source)
    stream.budget = HEADER_ALLOWANCE  # for the first header
    unpacker = _Unpacker(root, stream, max_bytes)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar, start=1):
                stream.budget += HEADER_ALLOWANCE  # for the header after this member
                if count > max_files:
                    raise PackageError(
                        f"package has more than {max_files} members (at member {member.name!r})"
                    )
                unpacker.add(tar, member)
    except tarfile.TarError as exc:
        raise PackageError(f"not a valid tar.gz package: {exc}") from None
    unpacker.check_symlinks()


def safe_extract(
    archive: BinaryIO | Path,
    dest: Path,
    *,
    max_bytes: int = MAX_PACKAGE_BYTES,
    max_files: int = MAX_PACKAGE_FILES,
) -> Manifest:
    """Unpack the tar.gz ``archive`` (a file or a stream) into ``dest``, which must not exist.

    Raises:
        PackageError: the package is refused (the message names the member or the problem);
            nothing is left on disk.
        FileExistsError: ``dest`` exists already.
        OSError: no room to unpack it (``ENOSPC``, ``EDQUOT``); nothing is left on disk.
    """
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "the destination exists already", str(dest))
    with ExitStack() as stack:
        source = stack.enter_context(archive.open("rb")) if isinstance(archive, Path) else archive
        root = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)).resolve()
        try:
            _extract_members(source, root, max_bytes, max_files)
            if not (root / "package.json").exists():
                raise PackageError(
                    "no package.json at the archive root "
                    "(pack the directory's contents, not the directory itself)"
                )
            manifest = read_manifest(root)
            root.chmod(0o755)  # mkdtemp's 0o700 would differ from every directory inside
            os.replace(root, dest)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    return manifest
