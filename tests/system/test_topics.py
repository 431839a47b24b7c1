"""Topics through a real hub: HTTP and instance producers and consumers, bounds, resumption."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, python_package, wait_for
from tests.system.conftest import hub_http

pytestmark = pytest.mark.system

PRODUCER = """
provides = {"provides": "numbers", "contentType": "application/x-ndjson"}

def run(context, input, count):
    return ({"n": n} for n in range(int(count)))
"""

CONSUMER = """
requires = {"requires": "numbers", "contentType": "application/x-ndjson"}

async def run(context, input):
    async for message in input:
        yield message["n"] * 10
"""


def take_lines(stream: Iterator[bytes], count: int) -> list[bytes]:
    buffer = b""
    for chunk in stream:
        buffer += chunk
        if buffer.count(b"\n") >= count:
            break
    return buffer.split(b"\n")[:count]


def test_instance_to_topic_to_instance(client: HubClient) -> None:
    consumer = client.start_sequence(client.send_sequence(python_package(CONSUMER))["id"], {})["id"]
    client.start_sequence(client.send_sequence(python_package(PRODUCER))["id"], {"args": ["50"]})
    lines = take_lines(client.stream(f"instance/{consumer}/output"), 50)
    assert [int(line) for line in lines] == [n * 10 for n in range(50)]
    topics = {t["topic"]: t for t in client._request("GET", "topics")}
    assert topics["numbers"]["contentType"] == "application/x-ndjson"
    with pytest.raises(HubError, match="Input provided in other way"):
        client.send_input(consumer, iter([b"x\n"]), content_type="text/plain", end=False)


def test_http_producer_to_instance_and_instance_to_http_consumer(client: HubClient) -> None:
    consumer = client.start_sequence(client.send_sequence(python_package(CONSUMER))["id"], {})["id"]
    body = b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(10))
    client._request(
        "POST", "topic/numbers", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert [int(x) for x in take_lines(client.stream(f"instance/{consumer}/output"), 10)] == [
        n * 10 for n in range(10)
    ]


def test_http_consumer_of_an_instance_producer(client: HubClient) -> None:
    client.start_sequence(client.send_sequence(python_package(PRODUCER))["id"], {"args": ["20"]})
    lines = take_lines(client.topic_stream("numbers", "application/x-ndjson"), 20)
    assert [json.loads(line)["n"] for line in lines] == list(range(20))


def test_a_type_mismatch_is_415_naming_the_type(client: HubClient) -> None:
    client._request("POST", "topics", json={"id": "typed", "content-type": "text/plain"})
    with pytest.raises(HubError, match="Acceptable Content-Type for typed is text/plain") as error:
        client._request(
            "POST", "topic/typed", content=b"{}\n", headers={"content-type": "application/x-ndjson"}
        )
    assert error.value.status == 415


def test_topic_management(client: HubClient) -> None:
    created = client._request(
        "POST", "topics", json={"id": "managed", "content-type": "text/plain"}
    )
    assert created["id"] == "managed"
    assert created["contentType"] == "text/plain"
    with pytest.raises(HubError, match="already exist"):
        client._request("POST", "topics", json={"id": "managed", "content-type": "text/plain"})
    with pytest.raises(HubError, match="incorrect format"):
        client._request("POST", "topics", json={"id": "bad name!", "content-type": "text/plain"})
    assert client._request("DELETE", "topics/managed") == {"message": "Topic managed removed"}
    with pytest.raises(HubError) as missing:
        client._request("DELETE", "topics/managed")
    assert missing.value.status == 404


def test_a_consumer_that_disconnects_and_returns_loses_nothing(
    client: HubClient, hub: HubProcess
) -> None:
    total = 100_000
    blocks = [
        b"".join(f"{n}\n".encode() for n in range(start, start + 1000))
        for start in range(0, total, 1000)
    ]
    producer = threading.Thread(
        target=lambda: HubClient(hub.address)._request(
            "POST", "topic/count", content=iter(blocks), headers={"content-type": "text/plain"}
        ),
        daemon=True,
    )
    producer.start()
    received = bytearray()
    first: int | None = None
    with hub_http(hub) as http:
        for attempt in range(6):  # five disconnects, then read to the end
            headers = {"content-type": "text/plain"}
            if first is not None:
                headers["x-si-offset"] = str(first + len(received))
            want = total if attempt == 5 else (attempt + 1) * total // 6
            with http.stream("GET", "topic/count", headers=headers, timeout=30) as reply:
                start = int(reply.headers["x-si-offset"])
                if first is None:
                    first = start
                assert start == first + len(received)  # resumes exactly where it left
                for chunk in reply.iter_raw():
                    received += chunk
                    if received.count(b"\n") >= want:
                        break
    numbers = [int(n) for n in received.split()]
    assert numbers[:total] == list(range(total))
    producer.join(10)


def test_a_topic_nobody_reads_pauses_its_producer_and_keeps_the_hub_small(
    client: HubClient, hub: HubProcess
) -> None:
    assert hub.process is not None
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        block = b"x" * 65535 + b"\n"
        while sent < 1 << 30:
            sent += len(block)
            yield block

    def produce() -> None:
        try:
            HubClient(hub.address)._request(
                "POST", "topic/sink", content=endless(), headers={"content-type": "text/plain"}
            )
        except HubError:
            pass  # the hub goes away at the end of the test

    before = _rss_kib(hub.process.pid)
    threading.Thread(target=produce, daemon=True).start()
    wait_for(lambda: sent > 1 << 20)  # past the topic's bound: it has filled
    time.sleep(1.5)
    paused_at = sent
    time.sleep(1.0)
    assert sent == paused_at  # the upload is not read any further
    assert sent < 64 << 20  # socket buffers and the topic's bound, nowhere near 1 GiB
    assert _rss_kib(hub.process.pid) - before < 20 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_routes_of_readopted_instances_are_restored(client: HubClient, hub: HubProcess) -> None:
    consumer = client.start_sequence(client.send_sequence(python_package(CONSUMER))["id"], {})["id"]
    hub.crash()
    hub.start()
    client = HubClient(hub.address)
    wait_for(lambda: client.get_instance(consumer).get("connected"))
    assert client.get_instance(consumer)["requires"] == "numbers"
    client.start_sequence(client.send_sequence(python_package(PRODUCER))["id"], {"args": ["5"]})
    lines = take_lines(client.stream(f"instance/{consumer}/output"), 5)
    assert [int(line) for line in lines] == [0, 10, 20, 30, 40]


SLOW_PRODUCER = """
import asyncio

provides = {"provides": "ticks", "contentType": "application/x-ndjson"}

async def run(context, input, count):
    for n in range(int(count)):
        yield n
        await asyncio.sleep(0.003)
"""


def test_a_topic_consumer_resumes_across_a_hub_crash_without_gap_or_repeat(
    client: HubClient, hub: HubProcess
) -> None:
    total = 1500
    client.start_sequence(
        client.send_sequence(python_package(SLOW_PRODUCER))["id"], {"args": [str(total)]}
    )
    received = bytearray()
    first: int | None = None

    def read(until: int) -> None:
        nonlocal first
        try:
            with hub_http(hub) as http:
                headers = {"content-type": "application/x-ndjson"}
                if first is not None:
                    headers["x-si-offset"] = str(first + len(received))
                with http.stream("GET", "topic/ticks", headers=headers, timeout=30) as reply:
                    start = int(reply.headers["x-si-offset"])
                    if first is None:
                        first = start
                    assert start == first + len(received)
                    for chunk in reply.iter_raw():
                        received.extend(chunk)
                        if received.count(b"\n") >= until:
                            return
        except httpx.HTTPError:
            return  # the hub went away: resume below

    reader = threading.Thread(target=read, args=(total,), daemon=True)
    reader.start()
    wait_for(lambda: received.count(b"\n") >= 200)
    hub.crash()
    reader.join(10)
    hub.start()
    read(total)
    assert [int(n) for n in received.split()] == list(range(total))


PAUSING_PRODUCER = """
import asyncio

class Numbers:
    # declared on the returned stream: known only once run() returned
    provides = "pauses"
    contentType = "application/x-ndjson"

    def __init__(self):
        self.n = 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.n == 20:
            raise StopAsyncIteration
        if self.n == 10:
            await asyncio.sleep(1.5)  # the hub is killed meanwhile
        self.n += 1
        return self.n - 1

def run(context, input):
    return Numbers()
"""


def read_topic(hub: HubProcess, name: str, count: int, offset: int | None = None) -> list[bytes]:
    """The first ``count`` messages of topic ``name``, from byte ``offset`` when given."""
    headers = {"content-type": "application/x-ndjson"}
    if offset is not None:
        headers["x-si-offset"] = str(offset)
    with (
        hub_http(hub) as http,
        http.stream("GET", f"topic/{name}", headers=headers, timeout=30) as reply,
    ):
        assert reply.status_code == 200
        return take_lines(reply.iter_raw(), count)


def test_a_producer_that_ends_while_the_hub_is_down_still_feeds_its_topic(
    client: HubClient, hub: HubProcess
) -> None:
    sequence = client.send_sequence(python_package(PAUSING_PRODUCER))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    first = read_topic(hub, "pauses", 10)
    assert [int(n) for n in first] == list(range(10))
    hub.crash()
    directory = hub.home / "instances" / instance
    wait_for(lambda: (directory / "exit.json").exists(), timeout=15)
    hub.start()
    rest = read_topic(hub, "pauses", 10, offset=sum(len(line) + 1 for line in first))
    assert [int(n) for n in rest] == list(range(10, 20))


def test_consumers_fan_out_and_producers_interleave_at_message_boundaries(
    client: HubClient, hub: HubProcess
) -> None:
    client._request("POST", "topics", json={"id": "mixed", "content-type": "text/plain"})
    streams = [HubClient(hub.address).topic_stream("mixed", "text/plain") for _ in range(2)]
    results: list[list[bytes]] = [[], []]

    def consume(index: int) -> None:
        results[index] = take_lines(streams[index], 4000)

    readers = [threading.Thread(target=consume, args=(n,), daemon=True) for n in range(2)]
    for reader in readers:
        reader.start()
    time.sleep(0.3)

    def produce(tag: str) -> None:
        # Lines cut at awkward places: the topic must still never split a message.
        body = b"".join(f"{tag}-{n:05d}\n".encode() for n in range(2000))
        pieces = [body[i : i + 777] for i in range(0, len(body), 777)]
        HubClient(hub.address).send_topic("mixed", iter(pieces), "text/plain")

    producers = [threading.Thread(target=produce, args=(tag,)) for tag in "ab"]
    for producer in producers:
        producer.start()
    for thread in producers + readers:
        thread.join(30)
    for lines in results:
        assert sorted(lines) == sorted(f"{t}-{n:05d}".encode() for t in "ab" for n in range(2000))
        for tag in "ab":  # each producer's messages stay in its order
            own = [line for line in lines if line.startswith(tag.encode())]
            assert own == sorted(own)
    assert results[0] == results[1]  # fan-out: both consumers saw the same sequence


def test_a_topic_declared_on_the_returned_stream_is_routed(client: HubClient) -> None:
    source = """
import asyncio

class Numbers:
    provides = "runtime"
    content_type = "application/x-ndjson"

    def __aiter__(self):
        return self.numbers()

    async def numbers(self):
        for n in range(5):
            yield n
            await asyncio.sleep(0.05)

def run(context, input):
    return Numbers()
"""
    client.start_sequence(client.send_sequence(python_package(source))["id"], {})
    lines = take_lines(client.topic_stream("runtime", "application/x-ndjson"), 5)
    assert [int(line) for line in lines] == [0, 1, 2, 3, 4]


def _create_topics(client: HubClient, *names: str) -> None:
    for name in names:
        client._request("POST", "topics", json={"id": name, "content-type": "text/plain"})


def _topic_names(client: HubClient) -> set[str]:
    return {t["topic"] for t in client._request("GET", "topics")}


@pytest.mark.timeout(60)
def test_a_topics_file_with_a_bad_entry_keeps_the_others_and_says_which(
    client: HubClient, hub: HubProcess, home: Path
) -> None:
    _create_topics(client, "kept", "damaged", "also-kept")
    hub.stop()
    path = home / "topics.json"
    stored = json.loads(path.read_text())
    stored["topics"]["damaged"]["head"] = "not a number"
    stored["topics"]["also-kept"]["producers"] = {"i1": "x"}
    stored["topics"]["bad name!"] = {"contentType": "text/plain", "head": 0}
    path.write_text(json.dumps(stored))
    hub.start()
    client = HubClient(hub.address)
    assert _topic_names(client) == {"kept"}
    log = hub.log()
    warning = next(line for line in log.splitlines() if "do not parse" in line)
    assert str(path) in warning
    assert "'damaged'" in warning
    assert "'also-kept'" in warning
    assert "'bad name!'" in warning


@pytest.mark.timeout(60)
def test_an_unparsable_topics_file_is_kept_aside_and_the_hub_starts(
    client: HubClient, hub: HubProcess, home: Path
) -> None:
    _create_topics(client, "lost")
    hub.stop()
    path = home / "topics.json"
    damaged = path.read_bytes()[:-7]
    path.write_bytes(damaged)
    hub.start()
    client = HubClient(hub.address)
    assert _topic_names(client) == set()
    (aside,) = home.glob("topics.json.corrupt-*")
    assert aside.read_bytes() == damaged
    assert "kept as" in hub.log()
    assert str(aside) in hub.log()
    _create_topics(client, "fresh")
    assert json.loads(path.read_text())["topics"].keys() == {"fresh"}
    assert aside.read_bytes() == damaged
