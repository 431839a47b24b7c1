"""``si seq``/``si inst``/``si hub`` as a user runs them, against a real hub (through the
recording proxy, so the requests on the wire are checked too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import si
from si.testing import python_package
from tests.cli.conftest import RunSi, one_error_line, session_file
from tests.cli.hubproxy import ECHO, HubUnderTest

INSTANCE_ID = "0123456789abcdef0123456789abcdef0123"  # 36 characters, as STH requires


def _json_lines(stdout: bytes) -> list[Any]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def _package(tmp_path: Path) -> Path:
    package = tmp_path / "hello.tar.gz"
    package.write_bytes(python_package(ECHO, name="hello"))
    return package


# -- seq send / start: what scripts read --------------------------------------------------------


def test_seq_send_prints_sth_sequence_client_shape(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    package = _package(tmp_path)
    result = run_si("seq", "send", str(package), "--format", "json")
    assert result.returncode == 0, result.stderr
    [printed] = _json_lines(result.stdout)
    [sequence_id] = hub.sequences
    assert printed == {
        "_id": sequence_id,
        "host": {"apiBase": hub.address},
        "sequenceURL": f"sequence/{sequence_id}",
    }
    assert list(printed) == ["_id", "host", "sequenceURL"]
    assert hub.requests_to("POST", "/sequence")[0].body == package.read_bytes()


def test_seq_start_prints_sth_instance_client_shape(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    result = run_si("--format", "json", "seq", "start", sequence_id)
    assert result.returncode == 0, result.stderr
    [printed] = _json_lines(result.stdout)
    [instance_id] = hub.instances
    assert printed == {
        "host": {"apiBase": hub.address},
        "_id": instance_id,
        "instanceURL": f"instance/{instance_id}",
    }
    assert list(printed) == ["host", "_id", "instanceURL"]


def test_pretty_send_output_is_key_value_lines(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    result = run_si("seq", "send", str(_package(tmp_path)))
    [sequence_id] = hub.sequences
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["_id", sequence_id]
    assert lines[1] == "host"
    assert lines[2].split() == ["apiBase", hub.address]
    assert lines[3].split() == ["sequenceURL", f"sequence/{sequence_id}"]


# -- seq start payloads -------------------------------------------------------------------------


def _start_payload(run_si: RunSi, hub: HubUnderTest, *options: str) -> dict[str, object]:
    sequence_id = hub.add_sequence()
    result = run_si("seq", "start", sequence_id, *options)
    assert result.returncode == 0, result.stderr.decode()
    payload = hub.requests_to("POST", "/start")[-1].json()
    assert isinstance(payload, dict)
    return payload


def test_start_with_positional_args_sends_strings(run_si: RunSi, hub: HubUnderTest) -> None:
    assert _start_payload(run_si, hub, "3000", "10") == {"args": ["3000", "10"], "limits": {}}


def test_start_args_after_double_dash_may_start_with_a_dash(
    run_si: RunSi, hub: HubUnderTest
) -> None:
    assert _start_payload(run_si, hub, "--", "-5", "x")["args"] == ["-5", "x"]


def test_start_with_args_json_keeps_json_types(run_si: RunSi, hub: HubUnderTest) -> None:
    payload = _start_payload(run_si, hub, "--args", '[3000, "ten", {"a": true}]')
    assert payload == {"args": [3000, "ten", {"a": True}], "limits": {}}


def test_start_without_options_sends_only_limits(run_si: RunSi, hub: HubUnderTest) -> None:
    assert _start_payload(run_si, hub) == {"limits": {}}


def test_start_with_a_restart_policy(run_si: RunSi, hub: HubUnderTest) -> None:
    payload = _start_payload(
        run_si, hub, "--restart", "on-failure", "--max-restarts", "2", "--restart-window", "30"
    )
    assert payload == {
        "restart": "on-failure",
        "maxRestarts": 2,
        "restartWindow": 30.0,
        "limits": {},
    }
    (started,) = hub.instances.values()
    assert started["restartPolicy"] == {
        "restart": "on-failure",
        "maxRestarts": 2,
        "restartWindow": 30,
    }


def test_a_startup_config_may_hold_the_restart_policy(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    config = tmp_path / "startup.yaml"
    config.write_text("restart: always\nmaxRestarts: 1\n")
    payload = _start_payload(run_si, hub, "--startup-config", str(config), "--max-restarts", "3")
    assert payload == {"restart": "always", "maxRestarts": 3, "limits": {}}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--restart", "sometimes"], "'sometimes' is not one of"),
        (["--max-restarts", "-1"], "-1 is not in the range x>=0"),
        (["--restart-window", "0"], "0.0 is not in the range x>0"),
    ],
)
def test_a_bad_restart_option_is_refused_before_any_request(
    run_si: RunSi, hub: HubUnderTest, options: list[str], message: str
) -> None:
    sequence_id = hub.add_sequence()
    result = run_si("seq", "start", sequence_id, *options)
    assert result.returncode == 1  # si's exit for every refused command line
    assert message in result.stderr.decode()
    assert hub.requests_to("POST", "/start") == []


def test_a_bad_policy_in_a_startup_config_is_the_hubs_one_line_refusal(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    config = tmp_path / "startup.json"
    config.write_text('{"restart": "sometimes"}')
    sequence_id = hub.add_sequence()
    result = run_si("seq", "start", sequence_id, "--startup-config", str(config))
    assert result.returncode != 0
    error = result.stderr.decode().strip()
    assert len(error.splitlines()) == 1
    assert 'restart must be "no", "on-failure" or "always"' in error
    assert hub.instances == {}


def test_start_config_string_and_topics_and_limits(run_si: RunSi, hub: HubUnderTest) -> None:
    payload = _start_payload(
        run_si,
        hub,
        "-s",
        '{"greeting": "hi"}',
        "--inst-id",
        INSTANCE_ID,
        "--output-topic",
        "out",
        "--input-topic",
        "in",
        "--limits",
        '{"memory": 512}',
    )
    assert payload == {
        "appConfig": {"greeting": "hi"},
        "instanceId": INSTANCE_ID,
        "outputTopic": "out",
        "inputTopic": "in",
        "limits": {"memory": 512},
    }


def test_start_config_file_json_and_yaml(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"from": "json"}')
    (tmp_path / "config.yaml").write_text("from: yaml\nnested:\n  n: 1\n")
    assert _start_payload(run_si, hub, "-f", "config.json")["appConfig"] == {"from": "json"}
    assert _start_payload(run_si, hub, "--config-file", "config.yaml")["appConfig"] == {
        "from": "yaml",
        "nested": {"n": 1},
    }


def test_startup_config_is_overridden_by_options(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    (tmp_path / "startup.json").write_text(
        json.dumps(
            {
                "appConfig": {"a": 1, "b": 2},
                "args": ["from-file"],
                "outputTopic": "file-topic",
                "limits": {"memory": 128},
                "ignored": True,
            }
        )
    )
    payload = _start_payload(
        run_si, hub, "--startup-config", "startup.json", "-s", '{"b": 3}', "--output-topic", "cli"
    )
    assert payload == {
        "appConfig": {"a": 1, "b": 3},
        "args": ["from-file"],
        "outputTopic": "cli",
        "limits": {"memory": 128},
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-f", "c.json", "-s", "{}"], "Provide one source of configuration"),
        (["3000", "--args", "[1]"], "either positionally or with --args, not both"),
        (["--args", '{"a": 1}'], "Arguments must be in array"),
        (["--args", "[1,"], "Error while parsing the provided Instance arguments."),
        (["-s", "{oops"], "Unable to parse configuration string"),
        (["-s", "[1, 2]"], "DTO appConfig is array, not an object"),
        (["-f", "missing.json"], "Unable to read configuration file"),
        (["--inst-id", "short"], "DTO instanceId is not 36 long"),
        (["--limits", "512"], "DTO limits is number, not an object"),
    ],
)
def test_start_option_errors(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "c.json").write_text("{}")
    sequence_id = hub.add_sequence()
    assert message in one_error_line(run_si("seq", "start", sequence_id, *options))
    assert hub.requests_to("POST", "/start") == []


# -- listing and inspecting ---------------------------------------------------------------------


def test_seq_ls_json_is_one_line(run_si: RunSi, hub: HubUnderTest) -> None:
    first, second = hub.add_sequence(name="alpha"), hub.add_sequence(name="beta")
    result = run_si("seq", "ls", "--format", "json")
    assert len(result.stdout.splitlines()) == 1
    [listed] = _json_lines(result.stdout)
    assert [item["id"] for item in listed] == [first, second]


def test_seq_ls_pretty_is_a_table(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence(name="alpha")
    hub.add_instance(sequence_id)
    hub.add_instance(sequence_id)
    lines = run_si("seq", "list").stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "NAME", "VERSION", "LANGUAGE", "INSTANCES"]
    assert lines[1].split() == [sequence_id, "alpha", "1.2.3", "py", "2"]


def test_inst_ls_pretty_shows_pid_when_the_hub_gives_one(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    running = hub.add_instance(sequence_id)
    pid = hub.instance(running)["pid"]
    lines = run_si("inst", "ls").stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "SEQUENCE", "STATUS", "RESTARTS", "AGE", "PID"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[running][1:4] == [sequence_id, "running", "0"]
    assert rows[running][4].endswith("s")  # started seconds ago
    assert rows[running][5] == str(pid)


def test_inst_info_pretty_and_json(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = hub.add_instance(hub.add_sequence(), "3000", "10")
    pretty = run_si("inst", "info", instance_id).stdout.decode().splitlines()
    assert pretty[0].split() == ["id", instance_id]
    assert ["args", '["3000","10"]'] in [line.split() for line in pretty]
    assert "sequence" in pretty  # a nested object gets its own block
    [as_json] = _json_lines(run_si("inst", "info", instance_id, "--format=json").stdout)
    assert as_json["status"] == "running"


def test_hub_version(run_si: RunSi, hub: HubUnderTest) -> None:
    result = run_si("hub", "version", "--format", "json")
    [version] = _json_lines(result.stdout)
    assert version["apiVersion"] == "v1"
    assert version["service"] == "si"
    assert version["version"] == si.__version__


# -- global options in both positions -----------------------------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        ["--hub", "{hub}", "--format", "json", "seq", "ls"],
        ["seq", "ls", "--hub", "{hub}", "--format", "json"],
        ["seq", "--format=json", "ls", "--hub={hub}"],
    ],
)
def test_hub_and_format_before_or_after_the_subcommand(
    run_si: RunSi, hub: HubUnderTest, words: list[str]
) -> None:
    hub.add_sequence()
    args = [word.replace("{hub}", hub.address) for word in words]
    result = run_si(*args, env={"SI_HUB": "/nonexistent/hub.sock"})
    assert result.returncode == 0, result.stderr
    assert len(_json_lines(result.stdout)[0]) == 1


def test_format_from_the_environment(run_si: RunSi, hub: HubUnderTest) -> None:
    result = run_si("seq", "ls", env={"SI_FORMAT": "json"})
    assert result.stdout == b"[]\n"


def test_global_option_without_value_is_a_one_line_error(run_si: RunSi) -> None:
    assert (
        one_error_line(run_si("seq", "ls", "--format")) == "Option '--format' requires an argument."
    )


# -- errors -------------------------------------------------------------------------------------


def test_unknown_id_is_the_hubs_404_message(run_si: RunSi, hub: HubUnderTest) -> None:
    assert one_error_line(run_si("seq", "info", "nope")) == "Sequence nope not found"
    assert one_error_line(run_si("inst", "info", "nope")) == "Instance nope not found"


def test_hub_not_running_names_the_address(run_si: RunSi, tmp_path: Path) -> None:
    # No --hub and no SI_HUB: the default socket under SI_HOME.
    message = one_error_line(run_si("seq", "ls", env={"SI_HUB": None}))
    address = str(tmp_path / "home" / "hub.sock")
    assert message.startswith(f"cannot reach the hub at {address}: ")
    assert message.endswith("(is 'si hub serve' running?)")


@pytest.mark.parametrize(
    "args",
    [["seq", "ls", "--bogus"], ["seq", "start"], ["nope"], ["inst", "stop", "x", "soon"]],
)
def test_usage_errors_are_one_line(run_si: RunSi, args: list[str]) -> None:
    message = one_error_line(run_si(*args))
    assert "--help" in message


def test_group_without_subcommand_shows_help_on_stderr(run_si: RunSi) -> None:
    result = run_si("seq")
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"Usage: si seq" in result.stderr


def test_missing_package_file_is_sths_message(run_si: RunSi) -> None:
    assert one_error_line(run_si("seq", "send", "nothere.tar.gz")) == (
        'File "nothere.tar.gz" not found.'
    )


def test_rm_sends_force_header_and_prints_reply(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    result = run_si("seq", "rm", sequence_id, "--force", "--format", "json")
    assert _json_lines(result.stdout) == [{"id": sequence_id}]
    assert hub.requests_to("DELETE", sequence_id)[0].headers["x-seq-kill-inst"] == "true"


# -- instance control ---------------------------------------------------------------------------


def test_inst_kill_and_stop_bodies(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    stopped, killed = hub.add_instance(sequence_id), hub.add_instance(sequence_id)
    assert run_si("inst", "stop", stopped, "1500").returncode == 0
    assert run_si("inst", "kill", killed, "--removeImmediately").returncode == 0
    assert hub.requests_to("POST", "/_stop")[0].json() == {
        "timeout": 1500,
        "canCallKeepalive": True,
    }
    assert hub.requests_to("POST", "/_kill")[0].json() == {"removeImmediately": True}


def test_inst_input_from_a_file_with_type_and_end(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    instance_id = hub.add_instance(hub.add_sequence())
    (tmp_path / "data.json").write_bytes(b'{"n": 1}\n{"n": 2}\n')
    result = run_si("inst", "input", instance_id, "data.json", "-t", "application/x-ndjson", "-e")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    sent = hub.requests_to("POST", "/input")[0]
    assert sent.body == b'{"n": 1}\n{"n": 2}\n'
    assert sent.headers["content-type"] == "application/x-ndjson"
    assert sent.headers["x-end-stream"] == "true"
    # The sequence reads the NDJSON as objects and returns them (compact JSON), then ends.
    assert run_si("inst", "output", instance_id).stdout == b'{"n":1}\n{"n":2}\n'


def test_inst_input_from_stdin_keeps_the_input_open_by_default(
    run_si: RunSi, hub: HubUnderTest
) -> None:
    instance_id = hub.add_instance(hub.add_sequence())
    result = run_si("inst", "input", instance_id, input=b"hello\nworld\n")
    assert result.returncode == 0, result.stderr
    sent = hub.requests_to("POST", "/input")[0]
    assert sent.body == b"hello\nworld\n"
    assert sent.headers["content-type"] == "text/plain"
    assert sent.headers["x-end-stream"] == "false"


def test_version_option(run_si: RunSi) -> None:
    import si

    assert run_si("--version").stdout == f"SI version: {si.__version__}\n".encode()


def test_session_is_not_touched_by_a_failed_send(run_si: RunSi, tmp_path: Path) -> None:
    run_si("seq", "send", "nothere.tar.gz")
    stored = json.loads(session_file(tmp_path).read_text())
    assert stored["lastSequenceId"] == ""
