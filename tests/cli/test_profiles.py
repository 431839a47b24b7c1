"""Profiles and settings: files under the user's config dir, and STH's precedence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import RunSi, one_error_line, session_file
from tests.cli.hubproxy import HubUnderTest


def _printed(run_si: RunSi, *args: str, env: dict[str, str | None] | None = None) -> Any:
    result = run_si("config", "print", "--format", "json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _profiles(tmp_path: Path) -> Path:
    return tmp_path / "config" / "si" / "profiles"


def test_default_profile_without_any_file(run_si: RunSi, tmp_path: Path) -> None:
    result = run_si("config", "print", "--format", "json")
    assert result.stderr == b"Current profile: default\n\n"
    assert json.loads(result.stdout) == {
        "configVersion": 1,
        "apiUrl": "",
        "middlewareApiUrl": "",
        "env": "development",
        "scope": "",
        "token": "",
        "log": {"debug": False, "format": "pretty"},
    }
    assert not (tmp_path / "config").exists()  # reading writes nothing


def test_set_writes_the_profile_file(run_si: RunSi, tmp_path: Path) -> None:
    assert run_si("config", "set", "scope", "mine").returncode == 0
    stored = json.loads((_profiles(tmp_path) / "default.json").read_text())
    assert stored["scope"] == "mine"
    assert stored["configVersion"] == 1


def test_profile_precedence(run_si: RunSi, tmp_path: Path) -> None:
    for name in ("chosen", "flag", "env"):
        assert run_si("config", "profile", "create", name).returncode == 0
        assert run_si("--config", name, "config", "set", "scope", name).returncode == 0
    path_file = tmp_path / "from-path.json"
    path_file.write_text(json.dumps({"scope": "flag-path"}))
    env_path_file = tmp_path / "from-env-path.json"
    env_path_file.write_text(json.dumps({"scope": "env-path"}))
    assert run_si("config", "profile", "use", "chosen").returncode == 0

    def scope(*args: str, **env: str) -> str:
        return str(_printed(run_si, *args, env=dict(env))["scope"])

    everything = {"SI_CONFIG_PATH": str(env_path_file), "SI_CONFIG": "env"}
    assert scope("--config-path", str(path_file), "--config", "flag", **everything) == "flag-path"
    assert scope("--config", "flag", **everything) == "flag"
    assert scope(**everything) == "env-path"
    assert scope(SI_CONFIG="env") == "env"
    assert scope() == "chosen"  # si-config.json
    assert run_si("config", "profile", "use", "default").returncode == 0
    assert scope() == ""


def test_global_options_may_follow_the_subcommand(run_si: RunSi) -> None:
    assert run_si("config", "profile", "create", "other").returncode == 0
    assert run_si("config", "set", "scope", "x", "--config", "other").returncode == 0
    assert _printed(run_si, "--config", "other")["scope"] == "x"
    assert _printed(run_si)["scope"] == ""


def test_profile_api_url_picks_the_hub_below_flag_and_env(
    run_si: RunSi, hub: HubUnderTest, short_dir: Path
) -> None:
    hub.add_sequence()
    assert run_si("config", "set", "apiUrl", hub.address).returncode == 0
    found = run_si("seq", "ls", "--format", "json", env={"SI_HUB": None})
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 1
    elsewhere = str(short_dir / "elsewhere.sock")
    via_env = run_si("seq", "ls", env={"SI_HUB": elsewhere})
    assert elsewhere in one_error_line(via_env)
    via_flag = run_si("seq", "ls", "--hub", elsewhere, env={"SI_HUB": None})
    assert elsewhere in one_error_line(via_flag)


def test_profile_format_below_flag_and_env(run_si: RunSi, hub: HubUnderTest) -> None:
    assert run_si("config", "set", "log", "--format", "json").returncode == 0
    assert run_si("seq", "ls").stdout == b"[]\n"
    assert run_si("seq", "ls", env={"SI_FORMAT": "pretty"}).stdout.startswith(b"ID")
    assert run_si("seq", "ls", "--format", "pretty").stdout.startswith(b"ID")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("localhost:8000", "http://localhost:8000"),
        ("HTTP://Hub.Example:9000/api/v1/", "http://hub.example:9000/api/v1"),
        ("https://[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_api_url_is_normalised(run_si: RunSi, given: str, stored: str) -> None:
    assert run_si("config", "set", "apiUrl", given).returncode == 0
    assert _printed(run_si)["apiUrl"] == stored


@pytest.mark.parametrize("bad", ["hub.example", "ftp://x:21", "http://:80"])
def test_api_url_without_port_or_http_is_refused(run_si: RunSi, bad: str) -> None:
    assert one_error_line(run_si("config", "set", "apiUrl", bad)).startswith("Invalid url")


def test_socket_path_api_url_is_made_absolute(run_si: RunSi, tmp_path: Path) -> None:
    assert run_si("config", "set", "apiUrl", "./h/hub.sock").returncode == 0
    assert _printed(run_si)["apiUrl"] == str(tmp_path / "h" / "hub.sock")


def test_set_log_and_json_validate(run_si: RunSi) -> None:
    assert one_error_line(run_si("config", "set", "log", "--debug", "maybe")) == (
        "Invalid debug value"
    )
    assert one_error_line(run_si("config", "set", "log", "--format", "yaml")) == (
        "Unable to set format value"
    )
    assert one_error_line(run_si("config", "set", "json", "{oops")) == (
        "Parsing error: Invalid JSON format"
    )
    assert run_si("config", "set", "json", '{"log": {"debug": true}}').returncode == 0
    assert _printed(run_si)["log"] == {"debug": True, "format": "pretty"}
    assert "Invalid configuration" in one_error_line(
        run_si("config", "set", "json", '{"env": "moon"}')
    )


def test_reset_one_and_all(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    assert run_si("config", "set", "apiUrl", "localhost:1").returncode == 0
    assert run_si("config", "set", "scope", "s").returncode == 0
    assert run_si("config", "reset", "apiUrl").returncode == 0
    assert _printed(run_si)["apiUrl"] == ""
    assert run_si("seq", "start", hub.add_sequence()).returncode == 0
    assert run_si("config", "reset", "all").returncode == 0
    assert _printed(run_si)["scope"] == ""
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == ""


def test_profile_list_create_use_remove(run_si: RunSi, tmp_path: Path) -> None:
    assert run_si("config", "pr", "create", "ci").returncode == 0
    assert one_error_line(run_si("config", "profile", "create", "ci")) == (
        "Profile ci already exists"
    )
    listed = run_si("config", "profile", "ls")
    assert listed.stderr.decode().splitlines() == ["Available profiles:", "   ci", "-> default"]
    assert run_si("config", "profile", "use", "ci").returncode == 0
    assert json.loads((tmp_path / "config" / "si" / "si-config.json").read_text()) == {
        "profile": "ci"
    }
    assert "-> ci" in run_si("config", "profile", "list").stderr.decode()
    assert one_error_line(run_si("config", "profile", "use", "nope")) == (
        "Unable to find profile: nope"
    )
    assert run_si("config", "profile", "remove", "ci").returncode == 0
    assert _printed(run_si)["scope"] == ""  # back on default
    assert one_error_line(run_si("config", "profile", "rm", "default")) == (
        "The default profile cannot be removed"
    )


def test_switching_profile_clears_the_session(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    assert run_si("seq", "start", hub.add_sequence()).returncode == 0
    assert run_si("config", "profile", "create", "other").returncode == 0
    assert run_si("config", "profile", "use", "other").returncode == 0
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == ""


def test_broken_selected_profile_falls_back_to_default(run_si: RunSi, tmp_path: Path) -> None:
    profiles = _profiles(tmp_path)
    profiles.mkdir(parents=True)
    (profiles / "broken.json").write_text('{"log": {"format": "xml"}}')
    (tmp_path / "config" / "si" / "si-config.json").write_text('{"profile": "broken"}')
    result = run_si("config", "print", "--format", "json")
    assert result.returncode == 0
    assert result.stderr.decode().startswith("Warning: ")
    assert "using the default profile instead" in result.stderr.decode()
    assert json.loads((tmp_path / "config" / "si" / "si-config.json").read_text()) == {
        "profile": "default"
    }


def test_config_path_profile_is_read_only(run_si: RunSi, tmp_path: Path) -> None:
    path = tmp_path / "ro.json"
    path.write_text("{}")
    result = run_si("config", "print", "--config-path", str(path))
    assert result.stderr.decode().startswith(f"Current configuration: {path}")
    message = one_error_line(run_si("config", "set", "scope", "x", "--config-path", str(path)))
    assert "read-only" in message
    assert path.read_text() == "{}"
    assert one_error_line(run_si("config", "print", "--config-path", "missing.json")).startswith(
        "Invalid config file"
    )


def test_unknown_keys_are_kept_and_missing_ones_defaulted(run_si: RunSi, tmp_path: Path) -> None:
    profiles = _profiles(tmp_path)
    profiles.mkdir(parents=True)
    (profiles / "default.json").write_text('{"scope": "old", "fromTheFuture": 1}')
    assert run_si("config", "set", "token", "").returncode == 0
    stored = json.loads((profiles / "default.json").read_text())
    assert stored["fromTheFuture"] == 1
    assert stored["scope"] == "old"
    assert stored["log"] == {"debug": False, "format": "pretty"}


def test_debug_prints_hub_errors_on_stdout(run_si: RunSi, hub: HubUnderTest) -> None:
    assert run_si("config", "set", "log", "--debug", "yes", "--format", "json").returncode == 0
    result = run_si("seq", "info", "nope")
    assert result.returncode == 1
    assert result.stderr.decode() == "Error: Sequence nope not found\n"
    [printed] = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert printed["apiStatusCode"] == "404"
    assert printed["apiError"] == {"error": "Sequence nope not found"}


def test_session_command(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    assert run_si("seq", "use", sequence_id).returncode == 0
    printed = json.loads(run_si("config", "session", "--format", "json").stdout)
    assert printed["lastSequenceId"] == sequence_id
    assert run_si("c", "s").returncode == 0  # STH's aliases


@pytest.mark.parametrize("xdg", [None, "", "  ", "/somewhere/else"])
def test_config_root_is_platformdirs_user_config_dir(
    monkeypatch: pytest.MonkeyPatch, xdg: str | None
) -> None:
    import platformdirs

    from si.cli.profile import config_root

    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    assert config_root() == Path(platformdirs.user_config_dir("si"))
