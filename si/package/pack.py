"""Pack a sequence directory into the gzip-compressed tar the hub accepts.

The layout is STH's: member names relative to the directory with no ``./`` and no
top-level folder, an entry for each directory, dotfiles kept, and only ``.siignore`` leaving
anything out. Beyond STH, the archive is reproducible (sorted members, no owner names, no gzip
timestamp), so the same tree always packs to the same bytes.

Everything that can be refused is checked before the first byte is written, because
:func:`pack_directory` may be writing to a pipe, where half an archive cannot be taken back.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Set
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from si.errors import PackageError
from si.package._paths import contained
from si.package.manifest import Manifest, read_manifest
from si.package.siignore import load_siignore

# Identifies a file on disk whatever path reaches it: (st_dev, st_ino).
FileId = tuple[int, int]


def _file_id(st: os.stat_result) -> FileId:
    return st.st_dev, st.st_ino


def iter_package_members(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every path to pack, as ``(member name, path on disk)``, depth first in name order.

    Directory names end in ``/`` as in a tar listing (``sub/``, then ``sub/x.py``). Symlinks are
    yielded as they are and never followed, so a link to a directory cannot loop.

    Raises:
        PackageError: ``.siignore`` or a directory cannot be read.
    """
    ignored = load_siignore(directory)

    def walk(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise PackageError(f"cannot read {folder}: {exc.strerror}") from None
        for entry in entries:
            name = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if ignored(name, is_dir):
                continue
            if is_dir:
                yield f"{name}/", Path(entry.path)
                yield from walk(Path(entry.path), f"{name}/")
            else:
                yield name, Path(entry.path)

    yield from walk(directory, "")


def _checked_members(directory: Path, skip: Set[FileId]) -> list[tuple[str, Path]]:
    """The members to pack, without the files in ``skip``, refusing what the hub would refuse."""
    members: list[tuple[str, Path]] = []
    for name, path in iter_package_members(directory):
        st = path.lstat()
        if _file_id(st) in skip:
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if contained(posixpath.join(posixpath.dirname(name), target)) is None:
                raise PackageError(f"symlink {name!r} points out of the package (to {target!r})")
        elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise PackageError(f"{name!r} is not a regular file, directory or symlink")
        members.append((name, path))
    return members


def _write_archive(members: list[tuple[str, Path]], out: BinaryIO) -> None:
    # Writing the gzip layer ourselves lets us zero its timestamp; "w|" never seeks, so `out`
    # may be a pipe.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in members:
            info = tar.gettarinfo(path, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""  # the packer's login means nothing on the hub
            info.mode &= 0o777  # no setuid, setgid or sticky bit travels in a package
            info.mtime = int(info.mtime)  # a fractional mtime would cost a pax header each
            if not info.isreg():
                tar.addfile(info)
                continue
            try:
                file = path.open("rb")
            except OSError as exc:
                raise PackageError(f"cannot read {name!r}: {exc.strerror}") from None
            with file:
                tar.addfile(info, file)
    out.flush()


def pack_directory(directory: Path, out: BinaryIO) -> Manifest:
    """Check ``directory`` as a package, then write it to ``out`` as a tar.gz stream.

    Raises:
        PackageError: the package is refused; nothing has been written to ``out``.
    """
    manifest = read_manifest(directory)
    _write_archive(_checked_members(directory, frozenset()), out)
    return manifest


def default_output_path(directory: Path) -> Path:
    """``<absolute directory>.tar.gz``, beside it: for ``.`` that is ``../<cwd name>.tar.gz``."""
    absolute = Path(os.path.abspath(directory))  # abspath, not resolve: "." names the cwd itself
    return absolute.with_name(f"{absolute.name}.tar.gz")


def pack_to_file(directory: Path, output: Path | None = None) -> Path:
    """Pack ``directory`` into ``output`` (default :func:`default_output_path`); its absolute path.

    The archive is written to a temporary file beside ``output`` and renamed over it at the end,
    so a failure leaves no file behind and an older archive at ``output`` untouched. An output
    inside the package directory is not packed into itself.

    Raises:
        PackageError: the package is refused or the output cannot be written.
    """
    read_manifest(directory)  # refuse a bad package before creating any file
    target = Path(os.path.abspath(output if output is not None else default_output_path(directory)))
    if target.is_dir():
        raise PackageError(f"cannot write {target}: it is a directory")
    try:
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise PackageError(f"cannot write {target}: {exc.strerror}") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            skip = {_file_id(os.fstat(fd))}
            with suppress(FileNotFoundError):
                skip.add(_file_id(target.stat()))  # an older archive, about to be replaced
            _write_archive(_checked_members(directory, skip), file)
            os.fchmod(fd, 0o644)  # mkstemp's 0o600 would be a surprise on a file meant to share
            os.fsync(fd)  # so a crash cannot leave an empty file under the final name
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target
