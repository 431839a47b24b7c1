"""HubClient against a real hub (through the recording proxy): addressing, requests on the wire,
errors. Its resumable streams are tested in test_client_streams.py."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.errors import SiError
from si.testing import python_package
from tests.cli.fakehub import FakeHub
from tests.cli.hubproxy import HubUnderTest

PACKAGE = python_package("async def run(context, input):\n    yield 'hi'\n", name="p")


@pytest.fixture
def client(hub: HubUnderTest) -> Iterator[HubClient]:
    with HubClient(hub.address, follow_timeout=5) as hub_client:
        yield hub_client


def test_unix_socket_requests_reach_api_v1(hub: HubUnderTest, client: HubClient) -> None:
    assert client.version()["apiVersion"] == "v1"
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
            assert client.version()["apiVersion"] == "v1"


def test_socket_path_longer_than_the_kernel_limit(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    path = str(deep / "hub.sock")
    assert len(path.encode()) > 107
    with FakeHub(path) as fake, HubClient(path) as client:
        assert client.version()["apiVersion"] == "v1"
        assert fake.requests[0].path == "/api/v1/version"


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


def test_error_message_is_the_hubs_error_string(hub: HubUnderTest, client: HubClient) -> None:
    with pytest.raises(HubError) as caught:
        client.get_sequence("nope")
    assert str(caught.value) == "Sequence nope not found"
    assert caught.value.status == 404


def test_error_without_content_type_is_still_read(hub: HubUnderTest, client: HubClient) -> None:
    # STH's instance sub-router answers 404 with a JSON body but no content type.
    with pytest.raises(HubError, match=r"^Instance gone not found$"):
        client.get_instance("gone")


def test_error_object_is_rendered_compactly(hub: HubUnderTest, client: HubClient) -> None:
    hub.fail_next = (422, b'{"error": {"code": "PRERUNNER_ERROR",\n "data": "Invalid pkg"}}')
    with pytest.raises(HubError) as caught:
        client.send_sequence(b"not a tarball")
    assert str(caught.value) == '{"code":"PRERUNNER_ERROR","data":"Invalid pkg"}'


def test_error_without_body_names_url_and_status(hub: HubUnderTest, client: HubClient) -> None:
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


def test_ids_cannot_escape_their_path_segment(hub: HubUnderTest, client: HubClient) -> None:
    with pytest.raises(HubError):
        client.get_sequence("../version")
    assert hub.requests[-1].path == "/api/v1/sequence/..%2Fversion"


def test_delete_sends_json_content_type_and_force_header(
    hub: HubUnderTest, client: HubClient
) -> None:
    first, second = hub.add_sequence(), hub.add_sequence()
    assert client.delete_sequence(first) == {"id": first}
    assert client.delete_sequence(second, force=True) == {"id": second}
    plain, forced = hub.requests_to("DELETE", first)[0], hub.requests_to("DELETE", second)[0]
    assert plain.headers["content-type"] == "application/json"
    assert "x-seq-kill-inst" not in plain.headers
    assert forced.headers["x-seq-kill-inst"] == "true"


def test_send_sequence_from_a_file_sends_its_length(
    hub: HubUnderTest, client: HubClient, tmp_path: Path
) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(PACKAGE)
    with package.open("rb") as body:
        reply = client.send_sequence(body)
    assert reply["id"] in hub.sequences
    upload = hub.requests_to("POST", "/sequence")[0]
    assert upload.body == PACKAGE
    assert upload.headers["content-type"] == "application/octet-stream"
    assert upload.headers["content-length"] == str(len(PACKAGE))


def test_send_sequence_from_chunks_is_streamed(hub: HubUnderTest, client: HubClient) -> None:
    reply = client.send_sequence(iter([PACKAGE[:10], PACKAGE[10:]]))
    assert reply["id"] in hub.sequences
    upload = hub.requests_to("POST", "/sequence")[0]
    assert upload.body == PACKAGE
    assert upload.headers["transfer-encoding"] == "chunked"


def test_start_kill_stop_bodies(hub: HubUnderTest, client: HubClient) -> None:
    sequence_id = hub.add_sequence()
    payload = {"appConfig": {"a": 1}, "args": [1, "x"], "limits": {}}
    reply = client.start_sequence(sequence_id, payload)
    assert hub.requests_to("POST", "/start")[0].json() == payload
    assert hub.instance(reply["id"])["args"] == [1, "x"]
    client.stop_instance(reply["id"], 2500)
    other = client.start_sequence(sequence_id, {})
    client.kill_instance(other["id"], remove_immediately=True)
    assert hub.requests_to("POST", "/_kill")[0].json() == {"removeImmediately": True}
    assert hub.requests_to("POST", "/_stop")[0].json() == {
        "timeout": 2500,
        "canCallKeepalive": True,
    }
    assert hub.requests_to("POST", "/_stop")[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize(("end", "header"), [(True, "true"), (False, "false"), (None, None)])
def test_send_input_headers(
    hub: HubUnderTest, client: HubClient, end: bool | None, header: str | None
) -> None:
    instance_id = hub.add_instance(hub.add_sequence())
    client.send_input(instance_id, io.BytesIO(b"line 1\nline 2\n"), "application/x-ndjson", end=end)
    sent = hub.requests_to("POST", "/input")[0]
    assert sent.body == b"line 1\nline 2\n"
    assert sent.headers["content-type"] == "application/x-ndjson"
    assert sent.headers.get("x-end-stream") == header


def test_send_input_raises_when_the_reply_breaks_off(hub: HubUnderTest, client: HubClient) -> None:
    instance_id = hub.add_instance(hub.add_sequence())
    hub.cut_next_response = 20  # inside the status line's headers
    with pytest.raises(HubError, match="lost the connection to the hub"):
        client.send_input(instance_id, b"data", end=True)


def test_reply_that_is_not_json_is_an_error(hub: HubUnderTest, client: HubClient) -> None:
    hub.fail_next = (200, b"<html>")
    with pytest.raises(HubError, match="not JSON"):
        client.version()


def test_hub_errors_are_si_errors() -> None:
    # The CLI prints any SiError as one line; HubError must be one.
    assert issubclass(HubError, SiError)
