"""``si seq pack`` and ``si seq send DIR`` with the real packer, as a user runs them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from tests.cli.conftest import RunSi, one_error_line, session_file
from tests.cli.hubproxy import HubUnderTest


def _sequence_dir(parent: Path, *, engines: bool = True) -> Path:
    directory = parent / "hello"
    directory.mkdir()
    manifest: dict[str, object] = {"name": "hello", "version": "1.0.0", "main": "main.py"}
    if engines:
        manifest["engines"] = {"python3": "3"}
    (directory / "package.json").write_text(json.dumps(manifest))
    (directory / "main.py").write_text("def run(context, input, *args):\n    return input\n")
    return directory


def _members(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return set(tar.getnames())


def test_pack_writes_beside_the_directory_and_records_it(run_si: RunSi, tmp_path: Path) -> None:
    _sequence_dir(tmp_path)
    result = run_si("seq", "pack", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    archive = tmp_path / "hello.tar.gz"
    assert {"package.json", "main.py"} <= _members(archive.read_bytes())
    stored = json.loads(session_file(tmp_path).read_text())
    assert stored["lastPackagePath"] == str(archive)


def test_pack_to_stdout_is_binary_clean(run_si: RunSi, tmp_path: Path) -> None:
    _sequence_dir(tmp_path)
    result = run_si("seq", "pack", "hello", "--stdout")
    assert result.returncode == 0, result.stderr
    assert {"package.json", "main.py"} <= _members(result.stdout)
    assert json.loads(session_file(tmp_path).read_text())["lastPackagePath"] == ""


def test_pack_prints_manifest_warnings_on_stderr(run_si: RunSi, tmp_path: Path) -> None:
    _sequence_dir(tmp_path, engines=False)
    result = run_si("seq", "pack", "hello", "-o", "out.tar.gz")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.decode().splitlines()
    assert warnings
    assert all(line.startswith("Warning: ") for line in warnings)
    assert (tmp_path / "out.tar.gz").exists()


def test_pack_of_a_directory_without_package_json_fails(run_si: RunSi, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = one_error_line(run_si("seq", "pack", "empty"))
    assert message == f"{tmp_path / 'empty'}/package.json not found."


def test_pack_then_send_dash_uploads_that_archive(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _sequence_dir(tmp_path)
    assert run_si("seq", "pack", "hello", "-o", "pkg.tar.gz").returncode == 0
    assert run_si("seq", "send", "-").returncode == 0
    assert hub.requests_to("POST", "/sequence")[0].body == (tmp_path / "pkg.tar.gz").read_bytes()


def test_send_of_a_directory_packs_it_on_the_fly(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    _sequence_dir(tmp_path)
    result = run_si("seq", "send", "hello", "--format", "json")
    assert result.returncode == 0, result.stderr
    upload = hub.requests_to("POST", "/sequence")[0]
    assert {"package.json", "main.py"} <= _members(upload.body)
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == ".gz") == []
