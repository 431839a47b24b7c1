"""The instance runtime, topic and hub commands as a user runs them, against a real hub (the
scripted fake only where a stream must break at an exact byte)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from si.testing import python_package, wait_for
from tests.cli.conftest import RunSi, first_lines, one_error_line, session_file
from tests.cli.fakehub import FakeHub, OutputPlan
from tests.cli.hubproxy import CHATTY, COUNTER, REPLY, UPPER, HubUnderTest

INSTANCE_ID = "0123456789abcdef0123456789abcdef0123"


def _json_lines(stdout: bytes) -> list[Any]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def _instance(hub: HubUnderTest, source: str | None = None, *args: str, **payload: Any) -> str:
    sequence_id = hub.add_sequence(source) if source else hub.add_sequence()
    return hub.add_instance(sequence_id, *args, **payload)


# -- streams out ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("stdout", b"\x00\xffline one\nline two\n"), ("stderr", b"\x01\xfeerr one\n"), ("log", None)],
)
def test_instance_streams_are_copied_raw(
    run_si: RunSi, hub: HubUnderTest, name: str, expected: bytes | None
) -> None:
    instance_id = _instance(hub, CHATTY)
    hub.wait_ended(instance_id)
    served = hub.read(instance_id, name)
    if expected is not None:
        assert served == expected
    else:
        assert b"a log line" in served
    result = run_si("inst", name, instance_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == served  # no framing, whatever the format


def test_log_tail_is_asked_of_the_hub(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = _instance(hub, CHATTY)
    hub.wait_ended(instance_id)
    result = run_si("inst", "log", instance_id, "--tail", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"\n") == 1
    assert hub.requests_to("GET", "/log?tail=1")


def test_log_follows_a_dropped_connection(run_si: RunSi, fake_hub: FakeHub) -> None:
    hub = fake_hub
    instance_id = hub.add_instance(hub.add_sequence())
    data = b"".join(b'{"msg": "line %d"}\n' % n for n in range(50))
    hub.streams[(instance_id, "log")] = OutputPlan(data, drops=[120])
    result = run_si("inst", "log", instance_id)
    assert result.stdout == data
    assert hub.requests_to("GET", "/log")[-1].headers["x-si-offset"] == "120"


def test_stream_of_an_unknown_instance_is_one_error_line(run_si: RunSi) -> None:
    assert one_error_line(run_si("inst", "stdout", "nope")) == "Instance nope not found"


# -- streams in -----------------------------------------------------------------------------------


def test_stdin_from_a_pipe(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = _instance(hub)
    result = run_si("inst", "stdin", instance_id, input=b"typed\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    sent = hub.requests_to("POST", "/stdin")[0]
    assert sent.body == b"typed\n"
    assert sent.headers["content-type"] == "application/octet-stream"


def test_inout_sends_input_and_prints_output(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    instance_id = _instance(hub, UPPER)
    (tmp_path / "in.txt").write_bytes(b"abc\ndef\n")
    result = run_si("inst", "inout", instance_id, "in.txt", "-t", "text/plain", "--end")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ABC\nDEF\n"
    sent = hub.requests_to("POST", "/inout")[0]
    assert sent.headers["content-type"] == "text/plain"


def test_attach_copies_stdout_and_stderr_and_feeds_stdin(run_si: RunSi, fake_hub: FakeHub) -> None:
    hub = fake_hub
    instance_id = hub.add_instance(hub.add_sequence())
    hub.streams[(instance_id, "stdout")] = OutputPlan(b"out\n")
    hub.streams[(instance_id, "stderr")] = OutputPlan(b"err\n")
    result = run_si("inst", "attach", instance_id, input=b"in\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


# -- health, info, use ----------------------------------------------------------------------------


def test_health_and_use(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    instance_id = _instance(hub)
    [health] = _json_lines(run_si("inst", "health", instance_id, "--format", "json").stdout)
    assert health["healthy"] is True
    assert health["processId"] == hub.instance(instance_id)["pid"]
    assert run_si("inst", "use", instance_id).stdout == b""
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == instance_id
    assert one_error_line(run_si("inst", "use", "nope")) == "Unable to find instance nope"


def test_seq_use_validates_and_records(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    sequence_id = hub.add_sequence()
    assert run_si("seq", "select", sequence_id).returncode == 0
    assert json.loads(session_file(tmp_path).read_text())["lastSequenceId"] == sequence_id
    assert one_error_line(run_si("seq", "use", "nope")) == "Unable to find sequence nope"


# -- control ---------------------------------------------------------------------------------------


def test_stop_without_timeout_uses_sths_default(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = _instance(hub)
    assert run_si("inst", "stop", instance_id).returncode == 0
    assert hub.requests_to("POST", "/_stop")[0].json()["timeout"] == 7000


def test_kill_forgets_the_last_instance(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    sequence_id = hub.add_sequence()
    assert run_si("seq", "start", sequence_id).returncode == 0
    assert run_si("inst", "kill", "-").returncode == 0
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == ""


def test_restart_keeps_id_config_args_and_topics(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    sequence_id = hub.add_sequence()
    hub.add_instance(
        sequence_id,
        instanceId=INSTANCE_ID,
        appConfig={"a": 1},
        args=["x", 2],
        outputTopic="out-topic",
        inputTopic="in-topic",
    )
    result = run_si("inst", "restart", INSTANCE_ID, "--format", "json")
    assert result.returncode == 0, result.stderr
    [reply] = _json_lines(result.stdout)
    assert reply["seqStartResponse"]["id"] == INSTANCE_ID
    assert hub.requests_to("POST", "/_kill")[0].json() == {"removeImmediately": True}
    assert hub.requests_to("POST", "/start")[0].json() == {
        "instanceId": INSTANCE_ID,
        "appConfig": {"a": 1},
        "args": ["x", 2],
        "inputTopic": "in-topic",
        "outputTopic": "out-topic",
    }
    again = hub.instance(INSTANCE_ID)
    assert (again["status"], again["args"], again["appConfig"]) == ("running", ["x", 2], {"a": 1})
    assert (again["provides"], again["requires"]) == ("out-topic", "in-topic")
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == INSTANCE_ID


def test_restart_keeps_the_restart_policy_limits_and_name(run_si: RunSi, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    hub.add_instance(
        sequence_id,
        instanceId=INSTANCE_ID,
        restart="always",
        maxRestarts=3,
        limits={"memory": 200},
        name="web",
    )
    result = run_si("inst", "restart", INSTANCE_ID, "--format", "json")
    assert result.returncode == 0, result.stderr
    started = hub.requests_to("POST", "/start")[0].json()
    assert (started["restart"], started["maxRestarts"]) == ("always", 3)
    assert started["limits"] == {"memory": 200}
    assert started["name"] == "web"
    again = hub.instance(INSTANCE_ID)
    assert again["restartPolicy"]["restart"] == "always"
    assert (again["limits"]["memory"], again["name"]) == (200, "web")


def test_restart_of_an_ended_instance_starts_a_new_one(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    sequence_id = hub.add_sequence(COUNTER)
    hub.add_instance(sequence_id, "1", instanceId=INSTANCE_ID)
    hub.wait_ended(INSTANCE_ID)
    result = run_si("inst", "restart", INSTANCE_ID, "--format", "json")
    assert result.returncode == 0, result.stderr
    new_id = _json_lines(result.stdout)[0]["seqStartResponse"]["id"]
    assert new_id != INSTANCE_ID
    assert result.stderr.decode() == (
        f"instance {INSTANCE_ID} had ended; started {new_id} with the same settings\n"
    )
    assert hub.requests_to("POST", "/start")[0].json() == {"appConfig": {}, "args": ["1"]}
    assert json.loads(session_file(tmp_path).read_text())["lastInstanceId"] == new_id


def test_inout_end_sends_the_end_header(
    run_si: RunSi, hub: HubUnderTest, si_env: dict[str, str]
) -> None:
    kept_open = _instance(hub, UPPER)
    # Without --end both stay open: the answer streams back while the input goes on.
    assert first_lines(si_env, "inst", "inout", kept_open, input=b"y\n") == [b"Y\n"]
    assert hub.requests_to("POST", "/inout")[0].headers["x-end-stream"] == "false"
    assert hub.instance(kept_open)["status"] == "running"
    ended = _instance(hub, UPPER)
    assert run_si("inst", "inout", ended, "--end", input=b"x\n").stdout == b"X\n"
    assert hub.requests_to("POST", "/inout")[1].headers["x-end-stream"] == "true"
    assert hub.wait_ended(ended)["status"] == "completed"  # its input ended, so did it


# -- events ----------------------------------------------------------------------------------------


def test_event_emit_sends_sths_body_and_on_prints_json(
    run_si: RunSi, hub: HubUnderTest, si_env: dict[str, str]
) -> None:
    instance_id = _instance(hub, REPLY)
    assert run_si("inst", "event", "emit", instance_id, "greet", "hello there").returncode == 0
    assert hub.requests_to("POST", "/_event")[0].json() == [
        5001,
        {"eventName": "greet", "message": "hello there"},
    ]
    # The sequence answers with the same event; its message is printed as JSON whatever the
    # format (STH).
    assert run_si("inst", "event", "on", instance_id, "greet").stdout == b'"hello there"\n'
    # --next waits for one sent after it asked.
    process = subprocess.Popen(
        [sys.executable, "-m", "si", "inst", "event", "on", instance_id, "greet", "--next"],
        stdout=subprocess.PIPE,
        env=si_env,
    )
    with process:
        wait_for(lambda: hub.requests_to("GET", "/once/greet"))
        assert run_si("inst", "event", "emit", instance_id, "greet", "again").returncode == 0
        assert process.communicate(timeout=10)[0] == b'"again"\n'
    assert process.returncode == 0


def test_event_invoke_alias_and_json_payload(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = _instance(hub, REPLY)
    assert run_si("inst", "event", "invoke", instance_id, "n", '{"x": 1}', "--json").returncode == 0
    assert hub.requests_to("POST", "/_event")[0].json()[1]["message"] == {"x": 1}
    assert run_si("inst", "event", "on", instance_id, "n").stdout == b'{"x":1}\n'
    assert run_si("inst", "event", "emit", instance_id, "bare").returncode == 0
    assert "message" not in hub.requests_to("POST", "/_event")[1].json()[1]


def test_event_on_stream_is_raw(run_si: RunSi, fake_hub: FakeHub) -> None:
    hub = fake_hub
    instance_id = hub.add_instance(hub.add_sequence())
    hub.streams[(instance_id, "events/tick")] = OutputPlan(b"1\n2\n")
    assert run_si("inst", "event", "on", instance_id, "tick", "--stream").stdout == b"1\n2\n"


def test_event_on_with_no_value_prints_nothing(run_si: RunSi, hub: HubUnderTest) -> None:
    instance_id = _instance(hub, COUNTER)
    hub.wait_ended(instance_id)
    result = run_si("inst", "event", "on", instance_id, "never")
    assert (result.returncode, result.stdout) == (0, b"")


# -- sequences: update, prune, ls -n -------------------------------------------------------------


def test_update_puts_the_package(run_si: RunSi, hub: HubUnderTest, tmp_path: Path) -> None:
    sequence_id = hub.add_sequence()
    package = python_package(UPPER, name="renamed")
    (tmp_path / "p.tar.gz").write_bytes(package)
    result = run_si("seq", "update", sequence_id, "p.tar.gz", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert _json_lines(result.stdout)[0]["_id"] == sequence_id
    assert hub.requests_to("PUT", f"/sequence/{sequence_id}")[0].body == package
    assert hub.sequences[sequence_id]["config"]["name"] == "renamed"


def test_prune_removes_everything_and_reports_on_stderr(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path
) -> None:
    hub.add_sequence()
    hub.add_sequence()
    result = run_si("seq", "prune", "--force")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert result.stderr == b"Sequences removed successfully.\n"
    assert hub.sequences == {}
    assert all(r.headers.get("x-seq-kill-inst") == "true" for r in hub.requests_to("DELETE", ""))
    again = run_si("seq", "prune")
    assert again.stderr == b"Sequence list is empty, nothing to delete.\n"


def test_prune_that_leaves_sequences_fails(run_si: RunSi, hub: HubUnderTest) -> None:
    hub.add_sequence()
    in_use = hub.add_sequence()
    hub.add_instance(in_use)  # a sequence with a live instance goes only with --force
    result = run_si("seq", "prune")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert lines[0] == f"Warning: {in_use}: Can't remove- Sequence in use"
    assert lines[1] == "Error: Some Sequences may have not been deleted."
    assert list(hub.sequences) == [in_use]


def test_seq_ls_by_name_prints_ids(run_si: RunSi, hub: HubUnderTest) -> None:
    wanted = hub.add_sequence(name="alpha")
    hub.add_sequence(name="beta")
    assert run_si("seq", "ls", "-n", "alpha").stdout == f"{wanted}\n".encode()
    assert _json_lines(run_si("seq", "ls", "-n", "alpha", "--format", "json").stdout) == [[wanted]]
    assert one_error_line(run_si("seq", "ls", "-n", "gamma")) == "No results found"


# -- topics ----------------------------------------------------------------------------------------


def test_topic_create_ls_send_get_rm(
    run_si: RunSi, hub: HubUnderTest, tmp_path: Path, si_env: dict[str, str]
) -> None:
    created = run_si("topic", "create", "cities", "-t", "text/plain", "--format", "json")
    assert _json_lines(created.stdout)[0]["contentType"] == "text/plain"
    table = run_si("topic", "ls").stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "CONTENT-TYPE", "PROVIDER"]
    assert table[1].split()[:2] == ["cities", "text/plain"]
    assert run_si("topic", "send", "cities", "-t", "text/plain", input=b"Paris\n").returncode == 0
    sent = hub.requests_to("POST", "/topic/cities")[0]
    assert (sent.body, sent.headers["content-type"]) == (b"Paris\n", "text/plain")
    (tmp_path / "more.txt").write_bytes(b"Rome\n")
    assert run_si("topic", "send", "cities", "more.txt", "-t", "text/plain").returncode == 0
    got = first_lines(si_env, "topic", "get", "cities", "-t", "text/plain", count=2)
    assert got == [b"Paris\n", b"Rome\n"]
    assert hub.requests_to("GET", "/topic/cities")[0].headers["content-type"] == "text/plain"
    assert run_si("topic", "rm", "cities").returncode == 0
    assert one_error_line(run_si("topic", "delete", "cities")) == "Topic cities not found"


def test_topic_defaults_to_ndjson_and_checks_names(run_si: RunSi, hub: HubUnderTest) -> None:
    assert run_si("topic", "create", "t1").returncode == 0
    assert hub.requests_to("POST", "/topics")[0].json() == {
        "id": "t1",
        "content-type": "application/x-ndjson",
    }
    assert one_error_line(run_si("topic", "create", "bad name")) == "Invalid topic name"
    assert "is not one of" in one_error_line(run_si("topic", "get", "t1", "-t", "text/html"))


# -- hub -------------------------------------------------------------------------------------------


def test_hub_load_logs_audit(run_si: RunSi, fake_hub: FakeHub) -> None:
    hub = fake_hub
    [load] = _json_lines(run_si("hub", "load", "--format", "json").stdout)
    assert load["currentLoad"] == 0.25
    hub.hub_streams["log"] = OutputPlan(b'{"msg":"hub log"}\n')
    hub.hub_streams["audit"] = OutputPlan(b'{"op":"x"}\n')
    assert run_si("hub", "logs").stdout == b'{"msg":"hub log"}\n'
    assert run_si("hub", "audit").stdout == b'{"op":"x"}\n'


# -- streaming output arrives as it is produced ----------------------------------------------------


def test_stream_output_is_flushed_before_the_stream_ends(
    si_env: dict[str, str], hub: HubUnderTest
) -> None:
    instance_id = _instance(hub)  # echoes its input, which stays open
    with hub.client() as client:
        client.send_input(instance_id, b"first\n", "text/plain", end=False)
    # The stream does not end: a line can only arrive if si flushes as it goes.
    assert first_lines(si_env, "inst", "output", instance_id) == [b"first\n"]
