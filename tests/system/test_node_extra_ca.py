"""NODE_EXTRA_CA_CERTS is read by a Node runner when TLS is first used, not at each boot, and a
sequence's https and fetch still trust the CAs it names."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.client import HubClient
from si.testing import HubProcess, make_package
from tests.netutil import make_certificates

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

FETCHER = """
const https = require('node:https');

function viaHttps(port) {
  return new Promise((resolve) => {
    https
      .get(`https://127.0.0.1:${port}/`, (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve(body));
      })
      .on('error', (error) => resolve(`error ${error.code}`));
  });
}

async function viaFetch(port) {
  try {
    return await (await fetch(`https://127.0.0.1:${port}/`)).text();
  } catch (error) {
    return `error ${(error.cause && error.cause.code) || error.message}`;
  }
}

module.exports = async function* (input, port) {
  yield `https: ${await viaHttps(port)}\\n`;
  yield `fetch: ${await viaFetch(port)}\\n`;
};
"""


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on loopback whose certificate only the test's CA signs."""
    ca, cert, key = make_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                    )
            except (ssl.SSLError, OSError):
                pass  # a client that refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, ca
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def run_fetcher(home: Path, port: int) -> list[str]:
    hub = HubProcess(home).start()
    try:
        client = HubClient(hub.address)
        package = make_package(
            {"index.js": FETCHER},
            {
                "name": "fetcher",
                "version": "1.0.0",
                "main": "index.js",
                "engines": {"node": ">=20"},
            },
        )
        sequence = client.send_sequence(package)["id"]
        instance = client.start_sequence(sequence, {"args": [port]})["id"]
        output = b"".join(client.instance_stream(instance, "output")).decode()
        return [json.loads(line) for line in output.splitlines()]  # strings go out as JSON
    finally:
        hub.close()


def test_a_sequence_trusts_the_extra_cas_without_node_parsing_them_at_boot(
    home: Path, tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca = tls_server
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(ca))
    assert run_fetcher(home, port) == ["https: hello\n", "fetch: hello\n"]


def test_without_the_extra_cas_the_server_is_not_trusted(
    home: Path, tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = tls_server
    monkeypatch.delenv("NODE_EXTRA_CA_CERTS", raising=False)
    via_https, via_fetch = run_fetcher(home, port)
    assert via_https.startswith("https: error ")
    assert via_fetch.startswith("fetch: error ")
