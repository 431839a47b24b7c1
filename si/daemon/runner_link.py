"""The hub's end of one instance's link: dial the runner's socket, pump frames both ways.

The protocol state (``si.protocol.link.Link``) outlives connections; this shell only moves its
bytes. It dials again while the runner lives, so a broken connection costs a reconnect, never
data.

Resource handling: one task (``run``) per instance, in the hub's nursery, owning the socket; a
writer task inside it is the only one that sends. Writes wait for the link's window, so memory
per instance is bounded by the windows whatever the peers do.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from si.daemon.vectored import send_all_parts
from si.daemon.wakeup import Changes, WorkFlag
from si.paths import connectable_unix_path
from si.protocol.frames import Channel
from si.protocol.link import (
    DEFAULT_WINDOW,
    Data,
    Ended,
    Established,
    Event,
    Link,
    LinkError,
    Message,
    WindowOpened,
)

log = logging.getLogger("si.hub.link")

RECEIVE_SIZE = 256 * 1024
# Redial pacing while the runner lives but its socket does not answer (it is starting, or a
# passing error): quick first retries so a hub restart re-adopts in well under a second.
RETRY_FIRST = 0.01
RETRY_MAX = 0.5
# A runner must complete the handshake this fast, or it is not the runner we are looking for.
HANDSHAKE_TIMEOUT = 5.0


class LinkOwner(Protocol):
    """What the link reports to: the hub's Instance."""

    def check_peer(self, peer: dict[str, Any]) -> str | None:
        """Why the authenticated peer is not the runner we hold (None: it is)."""
        ...

    def on_established(self, peer: dict[str, Any], received: dict[int, int]) -> None: ...
    def on_output(self, data: bytes) -> None: ...
    def on_output_end(self) -> None: ...
    def on_monitoring(self, message: Any) -> None: ...
    def on_message(self, message: Any) -> None: ...
    def runner_alive(self) -> bool: ...
    def on_unreachable(self, reason: str) -> None: ...


async def connect_unix(path: str) -> trio.SocketStream:
    target, dirfd = connectable_unix_path(path)
    try:
        stream = await trio.open_unix_socket(target)
    finally:
        if dirfd is not None:
            os.close(dirfd)
    # Room for a whole window of input in the socket: the writer hands it over in one go.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEFAULT_WINDOW)
    return stream


Connect = Callable[[], Awaitable[trio.abc.Stream]]


class PeerRefused(LinkError):
    """The peer holds the token but is not the process the hub watches: never adopt it."""


class RunnerLink:
    """Args:
    owner: receives what arrives (the hub's Instance).
    link: the protocol state; it outlives connections.
    socket_path: the runner's socket, dialled unless ``connect`` is given.
    connect: how to reach the runner (tests pass in-memory streams).
    prove_within: for a runner being adopted: if no handshake succeeds within this many
        seconds, or the runner fails to prove the token, ``owner.on_unreachable`` is called
        and the link gives up. ``None`` keeps trying while the runner lives.
    handshake_timeout: how long one connection may take to complete its handshake.
    """

    def __init__(
        self,
        owner: LinkOwner,
        link: Link,
        socket_path: str,
        *,
        connect: Connect | None = None,
        prove_within: float | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.owner = owner
        self.link = link
        self.socket_path = socket_path
        self._connect: Connect = connect or (lambda: connect_unix(socket_path))
        self.prove_within = prove_within
        self.handshake_timeout = handshake_timeout
        self.proven = False
        self._stream: trio.abc.Stream | None = None
        self._dirty = WorkFlag()
        self._window_changed = Changes()
        self._requested = 0  # bumped by every flush(); the writer records what it has sent
        self._sent_generation = 0
        self._flushed = Changes()
        self._over = False  # run() returned: no connection will come
        self.connected = trio.Event()
        self.dials = 0

    # -- used by the hub -------------------------------------------------------------------

    def flush(self) -> None:
        """Something was queued on the link: let the writer send it."""
        self._requested += 1
        self._dirty.set()

    async def wait_flushed(self) -> bool:
        """Wait until everything queued so far is in the runner's socket; ``False`` if the
        runner went away first.

        Once the kernel took the bytes the runner reads them even if this hub dies next (both
        runners read a dead hub's connection to its end), and the next hub resumes from what
        the runner counts as received. The replay buffer alone is not enough: it dies with this
        hub. So while the runner is not connected, this waits for the next connection.
        """
        while not self._over:
            stream = self._stream
            if stream is not None and self.link.established:
                self.flush()
                target = self._requested
                while self._sent_generation < target and self._stream is stream:
                    await self._flushed.wait()
                if self._stream is stream:
                    return True
            else:
                await self._flushed.wait()  # notified on each handshake and at the end
        return False

    async def send(self, channel: int, data: bytes) -> None:
        """Queue ``data`` on ``channel`` once the peer's window allows it."""
        start = 0
        while start < len(data):
            while self.link.writable(channel) <= 0:
                await self._window_changed.wait()
            room = self.link.writable(channel)
            if start == 0 and room >= len(data):
                piece = data  # all of it fits: queued as it is, not copied
            else:
                piece = bytes(memoryview(data)[start : start + room])
            self.link.send(channel, piece)
            start += len(piece)
            self.flush()

    def send_json(self, channel: int, body: Any, *, allowance: int = 0) -> None:
        """Queue one message if it fits in the channel's window plus ``allowance`` bytes.

        A runner that does not read its control channel (its event loop blocked, the process
        stopped) must not make the hub hold every message sent to it: what does not fit is
        refused, and the caller says so. ``allowance`` lets the hub's own few STOP and KILL
        messages through even when clients have filled the window.

        Raises:
            WindowFull: the message was not queued.
        """
        self.link.send_json(channel, body, allowance=allowance)
        self.flush()

    def end(self, channel: int) -> None:
        self.link.end(channel)
        self.flush()

    def consume(self, channel: int, nbytes: int) -> None:
        self.link.consume(channel, nbytes)
        self.flush()

    # -- the connection loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Keep a connection to the runner while it lives. Returns when the runner is gone,
        or (adoption) when it could not be proven within ``prove_within`` seconds."""
        try:
            await self._keep_connected()
        finally:
            self._over = True
            self._flushed.notify()

    async def _keep_connected(self) -> None:
        delay = RETRY_FIRST
        deadline = None if self.prove_within is None else trio.current_time() + self.prove_within
        while self.owner.runner_alive():
            if not self.proven and deadline is not None and trio.current_time() >= deadline:
                self.owner.on_unreachable("its socket did not answer with a valid handshake")
                return
            self.dials += 1
            try:
                stream = await self._connect()
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
                    log.debug("dial %s: %s", self.socket_path, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            refused, disproven = await self._serve_connection(stream)
            if disproven or (refused is not None and not self.proven and deadline is not None):
                assert refused is not None
                self.owner.on_unreachable(refused)
                return
            if self.proven:
                delay = RETRY_FIRST
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _serve_connection(self, stream: trio.abc.Stream) -> tuple[str | None, bool]:
        """Pump one connection until it ends; returns why the peer was refused, if it was,
        and whether it was disproven (not the watched process: no later dial can help)."""
        self._stream = stream
        self.link.connection_made()
        refused: str | None = None
        disproven = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                self.flush()
                try:
                    refused = await self._pump(stream)
                except PeerRefused as exc:
                    log.warning("runner at %s refused: %s", self.socket_path, exc)
                    refused, disproven = str(exc), True
                except LinkError as exc:
                    # The nursery would wrap it in a group: handle it here, in the body.
                    log.warning("link to %s broken: %s", self.socket_path, exc)
                    refused = None if self.link.established else str(exc)
                nursery.cancel_scope.cancel()
        finally:
            self._stream = None
            self.link.connection_lost()
            self.connected = trio.Event()
            self._flushed.notify()
            with trio.CancelScope(shield=True):
                await stream.aclose()
        return refused, disproven

    async def _pump(self, stream: trio.abc.Stream) -> str | None:
        with trio.move_on_after(self.handshake_timeout) as handshake:
            while not self.link.established:
                if not await self._receive_once(stream):
                    return None
        if handshake.cancelled_caught:
            log.warning("runner at %s did not complete the handshake", self.socket_path)
            return "it did not complete the handshake"
        self.proven = True
        while await self._receive_once(stream):
            pass
        return None

    async def _receive_once(self, stream: trio.abc.Stream) -> bool:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        if not data:
            return False
        self._dispatch(self.link.receive_data(bytes(data)))
        self.flush()
        return True

    def _dispatch(self, events: list[Event]) -> None:
        owner = self.owner
        for event in events:
            if isinstance(event, Data):
                if event.channel == Channel.OUTPUT:
                    owner.on_output(event.data)
                elif event.channel == Channel.MONITORING:
                    self.link.consume(Channel.MONITORING, len(event.data))
                    owner.on_monitoring(_json(event.data))
            elif isinstance(event, WindowOpened):
                self._window_changed.notify()
            elif isinstance(event, Ended):
                if event.channel == Channel.OUTPUT:
                    owner.on_output_end()
            elif isinstance(event, Established):
                refusal = owner.check_peer(event.peer)
                if refusal is not None:
                    raise PeerRefused(refusal)
                self.connected.set()
                owner.on_established(event.peer, event.received)
                self._window_changed.notify()
                self._flushed.notify()  # wait_flushed may now write
            elif isinstance(event, Message):
                owner.on_message(event.body)

    async def _writer(self) -> None:
        while True:
            await self._dirty.take()
            generation = self._requested
            parts = self.link.parts_to_send()
            stream = self._stream
            if parts and stream is not None:
                try:
                    await send_all_parts(stream, parts)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            self._sent_generation = generation
            self._flushed.notify()


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
