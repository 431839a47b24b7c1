"""The hub over TCP: tokens on every route, read-only tokens, limits, TLS, clear refusals."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from si.client import HubClient, HubError
from si.daemon.api import Api
from si.daemon.tokens import Scope, TokenStore
from si.testing import HubProcess, python_package, wait_for
from tests.netutil import free_port, make_certificates

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

ECHO = """
async def run(context, input):
    async for chunk in input:
        yield chunk
"""


class TcpHub:
    """A hub serving TCP on a free port, with one token of each kind."""

    def __init__(self, home: Path, *args: str) -> None:
        self.port = free_port()
        self.process = HubProcess(home, "--port", str(self.port), *args).start()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        try:
            self.admin = (home / "admin.token").read_text().strip()
            store = TokenStore(home)
            self.reader, _ = store.create("reader", Scope.READ)
            self.revoked, _ = store.create("gone", Scope.ADMIN)
            store.revoke("gone")
        except BaseException:
            self.process.close()
            raise

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
def tcp(home: Path) -> Iterator[TcpHub]:
    hub = TcpHub(home)
    try:
        yield hub
    finally:
        hub.process.close()


def _placeholder(match: re.Match[str]) -> str:
    return "stdout" if match[1] == "stream" else "nope"


def every_route() -> list[tuple[str, str]]:
    """(method, path) for every route of the API, with ids no instance or sequence has."""
    api = Api(cast(Any, None))
    found = []
    for method, pattern, _ in api.routes:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", _placeholder, pattern.pattern)
        path = path.replace("\\", "").removesuffix("/?")
        if path.startswith("/api/v1"):
            found.append((method, path.removeprefix("/api/v1")))
    return found


ROUTES = every_route()


def status_of(client: httpx.Client, method: str, path: str) -> int:
    """The status a request gets; the body (which may be an endless stream) is not read."""
    body = b"" if method in ("POST", "PUT", "DELETE") else None
    with client.stream(method, path, content=body) as reply:
        return reply.status_code


@pytest.fixture(scope="module")
def shared_tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpHub]:
    """One hub for the route matrix (each case only reads or fails on unknown ids)."""
    hub = TcpHub(tmp_path_factory.mktemp("routes") / "home")
    try:
        yield hub
    finally:
        hub.process.close()


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_asks_for_a_token_and_honours_its_scope(
    shared_tcp: TcpHub, method: str, path: str
) -> None:
    tcp = shared_tcp
    with tcp.http() as anonymous:
        reply = anonymous.request(method, path)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert "token is required" in reply.json()["error"]
    with tcp.http("sit_made-up") as forged:
        assert status_of(forged, method, path) == 401
    with tcp.http(tcp.revoked) as revoked:
        assert status_of(revoked, method, path) == 403
    with tcp.http(tcp.reader) as reader:
        status = status_of(reader, method, path)
        if method == "GET":
            assert status not in (401, 403)
        else:
            assert status == 403
    with tcp.http(tcp.admin) as admin:
        assert status_of(admin, method, path) not in (401, 403, 429)


def test_the_unix_socket_needs_no_token(tcp: TcpHub) -> None:
    client = HubClient(tcp.process.address)
    assert client.list_instances() == []


def test_an_admin_token_runs_a_sequence_and_a_read_only_one_only_watches(tcp: TcpHub) -> None:
    admin = HubClient(tcp.url, token=tcp.admin)
    sequence = admin.send_sequence(python_package(ECHO))["id"]
    instance = admin.start_sequence(sequence, {})["id"]
    admin.send_input(instance, b"hello\n", "text/plain", end=True)
    reader = HubClient(tcp.url, token=tcp.reader)
    assert b"".join(reader.instance_stream(instance, "output")) == b"hello\n"
    assert [i["id"] for i in reader.list_instances()] == [instance]
    with pytest.raises(HubError) as refused:
        reader.kill_instance(instance)
    assert refused.value.status == 403
    assert "may only read" in str(refused.value)


def test_every_change_leaves_an_audit_line_naming_the_token(tcp: TcpHub) -> None:
    admin = HubClient(tcp.url, token=tcp.admin)
    sequence = admin.send_sequence(python_package(ECHO))["id"]
    with tcp.http(tcp.reader) as reader:
        assert reader.delete(f"/sequence/{sequence}").status_code == 403
    log = wait_for(lambda: "DELETE" in (text := tcp.process.log()) and text)
    assert re.search(r"audit: admin from 127\.0\.0\.1 POST /api/v1/sequence -> 200", log)
    assert re.search(rf"audit: - from 127\.0\.0\.1 DELETE /api/v1/sequence/{sequence} -> 403", log)
    # GET /audit: STH's records, each naming the token (an endless stream: read until found).
    stream = admin.audit(follow=False)
    seen = b""
    for chunk in stream:
        seen += chunk
        tokens = {json.loads(line).get("token") for line in seen.splitlines() if line.strip()}
        if "admin" in tokens:
            break
    stream.close()  # type: ignore[attr-defined]
    assert "admin" in tokens


def test_a_token_made_by_the_cli_counts_at_once_and_a_revoke_too(tcp: TcpHub) -> None:
    store = TokenStore(tcp.process.home)
    token, _ = store.create("late")
    assert HubClient(tcp.url, token=token).list_instances() == []
    store.revoke("late")
    with pytest.raises(HubError) as refused:
        HubClient(tcp.url, token=token).list_instances()
    assert refused.value.status == 403


def test_a_token_over_its_rate_gets_429_with_retry_after(home: Path) -> None:
    hub = TcpHub(home, "--token-rate", "5")
    try:
        with hub.http(hub.admin) as admin:
            statuses = [admin.get("/version") for _ in range(30)]
        limited = [reply for reply in statuses if reply.status_code == 429]
        assert 10 <= 30 - len(limited) <= 12  # a burst of twice the rate, then the rate
        assert int(limited[0].headers["retry-after"]) >= 1
        # Another token has a budget of its own.
        with hub.http(hub.reader) as reader:
            assert reader.get("/version").status_code == 200
    finally:
        hub.process.close()


def test_connections_past_the_limit_get_503(home: Path) -> None:
    hub = TcpHub(home, "--max-connections", "2")
    try:
        held = [socket.create_connection(("127.0.0.1", hub.port)) for _ in range(2)]
        try:
            with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as third:
                answer = third.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503")
        finally:
            for connection in held:
                connection.close()
        # Once they close, connections are served again.
        with hub.http(hub.admin) as admin:
            wait_for(lambda: admin.get("/version").status_code == 200)
    finally:
        hub.process.close()


def test_insecure_no_auth_serves_loopback_without_tokens(home: Path) -> None:
    port = free_port()
    hub = HubProcess(home, "--port", str(port), "--insecure-no-auth").start()
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/instances", timeout=10)
        assert reply.status_code == 200
        assert not (home / "admin.token").exists()
    finally:
        hub.close()


def test_insecure_no_auth_is_refused_off_loopback(home: Path) -> None:
    hub = HubProcess(home, "--port", str(free_port()), "--host", "0.0.0.0", "--insecure-no-auth")
    with pytest.raises(RuntimeError, match="allowed only on a loopback address"):
        hub.start()
    hub.close()


# -- TLS ------------------------------------------------------------------------------------


def test_tls_round_trip_and_clear_lines_for_the_wrong_scheme(home: Path, tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    hub = TcpHub(home, "--tls-cert", str(cert), "--tls-key", str(key))
    https = f"https://127.0.0.1:{hub.port}/api/v1"
    try:
        client = HubClient(https, token=hub.admin, ca=str(ca))
        sequence = client.send_sequence(python_package(ECHO))["id"]
        assert [s["id"] for s in client.list_sequences()] == [sequence]

        with pytest.raises(HubError, match="certificate failed verification"):
            HubClient(https, token=hub.admin).list_sequences()  # the system store lacks our CA
        with pytest.raises(HubError, match="if it serves TLS, use https://"):
            HubClient(hub.url, token=hub.admin).list_sequences()
    finally:
        hub.process.close()
    plain = TcpHub(home.parent / "plain-home")
    try:
        with pytest.raises(HubError, match="does not speak TLS: use http://"):
            HubClient(f"https://127.0.0.1:{plain.port}", token=plain.admin, ca=str(ca)).version()
    finally:
        plain.process.close()
