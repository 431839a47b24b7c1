"""The ``-`` convention and the per-session file, as STH's CLI has them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from si.cli.session import NO_PREVIOUS_VALUE, SESSION_KEYS, Session, collect_dead_sessions
from si.testing import python_package
from tests.cli.conftest import RunSi, one_error_line, session_file
from tests.cli.hubproxy import ECHO, HubUnderTest

PACKAGE = python_package(ECHO, name="hello")


def test_session_file_location_and_shape(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    sequence_id = hub.add_sequence()
    assert run_si("seq", "start", sequence_id).returncode == 0
    path = session_file(tmp_path)
    text = path.read_text()
    assert not text.endswith("\n")
    stored = json.loads(text)
    assert text == json.dumps(stored, indent=2)
    [instance_id] = hub.instances
    assert stored == {
        "lastPackagePath": "",
        "lastInstanceId": instance_id,
        "lastSequenceId": "",
        "lastSpaceId": "",
        "lastHubId": "",
        "sessionId": str(os.getsid(0)),
    }


def test_any_command_creates_the_session_file(run_si: RunSi, tmp_path: Path) -> None:
    run_si("seq", "ls")  # records nothing, but the session starts
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == ""


@pytest.mark.parametrize(
    "args",
    [
        ["seq", "send", "-"],
        ["seq", "start", "-"],
        ["seq", "info", "-"],
        ["seq", "rm", "-"],
        ["inst", "info", "-"],
        ["inst", "output", "-"],
        ["inst", "input", "-"],
        ["inst", "kill", "-"],
        ["inst", "stop", "-", "100"],
    ],
)
def test_dash_without_a_previous_value(run_si: RunSi, hub: HubUnderTest, args: list[str]) -> None:
    assert one_error_line(run_si(*args)) == NO_PREVIOUS_VALUE
    assert hub.requests == []


def test_dash_chain_send_start_output_kill(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(PACKAGE)
    session = session_file(tmp_path)
    session.parent.mkdir(parents=True)
    session.write_text(json.dumps({"lastPackagePath": str(package)}))

    assert run_si("seq", "send", "-").returncode == 0
    [sequence_id] = hub.sequences
    assert hub.requests_to("POST", "/sequence")[0].body == PACKAGE

    assert run_si("seq", "start", "-").returncode == 0
    [instance_id] = hub.instances
    assert hub.requests_to("POST", f"/sequence/{sequence_id}/start")

    assert run_si("inst", "info", "-").returncode == 0
    assert hub.requests_to("GET", f"/instance/{instance_id}")

    assert run_si("inst", "kill", "-").returncode == 0
    assert hub.requests_to("POST", f"/instance/{instance_id}/_kill")
    stored = json.loads(session.read_text())
    assert stored["lastInstanceId"] == ""  # kill clears the instance it killed
    assert stored["lastSequenceId"] == sequence_id


def test_rm_of_the_last_sequence_clears_it(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    other = hub.add_sequence()
    session = session_file(tmp_path)
    assert run_si("seq", "send", str(_write(tmp_path / "p.tar.gz"))).returncode == 0
    last = json.loads(session.read_text())["lastSequenceId"]
    assert last
    assert last != other

    assert run_si("seq", "rm", other).returncode == 0
    assert json.loads(session.read_text())["lastSequenceId"] == last  # another id: kept

    assert run_si("seq", "rm", "-").returncode == 0
    assert hub.requests_to("DELETE", f"/sequence/{last}")
    assert json.loads(session.read_text())["lastSequenceId"] == ""


def _write(path: Path) -> Path:
    path.write_bytes(PACKAGE)
    return path


def test_sessions_are_isolated_by_tmpdir(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    run_si("seq", "start", hub.add_sequence())
    other_tmp = tmp_path / "elsewhere"
    other_tmp.mkdir()
    result = run_si("inst", "info", "-", env={"TMPDIR": str(other_tmp)})
    assert one_error_line(result) == NO_PREVIOUS_VALUE


def test_dead_session_directories_are_collected(tmp_path: Path) -> None:
    root = tmp_path / ".si-tmp"
    dead = root / "999999999"  # above pid_max: never a live process
    alive = root / str(os.getpid())
    other = root / "not-a-session"
    for directory in (dead, alive, other):
        directory.mkdir(parents=True)
        (directory / "session-config.json").write_text("{}")

    Session(root=root, session_id="424242424").prepare()

    assert not dead.exists()
    assert alive.exists()
    assert other.exists()
    assert (root / "424242424" / "session-config.json").exists()


def test_collection_keeps_the_own_session(tmp_path: Path) -> None:
    own = tmp_path / "999999998"
    own.mkdir()
    collect_dead_sessions(tmp_path, keep="999999998")
    assert own.exists()


def test_session_api_resolves_and_updates(tmp_path: Path) -> None:
    session = Session(root=tmp_path, session_id="77")
    with pytest.raises(Exception, match="Previous value isn't said"):
        session.resolve("-", "lastSequenceId")
    session.update(lastSequenceId="abc")
    assert session.resolve("-", "lastSequenceId") == "abc"
    assert session.resolve("literal", "lastSequenceId") == "literal"
    session.clear_if("lastSequenceId", "other")
    assert session.get("lastSequenceId") == "abc"
    session.clear_if("lastSequenceId", "abc")
    assert session.get("lastSequenceId") == ""
    assert set(json.loads(session.path.read_text())) == {*SESSION_KEYS, "sessionId"}


def test_damaged_session_file_counts_as_empty(tmp_path: Path) -> None:
    session = Session(root=tmp_path, session_id="78")
    session.path.parent.mkdir(parents=True)
    session.path.write_text("{not json")
    assert session.get("lastInstanceId") == ""
    session.update(lastInstanceId="i")
    assert json.loads(session.path.read_text())["lastInstanceId"] == "i"
