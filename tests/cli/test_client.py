"""HubClient against the fake hub: addressing, requests on the wire, errors, resumable streams."""

from __future__ import annotations

import io
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.errors import SiError
from tests.cli.fakehub import FakeHub, OutputPlan

DATA = bytes(range(256)) * 4 + b"the end\n"


@pytest.fixture
def client(hub: FakeHub) -> Iterator[HubClient]:
    with HubClient(hub.address, follow_timeout=5) as hub_client:
        yield hub_client


def test_unix_socket_requests_reach_api_v1(hub: FakeHub, client: HubClient) -> None:
    assert client.version()["service"] == "@scramjet/host"
    assert client.address == hub.address
    assert [r.path for r in hub.requests] == ["/api/v1/version"]


@pytest.mark.parametrize("suffix", ["", "/", "/api/v1", "/api/v1/"])
def test_http_url_with_or_without_api_path(suffix: str) -> None:
    with FakeHub(tcp=True) as tcp_hub, HubClient(tcp_hub.address + suffix) as client:
        assert client.version()["apiVersion"] == "v1"
        assert client.address == tcp_hub.address + "/api/v1"
        assert tcp_hub.requests[0].path == "/api/v1/version"


def test_bare_host_and_port_is_http() -> None:
    with FakeHub(tcp=True) as tcp_hub:
        bare = tcp_hub.address.removeprefix("http://")
        with HubClient(bare) as client:
            assert client.list_sequences() == []


def test_socket_path_longer_than_the_kernel_limit(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    path = str(deep / "hub.sock")
    assert len(path.encode()) > 107
    with FakeHub(path) as fake, HubClient(path) as client:
        assert client.list_instances() == []
        assert fake.requests[0].path == "/api/v1/instances"


def test_a_full_listen_queue_is_waited_out_not_reported_as_no_hub(tmp_path: Path) -> None:
    # What a restarted hub meets when every follower reconnects at once: a Unix socket's
    # connect fails with EAGAIN while the queue is full, where TCP would retransmit.
    path = str(tmp_path / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued.connect(path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    with pytest.raises(BlockingIOError):
        probe.connect(path)
    probe.close()

    def accept_late() -> None:
        time.sleep(0.3)
        listener.accept()[0].close()
        connection = listener.accept()[0]
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]")
        connection.close()

    server = threading.Thread(target=accept_late, daemon=True)
    server.start()
    try:
        with HubClient(path) as client:
            assert client.list_instances() == []
    finally:
        server.join(5)
        queued.close()
        listener.close()


def test_error_message_is_the_hubs_error_string(hub: FakeHub, client: HubClient) -> None:
    with pytest.raises(HubError) as caught:
        client.get_sequence("nope")
    assert str(caught.value) == "Sequence nope not found"
    assert caught.value.status == 404


def test_error_without_content_type_is_still_read(hub: FakeHub, client: HubClient) -> None:
    # STH's instance sub-router answers 404 with a JSON body but no content type.
    with pytest.raises(HubError, match=r"^Instance gone not found$"):
        client.get_instance("gone")


def test_error_object_is_rendered_compactly(hub: FakeHub, client: HubClient) -> None:
    hub.fail_next = (422, b'{"error": {"code": "PRERUNNER_ERROR",\n "data": "Invalid pkg"}}')
    with pytest.raises(HubError) as caught:
        client.send_sequence(b"not a tarball")
    assert str(caught.value) == '{"code":"PRERUNNER_ERROR","data":"Invalid pkg"}'


def test_error_without_body_names_url_and_status(hub: FakeHub, client: HubClient) -> None:
    hub.fail_next = (500, b"")
    with pytest.raises(HubError) as caught:
        client.list_sequences()
    assert str(caught.value) == "Failed to request 'http://si/api/v1/sequences' with code 500"


def test_hub_not_running_names_the_address(short_dir: Path) -> None:
    missing = str(short_dir / "nobody.sock")
    with HubClient(missing) as client, pytest.raises(HubError) as caught:
        client.version()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the hub at {missing}: ")
    assert message.endswith("(is 'si hub serve' running?)")
    assert "\n" not in message


def test_ids_cannot_escape_their_path_segment(hub: FakeHub, client: HubClient) -> None:
    with pytest.raises(HubError):
        client.get_sequence("../version")
    assert hub.requests[-1].path == "/api/v1/sequence/..%2Fversion"


def test_delete_sends_json_content_type_and_force_header(hub: FakeHub, client: HubClient) -> None:
    first, second = hub.add_sequence(), hub.add_sequence()
    assert client.delete_sequence(first) == {"id": first}
    assert client.delete_sequence(second, force=True) == {"id": second}
    plain, forced = hub.requests_to("DELETE", first)[0], hub.requests_to("DELETE", second)[0]
    assert plain.headers["content-type"] == "application/json"
    assert "x-seq-kill-inst" not in plain.headers
    assert forced.headers["x-seq-kill-inst"] == "true"


def test_send_sequence_from_a_file_sends_its_length(
    hub: FakeHub, client: HubClient, tmp_path: Path
) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(DATA)
    with package.open("rb") as body:
        reply = client.send_sequence(body)
    assert reply["id"] in hub.sequences
    upload = hub.requests_to("POST", "/sequence")[0]
    assert upload.body == DATA
    assert upload.headers["content-type"] == "application/octet-stream"
    assert upload.headers["content-length"] == str(len(DATA))


def test_send_sequence_from_chunks_is_streamed(hub: FakeHub, client: HubClient) -> None:
    client.send_sequence(iter([b"abc", b"def"]))
    upload = hub.requests_to("POST", "/sequence")[0]
    assert upload.body == b"abcdef"
    assert upload.headers["transfer-encoding"] == "chunked"


def test_start_kill_stop_bodies(hub: FakeHub, client: HubClient) -> None:
    sequence_id = hub.add_sequence()
    payload = {"appConfig": {"a": 1}, "args": [1, "x"], "limits": {}}
    reply = client.start_sequence(sequence_id, payload)
    instance_id = reply["id"]
    assert hub.requests_to("POST", "/start")[0].json() == payload
    client.stop_instance(instance_id, 2500)
    client.kill_instance(instance_id, remove_immediately=True)
    assert hub.requests_to("POST", "/_kill")[0].json() == {"removeImmediately": True}
    assert hub.requests_to("POST", "/_stop")[0].json() == {
        "timeout": 2500,
        "canCallKeepalive": True,
    }
    assert hub.requests_to("POST", "/_stop")[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize(("end", "header"), [(True, "true"), (False, "false"), (None, None)])
def test_send_input_headers(
    hub: FakeHub, client: HubClient, end: bool | None, header: str | None
) -> None:
    instance_id = hub.add_instance(hub.add_sequence())
    client.send_input(instance_id, io.BytesIO(b"line 1\nline 2\n"), "application/x-ndjson", end=end)
    sent = hub.requests_to("POST", "/input")[0]
    assert sent.body == b"line 1\nline 2\n"
    assert sent.headers["content-type"] == "application/x-ndjson"
    assert sent.headers.get("x-end-stream") == header


def test_send_input_raises_when_the_reply_breaks_off(hub: FakeHub, client: HubClient) -> None:
    instance_id = hub.add_instance(hub.add_sequence())
    hub.break_input_reply = True
    with pytest.raises(HubError, match="lost the connection to the hub"):
        client.send_input(instance_id, b"data", end=True)


def _output_hub(hub: FakeHub, plan: OutputPlan) -> str:
    instance_id = hub.add_instance(hub.add_sequence())
    hub.outputs[instance_id] = plan
    return instance_id


def test_stream_yields_the_body_as_sent(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA))
    assert b"".join(client.instance_stream(instance_id, "output")) == DATA
    request = hub.requests_to("GET", "/output")[0]
    assert request.headers["content-type"] == "application/octet-stream"
    assert "x-si-offset" not in request.headers


def test_stream_resumes_after_drops_without_repeating_bytes(
    hub: FakeHub, client: HubClient
) -> None:
    # Two drops mid-body; the hub resumes 5 bytes earlier than asked, which the client skips.
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[100, 333], rewind=5))
    assert b"".join(client.stream(f"instance/{instance_id}/output")) == DATA
    offsets = [r.headers.get("x-si-offset") for r in hub.requests_to("GET", "/output")]
    assert offsets == [None, "100", str(100 - 5 + 333)]


def test_stream_follows_a_hub_restart(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[500]))
    chunks = client.instance_stream(instance_id, "output")
    received = next(chunks)
    while len(received) < 500:
        received += next(chunks)
    hub.stop()
    hub.restart_after(0.4)
    received += b"".join(chunks)
    assert received == DATA
    assert hub.requests_to("GET", "/output")[-1].headers["x-si-offset"] == "500"


def test_stream_backoff_doubles_from_50ms_up_to_500ms(
    hub: FakeHub, client: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    delays: list[float] = []

    def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 7:
            hub.start()

    # si.client calls random.random() and time.sleep() through the modules.
    monkeypatch.setattr(random, "random", lambda: 0.0)
    monkeypatch.setattr(time, "sleep", fake_sleep)
    chunks = client.instance_stream(instance_id, "output")
    received = next(chunks)
    hub.stop()
    received += b"".join(chunks)
    assert received == DATA
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_stream_gives_up_after_the_follow_timeout(hub: FakeHub) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with HubClient(hub.address, follow_timeout=0.3) as client:
        chunks = client.instance_stream(instance_id, "output")
        next(chunks)
        hub.stop()
        began = time.monotonic()
        with pytest.raises(HubError, match=r"did not come back within 0.3 s"):
            b"".join(chunks)
        assert time.monotonic() - began < 2


def test_follow_timeout_comes_from_the_environment(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SI_FOLLOW_TIMEOUT", "0.2")
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with HubClient(hub.address) as client:
        chunks = client.instance_stream(instance_id, "output")
        next(chunks)
        hub.stop()
        with pytest.raises(HubError, match=r"within 0.2 s"):
            b"".join(chunks)


def test_stream_without_follow_raises_on_a_drop(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with pytest.raises(HubError, match="lost the connection"):
        b"".join(client.instance_stream(instance_id, "output", follow=False))
    assert len(hub.requests_to("GET", "/output")) == 1


def test_stream_of_an_unknown_instance_raises_404(hub: FakeHub, client: HubClient) -> None:
    with pytest.raises(HubError) as caught:
        list(client.instance_stream("nope", "output"))
    assert caught.value.status == 404
    assert str(caught.value) == "Instance nope not found"


def test_stream_refuses_to_skip_lost_bytes(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    chunks = client.instance_stream(instance_id, "output")
    assert next(chunks)
    hub.outputs[instance_id].skip_ahead = 4  # the hub resumes 4 bytes later than asked
    with pytest.raises(HubError, match="no longer holds bytes 10-13"):
        b"".join(chunks)


def test_stream_without_offsets_is_not_resumed(hub: FakeHub, client: HubClient) -> None:
    # An STH hub sends no x-si-offset: resuming would repeat or lose bytes, so a drop is final.
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10], offsets=False))
    with pytest.raises(HubError, match="lost the connection"):
        b"".join(client.instance_stream(instance_id, "output"))
    assert len(hub.requests_to("GET", "/output")) == 1


def test_invalid_follow_timeout_is_a_clear_error(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SI_FOLLOW_TIMEOUT", "soon")
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with HubClient(hub.address) as client, pytest.raises(HubError, match="SI_FOLLOW_TIMEOUT"):
        b"".join(client.instance_stream(instance_id, "output"))


def test_reply_that_is_not_json_is_an_error(hub: FakeHub, client: HubClient) -> None:
    hub.fail_next = (200, b"<html>")
    with pytest.raises(HubError, match="not JSON"):
        client.version()


def test_hub_errors_are_si_errors() -> None:
    # The CLI prints any SiError as one line; HubError must be one.
    assert issubclass(HubError, SiError)


def test_a_hub_that_answers_and_dies_in_a_loop_is_given_up_on(hub: FakeHub) -> None:
    # Every reconnect gets headers and then an immediate drop, with no byte: one long outage.
    drops: list[int | None] = [10, *[0] * 1000]
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=drops))
    with HubClient(hub.address, follow_timeout=0.5) as client:
        began = time.monotonic()
        with pytest.raises(HubError, match=r"did not come back within 0.5 s"):
            b"".join(client.instance_stream(instance_id, "output"))
        assert time.monotonic() - began < 3
    assert 3 <= len(hub.requests_to("GET", "/output")) < 50
