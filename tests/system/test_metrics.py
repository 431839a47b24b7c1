"""GET /metrics from a real hub, read back with prometheus_client's own parser."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from si.client import HubClient
from si.paths import connectable_unix_path
from si.testing import HubProcess, python_package, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

ECHO = """
async def run(context, input):
    async for chunk in input:
        yield chunk
"""
DONE = """
async def run(context, input):
    yield "done\\n"
"""


@pytest.fixture
def http(hub: HubProcess) -> Iterator[httpx.Client]:
    """Plain HTTP on the hub's socket, from its root (Prometheus scrapes /metrics)."""
    target, dirfd = connectable_unix_path(hub.socket)  # the test home is deep on purpose
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=target), base_url="http://si") as c:
            yield c
    finally:
        if dirfd is not None:
            os.close(dirfd)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels); fails the test on text the parser refuses."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_instances_bytes_and_topics(
    hub: HubProcess, client: HubClient, http: httpx.Client
) -> None:
    echo = client.send_sequence(python_package(ECHO))["id"]
    running = client.start_sequence(echo, {})["id"]
    client.send_input(running, b"x" * 1000, "application/octet-stream", end=False)
    done_seq = client.send_sequence(python_package(DONE))["id"]
    done = client.start_sequence(done_seq, {})["id"]
    wait_for(lambda: client.get_instance(done)["status"] == "completed")
    client.create_topic("numbers", "text/plain")
    client.send_topic("numbers", b"1\n2\n3\n", "text/plain")

    labels = (("instance", running), ("sequence", echo))

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        reply = http.get("/api/v1/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        return samples(reply.text)

    # The echo has returned all its input once its output counts 1,000 bytes.
    found = wait_for(
        lambda: (f := scrape()).get(("si_instance_output_bytes_total", labels)) == 1000 and f
    )

    assert found[("si_instances", (("status", "running"),))] == 1
    assert found[("si_instances", (("status", "completed"),))] == 1
    assert found[("si_instances", (("status", "lost"),))] == 0
    assert found[("si_instance_input_bytes_total", labels)] >= 1000
    assert found[("si_instance_output_bytes_total", labels)] == 1000
    assert found[("si_instance_link_reconnects_total", labels)] == 0
    pid = client.get_instance(running)["pid"]
    with open(f"/proc/{pid}/statm") as statm:
        resident = int(statm.read().split()[1]) * 4096
    assert 0.5 * resident < found[("si_instance_rss_bytes", labels)] < 2 * resident
    # A warm spare that echoed 1,000 bytes may not have used one clock tick yet.
    assert found[("si_instance_cpu_seconds_total", labels)] >= 0
    # An ended instance has no runner to measure, but still its byte counts.
    measured = {dict(labels)["instance"] for name, labels in found if name.endswith("rss_bytes")}
    assert measured == {running}
    assert ("si_instance_output_bytes_total", (("instance", done), ("sequence", done_seq))) in found
    assert found[("si_topic_depth_bytes", (("topic", "numbers"),))] == 6
    assert found[("si_hub_uptime_seconds", ())] > 0


def test_metrics_are_also_where_prometheus_looks_and_survive_a_hub_restart(
    hub: HubProcess, client: HubClient, http: httpx.Client
) -> None:
    echo = client.send_sequence(python_package(ECHO))["id"]
    running = client.start_sequence(echo, {})["id"]
    hub.crash()
    hub.start()
    wait_for(lambda: client.get_instance(running).get("connected"))
    # Outside /api/v1 too: Prometheus' default path.
    found = samples(http.get("/metrics").text)
    labels = (("instance", running), ("sequence", echo))
    assert found[("si_instance_link_reconnects_total", labels)] == 0  # a new hub: its first dial
    assert found[("si_instances", (("status", "running"),))] == 1
