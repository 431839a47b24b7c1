"""The runner's end of the link: serve hub connections on the listening socket.

Whichever hub connects and proves the instance's token gets the streams. At most one
connection is active; a newer one waits until the older one has been read to its end (or for
``OLD_CONNECTION_GRACE``), because bytes an old hub wrote before it died are still in that
socket and the new handshake must count them as received. Then the newer one takes over and
the link resends whatever the new hub lacks (``si.protocol.link``).

Resource handling: the server owns the accepted connections; the listening socket and the
link state belong to the runner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Protocol

from si.protocol.link import DEFAULT_WINDOW, Data, Ended, Link, LinkError, WindowOpened

# How long an older hub connection may take to reach its end once a newer hub connected.
OLD_CONNECTION_GRACE = 2.0
# One read of what a dead hub left in its connection's socket.
READ_WHAT_IS_LEFT = 256 * 1024

log = logging.getLogger("si.runner")


class LinkReceiver(Protocol):
    """What the link server reports to: the runner."""

    def on_data(self, channel: int, data: bytes) -> None: ...
    def on_ended(self, channel: int) -> None: ...
    def on_window_opened(self, channel: int) -> None: ...
    def count_traffic(self, nbytes: int) -> None: ...


class HubConnection(asyncio.Protocol):
    """One accepted connection from a hub; the LinkServer decides what it is for."""

    def __init__(self, server: LinkServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._fd = -1
        self._closed_here = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Room for a whole window of output in the socket: writes seldom wait for the hub.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEFAULT_WINDOW)
        self._fd = sock.fileno()
        self.server.attach(self)

    def data_received(self, data: bytes) -> None:
        self.server.receive(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed_here:
            self._read_what_is_left()
        self.server.detach(self)

    def _read_what_is_left(self) -> None:
        # asyncio drops a connection whose write fails (the hub died) without reading the rest
        # of its socket. But the hub answered its client once the kernel took those bytes, and
        # the next hub resumes from what this runner counts as received: read them now. The
        # socket is still open here (the transport closes it after this callback); the peer
        # is gone, so everything it will ever send is already queued.
        while self._fd >= 0 and not self._closed_here:  # a LinkError closes it here
            try:
                data = os.read(self._fd, READ_WHAT_IS_LEFT)
            except OSError:  # EAGAIN: nothing left; ECONNRESET comes only after the data
                return
            if not data:
                return
            self.server.receive(self, data)

    def close(self) -> None:
        self._closed_here = True
        if self.transport is not None:
            self.transport.close()


class LinkServer:
    def __init__(self, link: Link, receiver: LinkReceiver) -> None:
        self.link = link
        self.receiver = receiver
        self.connection: HubConnection | None = None
        # A newer hub's connection, waiting until the current one has been read to its end.
        self._waiting: HubConnection | None = None
        self._waiting_data: list[bytes] = []
        self._server: asyncio.AbstractServer | None = None

    async def serve(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: HubConnection(self), sock=listener)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    # -- connections -----------------------------------------------------------------------

    def attach(self, connection: HubConnection) -> None:
        """A hub connected: it becomes the active connection, or waits for the current one."""
        if self.connection is None:
            self._activate(connection)
            return
        if self._waiting is not None:
            self._waiting.close()  # a newer hub supersedes a waiting one
        self._waiting = connection
        self._waiting_data.clear()
        asyncio.get_running_loop().call_later(
            OLD_CONNECTION_GRACE, self._replace_stale, self.connection
        )

    def _activate(self, connection: HubConnection) -> None:
        self.connection = connection
        self.link.connection_made(pid=os.getpid())
        self.flush()

    def _replace_stale(self, old: HubConnection) -> None:
        # The old connection neither ended nor was replaced in time: drop it.
        if old is self.connection and self._waiting is not None:
            old.close()

    def detach(self, connection: HubConnection) -> None:
        if connection is self._waiting:
            self._waiting = None
            return
        if connection is not self.connection:
            return
        self.connection = None
        self.link.connection_lost()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._activate(waiting)
            for data in self._waiting_data:
                self.receive(waiting, data)
            self._waiting_data.clear()

    def receive(self, connection: HubConnection, data: bytes) -> None:
        if connection is self._waiting:
            self._waiting_data.append(data)  # its handshake waits for the old connection
            return
        if connection is not self.connection:
            return
        receiver = self.receiver
        receiver.count_traffic(len(data))
        try:
            events = self.link.receive_data(data)
        except LinkError as exc:
            log.warning("dropping hub connection: %s", exc)
            connection.close()
            return
        for event in events:
            if isinstance(event, Data):
                receiver.on_data(event.channel, event.data)
            elif isinstance(event, WindowOpened):
                receiver.on_window_opened(event.channel)
            elif isinstance(event, Ended):
                receiver.on_ended(event.channel)
            # Established needs nothing here (the link resends by itself); the hub sends no
            # unnumbered messages the runner must act on.
        self.flush()

    def flush(self) -> None:
        """Write what the link queued to the active connection."""
        data = self.link.data_to_send()
        connection = self.connection
        transport = connection.transport if connection is not None else None
        # A dying connection takes no more writes (the link resends them to the next hub).
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the active connection's socket buffer to empty."""
        connection = self.connection
        if connection is None or connection.transport is None:
            return
        transport = connection.transport
        deadline = time.monotonic() + timeout
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
