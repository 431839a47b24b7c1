"""The hub <-> runner link as a sans-IO state machine: bytes in, events out, bytes to send.

One ``Link`` object lives as long as the instance does on each side (in the runner: the whole
process; in the hub: until the hub stops). Connections come and go under it: each new connection
starts with a handshake, after which both sides resend whatever the other has not received, so a
hub restart loses and duplicates nothing.

Delivery rules:
- Every byte of a channel has a stream offset. DATA frames carry the offset of their first byte;
  the receiver keeps ``received`` (bytes taken in order) and drops what it already has.
- The receiver acknowledges ``consumed`` offsets: bytes its application has taken. The sender
  keeps every unacknowledged byte in a replay buffer and resends it after a reconnect.
- Flow control is the same number: a sender may have at most ``window`` bytes unacknowledged on
  a channel. A reader that stops reading stops the writer; nothing grows without bound.

Handshake on each connection (both sides at once)::

    -> HELLO {role, instance, version, nonce}
    <- HELLO {...}
    -> AUTH  {proof: HMAC(token, role | peer nonce), inbound: {...}, outbound: {...}}
    <- AUTH  {...}

``inbound``/``outbound`` report each channel's positions so that a side that lost its state (a
hub that restarted) can take up the streams where the other side has them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from si.protocol.frames import (
    HEADER,
    MAX_PAYLOAD,
    Channel,
    Frame,
    FrameDecoder,
    FrameError,
    FrameKind,
)

PROTOCOL_VERSION = 1

Role = Literal["hub", "runner"]

# Unacknowledged bytes a sender may have per channel: bounds each side's buffers for one
# channel while keeping a fast stream from waiting on every acknowledgement.
DEFAULT_WINDOW = 1 << 20
# Monitoring messages (events, stop notices) a runner may hold for an absent hub; past this,
# an emit is dropped rather than held.
MONITORING_WINDOW = 1 << 20


class WindowFull(Exception):
    """A message does not fit in what its channel's window (and allowance) leaves: not queued."""


class LinkError(Exception):
    """The peer broke the protocol or failed authentication; drop the connection."""


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake completed.

    ``peer`` is the peer's HELLO; ``received`` maps each inbound channel to the offset its next
    byte will have (events that follow in the same batch may already have moved past it).
    """

    peer: dict[str, Any]
    received: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Data:
    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Ended:
    channel: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer consumed data on ``channel``: blocked writers may continue."""

    channel: int


@dataclass(frozen=True, slots=True)
class Message:
    body: Any


Event = Established | Data | Ended | WindowOpened | Message


# -- per-channel state ----------------------------------------------------------------------


@dataclass
class Outbound:
    """What one side sends on one channel."""

    window: int
    known: bool = True  # False: positions are unknown until the peer reports them
    next_offset: int = 0  # offset after the last byte the application queued
    acked: int = 0  # the peer consumed everything before this offset
    ended: bool = False  # END queued
    # (offset, payload) of every DATA frame not yet fully acknowledged, in order
    replay: deque[tuple[int, bytes]] = field(default_factory=deque)

    def in_flight(self) -> int:
        return self.next_offset - self.acked

    def writable(self) -> int:
        if not self.known:
            return 0  # what the peer holds is unknown until the handshake: nothing is safe
        return max(0, self.window - self.in_flight())


@dataclass
class Inbound:
    """What one side receives on one channel."""

    known: bool = True
    received: int = 0  # every byte before this offset was taken, in order
    consumed: int = 0  # the application took every byte before this offset
    acked: int = 0  # the last consumed offset we reported to the peer
    ended: bool = False
    window: int = DEFAULT_WINDOW  # what the peer may send ahead; used to pace our ACKs


class Link:
    """The link state of one instance on one side.

    Args:
        role: ``"hub"`` or ``"runner"``.
        instance_id: both sides must agree on it.
        token: the shared secret from ``runner.json``; proves each side to the other.
        outbound: channel -> window for the channels this side sends.
        inbound: the channels this side receives.
        known: ``False`` when this side lost its state (a restarted hub adopting a runner): the
            positions are then taken from the peer at the first handshake.
    """

    def __init__(
        self,
        role: Role,
        instance_id: str,
        token: bytes,
        outbound: dict[int, int],
        inbound: dict[int, int],
        *,
        known: bool = True,
    ) -> None:
        self.role: Role = role
        self.instance_id = instance_id
        self._token = token
        self.outbound = {ch: Outbound(window=w, known=known) for ch, w in outbound.items()}
        self.inbound = {ch: Inbound(known=known, window=w) for ch, w in inbound.items()}
        self._decoder = FrameDecoder()
        self._pending: list[bytes] = []
        self._nonce = b""
        self._peer_hello: dict[str, Any] | None = None
        self._sent_auth = False
        self.established = False
        self.local_hello: dict[str, Any] = {}

    @classmethod
    def for_hub(cls, instance_id: str, token: bytes, *, known: bool = True) -> Link:
        """The hub's end: it sends input, stdin and control, and receives output and
        monitoring. ``known=False`` for a hub adopting a runner it did not start."""
        return cls(
            "hub",
            instance_id,
            token,
            outbound={
                Channel.INPUT: DEFAULT_WINDOW,
                Channel.STDIN: DEFAULT_WINDOW,
                Channel.CONTROL: DEFAULT_WINDOW,
            },
            inbound={Channel.OUTPUT: DEFAULT_WINDOW, Channel.MONITORING: MONITORING_WINDOW},
            known=known,
        )

    @classmethod
    def for_runner(cls, instance_id: str, token: bytes) -> Link:
        """The runner's end: the mirror of :meth:`for_hub`."""
        return cls(
            "runner",
            instance_id,
            token,
            outbound={Channel.OUTPUT: DEFAULT_WINDOW, Channel.MONITORING: MONITORING_WINDOW},
            inbound={
                Channel.INPUT: DEFAULT_WINDOW,
                Channel.STDIN: DEFAULT_WINDOW,
                Channel.CONTROL: DEFAULT_WINDOW,
            },
        )

    # -- connection lifecycle --------------------------------------------------------------

    def connection_made(self, **hello: Any) -> None:
        """A new connection is up: forget the old one's bytes and start a handshake.

        Extra keyword arguments go into our HELLO (the runner sends its pid, for example).
        """
        self._decoder = FrameDecoder()
        self._pending.clear()
        self._nonce = os.urandom(16)
        self._peer_hello = None
        self._sent_auth = False
        self.established = False
        self.local_hello = {
            **hello,
            "role": self.role,
            "instance": self.instance_id,
            "version": PROTOCOL_VERSION,
            "nonce": self._nonce.hex(),
        }
        self._queue_json(FrameKind.HELLO, self.local_hello)

    def connection_lost(self) -> None:
        """The connection is gone; data stays in the replay buffers for the next one."""
        self.established = False
        self._pending.clear()

    # -- application side ------------------------------------------------------------------

    def writable(self, channel: int) -> int:
        """Bytes the application may send on ``channel`` now without exceeding the window."""
        return self.outbound[channel].writable()

    def send(self, channel: int, data: bytes) -> None:
        """Queue ``data`` on ``channel``; it is kept until the peer acknowledges it.

        ``data`` must fit in :meth:`writable`, except that a channel with nothing in flight
        takes one write of any size (an item larger than the window must go whole, alone).
        Large writes are split into frames of at most ``MAX_PAYLOAD`` bytes.

        Raises:
            WindowFull: ``data`` does not fit the window; nothing was queued.
            LinkError: the channel has ended.
        """
        out = self._outbound_for(channel)
        in_flight = out.in_flight()
        if in_flight and in_flight + len(data) > out.window:
            raise WindowFull(f"{in_flight} bytes sent on channel {channel} not yet read")
        self._queue_data(channel, out, data)

    def send_json(self, channel: int, body: Any, *, allowance: int = 0) -> None:
        """Queue one JSON message as one frame (message channels deliver whole frames).

        The message is queued only if the channel's unacknowledged bytes stay within its
        window plus ``allowance`` (room kept for a side's own few urgent messages).

        Raises:
            WindowFull: the message does not fit; nothing was queued.
            LinkError: the channel has ended, or the message exceeds one frame.
        """
        data = json.dumps(body, separators=(",", ":")).encode()
        out = self._outbound_for(channel)
        if len(data) > MAX_PAYLOAD:
            raise LinkError(f"a {len(data)}-byte message exceeds one frame")
        if out.in_flight() + len(data) > out.window + allowance:
            raise WindowFull(f"{out.in_flight()} bytes sent on channel {channel} not yet read")
        self._queue_data(channel, out, data)

    def _outbound_for(self, channel: int) -> Outbound:
        out = self.outbound[channel]
        if out.ended:
            raise LinkError(f"channel {channel} already ended")
        return out

    def _queue_data(self, channel: int, out: Outbound, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_PAYLOAD):
            payload = bytes(view[start : start + MAX_PAYLOAD]) if len(view) > MAX_PAYLOAD else data
            out.replay.append((out.next_offset, payload))
            if self.established:
                self._pending.append(
                    HEADER.pack(FrameKind.DATA, channel, 0, len(payload), out.next_offset)
                )
                self._pending.append(payload)
            out.next_offset += len(payload)

    def end(self, channel: int) -> None:
        out = self.outbound[channel]
        if out.ended:
            return
        out.ended = True
        if self.established:
            self._pending.append(HEADER.pack(FrameKind.END, channel, 0, 0, out.next_offset))

    def consume(self, channel: int, nbytes: int) -> None:
        """The application took ``nbytes`` more of ``channel``; acknowledge when worthwhile."""
        inbound = self.inbound[channel]
        inbound.consumed += nbytes
        if inbound.consumed > inbound.received:
            raise LinkError(f"consumed past what was received on channel {channel}")
        self._maybe_ack(channel, inbound)

    def send_message(self, body: Any) -> bool:
        """Send an unnumbered message now; it is dropped (returns False) if not connected."""
        if not self.established:
            return False
        self._queue_json(FrameKind.MSG, body)
        return True

    def data_to_send(self) -> bytes:
        """Everything queued for the socket since the last call."""
        return b"".join(self.parts_to_send())

    def parts_to_send(self) -> list[bytes]:
        """Everything queued for the socket since the last call, as headers and payloads (for a
        vectored write that does not copy the payloads)."""
        parts = self._pending
        self._pending = []
        return parts

    # -- network side ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the connection; returns what happened, in order.

        Raises:
            LinkError: the connection must be closed (protocol violation or bad proof).
        """
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            raise LinkError(str(exc)) from exc
        events: list[Event] = []
        for frame in frames:
            self._handle(frame, events)
        return events

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        kind = frame.kind
        if kind is FrameKind.DATA:
            self._require_established()
            self._on_data(frame, events)
        elif kind is FrameKind.ACK:
            self._require_established()
            self._on_ack(frame.channel, frame.offset, events)
        elif kind is FrameKind.END:
            self._require_established()
            self._on_end(frame, events)
        elif kind is FrameKind.MSG:
            self._require_established()
            events.append(Message(self._parse_json(frame)))
        elif kind is FrameKind.HELLO:
            self._on_hello(self._parse_json(frame))
        elif kind is FrameKind.AUTH:
            self._on_auth(self._parse_json(frame), events)

    def _require_established(self) -> None:
        if not self.established:
            raise LinkError("data before the handshake completed")

    def _inbound(self, channel: int) -> Inbound:
        try:
            return self.inbound[channel]
        except KeyError:
            raise LinkError(
                f"frame on channel {channel}, which this side does not receive"
            ) from None

    def _on_data(self, frame: Frame, events: list[Event]) -> None:
        inbound = self._inbound(frame.channel)
        start, payload = frame.offset, frame.payload
        end = start + len(payload)
        if inbound.ended:
            raise LinkError(f"data after the end of channel {frame.channel}")
        if end <= inbound.received:
            return  # a replay of bytes we already have
        if start > inbound.received:
            raise LinkError(
                f"gap on channel {frame.channel}: expected offset {inbound.received}, got {start}"
            )
        if start < inbound.received:
            payload = payload[inbound.received - start :]
        inbound.received = end
        events.append(Data(frame.channel, payload))

    def _on_end(self, frame: Frame, events: list[Event]) -> None:
        inbound = self._inbound(frame.channel)
        if inbound.ended:
            return
        if frame.offset != inbound.received:
            raise LinkError(
                f"end of channel {frame.channel} at {frame.offset}, but {inbound.received} received"
            )
        inbound.ended = True
        events.append(Ended(frame.channel))

    def _on_ack(self, channel: int, offset: int, events: list[Event]) -> None:
        out = self.outbound.get(channel)
        if out is None:
            raise LinkError(f"ack on channel {channel}, which this side does not send")
        if offset > out.next_offset:
            raise LinkError(f"ack beyond what was sent on channel {channel}")
        if offset <= out.acked:
            return
        out.acked = offset
        replay = out.replay
        while replay and replay[0][0] + len(replay[0][1]) <= offset:
            replay.popleft()
        events.append(WindowOpened(channel))

    def _maybe_ack(self, channel: int, inbound: Inbound) -> None:
        # Acknowledge once a quarter of the window is consumed, or when the reader caught up:
        # few ACKs on a fast stream, and a slow trickle is never left waiting for credit. When
        # the sender has most of its window out (a slow reader holds it back), every consumed
        # byte is reported at once: waiting for a quarter would stall the sender needlessly.
        unreported = inbound.consumed - inbound.acked
        if unreported <= 0 or not self.established:
            return
        if (
            unreported >= inbound.window // 4
            or inbound.consumed == inbound.received
            or inbound.received - inbound.acked >= inbound.window * 3 // 4
        ):
            inbound.acked = inbound.consumed
            self._pending.append(HEADER.pack(FrameKind.ACK, channel, 0, 0, inbound.consumed))

    # -- handshake -------------------------------------------------------------------------

    def _proof(self, role: str, nonce_hex: str) -> str:
        message = f"si-link/{role}/{self.instance_id}/{nonce_hex}".encode()
        return hmac.new(self._token, message, hashlib.sha256).hexdigest()

    def _on_hello(self, hello: Any) -> None:
        if not isinstance(hello, dict):
            raise LinkError("malformed HELLO")
        if hello.get("version") != PROTOCOL_VERSION:
            raise LinkError(
                f"peer speaks protocol {hello.get('version')}, we speak {PROTOCOL_VERSION}"
            )
        if hello.get("instance") != self.instance_id:
            raise LinkError(
                f"peer is instance {hello.get('instance')}, expected {self.instance_id}"
            )
        if hello.get("role") == self.role or not isinstance(hello.get("nonce"), str):
            raise LinkError("malformed HELLO")
        self._peer_hello = hello
        positions_in = {
            str(ch): {"received": s.received, "consumed": s.consumed, "ended": s.ended}
            for ch, s in self.inbound.items()
            if s.known
        }
        positions_out = {
            str(ch): {"base": s.acked, "next": s.next_offset, "ended": s.ended}
            for ch, s in self.outbound.items()
            if s.known
        }
        self._queue_json(
            FrameKind.AUTH,
            {
                "proof": self._proof(self.role, hello["nonce"]),
                "inbound": positions_in,
                "outbound": positions_out,
            },
        )
        self._sent_auth = True

    def _on_auth(self, auth: Any, events: list[Event]) -> None:
        if self._peer_hello is None or not self._sent_auth or not isinstance(auth, dict):
            raise LinkError("AUTH before HELLO")
        expected = self._proof(self._peer_hello["role"], self._nonce.hex())
        proof = auth.get("proof")
        if not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
            raise LinkError("the peer does not hold this instance's token")
        peer_in = _positions(auth.get("inbound"))
        peer_out = _positions(auth.get("outbound"))
        for channel, inbound in self.inbound.items():
            if not inbound.known:
                reported = peer_out.get(channel)
                base = _int(reported, "base")
                inbound.received = inbound.consumed = inbound.acked = base
                inbound.ended = False
                inbound.known = True
        self.established = True
        for channel, out in self.outbound.items():
            reported = peer_in.get(channel)
            if not out.known:
                # We lost our state: continue numbering where the peer is. What the application
                # queued before this (numbered from 0) moves behind that, unless the peer's
                # channel already ended: then it can never be delivered.
                resume = _int(reported, "received")
                peer_ended = bool(reported.get("ended")) if reported else False
                queued = () if peer_ended else out.replay
                out.replay = deque((resume + offset, payload) for offset, payload in queued)
                out.next_offset = resume + (0 if peer_ended else out.next_offset)
                out.acked = _int(reported, "consumed")
                out.ended = out.ended or peer_ended
                out.known = True
            elif reported is None:
                resume = out.acked  # the peer lost its state; it takes our base from AUTH
            else:
                resume = _int(reported, "received")
                if resume > out.next_offset:
                    raise LinkError(f"peer claims bytes never sent on channel {channel}")
                if _int(reported, "consumed") > out.acked:
                    self._on_ack(channel, _int(reported, "consumed"), events)
            self._resend(channel, out, resume)
        positions = {channel: inbound.received for channel, inbound in self.inbound.items()}
        events.append(Established(dict(self._peer_hello), positions))
        # Report what we consumed while disconnected so the peer's window opens.
        for channel, inbound in self.inbound.items():
            if inbound.consumed > inbound.acked:
                inbound.acked = inbound.consumed
                self._pending.append(HEADER.pack(FrameKind.ACK, channel, 0, 0, inbound.consumed))

    def _resend(self, channel: int, out: Outbound, resume: int) -> None:
        for offset, payload in out.replay:
            end = offset + len(payload)
            if end <= resume:
                continue
            if offset < resume:
                payload = payload[resume - offset :]
                offset = resume
            self._pending.append(HEADER.pack(FrameKind.DATA, channel, 0, len(payload), offset))
            self._pending.append(payload)
        if out.ended:
            self._pending.append(HEADER.pack(FrameKind.END, channel, 0, 0, out.next_offset))

    # -- helpers ---------------------------------------------------------------------------

    def _queue_json(self, kind: FrameKind, body: Any) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._pending.append(HEADER.pack(kind, 0, 0, len(payload), 0))
        self._pending.append(payload)

    @staticmethod
    def _parse_json(frame: Frame) -> Any:
        try:
            return json.loads(frame.payload)
        except ValueError as exc:
            raise LinkError(f"malformed {frame.kind.name} payload") from exc


def _positions(value: Any) -> dict[int, dict[str, Any]]:
    if not isinstance(value, dict):
        raise LinkError("malformed AUTH positions")
    result: dict[int, dict[str, Any]] = {}
    for key, entry in value.items():
        if not isinstance(entry, dict):
            raise LinkError("malformed AUTH positions")
        try:
            result[int(key)] = entry
        except ValueError:
            raise LinkError("malformed AUTH positions") from None
    return result


def _int(entry: dict[str, Any] | None, key: str) -> int:
    if entry is None:
        return 0
    value = entry.get(key, 0)
    if not isinstance(value, int) or value < 0:
        raise LinkError(f"malformed AUTH position {key!r}")
    return value
