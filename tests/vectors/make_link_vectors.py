"""Build ``link.json``: the test vectors every implementation of the link must reproduce.

One protocol, two implementations (``si/protocol/link.py`` and ``si/runner/node/link.js``);
both replay this file and must emit and accept exactly the bytes and events it records.

Sections:

- ``frames``: encoded frames as hex, for the encoder and the decoder.
- ``proofs``: HMAC-SHA256 handshake proofs for a fixed token, instance id and nonce, computed
  here with ``hmac`` directly (not with the Link) so they check the Link, not each other.
- ``decoder_errors``: byte strings a decoder must refuse.
- ``scenarios``: scripted runs of a hub link and a runner link joined by a wire that the script
  cuts and reconnects, including a hub restart (a link that lost its state). Each step names an
  operation; the recorded results (``wire``: the exact bytes a side emitted, ``events``: what the
  other side reported, ``error``: whether it refused) are what every implementation must match.

Operations (``side`` is ``"hub"`` or ``"runner"``):

    connect   {nonces: {hub, runner}, hello: {hub, runner}}  both sides: connection_made
    send      {side, channel, hex}            queue bytes on a channel
    send_json {side, channel, body}           queue one JSON message
    end       {side, channel}
    consume   {side, channel, n}              the application took n bytes
    message   {side, body} -> queued          an unnumbered MSG (dropped when not established)
    flush     {side, deliver?} -> wire, events, error
              take what ``side`` queued; deliver it (or only its first ``deliver`` bytes, after
              which the connection is cut) to the other side
    receive   {side, hex} -> events, error    feed raw bytes to a side (hand-made frames)
    cut       {}                              both sides: connection_lost
    restart   {side}                          replace that side's link by one with known=False
    state     {side} -> outbound, inbound     positions per channel

Channel lists are given in ascending order: JSON objects with numeric keys come out in that
order in JavaScript, so the AUTH payloads of both implementations are then byte-identical.

Run ``python -m tests.vectors.make_link_vectors`` after a deliberate protocol change, review the
diff of ``link.json``, and change the other implementation to match.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

from si.protocol.frames import HEADER, MAX_PAYLOAD, FrameKind
from si.protocol.link import (
    Data,
    Ended,
    Established,
    Event,
    Link,
    LinkError,
    Message,
    WindowOpened,
)

VECTORS = Path(__file__).with_name("link.json")

TOKEN = bytes(range(32))
INSTANCE = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
HUB_SENDS = [0, 3, 5]
RUNNER_SENDS = [4, 6]


def nonce(n: int) -> str:
    return bytes([n] * 16).hex()


# -- the driver: replays one scenario against two Python links ------------------------------


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, Established):
        return {
            "type": "established",
            "peer": event.peer,
            "received": {str(ch): offset for ch, offset in event.received.items()},
        }
    if isinstance(event, Data):
        return {"type": "data", "channel": event.channel, "hex": event.data.hex()}
    if isinstance(event, Ended):
        return {"type": "ended", "channel": event.channel}
    if isinstance(event, WindowOpened):
        return {"type": "window", "channel": event.channel}
    assert isinstance(event, Message)
    return {"type": "message", "body": event.body}


class Pair:
    """A hub link and a runner link built from a scenario's ``links`` section."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.links = {side: self._make(side, known=True) for side in ("hub", "runner")}

    def _make(self, side: str, *, known: bool) -> Link:
        spec = self.spec[side]
        window = spec["window"]
        return Link(
            "hub" if side == "hub" else "runner",
            spec.get("instance", INSTANCE),
            bytes.fromhex(spec.get("token", TOKEN.hex())),
            {channel: window for channel in spec["outbound"]},
            {channel: window for channel in spec["inbound"]},
            known=known,
        )

    def _feed(self, side: str, data: bytes) -> dict[str, Any]:
        try:
            events = self.links[side].receive_data(data)
        except LinkError:
            return {"events": [], "error": True}
        return {"events": [event_json(e) for e in events], "error": False}

    def run(self, step: dict[str, Any]) -> dict[str, Any]:
        """Perform ``step``; returns what it produced (the keys the vectors record)."""
        op = step["op"]
        link = self.links.get(step.get("side", ""))
        if op == "connect":
            for side in ("hub", "runner"):
                fixed = bytes.fromhex(step["nonces"][side])
                with mock.patch("si.protocol.link.os.urandom", return_value=fixed):
                    self.links[side].connection_made(**step["hello"][side])
            return {}
        if op == "cut":
            for each in self.links.values():
                each.connection_lost()
            return {}
        if op == "receive":
            return self._feed(step["side"], bytes.fromhex(step["hex"]))
        if op == "restart":
            self.links[step["side"]] = self._make(step["side"], known=False)
            return {}
        assert link is not None, step
        if op == "send":
            link.send(step["channel"], bytes.fromhex(step["hex"]))
        elif op == "send_json":
            link.send_json(step["channel"], step["body"])
        elif op == "end":
            link.end(step["channel"])
        elif op == "consume":
            link.consume(step["channel"], step["n"])
        elif op == "message":
            return {"queued": link.send_message(step["body"])}
        elif op == "flush":
            wire = link.data_to_send()
            other = "runner" if step["side"] == "hub" else "hub"
            deliver = step.get("deliver")
            result = self._feed(other, wire if deliver is None else wire[:deliver])
            if deliver is not None:
                self.run({"op": "cut"})
            return {"wire": wire.hex(), **result}
        elif op == "state":
            return {
                "outbound": {
                    str(ch): {
                        "next": s.next_offset,
                        "acked": s.acked,
                        "ended": s.ended,
                        "writable": s.writable(),
                    }
                    for ch, s in link.outbound.items()
                },
                "inbound": {
                    str(ch): {"received": s.received, "consumed": s.consumed, "ended": s.ended}
                    for ch, s in link.inbound.items()
                },
            }
        else:
            raise ValueError(f"unknown op {op!r}")
        return {}


RESULT_KEYS = ("wire", "events", "error", "queued", "outbound", "inbound")


def record(scenario: dict[str, Any]) -> dict[str, Any]:
    """The scenario with every step's results filled in by the Python implementation."""
    pair = Pair(scenario["links"])
    steps = []
    for step in scenario["steps"]:
        plain = {k: v for k, v in step.items() if k not in RESULT_KEYS}
        steps.append({**plain, **pair.run(plain)})
    return {**scenario, "steps": steps}


# -- the content ----------------------------------------------------------------------------


def links(window: int = 64, **changes: Any) -> dict[str, Any]:
    spec = {
        "hub": {"outbound": HUB_SENDS, "inbound": RUNNER_SENDS, "window": window},
        "runner": {"outbound": RUNNER_SENDS, "inbound": HUB_SENDS, "window": window},
    }
    for side, extra in changes.items():
        spec[side] = {**spec[side], **extra}
    return spec


def connect(first: int, hub_hello: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "op": "connect",
        "nonces": {"hub": nonce(first), "runner": nonce(first + 1)},
        "hello": {"hub": hub_hello or {}, "runner": {"pid": 4242}},
    }


def handshake(first: int) -> list[dict[str, Any]]:
    """Connect and exchange HELLO and AUTH: hub HELLO, runner HELLO+AUTH, hub AUTH (+ replay)."""
    return [
        connect(first),
        {"op": "flush", "side": "hub"},
        {"op": "flush", "side": "runner"},
        {"op": "flush", "side": "hub"},
    ]


def flush(side: str, deliver: int | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"op": "flush", "side": side}
    if deliver is not None:
        step["deliver"] = deliver
    return step


def text(value: str) -> str:
    return value.encode().hex()


def frame_hex(kind: int, channel: int, offset: int, payload: bytes = b"") -> str:
    return (HEADER.pack(kind, channel, 0, len(payload), offset) + payload).hex()


def _split_pairs(hex_string: str) -> list[str]:
    return [hex_string[i : i + 2] for i in range(0, len(hex_string), 2)]


SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "handshake, streams both ways, acknowledgements and messages",
        "links": links(),
        "steps": [
            # Queued before any connection: numbered now, sent after the handshake.
            {"op": "send_json", "side": "runner", "channel": 4, "body": [3000, {"pid": 4242}]},
            {"op": "message", "side": "runner", "body": [3001, {"healthy": True}]},
            {"op": "state", "side": "runner"},
            *handshake(0x10),
            flush("runner"),  # the PING, replayed after the handshake
            {"op": "consume", "side": "hub", "channel": 4, "n": 19},
            {"op": "message", "side": "runner", "body": [3001, {"healthy": True}]},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("3000\n3001\n")},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("3002\n")},
            flush("runner"),
            flush("hub"),  # the ACK for the PING
            {"op": "consume", "side": "hub", "channel": 6, "n": 5},
            flush("hub"),  # nothing: 5 < a quarter of the window, and not caught up
            {"op": "consume", "side": "hub", "channel": 6, "n": 10},
            flush("hub"),  # caught up: ACK 15
            {
                "op": "send",
                "side": "hub",
                "channel": 5,
                "hex": text("Content-Type: text/plain\r\n\r\n"),
            },
            {"op": "send", "side": "hub", "channel": 5, "hex": text("caf\u00e9\n")},
            {"op": "end", "side": "hub", "channel": 5},
            {
                "op": "send_json",
                "side": "hub",
                "channel": 3,
                "body": [5001, {"eventName": "e", "message": "\u00e9t\u00e9"}],
            },
            {"op": "message", "side": "hub", "body": {"note": "caf\u00e9"}},
            flush("hub"),
            {"op": "consume", "side": "runner", "channel": 5, "n": 34},
            {"op": "consume", "side": "runner", "channel": 3, "n": 10},
            flush("runner"),
            {"op": "state", "side": "hub"},
            {"op": "state", "side": "runner"},
        ],
    },
    {
        "name": "flow control: the window closes, acknowledgements open it in quarters",
        "links": links(),
        "steps": [
            *handshake(0x20),
            {"op": "send", "side": "runner", "channel": 6, "hex": "ab" * 40},
            {"op": "send", "side": "runner", "channel": 6, "hex": "cd" * 24},
            {"op": "state", "side": "runner"},  # writable 0
            flush("runner"),
            {"op": "consume", "side": "hub", "channel": 6, "n": 15},
            flush("hub"),  # nothing yet
            {"op": "consume", "side": "hub", "channel": 6, "n": 1},
            flush("hub"),  # 16 = a quarter: ACK
            {"op": "state", "side": "runner"},
            {"op": "consume", "side": "hub", "channel": 6, "n": 48},
            flush("hub"),
            {"op": "state", "side": "runner"},
            {"op": "end", "side": "runner", "channel": 6},
            flush("runner"),
        ],
    },
    {
        "name": "a connection cut mid-frame: reconnect resends exactly what is missing",
        "links": links(window=1 << 20),
        "steps": [
            *handshake(0x30),
            {"op": "send", "side": "runner", "channel": 6, "hex": text("one\n")},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("two\n")},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("three\n")},
            {"op": "send_json", "side": "hub", "channel": 3, "body": [4003, {"monitoringRate": 2}]},
            # The hub's bytes never leave: the connection breaks first.
            {"op": "cut"},
            # Runner -> hub: the first frame arrives whole, the second only in part.
            *handshake(0x32),
            flush("runner", deliver=20 + 4 + 10),
            {"op": "consume", "side": "hub", "channel": 6, "n": 4},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("four\n")},
            {"op": "state", "side": "hub"},
            {"op": "state", "side": "runner"},
            *handshake(0x34),
            flush("runner"),
            flush("hub"),
            {"op": "state", "side": "runner"},
        ],
    },
    {
        "name": "a newer connection replaces an older one without a cut",
        "links": links(),
        "steps": [
            *handshake(0x40),
            {"op": "send", "side": "hub", "channel": 0, "hex": text("stdin\n")},
            flush("hub"),
            *handshake(0x42),  # a second dial: the runner drops the old connection
            flush("runner"),
            {"op": "consume", "side": "runner", "channel": 0, "n": 6},
            flush("runner"),
            {"op": "state", "side": "hub"},
        ],
    },
    {
        "name": "hub restart: a link that lost its state takes the runner's positions",
        "links": links(window=1 << 20),
        "steps": [
            *handshake(0x50),
            {"op": "send_json", "side": "runner", "channel": 4, "body": [3000, {"pid": 4242}]},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("0123456789")},
            flush("runner"),
            {"op": "consume", "side": "hub", "channel": 4, "n": 19},
            # Half of the output frame consumed: the ACK lands mid-frame.
            {"op": "consume", "side": "hub", "channel": 6, "n": 5},
            flush("hub"),
            {
                "op": "send",
                "side": "hub",
                "channel": 5,
                "hex": text("Content-Type: text/plain\r\n\r\n"),
            },
            {"op": "send_json", "side": "hub", "channel": 3, "body": [4001, {"timeout": 7000}]},
            flush("hub"),
            {"op": "consume", "side": "runner", "channel": 5, "n": 28},
            {"op": "consume", "side": "runner", "channel": 3, "n": 23},
            # The hub crashes before the runner's ACKs reach it.
            {"op": "cut"},
            {"op": "send", "side": "runner", "channel": 6, "hex": text("abc")},
            {"op": "restart", "side": "hub"},
            # The new hub queues a control message before it knows any position.
            {"op": "send_json", "side": "hub", "channel": 3, "body": [4002, {}]},
            {"op": "state", "side": "hub"},  # writable 0 everywhere: nothing is known
            *handshake(0x52),
            flush("runner"),
            {"op": "state", "side": "hub"},
            {"op": "state", "side": "runner"},
            {"op": "consume", "side": "hub", "channel": 6, "n": 8},
            {"op": "consume", "side": "runner", "channel": 3, "n": 9},
            flush("hub"),
            flush("runner"),
            {"op": "state", "side": "runner"},
        ],
    },
    {
        "name": "hub restart after the input ended: queued input can never be delivered",
        "links": links(),
        "steps": [
            *handshake(0x60),
            {"op": "send", "side": "hub", "channel": 5, "hex": text("last\n")},
            {"op": "end", "side": "hub", "channel": 5},
            flush("hub"),
            {"op": "consume", "side": "runner", "channel": 5, "n": 5},
            flush("runner"),
            {"op": "cut"},
            {"op": "restart", "side": "hub"},
            {"op": "send", "side": "hub", "channel": 5, "hex": text("late\n")},
            *handshake(0x62),
            {"op": "state", "side": "hub"},
            flush("runner"),
        ],
    },
    {
        "name": "the runner ended its output while no hub was connected",
        "links": links(),
        "steps": [
            *handshake(0x70),
            {"op": "send", "side": "runner", "channel": 6, "hex": text("done\n")},
            {"op": "end", "side": "runner", "channel": 6},
            {"op": "cut"},
            {"op": "restart", "side": "hub"},
            *handshake(0x72),
            flush("runner"),
            {"op": "consume", "side": "hub", "channel": 6, "n": 5},
            flush("hub"),
            {"op": "state", "side": "runner"},
        ],
    },
    {
        "name": "refused: a peer without the token",
        "links": links(runner={"token": "ff" * 32}),
        "steps": [connect(0x80), flush("hub"), flush("runner")],
    },
    {
        "name": "refused: a peer of another instance, version or the same role",
        "links": links(),
        "steps": [
            connect(0x90),
            {
                "op": "receive",
                "side": "runner",
                "hex": frame_hex(
                    1, 0, 0, b'{"role":"hub","instance":"x","version":1,"nonce":"00"}'
                ),
            },
            {"op": "cut"},
            connect(0x92),
            {
                "op": "receive",
                "side": "runner",
                "hex": frame_hex(
                    1,
                    0,
                    0,
                    f'{{"role":"hub","instance":"{INSTANCE}","version":2,"nonce":"00"}}'.encode(),
                ),
            },
            {"op": "cut"},
            connect(0x94),
            {
                "op": "receive",
                "side": "runner",
                "hex": frame_hex(
                    1,
                    0,
                    0,
                    f'{{"role":"runner","instance":"{INSTANCE}","version":1,"nonce":"00"}}'.encode(),
                ),
            },
            {"op": "cut"},
            connect(0x96),
            {"op": "receive", "side": "runner", "hex": frame_hex(1, 0, 0, b"not json")},
        ],
    },
    {
        "name": "refused: stream frames before the handshake, and AUTH before HELLO",
        "links": links(),
        "steps": [
            connect(0xA0),
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 0, b"x")},
            {"op": "cut"},
            connect(0xA2),
            {"op": "receive", "side": "runner", "hex": frame_hex(6, 0, 0, b"{}")},
            {"op": "cut"},
            connect(0xA4),
            {"op": "receive", "side": "runner", "hex": frame_hex(2, 0, 0, b'{"proof":"00"}')},
        ],
    },
    {
        "name": "after the handshake: duplicates dropped, overlaps trimmed, gaps refused",
        "links": links(),
        "steps": [
            *handshake(0xB0),
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 0, b"ab")},
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 0, b"ab")},
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 1, b"bcd")},
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 9, b"zz")},
        ],
    },
    {
        "name": "refused after the handshake: data on a channel this side sends",
        "links": links(),
        "steps": [
            *handshake(0xB2),
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 6, 0, b"wrong way")},
        ],
    },
    {
        "name": "refused after the handshake: an ACK beyond what was sent",
        "links": links(),
        "steps": [*handshake(0xB4), {"op": "receive", "side": "runner", "hex": frame_hex(5, 6, 1)}],
    },
    {
        "name": "after the handshake: END only at the received offset, then no more data",
        "links": links(),
        "steps": [
            *handshake(0xB6),
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 0, b"four")},
            {"op": "receive", "side": "runner", "hex": frame_hex(4, 5, 3)},
        ],
    },
    {
        "name": "after the handshake: a repeated END is ignored, data after it refused",
        "links": links(),
        "steps": [
            *handshake(0xB8),
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 0, b"four")},
            {"op": "receive", "side": "runner", "hex": frame_hex(4, 5, 4)},
            {"op": "receive", "side": "runner", "hex": frame_hex(4, 5, 4)},
            {"op": "state", "side": "runner"},
            {"op": "receive", "side": "runner", "hex": frame_hex(3, 5, 4, b"late")},
        ],
    },
    {
        "name": "frames split at every byte still decode",
        "links": links(),
        "steps": [
            *handshake(0xC0),
            *[
                {"op": "receive", "side": "runner", "hex": byte}
                for byte in _split_pairs(
                    frame_hex(3, 3, 0, b'[4003,{"monitoringRate":2}]') + frame_hex(6, 0, 0, b"[1]")
                )
            ],
        ],
    },
]


FRAMES = [
    (FrameKind.HELLO, 0, 0, b'{"role":"hub"}'),
    (FrameKind.DATA, 6, 0, b"3000\n"),
    (FrameKind.DATA, 5, 1234567, bytes(range(256))),
    (FrameKind.END, 6, 5, b""),
    (FrameKind.ACK, 4, 0x1_0000_0001, b""),
    (FrameKind.MSG, 0, 0, b'[3001,{"healthy":true}]'),
    (FrameKind.DATA, 255, 2**53 - 1, b"x"),
]


def build() -> dict[str, Any]:
    frames = [
        {
            "kind": int(kind),
            "channel": channel,
            "offset": offset,
            "payload": payload.hex(),
            "hex": (HEADER.pack(kind, channel, 0, len(payload), offset) + payload).hex(),
        }
        for kind, channel, offset, payload in FRAMES
    ]
    proofs = []
    for role in ("hub", "runner"):
        for n in (0x01, 0xEE):
            nonce_hex = nonce(n)
            message = f"si-link/{role}/{INSTANCE}/{nonce_hex}".encode()
            proofs.append(
                {
                    "token": TOKEN.hex(),
                    "instance": INSTANCE,
                    "role": role,
                    "nonce": nonce_hex,
                    "message": message.decode(),
                    "proof": hmac.new(TOKEN, message, hashlib.sha256).hexdigest(),
                }
            )
    decoder_errors = [
        {"why": "unknown kind", "hex": HEADER.pack(9, 0, 0, 0, 0).hex()},
        {"why": "payload over MAX_PAYLOAD", "hex": HEADER.pack(3, 6, 0, MAX_PAYLOAD + 1, 0).hex()},
    ]
    return {
        "about": (
            "Shared test vectors of the si hub<->runner link; generated by "
            "tests/vectors/make_link_vectors.py from the Python implementation, replayed by "
            "tests/protocol/test_vectors.py and si/runner/node/test/link.test.js."
        ),
        "header_size": HEADER.size,
        "max_payload": MAX_PAYLOAD,
        "frames": frames,
        "proofs": proofs,
        "decoder_errors": decoder_errors,
        "scenarios": [record(scenario) for scenario in SCENARIOS],
    }


def main() -> None:
    VECTORS.write_text(json.dumps(build(), indent=1) + "\n")
    sys.stdout.write(f"wrote {VECTORS}\n")


if __name__ == "__main__":
    main()
