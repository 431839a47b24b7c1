"""A small blocking HTTP/1.1 client on sockets and h11, for :class:`si.client.HubClient`.

Why not httpx: importing it costs a command-line call of ``si`` about 90 ms, more than the rest
of the command together. h11 (which the hub's server is built on too) does the protocol; this
module only moves bytes between it and a socket.

What it does that a hub client needs: Unix sockets and TCP (TLS for ``https``), a connect
timeout but no read timeout (the hub legitimately holds some requests and streams for long),
streamed uploads that notice an early error reply instead of writing into a hub that stopped
reading, response bodies handed over as they arrive, and keep-alive reuse of one idle
connection.

Resource handling: a :class:`Connection` owns its socket. :class:`Transport` keeps at most
:data:`MAX_IDLE` idle connections and closes them in :meth:`Transport.close`.

Error handling: a failure to connect raises :class:`ConnectFailed`; a connection that breaks
(or a peer that violates HTTP) raises :class:`ConnectionLost`. Both are ``OSError`` subclasses so
callers may treat them as I/O failures; :class:`si.client.HubClient` turns them into one-line
:class:`si.client.HubError` messages.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import h11

# Bytes asked of the kernel per read: a typical socket buffer, so a burst arrives in one piece.
READ_SIZE = 64 * 1024
# Idle keep-alive connections kept: the CLI makes a few requests in a row, never in parallel.
MAX_IDLE = 2


class ConnectFailed(OSError):
    """No connection could be made (nobody listening, no such socket, timeout)."""

    # TLS was asked of a server that answered in plain text / refused the handshake.
    tls_mismatch = False
    tls_refused = False


class ConnectionLost(OSError):
    """The connection broke, or the peer spoke something that is not HTTP/1.1."""

    # The server closed before sending a single byte of an answer (a TLS port spoken to in
    # plain HTTP does that).
    closed_unanswered = False


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: a Unix socket path, or a TCP host and port (maybe TLS)."""

    unix_path: str | None = None
    host: str = ""
    port: int = 0
    tls: bool = False

    @property
    def host_header(self) -> str:
        if self.unix_path is not None:
            return "si"
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class Response:
    """A response whose head has arrived; read the body with :meth:`iter_bytes`/:meth:`read`."""

    status: int
    headers: dict[str, str]
    _connection: Connection
    _transport: Transport
    _done: bool = False
    _body: bytes | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def iter_bytes(self) -> Iterator[bytes]:
        """The body's bytes as they arrive. Raises :class:`ConnectionLost` on a broken body."""
        try:
            while not self._done:
                event = self._connection.next_event()
                if isinstance(event, h11.Data):
                    if event.data:
                        yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                    self._transport.release(self._connection)
        finally:
            if not self._done:
                self._connection.close()

    def read(self) -> bytes:
        """The whole body (once)."""
        if self._body is None:
            self._body = b"".join(self.iter_bytes())
        return self._body

    def close(self) -> None:
        """Stop reading: an unfinished response's connection cannot be reused, so it is closed."""
        if not self._done:
            self._connection.close()
            self._done = True


class Connection:
    """One socket with its h11 state machine.

    Events that arrive while a request body is still being written (an early reply) are kept
    in order in ``pending`` and handed out first by :meth:`next_event`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)
        self.closed = False
        self.pending: list[Any] = []
        # The server's end of file arrived while we were still writing.
        self.eof = False
        self.received_any = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    def write(self, event: Any) -> None:
        data = self.h11.send(event)
        if not data:
            return
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionLost(exc.errno, exc.strerror or str(exc)) from exc

    def write_chunked_body(
        self, chunks: Iterable[bytes], on_body_error: Callable[[Exception], None]
    ) -> None:
        """Write ``chunks`` as a chunked request body straight to the socket, bypassing h11.

        For a duplex request: one thread writes the body this way while another reads the
        response through h11, which is not made for two threads at once. When the body itself
        fails (a file or stdin that cannot be read, a generator that raises), ``on_body_error``
        is told and the socket shut down: the reading side then stops waiting for output that
        would never end. A send that fails means the server closed the connection, which the
        reading side sees by itself (or, when the output had ended, the rest of the input was
        not wanted, as with ``head``).
        """
        frames = chunk_frames(chunks)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except Exception as exc:
                on_body_error(exc)
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
                return
            try:
                self.sock.sendall(frame)
            except OSError:
                return

    def next_event(self) -> Any:
        """The next h11 event from the peer, reading the socket as needed."""
        try:
            return self._next_event()
        except ConnectionLost as exc:
            exc.closed_unanswered = not self.received_any
            raise

    def _next_event(self) -> Any:
        while True:
            if self.pending:
                event = self.pending.pop(0)
            else:
                event = self._parse()
                if event is h11.NEED_DATA:
                    try:
                        data = self.sock.recv(READ_SIZE)
                    except OSError as exc:
                        self.close()
                        raise ConnectionLost(exc.errno, exc.strerror or str(exc)) from exc
                    self.received_any = self.received_any or bool(data)
                    self.h11.receive_data(data)
                    continue
            if isinstance(event, h11.ConnectionClosed):
                self.close()
                raise ConnectionLost("the server closed the connection")
            return event

    def _parse(self) -> Any:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            self.close()
            raise ConnectionLost(f"the connection broke off: {exc}") from exc

    def is_stale(self) -> bool:
        """An idle connection with something to read has been closed by the server."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def upload(self, chunks: Iterable[bytes]) -> bool:
        """Send a request body; return True if the server refused it before the end.

        A server may answer an error before it read the whole body and then stop reading; a
        blocking write would wait for ever. Each chunk is written only when the socket takes
        it, and whatever the server sent meanwhile is parsed into ``pending``.
        """
        for chunk in chunks:
            if chunk and self._write_watching(self.h11.send(h11.Data(data=chunk))):
                return True
        return False

    def _write_watching(self, data: bytes) -> bool:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLOUT)
        while view:
            events = 0
            for _fd, mask in poller.poll():
                events |= mask
            if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                if self._refused():
                    return True
                if self.eof or events & (select.POLLHUP | select.POLLERR):
                    self.close()
                    raise ConnectionLost("the server closed the connection during the upload")
                if not events & select.POLLOUT:
                    continue
            try:
                self.sock.setblocking(False)
                sent = self.sock.send(view)
            except BlockingIOError:
                continue
            except OSError as exc:
                if self._refused():
                    return True
                self.close()
                raise ConnectionLost(exc.errno, exc.strerror or str(exc)) from exc
            finally:
                if not self.closed:
                    self.sock.setblocking(True)
            view = view[sent:]
        return False

    def _refused(self) -> bool:
        """Take in what the server sent so far; True once it answered with an error status."""
        try:
            self.sock.setblocking(False)
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        finally:
            if not self.closed:
                self.sock.setblocking(True)
        if data is not None and not self.eof:
            self.eof = not data
            self.h11.receive_data(data)
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                break
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            self.pending.append(event)
            if isinstance(event, h11.ConnectionClosed):
                break
        # STH answers 200/202 before it reads an upload: only an error stops the upload.
        return any(isinstance(e, h11.Response) and e.status_code >= 400 for e in self.pending)


class Transport:
    """Makes requests to one :class:`Endpoint`; keeps idle connections for reuse.

    Args:
        endpoint: the server.
        connect_timeout: seconds to wait for a connection (``None``: the OS's own limit).
        unix_connect_path: the path to pass to ``connect`` for a Unix endpoint (it may differ
            from ``endpoint.unix_path`` when that is longer than the kernel accepts).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float | None,
        unix_connect_path: str | None = None,
        ca: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.ca = ca
        self.unix_connect_path = unix_connect_path or endpoint.unix_path
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def release(self, connection: Connection) -> None:
        """Return a connection whose exchange is complete; kept if both sides allow it."""
        if connection.closed:
            return
        h = connection.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            try:
                h.start_next_cycle()
            except h11.LocalProtocolError:
                connection.close()
                return
            with self._lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(connection)
                    return
        connection.close()

    def connect(self) -> Connection:
        endpoint = self.endpoint
        try:
            if endpoint.unix_path is not None:
                sock = self._connect_unix(self.unix_connect_path or endpoint.unix_path)
            else:
                sock = socket.create_connection(
                    (endpoint.host, endpoint.port), timeout=self.connect_timeout
                )
                if endpoint.tls:
                    sock = self._wrap_tls(sock)
            sock.settimeout(None)
        except ConnectFailed:
            raise
        except TimeoutError as exc:
            raise ConnectFailed(exc.errno, "timed out while connecting") from exc
        except OSError as exc:
            raise ConnectFailed(exc.errno, exc.strerror or str(exc)) from exc
        return Connection(sock)

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        """TLS on ``sock``, verifying the server against ``ca`` (a PEM file) or the system's
        store, by the host name it was reached by."""
        import ssl

        try:
            context = ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            failed = ConnectFailed(f"cannot read the CA file {self.ca}: {exc}")
            failed.tls_refused = True
            raise failed from None
        try:
            return context.wrap_socket(sock, server_hostname=self.endpoint.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            failed = ConnectFailed(
                f"the hub's certificate failed verification ({exc.verify_message}); "
                "name its CA with --ca or SI_CA"
            )
            failed.tls_refused = True
            raise failed from None
        except ssl.SSLError as exc:
            sock.close()
            failed = ConnectFailed(exc.reason or str(exc))
            if exc.reason == "WRONG_VERSION_NUMBER":
                failed.tls_mismatch = True  # an HTTP answer where a TLS record should be
            else:
                failed.tls_refused = True
            raise failed from None
        except BaseException:
            sock.close()
            raise

    def _connect_unix(self, path: str) -> socket.socket:
        """Connect to a Unix socket, waiting out a full listen queue.

        A TCP client whose SYN finds the queue full retransmits; a Unix socket with a timeout
        fails at once with EAGAIN instead. Many clients reconnecting to a hub that has just
        restarted meet exactly that, so this retries until the connect timeout.
        """
        deadline = None if self.connect_timeout is None else time.monotonic() + self.connect_timeout
        delay = 0.002
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(path)
                return sock
            except BlockingIOError:
                sock.close()
                if deadline is not None and time.monotonic() + delay > deadline:
                    full = "the hub's listen queue stayed full"
                    raise TimeoutError(errno.ETIMEDOUT, full) from None
            except BaseException:
                sock.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _take(self) -> tuple[Connection, bool]:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.is_stale():
                    connection.close()
                    continue
                return connection, True
        return self.connect(), False

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | Iterable[bytes] | None = None,
    ) -> Response:
        """Send a request and return once the response head arrived.

        ``body``: bytes are sent with a length; an iterable of chunks is streamed chunked unless
        ``headers`` give a ``content-length``.
        """
        replayable = body is None or isinstance(body, bytes)
        connection, reused = self._take()
        try:
            return self._exchange(connection, method, target, headers, body)
        except ConnectionLost:
            # A kept connection the server closed in the meantime: try once on a fresh one.
            if not (reused and replayable):
                raise
            return self._exchange(self.connect(), method, target, headers, body)

    def _exchange(
        self,
        connection: Connection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | Iterable[bytes] | None,
    ) -> Response:
        names = {name.lower() for name, _ in headers}
        head = [("host", self.endpoint.host_header), *headers]
        if isinstance(body, bytes):
            head.append(("content-length", str(len(body))))
        elif body is None:
            if method in ("POST", "PUT", "PATCH"):
                head.append(("content-length", "0"))
        elif "content-length" not in names:
            head.append(("transfer-encoding", "chunked"))
        try:
            connection.write(h11.Request(method=method, target=target, headers=head))
            refused = False
            if isinstance(body, bytes):
                refused = bool(body) and connection.upload([body])
            elif body is not None:
                refused = connection.upload(body)
            if not refused:
                connection.write(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            connection.close()
            raise ConnectionLost(f"the request could not be sent: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        head_event = connection.next_event()
        while isinstance(head_event, h11.InformationalResponse):
            head_event = connection.next_event()
        if not isinstance(head_event, h11.Response):  # pragma: no cover - h11 guarantees it
            connection.close()
            raise ConnectionLost("the server sent no response head")
        response_headers = {
            bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
            for name, value in head_event.headers
        }
        return Response(
            status=head_event.status_code,
            headers=response_headers,
            _connection=connection,
            _transport=self,
        )


def chunk_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """HTTP/1.1 chunked framing, for a body written to a raw socket (duplex requests)."""
    for chunk in chunks:
        if chunk:
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"
