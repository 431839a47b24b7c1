"""Package uploads are checked while they stream: a bad one is answered at once and read no
further, and leaves nothing behind. Real hub, real HTTP over its Unix socket."""

from __future__ import annotations

import gzip
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.paths import connectable_unix_path
from si.testing import HubProcess, python_package
from tests.cli.conftest import one_error_line
from tests.system.conftest import Cli

pytestmark = pytest.mark.system

LIMIT = 64 * 1024
HEAD = (
    b"POST /api/v1/sequence HTTP/1.1\r\nHost: si\r\n"
    b"Content-Type: application/octet-stream\r\n%s\r\n"
)


@pytest.fixture
def hub(home: Path) -> Iterator[HubProcess]:
    process = HubProcess(home, "--max-package-size", "64K").start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def raw(hub: HubProcess) -> Iterator[socket.socket]:
    target, dirfd = connectable_unix_path(hub.socket)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)  # an answer that waits for the whole body never comes: fail
        sock.connect(target)
        yield sock
    finally:
        sock.close()
        if dirfd is not None:
            os.close(dirfd)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def leftovers(hub: HubProcess) -> list[str]:
    return sorted(p.name for p in (hub.home / "sequences").iterdir())


@pytest.mark.timeout(30)
def test_a_body_that_is_not_gzip_is_refused_at_its_first_kilobyte(
    hub: HubProcess, raw: socket.socket
) -> None:
    # 1 KiB of the (under the limit) length announced.
    raw.sendall(HEAD % f"Content-Length: {LIMIT - 1}\r\n".encode() + b"x" * 1024)
    status, headers, body = read_answer(raw)
    assert status == 422
    assert b"gzip" in body
    assert headers["connection"] == "close"
    raw.sendall(b"x" * 1024)  # the client could still send more: the hub did not wait for it
    assert leftovers(hub) == []


@pytest.mark.timeout(30)
def test_an_announced_length_over_the_limit_is_refused_before_the_body(
    hub: HubProcess, raw: socket.socket
) -> None:
    raw.sendall(HEAD % f"Content-Length: {LIMIT + 1}\r\n".encode())
    status, _headers, body = read_answer(raw)
    assert status == 413
    assert b"--max-package-size" in body
    assert leftovers(hub) == []


@pytest.mark.timeout(30)
def test_a_streamed_body_over_the_limit_is_cut_short(hub: HubProcess) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        first = gzip.compress(b"")[:2]  # a gzip start: only the size is wrong
        for _ in range(4096):  # 64 MiB in all, chunked (no length announced)
            chunk = first + os.urandom(16 * 1024 - 2) if sent == 0 else b"\0" * 16 * 1024
            sent += len(chunk)
            yield chunk

    with pytest.raises(HubError) as refused:
        HubClient(hub.address).send_sequence(chunks())
    assert refused.value.status == 413
    assert sent < 16 << 20, sent  # stopped near the limit, not at the end
    assert leftovers(hub) == []
    # The hub serves on; a good package still goes in.
    assert HubClient(hub.address).send_sequence(python_package("def run(c, i): pass\n"))["id"]


@pytest.mark.timeout(60)
def test_seq_send_of_a_non_package_prints_one_error_line(hub: HubProcess, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"not a package\n" * 1_000)
    session = tmp_path / "session"
    session.mkdir()
    message = one_error_line(Cli(hub.address, session).run("seq", "send", str(junk)))
    assert "gzip" in message
    big = tmp_path / "big.tar.gz"
    big.write_bytes(gzip.compress(os.urandom(2 * LIMIT)))
    message = one_error_line(Cli(hub.address, session).run("seq", "send", str(big)))
    assert "max-package-size" in message


@pytest.mark.timeout(30)
def test_an_update_keeps_the_id_and_its_record_names_it(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package("def run(c, i): pass\n"))["id"]
    replaced = client.update_sequence(sequence, python_package("def run(c, i): return i\n"))
    assert replaced == {"id": sequence}
    record = json.loads((hub.home / "sequences" / sequence / "sequence.json").read_bytes())
    assert record["id"] == sequence
    assert leftovers(hub) == [sequence]
