"""The sequence lifecycle of the user's guide, end to end: pack, send, start, stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for
from tests.system.conftest import REPO, Cli

pytestmark = pytest.mark.system

COUNTER = REPO / "examples" / "counter"


def read_output(client: HubClient, instance_id: str) -> bytes:
    return b"".join(client.stream(f"instance/{instance_id}/output", follow=False))


def test_guide_lifecycle_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    package = tmp_path / "counter.tar.gz"
    assert cli.run("seq", "pack", str(COUNTER), "-o", str(package)).returncode == 0
    assert package.stat().st_size > 0

    sent = cli.run("seq", "send", "-", "--format", "json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["_id"]

    started = cli.run("seq", "start", "-", "3000", "10", "--format", "json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["_id"]

    output = cli.run("inst", "output", "-")
    assert output.returncode == 0, output.stderr
    assert output.stdout.decode().split() == [str(n) for n in range(3000, 3010)]


def test_output_of_a_finished_instance_stays_readable(client: HubClient) -> None:
    sequence = client.send_sequence(_counter_package())
    instance = client.start_sequence(sequence["id"], {"args": ["5", "3"]})["id"]
    wait_for(lambda: client.get_instance(instance)["status"] == "completed")
    info = client.get_instance(instance)
    assert info["terminated"] == {"exitcode": 0, "reason": "Instance completed"}
    assert read_output(client, instance) == b"5\n6\n7\n"


def _counter_package() -> bytes:
    return python_package((COUNTER / "index.py").read_text(), name="counter")


def test_input_flows_through_a_passthrough(client: HubClient) -> None:
    source = "def run(context, input, *args):\n    return input\n"
    sequence = client.send_sequence(python_package(source))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    lines = [f"line {n}\n".encode() for n in range(2000)]
    client.send_input(instance, iter(lines[:1000]), content_type="text/plain", end=False)
    client.send_input(instance, iter(lines[1000:]), content_type="text/plain", end=True)
    assert read_output(client, instance) == b"".join(lines)
    wait_for(lambda: client.get_instance(instance)["status"] == "completed")


def test_start_answers_with_the_instance_record(client: HubClient) -> None:
    sequence = client.send_sequence(_counter_package())["id"]
    custom_id = "0123456789abcdef0123456789abcdef0123"
    started = client.start_sequence(
        sequence, {"instanceId": custom_id, "args": ["1", "2"], "appConfig": {"a": 1}}
    )
    assert started["id"] == custom_id
    info = client.get_instance(custom_id)
    assert info["sequence"]["id"] == sequence
    assert info["args"] == ["1", "2"]
    assert info["appConfig"] == {"a": 1}
    assert client.get_sequence(sequence)["instances"] == [custom_id]
    with pytest.raises(HubError, match="already exists"):
        client.start_sequence(sequence, {"instanceId": custom_id})


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def run(context, input:\n", "SyntaxError"),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
        ("x = 1\n", "no run()"),
        ("raise RuntimeError('boom at import')\n", "boom at import"),
    ],
)
def test_start_failures_answer_with_the_reason(client: HubClient, source: str, reason: str) -> None:
    sequence = client.send_sequence(python_package(source))["id"]
    with pytest.raises(HubError, match=reason):
        client.start_sequence(sequence, {})
    [instance] = client.list_instances()
    assert instance["status"] == "errored"
    assert instance["terminated"]["exitcode"] == 22


def test_bad_package_upload_leaves_no_trace(client: HubClient, hub: HubProcess) -> None:
    before = sorted(p.name for p in (hub.home / "sequences").iterdir())
    with pytest.raises(HubError) as refused:
        client.send_sequence(b"this is not a tar.gz")
    assert "tar.gz" in str(refused.value)
    assert sorted(p.name for p in (hub.home / "sequences").iterdir()) == before
    assert client.list_sequences() == []


def test_sequences_survive_a_hub_restart(client: HubClient, hub: HubProcess) -> None:
    sequence = client.send_sequence(_counter_package())["id"]
    hub.restart()
    assert [s["id"] for s in HubClient(hub.address).list_sequences()] == [sequence]
    client = HubClient(hub.address)
    client.delete_sequence(sequence)
    assert client.list_sequences() == []
    with pytest.raises(HubError, match="does not exist"):
        client.delete_sequence(sequence)


def test_a_second_hub_on_the_same_home_is_refused(hub: HubProcess) -> None:
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "si", "hub", "serve", "--home", str(hub.home)],
        capture_output=True,
        timeout=30,
        cwd=REPO,
    )
    assert second.returncode == 1
    assert b"already serving" in second.stderr
    assert len(second.stderr.decode().strip().splitlines()) == 1
    assert time.monotonic() - started < 10
    assert HubClient(hub.address).version()["apiVersion"] == "v1"


def test_sigterm_stops_the_hub_and_leaves_instances_running(
    client: HubClient, hub: HubProcess
) -> None:
    sequence = client.send_sequence(_counter_package())["id"]
    instance = client.start_sequence(sequence, {"args": ["0", "1000000", "0.01"]})["id"]
    runner = hub.runner_identities()[instance]
    assert hub.stop(signal.SIGTERM) == 0
    assert not hub.socket.exists()
    assert runner.is_alive()
    hub.start()
    client = HubClient(hub.address)
    info = wait_for(lambda: client.get_instance(instance))
    assert info["status"] == "running"
    assert info["pid"] == runner.pid


def test_kill_ends_a_python_instance_completed(client: HubClient, hub: HubProcess) -> None:
    sequence = client.send_sequence(_counter_package())["id"]
    instance = client.start_sequence(sequence, {"args": ["0", "1000000", "0.01"]})["id"]
    runner = hub.runner_identities()[instance]
    client.kill_instance(instance)
    info = wait_for(lambda: (i := client.get_instance(instance))["status"] == "completed" and i)
    assert info["terminated"]["exitcode"] == 137
    wait_for(lambda: not runner.is_alive())


def test_an_instance_killed_for_removal_leaves_no_directory_and_its_id_is_free_at_once(
    client: HubClient, hub: HubProcess
) -> None:
    # The keeper records reaping each runner in its directory a moment after the runner ended:
    # a removal that raced it left the directory, and the id refused every later start.
    sequence = client.send_sequence(_counter_package())["id"]
    instance = "0123456789abcdef0123456789abcdef0123"
    for _ in range(30):
        client.start_sequence(sequence, {"instanceId": instance, "args": ["0", "1000000", "0.01"]})
        client.kill_instance(instance, remove_immediately=True)

        def gone() -> bool:
            try:
                client.get_instance(instance)
            except HubError as exc:
                return exc.status == 404
            return False

        wait_for(gone)
        assert not (hub.home / "instances" / instance).exists()


def test_stop_ends_a_python_instance_completed(client: HubClient) -> None:
    sequence = client.send_sequence(_counter_package())["id"]
    instance = client.start_sequence(sequence, {"args": ["0", "1000000", "0.01"]})["id"]
    reply = client.stop_instance(instance, 2000, can_call_keepalive=False)
    assert reply["id"] == instance
    info = wait_for(lambda: (i := client.get_instance(instance))["status"] == "completed" and i)
    assert info["terminated"]["exitcode"] == 138


def test_output_follows_across_a_hub_crash_without_gap_or_repeat(
    client: HubClient, hub: HubProcess
) -> None:
    sequence = client.send_sequence(_counter_package())["id"]
    instance = client.start_sequence(sequence, {"args": ["0", "400", "0.005"]})["id"]
    received = bytearray()
    stream = client.stream(f"instance/{instance}/output", follow=True)
    for chunk in stream:
        received += chunk
        if received.count(b"\n") >= 50:
            break
    hub.crash()
    hub.start()
    for chunk in stream:  # the same follower: it reconnects and resumes at its offset
        received += chunk
    assert [int(n) for n in received.split()] == list(range(400))
