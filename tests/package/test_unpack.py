"""safe_extract: hostile archives are refused without a trace, good ones land complete."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from si.package.unpack import safe_extract
from tests.package.helpers import (
    ENTRY,
    Member,
    assert_refused,
    build_archive,
    good_members,
    regular,
    special,
    write_package,
)

HOSTILE = {
    "absolute path": (
        [regular("/tmp/evil", b"x")],
        "unsafe member '/tmp/evil': absolute path",
    ),
    "dot-dot": (
        [regular("../evil", b"x")],
        "unsafe member '../evil': path escapes the package",
    ),
    "dot-dot inside the name": (
        [regular("sub/../../evil", b"x")],
        "unsafe member 'sub/../../evil': path escapes the package",
    ),
    "symlink to /etc": (
        [special("etc", tarfile.SYMTYPE, "/etc")],
        "unsafe member 'etc': symlink to '/etc' leads out of the package",
    ),
    "relative symlink out": (
        [special("sub/up", tarfile.SYMTYPE, "../../x")],
        "unsafe member 'sub/up': symlink to '../../x' leads out of the package",
    ),
    "hardlink out": (
        [special("hl", tarfile.LNKTYPE, "../outside")],
        "unsafe member 'hl': hardlink target escapes the package",
    ),
    "hardlink to an absolute path": (
        [special("hl", tarfile.LNKTYPE, "/etc/passwd")],
        "unsafe member 'hl': absolute hardlink target",
    ),
    "hardlink to a later member": (
        [special("hl", tarfile.LNKTYPE, "later.txt"), regular("later.txt", b"x")],
        "unsafe member 'hl': hardlink to 'later.txt', which is not an earlier file",
    ),
    "character device": (
        [special("null", tarfile.CHRTYPE)],
        "unsafe member 'null': a character device",
    ),
    "block device": (
        [special("disk", tarfile.BLKTYPE)],
        "unsafe member 'disk': a block device",
    ),
    "fifo": (
        [special("pipe", tarfile.FIFOTYPE)],
        "unsafe member 'pipe': a fifo",
    ),
    # Each link alone stays inside; together "l" resolves to the store itself, and "l/evil"
    # would be written beside the package.
    "chain of symlinks": (
        [
            special("a/b", tarfile.SYMTYPE, ".."),
            special("l", tarfile.SYMTYPE, "a/b/.."),
            regular("l/evil", b"x"),
        ],
        "unsafe member 'l/evil': path leads out of the package through a symlink",
    ),
    "chain of symlinks never written through": (
        [special("a/b", tarfile.SYMTYPE, ".."), special("l", tarfile.SYMTYPE, "a/b/..")],
        "unsafe member 'l': symlink resolves outside the package",
    ),
    "symlink loop": (
        [special("x", tarfile.SYMTYPE, "y"), special("y", tarfile.SYMTYPE, "x")],
        "unsafe member 'x': symlink resolves outside the package",
    ),
    "duplicate member": (
        [regular("dup", b"1"), regular("dup", b"2")],
        "cannot extract member 'dup': File exists",
    ),
}

# Archives whose members are harmless but which are not a valid package.
BAD_PACKAGES = {
    "missing package.json": (
        [regular("index.py", ENTRY)],
        "no package.json at the archive root",
    ),
    "package wrapped in a folder": (
        [special("seq", tarfile.DIRTYPE), *good_members("seq/")],
        "no package.json at the archive root (pack the directory's contents",
    ),
    "package.json not JSON": (
        [regular("package.json", b"{main: index.py}"), regular("index.py", ENTRY)],
        "package.json is not valid JSON: Expecting property name",
    ),
    "package.json without main": (
        [regular("package.json", b'{"name": "x"}'), regular("index.py", ENTRY)],
        'package.json: "main" must name the entry file (it is missing)',
    ),
    "main names a missing file": (
        [regular("package.json", b'{"main": "gone.py"}')],
        "main ('gone.py'): gone.py is not in the package",
    ),
    "main escapes the package": (
        [regular("package.json", b'{"main": "../index.py"}'), regular("index.py", ENTRY)],
        "\"main\" ('../index.py') must be a path inside the package",
    ),
    "main is a link to a directory": (
        [
            regular("package.json", b'{"main": "index.py"}'),
            special("index.py", tarfile.SYMTYPE, "."),
        ],
        "main ('index.py'): index.py is not a regular file",
    ),
}


@pytest.mark.parametrize(("members", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_unsafe_member_is_refused_and_leaves_nothing(
    tmp_path: Path, members: list[Member], message: str
) -> None:
    # A good package first: the refusal must also undo what was already written.
    archive = build_archive(tmp_path / "p.tar.gz", [*good_members(), *members])
    assert_refused(archive, tmp_path, message)


@pytest.mark.parametrize(("members", "message"), BAD_PACKAGES.values(), ids=BAD_PACKAGES.keys())
def test_invalid_package_is_refused_and_leaves_nothing(
    tmp_path: Path, members: list[Member], message: str
) -> None:
    assert_refused(build_archive(tmp_path / "p.tar.gz", members), tmp_path, message)


def test_too_many_members_are_refused_while_streaming(tmp_path: Path) -> None:
    members = [*good_members(), *(regular(f"f{i}", b"x") for i in range(5))]
    archive = build_archive(tmp_path / "p.tar.gz", members)
    assert_refused(archive, tmp_path, "more than 4 members (at member 'f2')", max_files=4)


def test_too_large_a_package_is_refused(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "p.tar.gz", [*good_members(), regular("big", b"0" * 4096)])
    assert_refused(
        archive, tmp_path, "over 1000 bytes uncompressed (at member 'big')", max_bytes=1000
    )


def test_huge_tar_header_is_refused_before_it_is_read_into_memory(tmp_path: Path) -> None:
    info, data = regular("index.py", ENTRY)
    info.pax_headers = {"comment": "x" * 1_000_000}
    archive = build_archive(tmp_path / "p.tar.gz", [*good_members()[:1], (info, data)])
    assert_refused(archive, tmp_path, "not a valid tar.gz package: a tar header is over")


def test_non_gzip_data_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(b"PK\x03\x04 this is a zip, not a tar.gz")
    assert_refused(archive, tmp_path, "not a valid tar.gz package: Not a gzipped file")


def test_gzip_of_something_else_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(gzip.compress(b"plain text, not a tar stream " * 40))
    assert_refused(archive, tmp_path, "not a valid tar.gz package:")


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    members = [*good_members(), regular("data", os.urandom(20_000))]
    whole = build_archive(tmp_path / "whole.tar.gz", members).read_bytes()
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(whole[: len(whole) // 2])
    assert_refused(archive, tmp_path, "not a valid tar.gz package: Compressed file ended")


def test_empty_input_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(b"")
    assert_refused(archive, tmp_path, "not a valid tar.gz package:")


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "p.tar.gz", good_members())
    (tmp_path / "pkg").mkdir()
    with pytest.raises(FileExistsError):
        safe_extract(archive, tmp_path / "pkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tar.gz", "pkg"]


def test_dot_slash_names_from_tar_czf_dot_are_accepted(tmp_path: Path) -> None:
    members = [special("./", tarfile.DIRTYPE), *good_members("./"), regular("./sub/x.py", b"x")]
    archive = build_archive(tmp_path / "p.tar.gz", members)
    manifest = safe_extract(archive, tmp_path / "pkg")
    assert manifest.entry == "index.py"
    assert (tmp_path / "pkg" / "sub" / "x.py").read_bytes() == b"x"


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_archive_made_by_the_tar_command_is_accepted(tmp_path: Path) -> None:
    source = write_package(tmp_path / "src", files={"sub/x.py": b"x"})
    archive = tmp_path / "p.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(source), "."], check=True)
    safe_extract(archive, tmp_path / "pkg")
    assert (tmp_path / "pkg" / "sub" / "x.py").read_bytes() == b"x"


def test_links_inside_the_package_are_kept(tmp_path: Path) -> None:
    members = [
        *good_members(),
        regular("lib/real.py", b"real"),
        special("lib/alias.py", tarfile.SYMTYPE, "real.py"),
        special("bin/tool", tarfile.SYMTYPE, "../lib/real.py"),
        special("lib/hard.py", tarfile.LNKTYPE, "./lib/real.py"),
        special("dir-link", tarfile.SYMTYPE, "lib"),
        regular("dir-link/through.py", b"through"),
    ]
    archive = build_archive(tmp_path / "p.tar.gz", members)
    pkg = tmp_path / "pkg"
    safe_extract(archive, pkg)
    assert os.readlink(pkg / "lib" / "alias.py") == "real.py"
    assert (pkg / "bin" / "tool").read_bytes() == b"real"
    assert os.path.samefile(pkg / "lib" / "hard.py", pkg / "lib" / "real.py")
    assert (pkg / "lib" / "through.py").read_bytes() == b"through"


def test_setuid_is_dropped_and_the_executable_bit_kept(tmp_path: Path) -> None:
    members = [*good_members(), regular("run.sh", b"#!/bin/sh\n", 0o4777), regular("x", b"", 0o666)]
    archive = build_archive(tmp_path / "p.tar.gz", members)
    safe_extract(archive, tmp_path / "pkg")
    assert stat.S_IMODE((tmp_path / "pkg" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "pkg" / "x").stat().st_mode) == 0o644


def test_archive_is_read_from_a_non_seekable_pipe(tmp_path: Path) -> None:
    data = build_archive(tmp_path / "p.tar.gz", good_members()).read_bytes()
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read_fd, "rb") as pipe:
        assert not pipe.seekable()
        manifest = safe_extract(pipe, tmp_path / "pkg")
    feeder.join()
    assert manifest.language == "python"
    assert (tmp_path / "pkg" / "index.py").read_bytes() == ENTRY


def test_archive_is_read_from_an_in_memory_stream(tmp_path: Path) -> None:
    data = build_archive(tmp_path / "p.tar.gz", good_members()).read_bytes()
    manifest = safe_extract(io.BytesIO(data), tmp_path / "pkg")
    assert (manifest.name, manifest.version, manifest.main) == ("seq", "1.0.0", "index.py")
