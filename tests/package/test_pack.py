"""Packing a directory: member names, .siignore, output placement, streams and failures."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from si.errors import PackageError
from si.package.pack import (
    default_output_path,
    iter_package_members,
    pack_directory,
    pack_to_file,
)
from si.package.unpack import safe_extract
from tests.package.helpers import write_package


def archive_names(archive: Path | bytes) -> list[str]:
    source = io.BytesIO(archive) if isinstance(archive, bytes) else archive.open("rb")
    with source, tarfile.open(fileobj=source, mode="r:gz") as tar:
        return [m.name + ("/" if m.isdir() else "") for m in tar.getmembers()]


def test_member_names_are_relative_with_directories_and_dotfiles(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq", files={"sub/x.py": b"x", ".hidden": b"h"})
    expected = [".hidden", "index.py", "package.json", "sub/", "sub/x.py"]
    assert [name for name, _ in iter_package_members(package)] == expected
    assert archive_names(pack_to_file(package)) == expected


def test_siignore_drops_matching_files_and_directory_subtrees(tmp_path: Path) -> None:
    siignore = b"# build output\n*.log\nbuild/\nsub/skip.py  # one file only\n"
    files = {
        ".siignore": siignore,
        "a.log": b"",
        "sub/a.log": b"",
        "sub/skip.py": b"",
        "build/out/deep.js": b"",
    }
    package = write_package(tmp_path / "seq", files=files)
    assert archive_names(pack_to_file(package)) == [
        ".siignore",
        "index.py",
        "package.json",
        "sub/",
        "sub/a.log",
    ]


def test_default_output_is_beside_the_directory(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq")
    assert default_output_path(package) == tmp_path / "seq.tar.gz"
    assert pack_to_file(package) == tmp_path / "seq.tar.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq", "seq.tar.gz"]


def test_packing_dot_writes_cwd_name_tar_gz_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = write_package(tmp_path / "seq")
    monkeypatch.chdir(package)
    assert default_output_path(Path(".")) == tmp_path / "seq.tar.gz"
    assert pack_to_file(Path(".")) == tmp_path / "seq.tar.gz"
    assert "package.json" in archive_names(tmp_path / "seq.tar.gz")


def test_explicit_output_is_used_and_returned_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = write_package(tmp_path / "seq")
    (tmp_path / "dist").mkdir()
    monkeypatch.chdir(tmp_path)
    written = pack_to_file(package, Path("dist/my.tar.gz"))
    assert written == tmp_path / "dist" / "my.tar.gz"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644


def test_output_inside_the_package_does_not_pack_itself(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq")
    output = package / "seq.tar.gz"
    pack_to_file(package, output)
    pack_to_file(package, output)  # the first archive is now in the directory too
    assert archive_names(output) == ["index.py", "package.json"]
    assert sorted(p.name for p in package.iterdir()) == ["index.py", "package.json", "seq.tar.gz"]


def test_stdout_style_packing_works_on_a_non_seekable_pipe(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq", files={"sub/x.py": b"x"})
    read_fd, write_fd = os.pipe()
    received: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            received.append(pipe.read())

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_fd, "wb") as pipe:
        assert not pipe.seekable()
        manifest = pack_directory(package, pipe)
    reader.join()
    assert manifest.entry == "index.py"
    assert archive_names(received[0]) == ["index.py", "package.json", "sub/", "sub/x.py"]


def test_failed_validation_writes_no_file_and_keeps_an_older_archive(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq", {"name": "no-main"})
    older = tmp_path / "seq.tar.gz"
    older.write_bytes(b"older archive")
    with pytest.raises(PackageError, match='"main" must name the entry file'):
        pack_to_file(package)
    with pytest.raises(PackageError, match=r"package\.json not found"):
        pack_to_file(tmp_path / "empty-dir-missing")
    assert older.read_bytes() == b"older archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq", "seq.tar.gz"]


def test_failed_validation_writes_nothing_to_the_stream(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq", {"main": "missing.py"})
    out = io.BytesIO()
    with pytest.raises(PackageError, match=re.escape("main ('missing.py'): missing.py is not")):
        pack_directory(package, out)
    assert out.getvalue() == b""


def test_symlink_out_of_the_package_is_refused_before_writing(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq")
    (package / "etc").symlink_to("/etc")
    out = io.BytesIO()
    with pytest.raises(PackageError, match="symlink 'etc' points out of the package"):
        pack_directory(package, out)
    assert out.getvalue() == b""
    with pytest.raises(PackageError):
        pack_to_file(package)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_special_file_is_refused(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq")
    os.mkfifo(package / "pipe")
    with pytest.raises(PackageError, match="'pipe' is not a regular file, directory or symlink"):
        pack_to_file(package)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq")
    (tmp_path / "seq.tar.gz").mkdir()
    with pytest.raises(PackageError, match="it is a directory"):
        pack_to_file(package)


def test_same_tree_packs_to_the_same_bytes(tmp_path: Path) -> None:
    package = write_package(tmp_path / "seq", files={"sub/x.py": b"x"})
    first = pack_to_file(package, tmp_path / "a.tar.gz").read_bytes()
    assert pack_to_file(package, tmp_path / "b.tar.gz").read_bytes() == first


def test_round_trip_gives_identical_files(tmp_path: Path) -> None:
    files = {"sub/deep/x.py": b"x" * 5000, ".env": b"A=1", "empty": b"", "run.sh": b"#!/bin/sh\n"}
    package = write_package(tmp_path / "seq", files=files)
    (package / "run.sh").chmod(0o755)
    (package / "empty-dir").mkdir()
    (package / "alias.py").symlink_to("index.py")
    (package / "sub" / "up").symlink_to("../index.py")
    safe_extract(pack_to_file(package), tmp_path / "copy")

    def snapshot(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
        tree: dict[str, tuple[str, bytes | str, int]] = {}
        for path in sorted(root.rglob("*")):
            mode = path.lstat().st_mode
            if path.is_symlink():
                tree[str(path.relative_to(root))] = ("link", os.readlink(path), 0)
            elif path.is_dir():
                tree[str(path.relative_to(root))] = ("dir", b"", 0)
            else:
                tree[str(path.relative_to(root))] = ("file", path.read_bytes(), mode & 0o111)
        return tree

    assert snapshot(tmp_path / "copy") == snapshot(package)
