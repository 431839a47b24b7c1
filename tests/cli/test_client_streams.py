"""HubClient's resumable streams against a scripted server: connections dropped mid-body, a
hub restart, resumes that start earlier or later than asked, no offsets at all. A real hub never
does most of this on purpose; a client must survive it anyway."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from si.client import HubClient, HubError
from tests.cli.fakehub import FakeHub, OutputPlan

DATA = bytes(range(256)) * 4 + b"the end\n"


@pytest.fixture
def hub(fake_hub: FakeHub) -> FakeHub:
    return fake_hub


@pytest.fixture
def client(hub: FakeHub) -> Iterator[HubClient]:
    with HubClient(hub.address, follow_timeout=5) as hub_client:
        yield hub_client


def _output_hub(hub: FakeHub, plan: OutputPlan) -> str:
    instance_id = hub.add_instance(hub.add_sequence())
    hub.outputs[instance_id] = plan
    return instance_id


def test_stream_yields_the_body_as_sent(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA))
    assert b"".join(client.instance_stream(instance_id, "output")) == DATA
    request = hub.requests_to("GET", "/output")[0]
    assert request.headers["content-type"] == "application/octet-stream"
    assert "x-si-offset" not in request.headers


def test_stream_resumes_after_drops_without_repeating_bytes(
    hub: FakeHub, client: HubClient
) -> None:
    # Two drops mid-body; the hub resumes 5 bytes earlier than asked, which the client skips.
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[100, 333], rewind=5))
    assert b"".join(client.stream(f"instance/{instance_id}/output")) == DATA
    offsets = [r.headers.get("x-si-offset") for r in hub.requests_to("GET", "/output")]
    assert offsets == [None, "100", str(100 - 5 + 333)]


def test_stream_follows_a_hub_restart(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[500]))
    chunks = client.instance_stream(instance_id, "output")
    received = next(chunks)
    while len(received) < 500:
        received += next(chunks)
    hub.stop()
    hub.restart_after(0.4)
    received += b"".join(chunks)
    assert received == DATA
    assert hub.requests_to("GET", "/output")[-1].headers["x-si-offset"] == "500"


def test_stream_backoff_doubles_from_50ms_up_to_500ms(
    hub: FakeHub, client: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    delays: list[float] = []

    def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 7:
            hub.start()

    # si.client calls random.random() and time.sleep() through the modules.
    monkeypatch.setattr(random, "random", lambda: 0.0)
    monkeypatch.setattr(time, "sleep", fake_sleep)
    chunks = client.instance_stream(instance_id, "output")
    received = next(chunks)
    hub.stop()
    received += b"".join(chunks)
    assert received == DATA
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_stream_gives_up_after_the_follow_timeout(hub: FakeHub) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with HubClient(hub.address, follow_timeout=0.3) as client:
        chunks = client.instance_stream(instance_id, "output")
        next(chunks)
        hub.stop()
        began = time.monotonic()
        with pytest.raises(HubError, match=r"did not come back within 0.3 s"):
            b"".join(chunks)
        assert time.monotonic() - began < 2


def test_follow_timeout_comes_from_the_environment(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SI_FOLLOW_TIMEOUT", "0.2")
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with HubClient(hub.address) as client:
        chunks = client.instance_stream(instance_id, "output")
        next(chunks)
        hub.stop()
        with pytest.raises(HubError, match=r"within 0.2 s"):
            b"".join(chunks)


def test_stream_without_follow_raises_on_a_drop(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with pytest.raises(HubError, match="lost the connection"):
        b"".join(client.instance_stream(instance_id, "output", follow=False))
    assert len(hub.requests_to("GET", "/output")) == 1


def test_stream_of_an_unknown_instance_raises_404(hub: FakeHub, client: HubClient) -> None:
    with pytest.raises(HubError) as caught:
        list(client.instance_stream("nope", "output"))
    assert caught.value.status == 404
    assert str(caught.value) == "Instance nope not found"


def test_stream_refuses_to_skip_lost_bytes(hub: FakeHub, client: HubClient) -> None:
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    chunks = client.instance_stream(instance_id, "output")
    assert next(chunks)
    hub.outputs[instance_id].skip_ahead = 4  # the hub resumes 4 bytes later than asked
    with pytest.raises(HubError, match="no longer holds bytes 10-13"):
        b"".join(chunks)


def test_stream_without_offsets_is_not_resumed(hub: FakeHub, client: HubClient) -> None:
    # An STH hub sends no x-si-offset: resuming would repeat or lose bytes, so a drop is final.
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10], offsets=False))
    with pytest.raises(HubError, match="lost the connection"):
        b"".join(client.instance_stream(instance_id, "output"))
    assert len(hub.requests_to("GET", "/output")) == 1


def test_a_hub_that_answers_and_dies_in_a_loop_is_given_up_on(hub: FakeHub) -> None:
    # Every reconnect gets headers and then an immediate drop, with no byte: one long outage.
    drops: list[int | None] = [10, *[0] * 1000]
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=drops))
    with HubClient(hub.address, follow_timeout=0.5) as client:
        began = time.monotonic()
        with pytest.raises(HubError, match=r"did not come back within 0.5 s"):
            b"".join(client.instance_stream(instance_id, "output"))
        assert time.monotonic() - began < 3
    assert 3 <= len(hub.requests_to("GET", "/output")) < 50


def test_invalid_follow_timeout_is_a_clear_error(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SI_FOLLOW_TIMEOUT", "soon")
    instance_id = _output_hub(hub, OutputPlan(DATA, drops=[10]))
    with HubClient(hub.address) as client, pytest.raises(HubError, match="SI_FOLLOW_TIMEOUT"):
        b"".join(client.instance_stream(instance_id, "output"))
