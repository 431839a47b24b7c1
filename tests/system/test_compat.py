"""STH compatibility: status codes and bodies pinned, STH's own Python client, STH-style sequences.

Every deliberate difference from STH is in docs/compat.md; what is pinned here is what STH's
clients rely on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from si.client import HubClient
from si.testing import HubProcess, make_package, python_package, wait_for
from tests.netutil import free_port
from tests.system.conftest import hub_http

pytestmark = pytest.mark.system

PASSTHROUGH = "def run(context, input, *args):\n    return input\n"
FOREVER = """
import asyncio

async def run(context, input):
    while True:
        await asyncio.sleep(1)
"""


@pytest.fixture
def http(hub: HubProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client on the hub's socket, for requests the HubClient does not make."""
    with hub_http(hub) as client:
        yield client


def test_sth_status_codes_and_bodies(http: httpx.Client) -> None:
    unknown = "a" * 36
    version = http.get("/version").json()
    assert version["apiVersion"] == "v1"
    assert set(version) == {"service", "apiVersion", "version", "build"}

    reply = http.get("/no-such-endpoint")
    assert (reply.status_code, reply.content) == (404, b"")
    assert http.get(f"/sequence/{unknown}").json() == {"error": f"Sequence {unknown} not found"}
    reply = http.delete(f"/sequence/{unknown}")
    assert reply.status_code == 404
    assert reply.json() == {"error": f"The sequence {unknown} does not exist."}
    assert http.post(f"/sequence/{unknown}/start", json={}).status_code == 404
    reply = http.get(f"/instance/{unknown}")
    assert (reply.status_code, reply.json()) == (404, {"error": f"Instance {unknown} not found"})
    assert http.get(f"/instance/{unknown}/output").status_code == 404

    reply = http.post("/sequence", content=b"not a package")
    assert reply.status_code == 422
    assert "error" in reply.json()

    package = python_package(FOREVER)
    sequence = http.post("/sequence", content=package).json()["id"]
    assert http.post(f"/sequence/{sequence}/start", json={"instanceId": "short"}).status_code == 422
    started = http.post(f"/sequence/{sequence}/start", content=b"null")  # STH's Python client
    assert started.status_code == 200
    body = started.json()
    instance = body["id"]
    assert body == {"message": f"Sequence {instance} starting", "id": instance}
    duplicate = http.post(f"/sequence/{sequence}/start", json={"instanceId": instance})
    assert (duplicate.status_code, duplicate.json()) == (
        409,
        {"error": "Instance with a given ID already exists"},
    )
    assert http.get(f"/sequence/{sequence}/instances").json() == [instance]

    no_type = http.post(f"/instance/{instance}/input", content=b"x", headers={"content-type": ""})
    assert no_type.status_code == 406
    assert no_type.json() == {"error": "Content-Type must be defined"}
    bad_stop = http.post(f"/instance/{instance}/_stop", json={"timeout": "soon"})
    assert (bad_stop.status_code, bad_stop.json()) == (400, {"error": "Invalid timeout format"})
    bad_event = http.post(f"/instance/{instance}/_event", json=[5001, {"message": 1}])
    assert (bad_event.status_code, bad_event.json()) == (
        400,
        {"error": "Invalid format, eventName missing."},
    )
    assert (
        http.get(f"/instance/{instance}/output", headers={"accept": "text/html"}).status_code == 415
    )

    in_use = http.delete(f"/sequence/{sequence}")
    assert (in_use.status_code, in_use.json()) == (409, {"error": "Can't remove- Sequence in use"})
    killed = http.post(f"/instance/{instance}/_kill", json={})
    assert killed.status_code == 202
    assert killed.json()["id"] == instance
    wait_for(lambda: http.get(f"/instance/{instance}").json()["status"] == "completed")
    again = http.post(f"/instance/{instance}/_kill", json={})
    assert (again.status_code, again.json()) == (400, {"error": "Instance not running"})

    options = http.options("/sequences")
    assert options.status_code == 200
    assert options.headers["access-control-allow-origin"] == "*"
    forced = http.delete(f"/sequence/{sequence}", headers={"x-seq-kill-inst": "true"})
    assert (forced.status_code, forced.json()) == (200, {"id": sequence})


def test_a_running_instance_is_force_removed_with_its_sequence(http: httpx.Client) -> None:
    sequence = http.post("/sequence", content=python_package(FOREVER)).json()["id"]
    instance = http.post(f"/sequence/{sequence}/start", json={}).json()["id"]
    forced = http.delete(f"/sequence/{sequence}", headers={"x-seq-kill-inst": "true"})
    assert forced.status_code == 200
    assert http.get("/sequences").json() == []
    # Killed with removeImmediately, as STH does: the instance is gone with its sequence.
    wait_for(lambda: http.get(f"/instance/{instance}").status_code == 404)


def test_sths_python_client_works_unchanged(home: Path) -> None:
    host_client = pytest.importorskip("client.host_client")
    port = free_port()
    hub = HubProcess(home, "--port", str(port)).start()
    # STH's client sends a token the way its own CLI does: as a default header of every call.
    base = pytest.importorskip("client.host_client").BaseClient
    token = (home / "admin.token").read_text().strip()
    base.setDefaultHeaders({"Authorization": f"Bearer {token}"})
    try:

        async def session() -> dict[str, Any]:
            host = host_client.HostClient(f"http://127.0.0.1:{port}/api/v1")
            load = await host.get_load_check()
            sequence = await host.send_sequence(python_package(PASSTHROUGH))
            info = await sequence.get_info()
            instance = await sequence.start()
            await instance.send_input(b"hey\n")
            output = await host._get_stream(f"instance/{instance.id}/output").__anext__()
            details = await instance.get_info()
            await instance.kill()
            return {
                "load": load,
                "info": info,
                "instance": instance.id,
                "output": output,
                "details": details,
                "sequences": await host.list_sequences(),
                "instances": await host.list_instances(),
                "sequence": sequence.id,
            }

        result = asyncio.run(session())
        assert "currentLoad" in result["load"]
        assert result["info"]["id"] == result["sequence"]
        assert result["details"]["id"] == result["instance"]
        assert result["output"].strip() == "hey"
        assert [s["id"] for s in result["sequences"]] == [result["sequence"]]
        assert [i["id"] for i in result["instances"]] == [result["instance"]]
        client = HubClient(hub.address)
        wait_for(lambda: client.get_instance(result["instance"])["status"] == "completed")

        async def delete() -> object:
            host = host_client.HostClient(f"http://127.0.0.1:{port}/api/v1")
            return await host.delete_sequence(result["sequence"])

        assert asyncio.run(delete()) == {"id": result["sequence"]}

        base.setDefaultHeaders({})  # and without it, the hub says what is missing
        refused = asyncio.run(
            host_client.HostClient(f"http://127.0.0.1:{port}/api/v1").get_version()
        )
        assert "token is required" in refused["error"]
    finally:
        base.setDefaultHeaders({})
        hub.close()


def test_a_sequence_written_for_scramjet_framework_gets_a_scramjet_stream(
    client: HubClient,
) -> None:
    scramjet = pytest.importorskip("scramjet.streams")
    framework = Path(scramjet.__file__).parent
    source = (
        "from scramjet.streams import Stream\n\n"
        "def run(context, input):\n"
        "    assert isinstance(input, Stream)\n"
        "    return input.map(lambda line: line.upper())\n"
    )
    files: dict[str, str | bytes] = {"index.py": source}
    for path in framework.rglob("*.py"):
        files[f"__pypackages__/scramjet/{path.relative_to(framework)}"] = path.read_bytes()
    package = make_package(
        files, {"name": "upper", "main": "index.py", "engines": {"python3": "3"}}
    )
    sequence = client.send_sequence(package)["id"]
    instance = client.start_sequence(sequence, {})["id"]
    client.send_input(instance, iter([b"hello\n", b"world\n"]), content_type="text/plain", end=True)
    output = b"".join(client.stream(f"instance/{instance}/output", follow=False))
    assert output == b"HELLO\nWORLD\n"


def test_stdin_reaches_sys_stdin(client: HubClient, http: httpx.Client) -> None:
    source = (
        "import sys\n\n"
        "async def run(context, input):\n"
        "    async for line in sys.stdin:\n"
        "        yield line.upper()\n"
    )
    sequence = client.send_sequence(python_package(source))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    reply = http.post(f"/instance/{instance}/stdin", content=b"one\ntwo\n")
    assert reply.status_code == 200
    output = b"".join(client.stream(f"instance/{instance}/output", follow=False))
    assert output == b"ONE\nTWO\n"


def test_inout_feeds_input_and_answers_with_output(client: HubClient, http: httpx.Client) -> None:
    sequence = client.send_sequence(python_package(PASSTHROUGH))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    lines = [f"{n}\n".encode() for n in range(100)]
    received = bytearray()
    with http.stream(
        "POST",
        f"/instance/{instance}/inout",
        content=iter(lines),
        headers={"content-type": "text/plain"},
    ) as reply:
        assert reply.status_code == 200
        for chunk in reply.iter_raw():
            received += chunk
            if received.count(b"\n") >= 100:
                break
    assert bytes(received) == b"".join(lines)


def test_hub_log_and_audit_replay_history(client: HubClient, http: httpx.Client) -> None:
    sequence = client.send_sequence(python_package(FOREVER))["id"]
    client.start_sequence(sequence, {})

    def first_lines(path: str, count: int) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = []
        with http.stream("GET", path) as reply:
            buffer = b""
            for chunk in reply.iter_raw():
                buffer += chunk
                while b"\n" in buffer and len(entries) < count:
                    line, buffer = buffer.split(b"\n", 1)
                    entries.append(json.loads(line))
                if len(entries) >= count:
                    return entries
        return entries

    assert any("hub ready" in str(entry["msg"]) for entry in first_lines("/log", 3))
    audit = first_lines("/audit", 4)
    codes = [(entry["opState"], entry["opCode"]) for entry in audit]
    assert ("START", 10100) in codes  # POST /sequence
    assert ("START", 10117) in codes  # POST /sequence/:id/start
