"""The link state machine, tested with bytes in and events out: no sockets, no time."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from si.protocol.frames import Channel, Frame, FrameDecoder, FrameKind, encode_frame
from si.protocol.link import (
    DEFAULT_WINDOW,
    PROTOCOL_VERSION,
    Data,
    Ended,
    Established,
    Event,
    Link,
    LinkError,
    Message,
    Outbound,
    Role,
    WindowOpened,
)

TOKEN = b"secret-token-from-runner.json"
INSTANCE = "6a1f4b8e-0c2d-4e5f-9a7b-1c2d3e4f5a6b"
HUB_SENDS = (Channel.STDIN, Channel.CONTROL, Channel.INPUT)
RUNNER_SENDS = (Channel.MONITORING, Channel.OUTPUT)
INPUT, OUTPUT, CONTROL, STDIN = Channel.INPUT, Channel.OUTPUT, Channel.CONTROL, Channel.STDIN


# -- helpers --------------------------------------------------------------------------------


def make_link(
    role: Role,
    *,
    window: int = DEFAULT_WINDOW,
    token: bytes = TOKEN,
    instance: str = INSTANCE,
    known: bool = True,
) -> Link:
    sends, receives = (HUB_SENDS, RUNNER_SENDS) if role == "hub" else (RUNNER_SENDS, HUB_SENDS)
    return Link(
        role,
        instance,
        token,
        {channel: window for channel in sends},
        {channel: window for channel in receives},
        known=known,
    )


def frames(data: bytes) -> list[Frame]:
    return FrameDecoder().feed(data)


class Wire:
    """Two links joined by an in-memory connection the test can cut.

    ``events[role]`` collects what each side's ``receive_data`` returned, ``sent[role]`` every
    frame each side put on the wire (delivered or not).
    """

    def __init__(self, hub: Link, runner: Link) -> None:
        self.links = {"hub": hub, "runner": runner}
        self.events: dict[str, list[Event]] = {"hub": [], "runner": []}
        self.sent: dict[str, list[Frame]] = {"hub": [], "runner": []}

    @property
    def hub(self) -> Link:
        return self.links["hub"]

    @property
    def runner(self) -> Link:
        return self.links["runner"]

    def connect(self, *, budget: int | None = None) -> bool:
        self.hub.connection_made()
        self.runner.connection_made()
        return self.pump(budget=budget)

    def pump(self, *, budget: int | None = None) -> bool:
        """Move bytes both ways until both sides are quiet; returns False if it cut.

        With ``budget``, at most that many bytes are delivered in all: the first write that
        does not fit is delivered only up to the budget, the rest is dropped and the
        connection is cut.
        """
        while True:
            quiet = True
            for source, target in (("hub", "runner"), ("runner", "hub")):
                data = self.links[source].data_to_send()
                if not data:
                    continue
                quiet = False
                self.sent[source] += frames(data)
                if budget is not None and len(data) > budget:
                    self.events[target] += self.links[target].receive_data(data[:budget])
                    self.cut()
                    return False
                if budget is not None:
                    budget -= len(data)
                self.events[target] += self.links[target].receive_data(data)
            if quiet:
                return True

    def cut(self) -> None:
        """The connection breaks: whatever is still queued is lost (the links drop it)."""
        for link in self.links.values():
            link.connection_lost()

    def take(self, role: str) -> list[Event]:
        """The events ``role`` has seen since the last take."""
        events, self.events[role] = self.events[role], []
        return events

    def take_sent(self, role: str, kind: FrameKind | None = None) -> list[Frame]:
        """The frames ``role`` has sent since the last take (only ``kind``, if given)."""
        sent, self.sent[role] = self.sent[role], []
        return [frame for frame in sent if kind is None or frame.kind is kind]


def connected(*, window: int = DEFAULT_WINDOW) -> Wire:
    wire = Wire(make_link("hub", window=window), make_link("runner", window=window))
    assert wire.connect()
    assert [type(e) for e in wire.take("hub") + wire.take("runner")] == [Established] * 2
    wire.take_sent("hub")
    wire.take_sent("runner")
    return wire


def established(peer: Link, **offsets: int) -> Established:
    """The Established event the side talking to ``peer`` should see.

    ``offsets`` gives that side's inbound positions by channel name; unnamed ones are 0.
    """
    channels = HUB_SENDS if peer.role == "hub" else RUNNER_SENDS
    positions: dict[int, int] = {ch: offsets.pop(ch.name, 0) for ch in channels}
    assert not offsets, f"not an inbound channel here: {offsets}"
    return Established(peer.local_hello, positions)


def without_established(events: list[Event]) -> list[Event]:
    return [event for event in events if not isinstance(event, Established)]


def received(events: list[Event], channel: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data) and e.channel == channel)


def hello_frame(link: Link, **changes: Any) -> bytes:
    body = {**link.local_hello, **changes}
    return encode_frame(FrameKind.HELLO, 0, 0, json.dumps(body).encode())


def half_handshake(hub: Link, runner: Link) -> tuple[bytes, bytes]:
    """Exchange HELLOs; returns the AUTH frames each side then queued (hub's, runner's)."""
    hub.connection_made()
    runner.connection_made()
    hub_hello, runner_hello = hub.data_to_send(), runner.data_to_send()
    assert runner.receive_data(hub_hello) == []
    assert hub.receive_data(runner_hello) == []
    return hub.data_to_send(), runner.data_to_send()


def replay_bytes(link: Link, channel: int) -> int:
    return sum(len(payload) for _, payload in link.outbound[channel].replay)


def assert_replay_consistent(out: Outbound, *, holds_all_unacked: bool = True) -> None:
    """Replay frames are contiguous up to ``next_offset`` and none is fully acknowledged.

    A side that never lost its state also holds every unacknowledged byte.
    """
    position = out.next_offset
    for offset, payload in reversed(out.replay):
        position -= len(payload)
        assert offset == position
    if out.replay:
        assert out.replay[0][0] + len(out.replay[0][1]) > out.acked
    if holds_all_unacked:
        assert position <= out.acked


# -- handshake ------------------------------------------------------------------------------


def test_handshake_establishes_both_ways_with_the_peer_hello() -> None:
    wire = Wire(make_link("hub"), make_link("runner"))
    wire.hub.connection_made()
    wire.runner.connection_made(pid=4242, runtime="python", role="hub")

    assert wire.pump()

    runner_hello = wire.runner.local_hello
    assert wire.take("hub") == [established(wire.runner)]
    assert wire.take("runner") == [established(wire.hub)]
    assert runner_hello["pid"] == 4242
    assert runner_hello["runtime"] == "python"
    # Extra fields cannot override the protocol's own.
    assert runner_hello["role"] == "runner"
    assert runner_hello["instance"] == INSTANCE
    assert runner_hello["version"] == PROTOCOL_VERSION
    assert len(bytes.fromhex(runner_hello["nonce"])) == 16
    assert wire.hub.established
    assert wire.runner.established
    for role in ("hub", "runner"):
        assert [f.kind for f in wire.take_sent(role)] == [FrameKind.HELLO, FrameKind.AUTH]


def test_every_connection_uses_a_fresh_nonce() -> None:
    wire = connected()
    first = wire.hub.local_hello["nonce"]
    wire.cut()

    assert wire.connect()

    assert wire.hub.local_hello["nonce"] != first
    assert wire.take("runner") == [established(wire.hub)]


def test_a_recorded_handshake_cannot_be_replayed() -> None:
    hub, runner = make_link("hub"), make_link("runner")
    _, runner_auth = half_handshake(hub, runner)
    recorded = hello_frame(runner) + runner_auth
    fresh_hub = make_link("hub")
    fresh_hub.connection_made()

    with pytest.raises(LinkError, match="token"):
        fresh_hub.receive_data(recorded)
    assert not fresh_hub.established


def test_wrong_token_fails_on_both_sides() -> None:
    hub, runner = make_link("hub"), make_link("runner", token=b"another token")
    hub_auth, runner_auth = half_handshake(hub, runner)

    with pytest.raises(LinkError, match="does not hold this instance's token"):
        hub.receive_data(runner_auth)
    with pytest.raises(LinkError, match="does not hold this instance's token"):
        runner.receive_data(hub_auth)
    assert not hub.established
    assert not runner.established


@pytest.mark.parametrize("checker", ["hub", "runner"])
def test_wrong_instance_id(checker: str) -> None:
    hub = make_link("hub", instance="instance-a")
    runner = make_link("runner", instance="instance-b")
    hub.connection_made()
    runner.connection_made()
    hub_hello, runner_hello = hub.data_to_send(), runner.data_to_send()
    side, peer_hello = (hub, runner_hello) if checker == "hub" else (runner, hub_hello)

    with pytest.raises(LinkError, match="expected instance-"):
        side.receive_data(peer_hello)
    # No proof is given to a peer that failed the checks.
    assert side.data_to_send() == b""


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, "1", None])
def test_protocol_version_mismatch(version: Any) -> None:
    hub, runner = make_link("hub"), make_link("runner")
    hub.connection_made()
    runner.connection_made()
    hub.data_to_send()

    with pytest.raises(LinkError, match=f"peer speaks protocol {version}"):
        hub.receive_data(hello_frame(runner, version=version))
    assert hub.data_to_send() == b""


def test_peer_with_the_same_role_is_refused() -> None:
    hub, other_hub = make_link("hub"), make_link("hub")
    hub.connection_made()
    other_hub.connection_made()

    with pytest.raises(LinkError, match="malformed HELLO"):
        hub.receive_data(other_hub.data_to_send())


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]"], ids=["not-json", "not-an-object"])
def test_malformed_hello(payload: bytes) -> None:
    hub = make_link("hub")
    hub.connection_made()

    with pytest.raises(LinkError, match="malformed HELLO"):
        hub.receive_data(encode_frame(FrameKind.HELLO, 0, 0, payload))


def test_auth_before_hello() -> None:
    hub, runner = make_link("hub"), make_link("runner")
    _, runner_auth = half_handshake(make_link("hub"), runner)
    hub.connection_made()

    with pytest.raises(LinkError, match="AUTH before HELLO"):
        hub.receive_data(runner_auth)


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(FrameKind.DATA, OUTPUT, 0, b"early"),
        encode_frame(FrameKind.END, OUTPUT, 0),
        encode_frame(FrameKind.ACK, INPUT, 0),
        encode_frame(FrameKind.MSG, 0, 0, b"{}"),
    ],
    ids=["DATA", "END", "ACK", "MSG"],
)
@pytest.mark.parametrize("after_hello", [False, True])
def test_stream_frames_before_the_handshake(frame: bytes, after_hello: bool) -> None:
    hub, runner = make_link("hub"), make_link("runner")
    hub.connection_made()
    runner.connection_made()
    data = (runner.data_to_send() if after_hello else b"") + frame

    with pytest.raises(LinkError, match="before the handshake completed"):
        hub.receive_data(data)
    assert hub.inbound[OUTPUT].received == 0


def test_garbage_on_the_wire_is_a_link_error() -> None:
    wire = connected()

    with pytest.raises(LinkError, match="unknown frame kind 200"):
        wire.runner.receive_data(encode_frame(200, INPUT, 0))


def test_oversized_frame_is_a_link_error() -> None:
    wire = connected()
    header = encode_frame(FrameKind.DATA, INPUT, 0)[:4] + (2**32 - 1).to_bytes(4, "big")

    with pytest.raises(LinkError, match="exceeds"):
        wire.runner.receive_data(header + bytes(8))


# -- data -----------------------------------------------------------------------------------


def test_data_arrives_in_order_with_offsets_per_channel() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"ab")
    wire.hub.send(INPUT, b"cde")
    wire.hub.send(STDIN, b"x")
    wire.hub.send(INPUT, b"f")

    assert wire.pump()

    assert wire.take("runner") == [
        Data(INPUT, b"ab"),
        Data(INPUT, b"cde"),
        Data(STDIN, b"x"),
        Data(INPUT, b"f"),
    ]
    sent = wire.take_sent("hub", FrameKind.DATA)
    assert [(f.channel, f.offset, f.payload) for f in sent] == [
        (INPUT, 0, b"ab"),
        (INPUT, 2, b"cde"),
        (STDIN, 0, b"x"),
        (INPUT, 5, b"f"),
    ]
    assert wire.runner.inbound[INPUT].received == 6
    assert wire.runner.inbound[STDIN].received == 1
    assert wire.runner.inbound[CONTROL].received == 0


def test_both_directions_at_once() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"in")
    wire.runner.send(OUTPUT, b"out")

    assert wire.pump()

    assert wire.take("runner") == [Data(INPUT, b"in")]
    assert wire.take("hub") == [Data(OUTPUT, b"out")]


def test_send_before_connecting_is_kept_and_sent_after_the_handshake() -> None:
    wire = Wire(make_link("hub"), make_link("runner"))
    wire.hub.send(INPUT, b"early")

    assert wire.hub.data_to_send() == b""
    assert wire.connect()
    assert wire.take("runner") == [established(wire.hub), Data(INPUT, b"early")]


def test_large_writes_are_split_into_max_payload_frames() -> None:
    mib = 1 << 20
    wire = connected(window=4 * mib)
    data = random.Random(1).randbytes(2 * mib + 12345)

    wire.hub.send(INPUT, data)
    assert wire.pump()

    sent = wire.take_sent("hub", FrameKind.DATA)
    assert [(f.offset, len(f.payload)) for f in sent] == [(0, mib), (mib, mib), (2 * mib, 12345)]
    assert received(wire.take("runner"), INPUT) == data
    assert len(wire.hub.outbound[INPUT].replay) == 3


def test_empty_send_sends_nothing() -> None:
    wire = connected()

    wire.hub.send(INPUT, b"")

    assert wire.hub.data_to_send() == b""
    assert wire.hub.outbound[INPUT].next_offset == 0


def test_overlapping_frame_delivers_only_new_bytes_and_duplicates_nothing() -> None:
    wire = connected()
    runner = wire.runner

    assert runner.receive_data(encode_frame(FrameKind.DATA, INPUT, 0, b"abc")) == [
        Data(INPUT, b"abc")
    ]
    assert runner.receive_data(encode_frame(FrameKind.DATA, INPUT, 1, b"bcdef")) == [
        Data(INPUT, b"def")
    ]
    assert runner.receive_data(encode_frame(FrameKind.DATA, INPUT, 0, b"abcdef")) == []
    assert runner.receive_data(encode_frame(FrameKind.DATA, INPUT, 6, b"")) == []
    assert runner.inbound[INPUT].received == 6


def test_writable_shrinks_and_reopens_only_after_consume() -> None:
    wire = connected(window=100)
    hub, runner = wire.hub, wire.runner
    assert hub.writable(INPUT) == 100

    hub.send(INPUT, b"a" * 30)
    assert hub.writable(INPUT) == 70
    hub.send(INPUT, b"b" * 20)
    assert hub.writable(INPUT) == 50
    assert wire.pump()
    assert received(wire.take("runner"), INPUT) == b"a" * 30 + b"b" * 20
    # Delivered is not enough: the window opens only when the application consumes.
    assert hub.writable(INPUT) == 50
    assert wire.take("hub") == []

    # With half the window out, a small consumption is not worth an ACK yet...
    runner.consume(INPUT, 10)
    assert wire.pump()
    assert hub.writable(INPUT) == 50
    assert wire.take("hub") == []

    # ...a quarter of the window is.
    runner.consume(INPUT, 15)
    assert wire.pump()
    assert wire.take("hub") == [WindowOpened(INPUT)]
    assert hub.writable(INPUT) == 75

    runner.consume(INPUT, 25)
    assert wire.pump()
    assert wire.take("hub") == [WindowOpened(INPUT)]
    assert hub.writable(INPUT) == 100
    assert not hub.outbound[INPUT].replay


def test_a_sender_with_most_of_its_window_out_hears_of_every_consumed_byte() -> None:
    # A slow reader consuming a little at a time must not leave the sender stalled until a
    # quarter of the window has been consumed.
    wire = connected(window=100)
    hub, runner = wire.hub, wire.runner
    hub.send(INPUT, b"x" * 100)
    assert wire.pump()
    wire.take("runner")
    assert hub.writable(INPUT) == 0

    runner.consume(INPUT, 1)
    assert wire.pump()
    assert wire.take("hub") == [WindowOpened(INPUT)]
    assert hub.writable(INPUT) == 1


def test_writable_never_goes_negative() -> None:
    wire = connected(window=10)

    wire.hub.send(INPUT, b"x" * 25)

    assert wire.hub.writable(INPUT) == 0
    assert wire.hub.outbound[INPUT].in_flight() == 25


def test_windows_are_per_channel() -> None:
    wire = connected(window=8)
    wire.hub.send(INPUT, b"12345678")
    wire.hub.send(STDIN, b"12")
    assert wire.pump()

    assert wire.hub.writable(INPUT) == 0
    assert wire.hub.writable(STDIN) == 6
    assert wire.hub.writable(CONTROL) == 8

    wire.runner.consume(STDIN, 2)
    assert wire.pump()
    assert wire.take("hub") == [WindowOpened(STDIN)]
    assert wire.hub.writable(INPUT) == 0
    assert wire.hub.writable(STDIN) == 8


def test_acks_are_paced_to_a_quarter_of_the_window() -> None:
    # Less than three quarters of the window out: the sender is not near a stall.
    wire = connected(window=64)
    wire.hub.send(INPUT, bytes(40))
    assert wire.pump()

    for _ in range(40):
        wire.runner.consume(INPUT, 1)
        assert wire.pump()

    acks = wire.take_sent("runner", FrameKind.ACK)
    assert [(f.channel, f.offset) for f in acks] == [(INPUT, 16), (INPUT, 32), (INPUT, 40)]
    assert wire.take("hub") == [WindowOpened(INPUT)] * 3


def test_a_nearly_stalled_sender_is_acked_byte_by_byte_until_it_has_room() -> None:
    wire = connected(window=64)
    wire.hub.send(INPUT, bytes(64))
    assert wire.pump()

    for _ in range(64):
        wire.runner.consume(INPUT, 1)
        assert wire.pump()

    acks = [f.offset for f in wire.take_sent("runner", FrameKind.ACK)]
    # Every byte while 48 or more were out, then a quarter of the window at a time.
    assert acks == [*range(1, 18), 33, 49, 64]


def test_a_reader_that_caught_up_acks_at_once() -> None:
    wire = connected(window=1000)
    for chunk in (b"abc", b"de", b"f"):
        wire.hub.send(INPUT, chunk)
        assert wire.pump()
        wire.runner.consume(INPUT, len(chunk))
        assert wire.pump()

    acks = wire.take_sent("runner", FrameKind.ACK)
    assert [f.offset for f in acks] == [3, 5, 6]
    assert wire.hub.writable(INPUT) == 1000


def test_partial_consume_below_a_quarter_does_not_ack() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, bytes(300))
    assert wire.pump()

    wire.runner.consume(INPUT, 249)
    wire.runner.consume(INPUT, 0)
    assert wire.pump()
    assert wire.take_sent("runner", FrameKind.ACK) == []

    wire.runner.consume(INPUT, 1)
    assert wire.pump()
    assert [f.offset for f in wire.take_sent("runner", FrameKind.ACK)] == [250]


def test_consume_past_received_is_an_error() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"abc")
    assert wire.pump()

    with pytest.raises(LinkError, match="consumed past"):
        wire.runner.consume(INPUT, 4)


def test_consume_while_disconnected_is_acked_once_after_reconnect() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"0123456789")
    assert wire.pump()
    assert wire.take("runner") == [Data(INPUT, b"0123456789")]
    wire.cut()

    wire.runner.consume(INPUT, 10)
    assert wire.runner.data_to_send() == b""
    assert wire.connect()

    assert [f.offset for f in wire.take_sent("runner", FrameKind.ACK)] == [10]
    assert wire.hub.outbound[INPUT].acked == 10
    assert replay_bytes(wire.hub, INPUT) == 0
    assert without_established(wire.take("runner")) == []


def test_an_ack_lost_in_flight_is_recovered_from_the_handshake() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"0123456789")
    assert wire.pump()
    wire.runner.consume(INPUT, 10)  # caught up: an ACK is queued ...
    wire.cut()  # ... and lost
    assert wire.hub.outbound[INPUT].acked == 0

    assert wire.connect()

    # The runner has nothing left to acknowledge; its AUTH carries the position instead.
    assert wire.take_sent("runner", FrameKind.ACK) == []
    assert wire.hub.outbound[INPUT].acked == 10
    assert not wire.hub.outbound[INPUT].replay
    assert wire.take("hub") == [WindowOpened(INPUT), established(wire.runner)]


def test_consume_during_the_handshake_is_acked_once_established() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"0123456789")
    assert wire.pump()
    wire.cut()
    hub_auth, runner_auth = half_handshake(wire.hub, wire.runner)

    wire.runner.consume(INPUT, 10)  # after the runner's AUTH reported consumed=0
    wire.runner.receive_data(hub_auth)
    wire.hub.receive_data(runner_auth)

    assert [(f.kind, f.offset) for f in frames(wire.runner.data_to_send())] == [(FrameKind.ACK, 10)]


# -- END --------------------------------------------------------------------------------------


def test_end_is_delivered_after_the_data() -> None:
    wire = connected()
    wire.runner.send(OUTPUT, b"abc")
    wire.runner.end(OUTPUT)
    wire.runner.end(OUTPUT)  # idempotent

    assert wire.pump()

    assert wire.take("hub") == [Data(OUTPUT, b"abc"), Ended(OUTPUT)]
    ends = wire.take_sent("runner", FrameKind.END)
    assert [(f.channel, f.offset) for f in ends] == [(OUTPUT, 3)]


def test_send_after_end_is_refused() -> None:
    wire = connected()
    wire.runner.end(OUTPUT)

    with pytest.raises(LinkError, match="already ended"):
        wire.runner.send(OUTPUT, b"late")


@pytest.mark.parametrize("offset", [1, 4])
def test_end_at_the_wrong_offset_is_an_error(offset: int) -> None:
    wire = connected()
    wire.runner.send(OUTPUT, b"abc")
    assert wire.pump()

    with pytest.raises(LinkError, match=f"end of channel {OUTPUT} at {offset}, but 3 received"):
        wire.hub.receive_data(encode_frame(FrameKind.END, OUTPUT, offset))


def test_data_after_end_is_an_error() -> None:
    wire = connected()
    wire.runner.send(OUTPUT, b"abc")
    wire.runner.end(OUTPUT)
    assert wire.pump()

    with pytest.raises(LinkError, match="data after the end"):
        wire.hub.receive_data(encode_frame(FrameKind.DATA, OUTPUT, 3, b"more"))


def test_end_replayed_after_reconnect_is_not_delivered_twice() -> None:
    wire = connected()
    wire.runner.send(OUTPUT, b"abc")
    wire.runner.end(OUTPUT)
    assert wire.pump()
    assert wire.take("hub") == [Data(OUTPUT, b"abc"), Ended(OUTPUT)]
    wire.cut()
    wire.take_sent("runner")

    assert wire.connect()

    # The runner sends END again on every new connection ...
    ends = wire.take_sent("runner", FrameKind.END)
    assert [(f.channel, f.offset) for f in ends] == [(OUTPUT, 3)]
    # ... and the hub did not deliver it, nor the data, a second time.
    assert wire.take("hub") == [established(wire.runner, OUTPUT=3)]


def test_end_cut_in_flight_is_delivered_once_after_reconnect() -> None:
    wire = connected()
    wire.runner.send(OUTPUT, b"abc")
    assert wire.pump()
    assert wire.take("hub") == [Data(OUTPUT, b"abc")]
    wire.runner.end(OUTPUT)
    wire.cut()

    assert wire.connect()

    assert without_established(wire.take("hub")) == [Ended(OUTPUT)]


def test_end_while_disconnected_is_sent_on_reconnect() -> None:
    wire = connected()
    wire.cut()
    wire.hub.send(INPUT, b"last words")
    wire.hub.end(INPUT)

    assert wire.hub.data_to_send() == b""
    assert wire.connect()
    assert without_established(wire.take("runner")) == [Data(INPUT, b"last words"), Ended(INPUT)]


# -- reconnect, both sides keeping state ---------------------------------------------------


def test_bytes_sent_while_disconnected_arrive_after_reconnect() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"before")
    assert wire.pump()
    wire.cut()

    wire.hub.send(INPUT, b"-while-down")
    assert wire.hub.data_to_send() == b""
    assert wire.connect()

    assert wire.take("runner") == [
        Data(INPUT, b"before"),
        established(wire.hub, INPUT=6),
        Data(INPUT, b"-while-down"),
    ]


def test_connection_lost_drops_what_was_queued_for_the_socket() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"queued")

    wire.hub.connection_lost()

    assert wire.hub.data_to_send() == b""
    assert replay_bytes(wire.hub, INPUT) == 6


def test_bytes_cut_in_flight_are_replayed() -> None:
    wire = connected()
    wire.runner.send(OUTPUT, b"0123456789")
    wire.cut()  # dropped before the hub read anything

    assert wire.connect()

    assert without_established(wire.take("hub")) == [Data(OUTPUT, b"0123456789")]


@pytest.mark.parametrize("prefix", [0, 1, 16, 25, 26, 27, 41])
def test_a_prefix_delivered_before_the_cut_is_not_delivered_again(prefix: int) -> None:
    # Two frames of 10 bytes: 26 bytes each on the wire.
    wire = connected()
    wire.runner.send(OUTPUT, b"A" * 10)
    wire.runner.send(OUTPUT, b"B" * 10)
    assert not wire.pump(budget=prefix)
    got_first = wire.hub.inbound[OUTPUT].received
    assert got_first == (10 if prefix >= 26 else 0)
    wire.take_sent("runner")

    assert wire.connect()

    assert received(wire.take("hub"), OUTPUT) == b"A" * 10 + b"B" * 10
    resent = wire.take_sent("runner", FrameKind.DATA)
    assert [f.offset for f in resent] == ([10] if got_first else [0, 10])
    # Delivered but not consumed: still held for replay.
    assert replay_bytes(wire.runner, OUTPUT) == 20


def test_data_consumed_and_acked_is_not_replayed() -> None:
    wire = connected(window=1000)
    wire.runner.send(OUTPUT, b"abc")
    assert wire.pump()
    wire.hub.consume(OUTPUT, 3)
    assert wire.pump()
    assert replay_bytes(wire.runner, OUTPUT) == 0
    wire.take_sent("runner")
    wire.cut()

    assert wire.connect()

    assert wire.take_sent("runner", FrameKind.DATA) == []


@pytest.mark.parametrize("budget", range(0, 400, 23))
def test_a_cut_during_the_handshake_loses_nothing(budget: int) -> None:
    wire = connected()
    wire.cut()
    wire.hub.send(INPUT, b"to runner")
    wire.runner.send(OUTPUT, b"to hub")

    wire.connect(budget=budget)
    wire.cut()
    assert wire.connect()

    assert received(wire.take("runner"), INPUT) == b"to runner"
    assert received(wire.take("hub"), OUTPUT) == b"to hub"


def stream_with_cuts(seed: int, *, chunks: int = 200, cuts: int = 10, restarts: int = 0) -> None:
    """Stream random chunks both ways through cuts and hub restarts at random moments.

    Senders respect ``writable``, readers consume at a random pace, a cut delivers a random
    part of what is in flight and drops the rest. In the end each reader has received exactly
    the bytes sent, and each sender's replay buffer is empty.
    """
    rng = random.Random(seed)
    window = 1024
    wire = connected(window=window)
    streams = [("hub", "runner", INPUT), ("runner", "hub", OUTPUT)]  # (sender, reader, channel)
    pending = {
        ch: [rng.randbytes(rng.randint(1, 300)) for _ in range(chunks)] for ch in (INPUT, OUTPUT)
    }
    expected = {channel: b"".join(parts) for channel, parts in pending.items()}
    got = {channel: bytearray() for channel in expected}
    unconsumed = dict.fromkeys(expected, 0)
    ends = dict.fromkeys(expected, 0)
    disruptions = ["cut"] * cuts + ["restart"] * restarts
    rng.shuffle(disruptions)
    down_for = 0
    hub_restarted = False

    def collect() -> None:
        for _, reader, channel in streams:
            for event in wire.take(reader):
                if isinstance(event, Data):
                    assert (event.channel, bool(event.data)) == (channel, True)
                    got[channel] += event.data
                    unconsumed[channel] += len(event.data)
                elif isinstance(event, Ended):
                    assert event.channel == channel
                    ends[channel] += 1

    def restart_hub() -> None:
        # The hub dies with its Link and its application: the new one reads the output again
        # from the runner's acked offset and feeds the input on from what the runner received.
        runner = wire.runner
        wire.links["hub"] = make_link("hub", window=window, known=False)
        acked = runner.outbound[OUTPUT].acked
        assert len(got[OUTPUT]) >= acked
        del got[OUTPUT][acked:]
        unconsumed[OUTPUT] = ends[OUTPUT] = 0
        rest = expected[INPUT][runner.inbound[INPUT].received :]
        pending[INPUT] = [rest] if rest else []

    for _ in range(10_000):
        for sender, _, channel in streams:
            link, queue = wire.links[sender], pending[channel]
            while queue and link.writable(channel) > 0:
                room = rng.randint(1, link.writable(channel))
                link.send(channel, queue[0][:room])
                queue[0] = queue[0][room:]
                if not queue[0]:
                    queue.pop(0)
            if not queue:
                link.end(channel)
            out = link.outbound[channel]
            assert out.in_flight() <= window
            assert_replay_consistent(out, holds_all_unacked=sender == "runner" or not hub_restarted)
        for _, reader, channel in streams:
            if unconsumed[channel] and rng.random() < 0.6:
                amount = rng.randint(1, unconsumed[channel])
                wire.links[reader].consume(channel, amount)
                unconsumed[channel] -= amount
        if down_for:
            down_for -= 1
            if not down_for:
                assert wire.connect()
        elif disruptions and rng.random() < 0.1:
            wire.pump(budget=rng.randint(0, 600))
            wire.cut()
            collect()
            if disruptions.pop() == "restart":
                restart_hub()
                hub_restarted = True
            down_for = rng.randint(1, 3)
        else:
            assert wire.pump()
        collect()
        finished = all(ends.values()) and not any(unconsumed.values())
        if finished and not disruptions and not down_for:
            break
    else:
        pytest.fail("the streams did not finish")

    assert wire.pump()
    for sender, _, channel in streams:
        assert bytes(got[channel]) == expected[channel]
        assert ends[channel] == 1
        out = wire.links[sender].outbound[channel]
        assert out.acked == out.next_offset == len(expected[channel])
        assert not out.replay


@pytest.mark.parametrize("seed", range(8))
def test_streams_survive_random_cuts_exactly(seed: int) -> None:
    stream_with_cuts(seed)


@pytest.mark.parametrize("seed", range(8))
def test_streams_survive_random_cuts_and_hub_restarts(seed: int) -> None:
    stream_with_cuts(seed, restarts=3)


# -- hub restart: the runner keeps its Link, the hub starts with known=False ----------------


def restarted(wire: Wire) -> Wire:
    """The hub process died: its Link is gone; a new hub adopts the running runner."""
    wire.cut()
    fresh = Wire(make_link("hub", window=1000, known=False), wire.runner)
    return fresh


def test_hub_restart_replays_unconsumed_output_from_the_acked_offset() -> None:
    wire = connected(window=1000)
    wire.runner.send(OUTPUT, b"0123456789")
    assert wire.pump()
    wire.hub.consume(OUTPUT, 10)  # caught up: acked at 10
    wire.runner.send(OUTPUT, b"abcdefghij")
    assert wire.pump()
    wire.hub.consume(OUTPUT, 3)  # not acked: less than a quarter, not caught up
    assert wire.pump()
    assert wire.runner.outbound[OUTPUT].acked == 10

    wire = restarted(wire)
    assert wire.connect()

    # What the old hub consumed without acknowledging died with it: it comes again.
    assert wire.take("hub") == [established(wire.runner, OUTPUT=10), Data(OUTPUT, b"abcdefghij")]
    assert [f.offset for f in wire.take_sent("runner", FrameKind.DATA)] == [10]
    inbound = wire.hub.inbound[OUTPUT]
    assert (inbound.received, inbound.consumed, inbound.known) == (20, 10, True)

    wire.hub.consume(OUTPUT, 10)
    assert wire.pump()
    assert wire.runner.outbound[OUTPUT].acked == 20
    assert not wire.runner.outbound[OUTPUT].replay


def test_hub_restart_replays_from_inside_a_partly_acked_frame() -> None:
    wire = connected(window=8)  # quarter window: 2 bytes
    wire.runner.send(OUTPUT, b"abcdef")
    assert wire.pump()
    wire.hub.consume(OUTPUT, 2)
    assert wire.pump()
    assert wire.runner.outbound[OUTPUT].acked == 2

    wire = restarted(wire)
    assert wire.connect()

    assert without_established(wire.take("hub")) == [Data(OUTPUT, b"cdef")]
    resent = wire.take_sent("runner", FrameKind.DATA)
    assert [(f.offset, f.payload) for f in resent] == [(2, b"cdef")]


def test_hub_restart_continues_input_numbering_where_the_runner_is() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"hello")
    wire.hub.send_json(CONTROL, ["4001", {}])
    assert wire.pump()
    wire.runner.consume(INPUT, 2)  # received 5, consumed 2: no ACK yet
    wire.runner.consume(CONTROL, len(b'["4001",{}]'))
    assert wire.pump()
    wire.take("runner")

    wire = restarted(wire)
    assert wire.connect()
    hub = wire.hub
    assert hub.outbound[INPUT].next_offset == 5
    assert hub.outbound[INPUT].acked == 2
    assert hub.writable(INPUT) == 1000 - 3
    assert hub.outbound[CONTROL].next_offset == len(b'["4001",{}]')
    assert hub.outbound[STDIN].next_offset == 0
    assert wire.take_sent("hub", FrameKind.DATA) == []

    hub.send(INPUT, b" world")
    hub.send_json(CONTROL, ["4002", None])
    assert wire.pump()

    assert without_established(wire.take("runner")) == [
        Data(INPUT, b" world"),
        Data(CONTROL, b'["4002",null]'),
    ]
    assert wire.runner.inbound[INPUT].received == 11
    sent = wire.take_sent("hub", FrameKind.DATA)
    assert [(f.channel, f.offset) for f in sent] == [(INPUT, 5), (CONTROL, 11)]
    wire.runner.consume(INPUT, 9)
    assert wire.pump()
    assert hub.outbound[INPUT].acked == 11
    assert hub.writable(INPUT) == 1000


def test_hub_restart_reports_an_ended_output() -> None:
    wire = connected(window=1000)
    wire.runner.send(OUTPUT, b"all")
    wire.runner.end(OUTPUT)
    assert wire.pump()
    wire.hub.consume(OUTPUT, 3)
    assert wire.pump()
    assert wire.take("hub")[-1] == Ended(OUTPUT)

    wire = restarted(wire)
    assert wire.connect()

    assert without_established(wire.take("hub")) == [Ended(OUTPUT)]
    assert wire.hub.inbound[OUTPUT].ended


def test_hub_restart_replays_unacked_output_then_end() -> None:
    wire = connected(window=1000)
    wire.runner.send(OUTPUT, b"tail")
    wire.runner.end(OUTPUT)
    assert wire.pump()

    wire = restarted(wire)
    assert wire.connect()

    assert without_established(wire.take("hub")) == [Data(OUTPUT, b"tail"), Ended(OUTPUT)]


def test_hub_restart_keeps_an_ended_input_ended() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"in")
    wire.hub.end(INPUT)
    assert wire.pump()

    wire = restarted(wire)
    assert wire.connect()
    assert without_established(wire.take("runner")) == []
    wire.take_sent("hub")
    wire.hub.end(INPUT)
    assert wire.pump()

    assert wire.hub.outbound[INPUT].ended
    assert wire.take_sent("hub", FrameKind.END) == []
    with pytest.raises(LinkError, match="already ended"):
        wire.hub.send(INPUT, b"more")


def test_hub_restart_does_not_replay_consumed_monitoring() -> None:
    wire = connected(window=1000)
    wire.runner.send_json(Channel.MONITORING, ["health", {"ok": True}])
    assert wire.pump()
    wire.hub.consume(Channel.MONITORING, len(b'["health",{"ok":true}]'))
    assert wire.pump()

    wire = restarted(wire)
    assert wire.connect()

    assert wire.take("hub") == [established(wire.runner, MONITORING=22)]


def test_restarted_hub_keeps_what_it_queued_before_adoption() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"old")
    wire.hub.send_json(CONTROL, ["4001", {}])
    assert wire.pump()
    wire = restarted(wire)

    # Until the handshake tells where the runner is, writers are held back ...
    assert wire.hub.writable(INPUT) == 0
    # ... but the new hub's API may still queue before the adoption handshake is done.
    wire.hub.send(INPUT, b"new")
    wire.hub.send_json(CONTROL, ["4002", {}])
    assert wire.connect()

    events = without_established(wire.take("runner"))
    assert len(events) == 2  # resent channel by channel: the order between channels is free
    assert received(events, INPUT) == b"new"
    assert received(events, CONTROL) == b'["4002",{}]'
    assert wire.runner.inbound[INPUT].received == 6
    assert wire.hub.outbound[INPUT].next_offset == 6
    assert wire.hub.writable(INPUT) == 1000 - 6
    # After a later cut, the stream is still exactly what was sent, once.
    wire.hub.send(INPUT, b"!")
    wire.cut()
    assert wire.connect()
    assert received(wire.take("runner"), INPUT) == b"!"
    assert wire.runner.inbound[INPUT].received == 7


def test_restarted_hub_drops_what_it_queued_on_an_input_the_runner_saw_end() -> None:
    wire = connected(window=1000)
    wire.hub.send(INPUT, b"old")
    wire.hub.end(INPUT)
    assert wire.pump()
    wire = restarted(wire)

    wire.hub.send(INPUT, b"new")
    assert wire.connect()

    assert without_established(wire.take("runner")) == []
    assert wire.hub.outbound[INPUT].ended
    assert wire.hub.outbound[INPUT].next_offset == 3
    assert not wire.hub.outbound[INPUT].replay


@pytest.mark.parametrize("budget", range(0, 500, 31))
def test_hub_restart_survives_a_cut_during_adoption(budget: int) -> None:
    wire = connected(window=1000)
    wire.runner.send(OUTPUT, b"unread output")
    wire.hub.send(INPUT, b"input")
    assert wire.pump()
    wire = restarted(wire)

    wire.connect(budget=budget)
    wire.cut()
    assert wire.connect()

    assert received(wire.take("hub"), OUTPUT) == b"unread output"
    wire.hub.send(INPUT, b"+more")
    assert wire.pump()
    assert received(wire.take("runner"), INPUT) == b"+more"
    assert wire.runner.inbound[INPUT].received == 10


def test_hub_restart_needs_the_token_too() -> None:
    runner = make_link("runner")
    hub = make_link("hub", known=False, token=b"guess")
    _, runner_auth = half_handshake(hub, runner)

    with pytest.raises(LinkError, match="token"):
        hub.receive_data(runner_auth)
    assert not hub.inbound[OUTPUT].known
    assert not hub.outbound[INPUT].known


# -- malicious or broken peers ---------------------------------------------------------------


def test_a_frame_claiming_a_gap() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"abc")
    assert wire.pump()

    with pytest.raises(LinkError, match="gap on channel 5: expected offset 3, got 4"):
        wire.runner.receive_data(encode_frame(FrameKind.DATA, INPUT, 4, b"e"))
    assert wire.runner.inbound[INPUT].received == 3


def test_an_ack_beyond_what_was_sent() -> None:
    wire = connected()
    wire.hub.send(INPUT, b"abc")
    assert wire.pump()

    with pytest.raises(LinkError, match="ack beyond what was sent"):
        wire.hub.receive_data(encode_frame(FrameKind.ACK, INPUT, 4))
    assert wire.hub.outbound[INPUT].acked == 0


def test_an_old_ack_is_ignored() -> None:
    wire = connected(window=4)
    wire.hub.send(INPUT, b"abc")
    assert wire.pump()
    wire.runner.consume(INPUT, 3)
    assert wire.pump()
    wire.take("hub")

    assert wire.hub.receive_data(encode_frame(FrameKind.ACK, INPUT, 1)) == []
    assert wire.hub.receive_data(encode_frame(FrameKind.ACK, INPUT, 3)) == []
    assert wire.hub.outbound[INPUT].acked == 3


@pytest.mark.parametrize(
    ("kind", "channel", "match"),
    [
        (FrameKind.DATA, OUTPUT, "does not receive"),
        (FrameKind.END, OUTPUT, "does not receive"),
        (FrameKind.DATA, 99, "does not receive"),
        (FrameKind.ACK, INPUT, "does not send"),
        (FrameKind.ACK, 99, "does not send"),
    ],
)
def test_a_frame_on_a_channel_the_runner_does_not_use(
    kind: FrameKind, channel: int, match: str
) -> None:
    wire = connected()

    with pytest.raises(LinkError, match=match):
        wire.runner.receive_data(
            encode_frame(kind, channel, 0, b"x" if kind is FrameKind.DATA else b"")
        )


def test_a_peer_claiming_bytes_never_sent() -> None:
    # A hub that wrongly believes it kept its state meets a runner that is ahead of it.
    wire = connected()
    wire.hub.send(INPUT, b"abc")
    assert wire.pump()
    wire.cut()
    impostor = Wire(make_link("hub"), wire.runner)

    with pytest.raises(LinkError, match="claims bytes never sent on channel 5"):
        impostor.connect()


# -- message channels ----------------------------------------------------------------------


def test_send_json_delivers_one_data_event_per_message() -> None:
    wire = connected()
    messages = [["4001", {"a": 1}], ["4002", None], ["4003", {"text": "ünïcode"}]]
    for body in messages:
        wire.hub.send_json(CONTROL, body)

    assert wire.pump()

    events = wire.take("runner")
    assert [type(e) for e in events] == [Data] * 3
    assert all(e.channel == CONTROL for e in events if isinstance(e, Data))
    assert [json.loads(e.data) for e in events if isinstance(e, Data)] == messages
    assert isinstance(events[0], Data)
    assert events[0].data == b'["4001",{"a":1}]'


def test_a_message_cut_in_flight_is_redelivered_whole() -> None:
    wire = connected()
    wire.runner.send_json(Channel.MONITORING, ["status", {"n": 1}])
    assert not wire.pump(budget=20)
    assert wire.take("hub") == []

    assert wire.connect()

    assert without_established(wire.take("hub")) == [
        Data(Channel.MONITORING, b'["status",{"n":1}]')
    ]


def test_send_message_is_delivered_when_established() -> None:
    wire = connected()

    assert wire.hub.send_message({"ping": 1}) is True
    assert wire.runner.send_message(["pong", 1]) is True
    assert wire.pump()

    assert wire.take("runner") == [Message({"ping": 1})]
    assert wire.take("hub") == [Message(["pong", 1])]


def test_send_message_is_dropped_when_not_established() -> None:
    hub = make_link("hub")
    assert hub.send_message({"ping": 1}) is False
    assert hub.data_to_send() == b""

    hub.connection_made()
    hello = hub.data_to_send()
    assert hub.send_message({"ping": 2}) is False  # handshake in progress
    assert hub.data_to_send() == b""
    assert [f.kind for f in frames(hello)] == [FrameKind.HELLO]


def test_send_message_is_dropped_after_the_connection_is_lost() -> None:
    wire = connected()
    wire.cut()

    assert wire.hub.send_message({"ping": 3}) is False
    assert wire.connect()
    assert wire.take("runner") == [established(wire.hub)]


def test_malformed_message_is_a_link_error() -> None:
    wire = connected()

    with pytest.raises(LinkError, match="malformed MSG"):
        wire.runner.receive_data(encode_frame(FrameKind.MSG, 0, 0, b"{"))
