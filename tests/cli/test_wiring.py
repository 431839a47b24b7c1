"""In-process checks of how commands call other parts of si: packing and ``hub serve``.

``si.package`` and ``si.daemon.serve`` are replaced by recording stand-ins, so these tests pin
the CLI's side of the contract (arguments, warnings, session updates) on their own.
"""

from __future__ import annotations

import gc
import json
import sys
import types
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from si.cli.app import cli, run
from si.cli.common import hoist_global_options
from si.daemon.options import HubOptions
from si.testing import python_package
from tests.cli.conftest import session_file
from tests.cli.hubproxy import ECHO, HubUnderTest

# A real package, so the real hub takes it; what matters here is which packing call made it.
ARCHIVE = python_package(ECHO, name="demo")


class FakePackaging:
    """Stands in for si.package.pack and si.package.manifest, recording calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.warnings = ["package.json has no version", "engines.python3 missing"]

    def read_manifest(self, directory: Path) -> dict[str, str]:
        self.calls.append(("read_manifest", Path(directory)))
        return {"name": "demo"}

    def manifest_warnings(self, manifest: Any) -> list[str]:
        assert manifest == {"name": "demo"}
        return list(self.warnings)

    def pack_to_file(self, directory: Path, output: Path | None) -> Path:
        self.calls.append(("pack_to_file", (Path(directory), output)))
        target = (
            Path(output) if output is not None else Path(f"{Path(directory).absolute()}.tar.gz")
        )
        target.write_bytes(ARCHIVE)
        return target

    def pack_directory(self, directory: Path, out: BinaryIO) -> None:
        self.calls.append(("pack_directory", Path(directory)))
        out.write(ARCHIVE)


@pytest.fixture
def packaging(monkeypatch: pytest.MonkeyPatch) -> FakePackaging:
    fake = FakePackaging()
    pack_module = types.ModuleType("si.package.pack")
    pack_module.pack_to_file = fake.pack_to_file  # type: ignore[attr-defined]
    pack_module.pack_directory = fake.pack_directory  # type: ignore[attr-defined]
    manifest_module = types.ModuleType("si.package.manifest")
    manifest_module.read_manifest = fake.read_manifest  # type: ignore[attr-defined]
    manifest_module.manifest_warnings = fake.manifest_warnings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "si.package.pack", pack_module)
    monkeypatch.setitem(sys.modules, "si.package.manifest", manifest_module)
    return fake


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hub: HubUnderTest) -> Path:
    for name in ("SI_FORMAT", "NO_COLOR", "SI_CONFIG", "SI_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SI_HUB", hub.address)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pack_warns_and_records_the_absolute_package_path(
    packaging: FakePackaging, user_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (user_env / "demo").mkdir()
    # A failed pack (out/ does not exist) is one error line and records nothing.
    assert run(["seq", "pack", "demo", "-o", "out/demo.tar.gz"]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("Error: No such file or directory")
    assert json.loads(session_file(user_env).read_text())["lastPackagePath"] == ""
    (user_env / "out").mkdir()
    assert run(["seq", "pack", "demo", "-o", "out/demo.tar.gz"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "Warning: package.json has no version",
        "Warning: engines.python3 missing",
    ]
    assert ("pack_to_file", (Path("demo"), Path("out/demo.tar.gz"))) in packaging.calls
    stored = json.loads(session_file(user_env).read_text())
    assert stored["lastPackagePath"] == str(user_env / "out" / "demo.tar.gz")


def test_pack_to_stdout_writes_the_archive_and_records_nothing(
    packaging: FakePackaging, user_env: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    (user_env / "demo").mkdir()
    assert run(["seq", "pack", "demo", "-c", "-o", "ignored.tar.gz"]) == 0
    assert capsysbinary.readouterr().out == ARCHIVE
    assert ("pack_directory", Path("demo")) in packaging.calls
    assert not (user_env / "ignored.tar.gz").exists()
    assert json.loads(session_file(user_env).read_text())["lastPackagePath"] == ""


def test_send_of_a_directory_streams_the_package_without_a_file(
    packaging: FakePackaging,
    user_env: Path,
    hub: HubUnderTest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (user_env / "demo").mkdir()
    assert run(["seq", "send", "demo", "--format", "json"]) == 0
    [sequence_id] = hub.sequences
    assert json.loads(capsys.readouterr().out)["_id"] == sequence_id
    upload = hub.requests_to("POST", "/sequence")[0]
    assert upload.body == ARCHIVE
    assert upload.headers["transfer-encoding"] == "chunked"
    assert ("pack_directory", Path("demo")) in packaging.calls
    assert not any(call[0] == "pack_to_file" for call in packaging.calls)
    assert not list(user_env.glob("**/*.tar.gz"))  # no archive left behind
    stored = json.loads(session_file(user_env).read_text())
    assert stored["lastSequenceId"] == sequence_id
    assert stored["lastPackagePath"] == ""  # STH: send DIR does not record a package


def test_send_dash_sends_the_last_packed_package(
    packaging: FakePackaging, user_env: Path, hub: HubUnderTest
) -> None:
    (user_env / "demo").mkdir()
    assert run(["seq", "pack", "demo"]) == 0
    assert run(["seq", "send", "-"]) == 0
    assert hub.requests_to("POST", "/sequence")[0].body == ARCHIVE


class ServeRecorder:
    def __init__(self) -> None:
        self.options: list[HubOptions] = []

    def serve_hub(self, options: HubOptions) -> int:
        self.options.append(options)
        return 3


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> ServeRecorder:
    recorder = ServeRecorder()
    module = types.ModuleType("si.daemon.serve")
    module.serve_hub = recorder.serve_hub  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "si.daemon.serve", module)
    return recorder


def test_hub_serve_passes_options_and_exit_code(serve: ServeRecorder, tmp_path: Path) -> None:
    args = ["hub", "serve", "--home", str(tmp_path), "--port", "8000", "--host", "0.0.0.0", "-K"]
    with pytest.raises(SystemExit) as exited:
        run([*args, "--retention", "5"])
    assert exited.value.code == 3
    assert serve.options == [
        HubOptions(home=tmp_path, port=8000, host="0.0.0.0", kill_on_exit=True, retention=5.0)
    ]


def test_hub_serve_defaults_are_hub_options_defaults(serve: ServeRecorder) -> None:
    with pytest.raises(SystemExit):
        run(["hub", "serve"])
    assert serve.options == [HubOptions()]


TIMEOUT_FLAGS = ["--head-timeout", "5", "--body-idle-timeout", "0", "--keep-alive-timeout", "7.5"]
TIMEOUT_OPTIONS: dict[str, Any] = {
    "head_timeout": 5.0,
    "body_idle_timeout": 0.0,
    "keep_alive_timeout": 7.5,
}


def test_hub_serve_passes_the_http_timeouts(serve: ServeRecorder) -> None:
    with pytest.raises(SystemExit):
        run(["hub", "serve", *TIMEOUT_FLAGS])
    assert serve.options == [HubOptions(**TIMEOUT_OPTIONS)]


def test_hub_serve_detach_hands_the_http_timeouts_to_the_daemon(
    serve: ServeRecorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from si.cli import hubctl
    from si.daemon.__main__ import main as daemon_main

    handed: list[list[str]] = []

    def detach(serve_args: list[str], paths: object, timeout: float = 0) -> int:
        handed.append(serve_args)
        return 4242

    monkeypatch.setattr(hubctl, "detach", detach)
    assert run(["hub", "serve", "--detach", "--home", str(tmp_path), *TIMEOUT_FLAGS]) == 0
    # The daemon's own entry point parses what the detached start hands it.
    try:
        assert daemon_main(handed[0]) == 3
    finally:
        gc.enable()  # main turns the collector off for start-up; the real hub turns it back on
    assert serve.options == [HubOptions(home=tmp_path, **TIMEOUT_OPTIONS)]


def test_hoisting_stops_at_double_dash() -> None:
    assert hoist_global_options(
        cli, ["seq", "start", "x", "--format", "json", "--", "--hub", "y"]
    ) == [
        "--format",
        "json",
        "seq",
        "start",
        "x",
        "--",
        "--hub",
        "y",
    ]
