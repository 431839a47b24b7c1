"""`si hub service install/uninstall`: the systemd unit that starts the hub at boot."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from si.testing import unix_socket_answers, wait_for
from tests.cli.conftest import RunSi, one_error_line

pytestmark = pytest.mark.timeout(30)


def unit_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "systemd" / "user" / "si-hub.service"  # XDG_CONFIG_HOME


def exec_start(unit: str) -> list[str]:
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_dry_run_prints_the_unit_and_writes_nothing(run_si: RunSi, tmp_path: Path) -> None:
    result = run_si("hub", "service", "install", "--user", "--dry-run", "--port", "8000")
    assert result.returncode == 0, result.stderr
    unit = result.stdout.decode()
    assert "KillMode=process" in unit  # the runners outlive a stopped hub
    assert "WantedBy=default.target" in unit
    command = exec_start(unit)
    assert command[1:3] == ["-m", "si.daemon"]
    assert command[3:] == ["--home", str(tmp_path / "home"), "--port", "8000"]  # SI_HOME
    assert str(unit_path(tmp_path)) in result.stderr.decode()
    assert not unit_path(tmp_path).exists()


def test_a_system_unit_goes_to_etc_and_boots_with_multi_user(run_si: RunSi) -> None:
    result = run_si("hub", "service", "install", "--dry-run")
    assert "would write /etc/systemd/system/si-hub.service" in result.stderr.decode()
    assert "WantedBy=multi-user.target" in result.stdout.decode()


def test_install_writes_a_unit_whose_command_runs_the_hub(run_si: RunSi, tmp_path: Path) -> None:
    home = tmp_path / "svc-home"
    result = run_si("hub", "service", "install", "--user", "--home", str(home))
    assert result.returncode == 0, result.stderr
    written = unit_path(tmp_path)
    assert written.is_file()
    # No systemd on this machine: the user is told what to run once there is one.
    assert "systemctl --user enable --now si-hub.service" in result.stderr.decode()

    hub = subprocess.Popen(exec_start(written.read_text()), stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: unix_socket_answers(home / "hub.sock"))
    finally:
        hub.terminate()
        assert hub.wait(10) == 0


def test_uninstall_removes_the_unit_and_a_second_one_says_there_is_none(
    run_si: RunSi, tmp_path: Path
) -> None:
    assert run_si("hub", "service", "install", "--user").returncode == 0
    removed = run_si("hub", "service", "uninstall", "--user")
    assert removed.returncode == 0, removed.stderr
    assert not unit_path(tmp_path).exists()
    again = run_si("hub", "service", "uninstall", "--user")
    assert again.returncode == 1
    assert one_error_line(again) == f"no si hub unit at {unit_path(tmp_path)}"


def test_an_unwritable_unit_directory_is_one_clear_error(run_si: RunSi, tmp_path: Path) -> None:
    (tmp_path / "config").write_text("not a directory")
    result = run_si("hub", "service", "install", "--user")
    assert result.returncode == 1
    assert one_error_line(result).startswith(f"cannot write {unit_path(tmp_path)}")
