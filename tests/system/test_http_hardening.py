"""No client can stop the hub: aborted and garbled requests against a real hub process, and the
API's refusals of bodies and offsets it cannot serve."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from si.client import HubClient
from si.paths import connectable_unix_path
from si.testing import HubProcess, python_package, wait_for
from tests.system.conftest import hub_http

pytestmark = pytest.mark.system

HOST = b"Host: si\r\n"


@contextlib.contextmanager
def raw_connection(hub: HubProcess) -> Iterator[socket.socket]:
    target, dirfd = connectable_unix_path(hub.socket)  # the test home is deep on purpose
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(target)
            yield sock
    finally:
        if dirfd is not None:
            os.close(dirfd)


def read_some(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


# Each one a different way for one client to misbehave; the hub must shrug them all off.
def close_after_404_with_the_body_unsent(sock: socket.socket) -> None:
    sock.sendall(b"POST /api/v1/instance/nope/_kill HTTP/1.1\r\n" + HOST)
    sock.sendall(b"content-type: application/json\r\ncontent-length: 27\r\n\r\n")
    assert read_some(sock).startswith(b"HTTP/1.1 404 ")


def close_right_after_the_head(sock: socket.socket) -> None:
    sock.sendall(b"POST /api/v1/topics HTTP/1.1\r\n" + HOST + b"content-length: 27\r\n\r\n")


def close_mid_body(sock: socket.socket) -> None:
    sock.sendall(b"POST /api/v1/topics HTTP/1.1\r\n" + HOST + b'content-length: 27\r\n\r\n{"id')


def close_mid_head(sock: socket.socket) -> None:
    sock.sendall(b"GET /api/v1/vers")


def garbage(sock: socket.socket) -> None:
    sock.sendall(b"\x00\xff GARBAGE \r\n\r\n")
    assert read_some(sock).startswith(b"HTTP/1.1 400 ")


def bad_chunk(sock: socket.socket) -> None:
    sock.sendall(
        b"POST /api/v1/topics HTTP/1.1\r\n" + HOST + b"transfer-encoding: chunked\r\n\r\nzz\r\n"
    )
    assert read_some(sock).startswith(b"HTTP/1.1 400 ")


def wrong_version(sock: socket.socket) -> None:
    sock.sendall(b"GET /api/v1/version HTTP/9.9\r\n" + HOST + b"\r\n")
    assert read_some(sock).startswith(b"HTTP/1.1 505 ")


def reset_after_a_streaming_request(sock: socket.socket) -> None:
    sock.sendall(b"GET /api/v1/log HTTP/1.1\r\n" + HOST + b"\r\n")
    assert read_some(sock).startswith(b"HTTP/1.1 200 ")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset


ABUSES = [
    close_after_404_with_the_body_unsent,
    close_right_after_the_head,
    close_mid_body,
    close_mid_head,
    garbage,
    bad_chunk,
    wrong_version,
    reset_after_a_streaming_request,
]


@pytest.mark.timeout(240)
def test_a_thousand_aborted_and_garbled_requests_leave_the_hub_answering(
    hub: HubProcess, client: HubClient
) -> None:
    assert hub.process is not None
    pid = hub.process.pid
    for number in range(1000):
        with raw_connection(hub) as sock:
            ABUSES[number % len(ABUSES)](sock)
        if number % 100 == 99:
            assert client.version()["service"] == "si", f"after {number + 1} requests"
    assert hub.process.poll() is None, hub.log()
    assert hub.process.pid == pid
    assert client.version()["service"] == "si"
    assert "Traceback" not in hub.log()


def test_json_nested_a_hundred_thousand_deep_is_a_400(hub: HubProcess) -> None:
    with hub_http(hub) as http:
        reply = http.post(
            "/topics",
            content=b"[" * 100_000 + b"]" * 100_000,
            headers={"content-type": "application/json"},
        )
    assert reply.status_code == 400
    assert reply.json() == {"error": "Could not parse content: the JSON nests too deeply"}
    assert "Traceback" not in hub.log()


PRINTS = """
async def run(context, input):
    print("hello")
    print("world")
    context.logger.info("said hello")
    return None
"""


@pytest.mark.parametrize("stream", ["stdout", "log"])
def test_file_streams_refuse_offsets_outside_the_file_and_negative_tails(
    hub: HubProcess, client: HubClient, stream: str
) -> None:
    sequence = client.send_sequence(python_package(PRINTS))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    path = f"/instance/{instance}/{stream}"
    with hub_http(hub) as http:
        wait_for(lambda: http.get(path).content.count(b"\n") >= (2 if stream == "stdout" else 1))
        whole = http.get(path).content
        end = len(whole)
        for offset in ("-1", str(end + 1), "99999999999"):
            reply = http.get(path, headers={"x-si-offset": offset})
            assert reply.status_code == 400, (offset, reply.text)
            assert reply.json() == {"error": f"x-si-offset must be a byte offset from 0 to {end}"}
        reply = http.get(path, params={"tail": "-1"})
        assert reply.status_code == 400
        assert reply.json() == {"error": "tail must be a number of lines, 0 or more"}
        at_end = http.get(path, headers={"x-si-offset": str(end)})
        assert at_end.status_code == 200
        assert at_end.headers["x-si-offset"] == str(end)
        assert at_end.content == b""
        assert http.get(path, params={"tail": "0"}).content == b""
        assert http.get(path, headers={"x-si-offset": "0"}).content == whole


def test_a_json_body_over_the_limit_is_a_413_and_the_hub_reads_no_further(hub: HubProcess) -> None:
    with raw_connection(hub) as sock:
        size = 64 << 20  # far more than the hub takes; it must answer without reading it all
        sock.sendall(b"POST /api/v1/topics HTTP/1.1\r\n" + HOST)
        sock.sendall(b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % size)
        sock.sendall(b" " * (2 << 20))
        reply = read_some(sock)
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    assert b'{"error":"request body over 1048576 bytes"}' in reply
