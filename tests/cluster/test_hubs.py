"""The hub registry (``si hub ls``), every hub's instances (``si inst ls --cluster``), shared
sequences (``si seq ls --cluster``) and placement (``si seq start --hub``), on real hubs joined
by a real 3-node NATS cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from si.client import HubClient, HubError
from si.testing import python_package, wait_for
from tests.cluster.conftest import MakeHub, json_out

pytestmark = pytest.mark.system

IDLE = "import asyncio\nasync def run(context, input):\n    await asyncio.sleep(60)\n"
HELLO = (
    "async def run(context, input):\n"
    "    async def lines():\n"
    "        yield 'hello from ' + str(context.config.get('where', '?')) + '\\n'\n"
    "    return lines()\n"
)
RunSi = Callable[..., Any]


def _names(hubs: list[dict[str, Any]]) -> list[str]:
    return [hub["name"] for hub in hubs]


def test_hub_ls_lists_every_hub_with_age_and_load_and_a_killed_hub_is_stale_within_10_s(
    make_hub: MakeHub, run_si: RunSi
) -> None:
    a, b = make_hub("a"), make_hub("b")
    with HubClient(a.address) as client:
        hubs = wait_for(
            lambda: _names(client.cluster_hubs()) == ["a", "b"] and client.cluster_hubs()
        )
    assert all(not hub["stale"] and hub["age"] < 4 for hub in hubs)
    assert all(hub["load"]["memFree"] > 0 and "currentLoad" in hub["load"] for hub in hubs)
    assert [hub["self"] for hub in hubs] == [True, False]
    listed = json_out(run_si(b, "hub", "ls"))
    assert _names(listed) == ["a", "b"]
    assert [hub["self"] for hub in listed] == [False, True]
    table = run_si(b, "--format", "pretty", "hub", "ls").stdout.decode()
    assert table.splitlines()[0].split()[:4] == ["HUB", "STATE", "AGE", "LOAD"]

    b.crash()
    killed = time.monotonic()
    with HubClient(a.address) as client:

        def b_stale() -> bool:
            return any(hub["name"] == "b" and hub["stale"] for hub in client.cluster_hubs())

        wait_for(b_stale, timeout=12, interval=0.2)
        assert time.monotonic() - killed < 10
        hubs = client.cluster_hubs()
    assert [(hub["name"], hub["stale"]) for hub in hubs] == [("a", False), ("b", True)]
    assert "stale" in run_si(a, "--format", "pretty", "hub", "ls").stdout.decode()


def test_inst_ls_cluster_lists_every_hubs_instances_with_their_hub(
    make_hub: MakeHub, run_si: RunSi
) -> None:
    a, b = make_hub("a"), make_hub("b")
    with HubClient(a.address) as on_a, HubClient(b.address) as on_b:
        wait_for(lambda: len(on_a.cluster_hubs()) == 2)
        here = on_a.start_sequence(on_a.send_sequence(python_package(IDLE))["id"], {})["id"]
        there = on_b.start_sequence(on_b.send_sequence(python_package(IDLE))["id"], {})["id"]
    listed = json_out(run_si(a, "inst", "ls", "--cluster"))
    assert sorted((i["hub"], i["id"]) for i in listed) == sorted([("a", here), ("b", there)])
    assert [i["id"] for i in json_out(run_si(b, "inst", "ls"))] == [there]  # b's own
    table = run_si(a, "--format", "pretty", "inst", "ls", "--cluster").stdout.decode()
    assert table.splitlines()[0].split()[:2] == ["HUB", "ID"]


def test_a_sequence_sent_to_one_hub_is_listed_by_all_and_starts_on_another(
    make_hub: MakeHub, run_si: RunSi
) -> None:
    a, b = make_hub("a"), make_hub("b")
    with HubClient(a.address) as on_a, HubClient(b.address) as on_b:
        sequence_id = on_a.send_sequence(python_package(HELLO, name="hello"))["id"]
        shared = json_out(run_si(b, "seq", "ls", "--cluster"))
        assert [(s["id"], s["name"], s["uploadedTo"], s["here"]) for s in shared] == [
            (sequence_id, "hello", "a", False)
        ]
        assert on_b.list_sequences() == []
        # STH's own start route on b: the package comes from the cluster's store.
        instance_id = on_b.start_sequence(sequence_id, {"appConfig": {"where": "b"}})["id"]
        output = b"".join(on_b.instance_stream(instance_id, "output"))
        assert output == b"hello from b\n"
        assert [s["id"] for s in on_b.list_sequences()] == [sequence_id]
        assert json_out(run_si(b, "seq", "ls", "--cluster"))[0]["here"] is True
        # Removed where it was sent: gone from the cluster's store, b keeps its copy.
        on_a.delete_sequence(sequence_id)
        assert on_b.cluster_sequences() == []
        assert [s["id"] for s in on_b.list_sequences()] == [sequence_id]
        with pytest.raises(HubError) as missing:
            on_a.start_sequence(sequence_id, {})
        assert missing.value.status == 404


def test_seq_start_hub_auto_spreads_starts_and_a_named_hub_gets_its_start(
    make_hub: MakeHub, run_si: RunSi
) -> None:
    a, b, c = make_hub("a"), make_hub("b"), make_hub("c")
    with HubClient(a.address) as on_a:
        wait_for(lambda: len(on_a.cluster_hubs()) == 3)
        sequence_id = on_a.send_sequence(python_package(IDLE))["id"]
        started = [
            json_out(run_si(a, "seq", "start", sequence_id, "--hub", "auto")) for _ in range(3)
        ]
        # Each start counts on the hub it went to until that hub's next heartbeat.
        assert sorted(s["hub"] for s in started) == ["a", "b", "c"]
        named = json_out(run_si(b, "seq", "start", sequence_id, "--hub", "c"))
        assert named["hub"] == "c"
        on_c = {i["id"]: i["hub"] for i in on_a.cluster_instances()}
        assert on_c[named["_id"]] == "c"
        # Over the API: POST /cluster/sequence/:id/start.
        reply = on_a.cluster_start(sequence_id, {"appConfig": {}}, "b")
        assert reply["hub"] == "b"
        with pytest.raises(HubError) as unknown:
            on_a.cluster_start(sequence_id, {}, "nowhere")
        assert unknown.value.status == 404
    c.crash()
    with HubClient(a.address) as on_a:
        wait_for(lambda: any(h["stale"] for h in on_a.cluster_hubs()), timeout=12)
        hubs = {
            json_out(run_si(a, "seq", "start", sequence_id, "--hub", "auto"))["hub"]
            for _ in range(4)
        }
        assert hubs <= {"a", "b"}
        failed = run_si(a, "seq", "start", sequence_id, "--hub", "c")
        assert failed.returncode != 0
        assert "stale" in failed.stderr.decode()


def test_a_replaced_package_replaces_the_clusters_copy(make_hub: MakeHub) -> None:
    a, b = make_hub("a"), make_hub("b")
    with HubClient(a.address) as on_a, HubClient(b.address) as on_b:
        sequence_id = on_a.send_sequence(python_package(HELLO, version="1.0.0"))["id"]
        on_a.update_sequence(sequence_id, python_package(HELLO, version="2.0.0"))
        # Put before the update is answered; a put that failed is retried within 10 s.
        wait_for(lambda: [s["version"] for s in on_b.cluster_sequences()] == ["2.0.0"], 15)
