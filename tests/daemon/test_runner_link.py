"""The hub's end of the link under trio's autojump clock: backoff, proof, replay. No processes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from si.daemon.runner_link import RETRY_FIRST, RETRY_MAX, RunnerLink
from si.protocol.frames import Channel
from si.protocol.link import DEFAULT_WINDOW, Link, WindowFull
from si.testing import FakeRunner

INSTANCE = "0123456789abcdef0123456789abcdef0123"
TOKEN = b"t" * 32


class Owner:
    """Stands in for the hub's Instance: records what the link reports."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.monitoring: list[Any] = []
        self.established = 0
        self.unreachable: str | None = None
        self.alive = True
        self.runner_link: RunnerLink | None = None
        self.expected_pid: int | None = None

    def check_peer(self, peer: dict[str, Any]) -> str | None:
        if self.expected_pid is not None and peer.get("pid") != self.expected_pid:
            return f"pid {peer.get('pid')} is not {self.expected_pid}"
        return None

    def on_established(self, peer: dict[str, Any], received: dict[int, int]) -> None:
        self.established += 1

    def on_output(self, data: bytes) -> None:
        self.output += data
        assert self.runner_link is not None
        self.runner_link.consume(Channel.OUTPUT, len(data))

    def on_output_end(self) -> None:
        pass

    def on_monitoring(self, message: Any) -> None:
        self.monitoring.append(message)

    def on_message(self, message: Any) -> None:
        pass

    def runner_alive(self) -> bool:
        return self.alive and self.unreachable is None

    def on_unreachable(self, reason: str) -> None:
        self.unreachable = reason


def hub_link(token: bytes = TOKEN, *, known: bool = True) -> Link:
    return Link.for_hub(INSTANCE, token, known=known)


async def refused() -> trio.abc.Stream:
    raise ConnectionRefusedError(111, "refused")


def expected_dials(seconds: float) -> int:
    """Dial times under the documented backoff: 0, then after 10, 20, 40 ... capped at 500 ms."""
    dials, now, delay = 0, 0.0, RETRY_FIRST
    while now < seconds:
        dials += 1
        now += delay
        delay = min(delay * 2, RETRY_MAX)
    return dials


async def test_redial_backoff_doubles_to_the_cap(autojump_clock: trio.testing.MockClock) -> None:
    owner = Owner()
    runner_link = RunnerLink(owner, hub_link(), "unused", connect=refused)
    with trio.move_on_after(2.0):
        await runner_link.run()
    # 0, .01, .03, .07, .15, .31, .63, 1.13, 1.63: nine dials in the first two seconds.
    assert runner_link.dials == expected_dials(2.0) == 9


async def test_an_unanswering_adopted_runner_is_given_up_after_the_proof_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    owner = Owner()
    runner_link = RunnerLink(
        owner, hub_link(known=False), "unused", connect=refused, prove_within=3.0
    )
    started = trio.current_time()
    await runner_link.run()
    assert owner.unreachable == "its socket did not answer with a valid handshake"
    assert 3.0 <= trio.current_time() - started < 3.0 + RETRY_MAX
    assert runner_link.dials == expected_dials(3.0)


async def test_a_runner_without_the_token_is_refused_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    owner = Owner()
    impostor = FakeRunner(INSTANCE, b"wrong-token" * 3)
    runner_link = RunnerLink(
        owner,
        hub_link(known=False),
        "unused",
        connect=impostor.connector(nursery),
        prove_within=3.0,
    )
    started = trio.current_time()
    await runner_link.run()
    assert owner.unreachable is not None
    assert "token" in owner.unreachable
    assert trio.current_time() - started < 0.1
    assert owner.established == 0


@pytest.mark.parametrize("prove_within", [3.0, None])
async def test_a_token_holder_that_is_not_the_watched_process_is_refused_for_good(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, prove_within: float | None
) -> None:
    owner = Owner()
    owner.expected_pid = 4242
    runner = FakeRunner(INSTANCE, TOKEN, pid=777)
    runner_link = RunnerLink(
        owner,
        hub_link(known=False),
        "unused",
        connect=runner.connector(nursery),
        prove_within=prove_within,
    )
    with trio.fail_after(1):
        await runner_link.run()
    assert owner.unreachable == "pid 777 is not 4242"
    assert owner.established == 0
    assert runner_link.dials == 1


async def test_output_cut_in_flight_is_replayed_exactly_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    owner = Owner()
    runner = FakeRunner(INSTANCE, TOKEN)
    runner_link = RunnerLink(owner, hub_link(), "unused", connect=runner.connector(nursery))
    owner.runner_link = runner_link
    nursery.start_soon(runner_link.run)
    sent = bytearray()
    for n in range(300):
        chunk = f"{n}\n".encode()
        sent += chunk
        await runner.send(Channel.OUTPUT, chunk)
        if n % 50 == 49:
            await runner.cut()  # whatever was in flight is lost with the connection
            await trio.sleep(1)  # the hub redials and the runner replays
    await trio.sleep(1)
    assert bytes(owner.output) == bytes(sent)
    # The first cut comes before the hub's first dial (nothing yields before it): 1 + 5 cuts.
    assert owner.established == runner.connections == 6
    assert not runner.link.outbound[Channel.OUTPUT].replay  # all acknowledged


async def test_control_messages_queued_while_cut_arrive_after_reconnect(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    owner = Owner()
    runner = FakeRunner(INSTANCE, TOKEN)
    runner_link = RunnerLink(owner, hub_link(), "unused", connect=runner.connector(nursery))
    owner.runner_link = runner_link
    nursery.start_soon(runner_link.run)
    await trio.sleep(0.1)
    await runner.cut()
    runner_link.send_json(Channel.CONTROL, [4001, {"timeout": 1}])
    await trio.sleep(1)
    assert bytes(runner.received[Channel.CONTROL]) == b'[4001,{"timeout":1}]'
    assert runner.connections == 2


@pytest.mark.parametrize("chunks", [1, 7])
async def test_input_waits_for_the_window(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, chunks: int
) -> None:
    owner = Owner()
    runner = FakeRunner(INSTANCE, TOKEN)
    runner_link = RunnerLink(owner, hub_link(), "unused", connect=runner.connector(nursery))
    nursery.start_soon(runner_link.run)
    payload = bytes(range(256)) * (3 * DEFAULT_WINDOW // 256 // chunks)
    for _ in range(chunks):
        await runner_link.send(Channel.INPUT, payload)
    await runner_link.wait_flushed()
    await trio.sleep(1)
    assert bytes(runner.received[Channel.INPUT]) == payload * chunks


async def test_input_queued_before_the_runner_answers_is_flushed_only_once_it_is_connected(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # The replay buffer dies with the hub: "flushed" must mean in the runner's socket.
    owner = Owner()
    runner = FakeRunner(INSTANCE, TOKEN)
    connect = runner.connector(nursery)
    answering = trio.Event()

    async def late_connect() -> trio.abc.Stream:
        await answering.wait()
        stream: trio.abc.Stream = await connect()
        return stream

    runner_link = RunnerLink(owner, hub_link(), "unused", connect=late_connect)
    nursery.start_soon(runner_link.run)
    await runner_link.send(Channel.INPUT, b"early\n")
    flushed_at: list[float] = []

    async def flush() -> None:
        assert await runner_link.wait_flushed()
        flushed_at.append(trio.current_time())

    nursery.start_soon(flush)
    await trio.sleep(3)
    assert flushed_at == []  # still waiting: nothing is in a runner's hands
    answering.set()
    answering_at = trio.current_time()
    await trio.sleep(1)
    assert flushed_at
    assert flushed_at[0] >= answering_at
    assert bytes(runner.received[Channel.INPUT]) == b"early\n"


async def test_waiting_to_flush_ends_false_when_the_runner_is_gone(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    owner = Owner()
    runner_link = RunnerLink(owner, hub_link(), "unused", connect=refused)
    nursery.start_soon(runner_link.run)
    await runner_link.send(Channel.INPUT, b"never taken\n")
    result: list[bool] = []

    async def flush() -> None:
        result.append(await runner_link.wait_flushed())

    nursery.start_soon(flush)
    await trio.sleep(2)
    assert result == []
    owner.alive = False  # the runner exited; the link stops dialling
    await trio.sleep(1)
    assert result == [False]


def sent_until_refused(runner_link: RunnerLink, message: Any, allowance: int = 0) -> int:
    """How many copies of ``message`` are queued before one is refused (at most 100,000)."""
    for accepted in range(100_000):
        try:
            runner_link.send_json(Channel.CONTROL, message, allowance=allowance)
        except WindowFull:
            return accepted
    raise AssertionError("never refused")


def test_messages_past_the_window_are_refused_and_the_reserve_lets_the_hubs_own_through() -> None:
    # Not connected at all is the extreme of a runner that does not read: nothing is acked.
    link = hub_link()
    runner_link = RunnerLink(Owner(), link, "unused", connect=refused)
    event = [5001, {"eventName": "e", "message": "x" * 1000}]
    accepted = sent_until_refused(runner_link, event)
    control = link.outbound[Channel.CONTROL]
    assert DEFAULT_WINDOW - 1100 < control.in_flight() <= DEFAULT_WINDOW
    assert accepted == control.in_flight() // len(json.dumps(event, separators=(",", ":")))
    # The hub's own KILL still goes out, within its reserve, and the reserve is a bound too.
    assert sent_until_refused(runner_link, [4002, {}], allowance=64 * 1024) > 0
    assert control.in_flight() <= DEFAULT_WINDOW + 64 * 1024
