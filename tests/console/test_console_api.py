"""What the console stands on, through a real hub: its files, the watch feed, a topic peek,
an instance's event stream, and `si hub console`'s proxy (one-time link, hub down and back)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from si.client import HubClient
from si.paths import connectable_unix_path
from si.testing import HubProcess, python_package, wait_for
from tests.console.conftest import COUNTING, ConsoleProcess
from tests.netutil import free_port

pytestmark = pytest.mark.system

IDLE = (
    "import asyncio\nasync def run(context, input):\n    await asyncio.sleep(3600)\n    yield 0\n"
)


def hub_http(hub: HubProcess) -> httpx.Client:
    target, dirfd = connectable_unix_path(hub.socket)
    assert dirfd is None  # the test home is short
    return httpx.Client(transport=httpx.HTTPTransport(uds=target), base_url="http://si")


def start(client: HubClient, source: str, *args: str) -> str:
    sequence = client.send_sequence(python_package(source))["id"]
    return str(client.start_sequence(sequence, {"args": list(args)})["id"])


def test_the_hub_serves_the_console_files_with_a_strict_policy(hub: HubProcess) -> None:
    with hub_http(hub) as http:
        for path in ("/", "/console", "/console/"):
            page = http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "console.js" in page.text
            policy = page.headers["content-security-policy"]
            assert "default-src 'self'" in policy  # nothing from anywhere else, no CDN
        script = http.get("/console/console.js")
        assert script.headers["content-type"].startswith("text/javascript")
        again = http.get("/console/console.js", headers={"if-none-match": script.headers["etag"]})
        assert again.status_code == 304
        for path in ("/console/../pyproject.toml", "/console/nothing.js", "/console/%2e%2e/x"):
            assert http.get(path).status_code == 404


def test_over_tcp_the_page_needs_no_token_and_the_api_does(tmp_path: Path) -> None:
    port = free_port()
    hub = HubProcess(tmp_path / "tcp", "--port", str(port)).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/console/").status_code == 200
        assert httpx.get(f"{base}/api/v1/watch").status_code == 401
        token = (hub.home / "admin.token").read_text().strip()
        with httpx.stream(
            "GET", f"{base}/api/v1/watch", headers={"authorization": f"Bearer {token}"}
        ) as feed:
            assert feed.status_code == 200
            line = next(feed.iter_lines())
        assert json.loads(line)["instances"] == []
    finally:
        hub.close()


def read_lines(response: httpx.Response, count: int) -> list[dict[str, object]]:
    lines = []
    for line in response.iter_lines():
        if line:
            lines.append(json.loads(line))
        if len(lines) == count:
            break
    return lines


def test_watch_pushes_the_whole_hub_at_most_once_a_second(
    hub: HubProcess, client: HubClient
) -> None:
    instance_id = start(client, IDLE)
    client.send_topic("news", b"a\n", "text/plain")
    with hub_http(hub) as http, http.stream("GET", "/api/v1/watch?interval=0.01") as feed:
        first, second = read_lines(feed, 2)
    assert float(str(second["at"])) - float(str(first["at"])) >= 0.9  # raised to 1 s
    rows = first["instances"]
    assert isinstance(rows, list)
    (row,) = rows
    assert row["id"] == instance_id
    assert row["status"] in ("starting", "running")
    for key in ("outputBytes", "inputBytes", "restarts", "cpuSeconds", "rssBytes", "pid"):
        assert key in row
    assert row["sequence"] == {"id": first["sequences"][0]["id"], "name": "test-seq"}  # type: ignore[index]
    topics = first["topics"]
    assert isinstance(topics, list)
    (topic,) = topics
    assert topic["id"] == "news"
    assert topic["depthBytes"] == 2  # nobody has read it yet
    with hub_http(hub) as http:
        assert http.get("/api/v1/watch?interval=soon").status_code == 400


def test_a_peek_shows_a_topic_s_messages_and_consumes_none(
    hub: HubProcess, client: HubClient
) -> None:
    client.send_topic("numbers", b"".join(b"%d\n" % n for n in range(100)), "text/plain")
    with hub_http(hub) as http:
        with http.stream("GET", "/api/v1/topics/numbers/peek?back=20") as peek:
            assert peek.status_code == 200
            seen = b""
            for chunk in peek.iter_bytes():
                seen += chunk
                if seen.endswith(b"99\n"):
                    break
        assert seen.split(b"\n")[0] != b""  # started at a whole line
        assert seen.endswith(b"97\n98\n99\n")
        assert len(seen) <= 20
        assert http.get("/api/v1/topics/nothing/peek").status_code == 404
    # A consumer still gets everything from the first message.
    got = b""
    for chunk in client.topic_stream("numbers", "text/plain"):
        got += chunk
        if got.endswith(b"99\n"):
            break
    assert got == b"".join(b"%d\n" % n for n in range(100))


EMITTER = """
import asyncio
async def run(context, input):
    context.on("ping", lambda message: context.emit("pong", message))
    context.emit("ready", {"n": 1})
    await asyncio.sleep(3600)
    yield 0
"""


def test_the_event_stream_carries_every_event_an_instance_emits(
    hub: HubProcess, client: HubClient
) -> None:
    instance_id = start(client, EMITTER)
    path = f"/api/v1/instance/{instance_id}/events"
    with hub_http(hub) as http:
        wait_for(lambda: client.get_instance(instance_id)["status"] == "running")
        # The last "ready" (or the wait for it): once it answers, the event board has it.
        assert http.get(f"/api/v1/instance/{instance_id}/event/ready").json() == {"n": 1}
        with http.stream("GET", path) as events:
            lines = events.iter_lines()
            assert json.loads(next(lines)) == {"eventName": "ready", "message": {"n": 1}}
            client.emit_event(instance_id, "ping", "hello")
            assert json.loads(next(lines)) == {"eventName": "pong", "message": "hello"}
        assert http.get("/api/v1/instance/nope/events").status_code == 404


@pytest.fixture
def browser_client(console: ConsoleProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console.base, follow_redirects=False) as http:
        yield http


def test_the_console_link_works_once_and_its_cookie_reaches_the_hub(
    console: ConsoleProcess, browser_client: httpx.Client
) -> None:
    assert browser_client.get("/api/v1/version").status_code == 401
    signed = browser_client.get(console.url)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/"
    assert browser_client.get("/api/v1/version").json()["service"] == "si"
    page = browser_client.get("/console/")
    assert "console.js" in page.text
    with httpx.Client() as stranger:
        spent = stranger.get(console.url, headers={"accept": "text/html"})
    assert spent.status_code == 403
    assert "already used" in spent.text
    assert spent.headers["content-type"].startswith("text/html")  # a page, never a blank one


def test_the_console_says_the_hub_is_down_and_works_again_when_it_is_back(
    hub: HubProcess, console: ConsoleProcess, browser_client: httpx.Client
) -> None:
    browser_client.get(console.url)
    hub.crash()
    down = browser_client.get("/api/v1/instances")
    assert down.status_code == 502
    assert "hub is not running" in down.json()["error"]
    hub.restart()
    assert browser_client.get("/api/v1/instances").json() == []
    assert console.process.poll() is None


def test_si_hub_console_without_a_hub_is_one_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "si", "--hub", str(tmp_path / "no.sock"), "hub", "console"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stdout == b""
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("Error: ")
    assert "hub" in line


def test_a_stream_through_the_console_follows_and_resumes_by_offset(
    hub: HubProcess, client: HubClient, console: ConsoleProcess, browser_client: httpx.Client
) -> None:
    browser_client.get(console.url)
    sequence = client.send_sequence(python_package(COUNTING))["id"]
    instance_id = client.start_sequence(sequence, {})["id"]
    got = b""
    path = f"/api/v1/instance/{instance_id}/output"
    with browser_client.stream("GET", path) as output:
        start = int(output.headers["x-si-offset"])
        for chunk in output.iter_bytes():
            got += chunk
            if got.count(b"\n") >= 5:
                break
    assert start == 0
    with browser_client.stream("GET", path, headers={"x-si-offset": str(len(got))}) as rest:
        assert int(rest.headers["x-si-offset"]) == len(got)
        more = b""
        for chunk in rest.iter_bytes():
            more += chunk
            if more.count(b"\n") >= 3:
                break
    numbers = [int(n) for n in (got + more).split()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
