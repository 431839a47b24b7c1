"""HubClient: the one synchronous client of the hub's HTTP API (``/api/v1``).

The CLI, the tests and the benchmarks all talk to a hub through this class, so URLs, headers and
error wording live in one place. A hub is addressed either by its Unix socket path (the default
``si hub serve`` listener) or by an ``http://host:port`` URL, with or without ``/api/v1``.

Every method returns the parsed JSON reply. Failures raise :class:`HubError`, whose message is one
line fit for the user: the hub's own ``error`` text when it sent one, else the URL and the status.

Streaming GETs (instance output, logs) go through :meth:`HubClient.stream`, which survives a hub
restart: the hub tells the stream offset of the first body byte in the ``x-si-offset`` response
header, and a reconnecting client asks for the first byte it has not seen with the same request
header, so the caller receives every byte exactly once.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import socket
import stat
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, BinaryIO
from urllib.parse import quote

import httpcore
import httpx

from si import __version__
from si.errors import SiError
from si.paths import connectable_unix_path

API_PATH = "/api/v1"
# The host name in URLs sent over a Unix socket; it only fills the Host header.
UNIX_BASE_URL = "http://si" + API_PATH
# A hub that does not accept a connection within this time is not coming: fail instead of hanging.
CONNECT_TIMEOUT = 5.0
# How long a follower keeps reconnecting after the hub went away (a restart takes ~1 s).
DEFAULT_FOLLOW_TIMEOUT = 30.0
FOLLOW_TIMEOUT_ENV = "SI_FOLLOW_TIMEOUT"
# Reconnect backoff: quick first retries catch a fast restart, the cap keeps the hub unflooded.
BACKOFF_START = 0.05
BACKOFF_CAP = 0.5
# Up to this fraction of the delay is added at random, so many followers do not retry in step.
BACKOFF_JITTER = 0.25
# A resumed connection that delivered bytes or stayed up this long means the hub recovered, and
# a later break starts a new outage; a shorter, silent one belongs to the same outage, so a hub
# that answers and dies in a loop cannot keep a follower retrying for ever.
STABLE_CONNECTION = 1.0
# Upload chunk size: big enough to keep the socket busy, small enough to bound memory.
UPLOAD_CHUNK = 64 * 1024
OFFSET_HEADER = "x-si-offset"

# "host:port" with no scheme: STH's CLI accepts it and adds http://.
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:\d+$|^\[[0-9A-Fa-f:.]+\]:\d+$")

# Connection failures after which a follower reconnects: the hub went away mid-response or is
# not listening again yet. Anything else (a bad URL, a protocol error of our own) is final.
_RESUMABLE = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)

Body = bytes | BinaryIO | IO[bytes] | Iterable[bytes]


class HubError(SiError):
    """A request to the hub failed; the message is one line naming what went wrong.

    Attributes:
        status: the HTTP status the hub answered with, ``None`` when no response came.
        url: the URL requested, when the failure belongs to one request.
        reply: the hub's parsed JSON reply body, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        reply: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.reply = reply


class HubClient:
    """A synchronous client of one hub.

    Args:
        address: a Unix socket path, or an ``http://host:port`` URL with or without ``/api/v1``
            (a bare ``host:port`` is taken as http).
        connect_timeout: seconds to wait for a connection. Replies have no read timeout: the hub
            legitimately holds some requests (start, stop) and streams for a long time.
        follow_timeout: seconds :meth:`stream` keeps reconnecting after losing the hub; ``None``
            reads ``SI_FOLLOW_TIMEOUT`` (default 30).

    Resource handling: the client owns an httpx connection pool and, for a socket path longer
    than the kernel's limit, a directory descriptor that makes it reachable. Both are released by
    :meth:`close` (or leaving the ``with`` block), or when an unclosed client is collected.
    """

    def __init__(
        self,
        address: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        follow_timeout: float | None = None,
    ) -> None:
        self._follow_timeout = follow_timeout
        timeout = httpx.Timeout(connect=connect_timeout, read=None, write=None, pool=None)
        headers = {"user-agent": f"si/{__version__}"}
        url = _as_url(address)
        transport: httpx.HTTPTransport
        dirfd: int | None = None
        if url is not None:
            self._address = url
            # Certificates are loaded only for https: loading them costs every command ~20 ms.
            transport = httpx.HTTPTransport(retries=0, verify=url.startswith("https:"))
        else:
            self._address = address
            # The descriptor must stay open as long as connections may be made through it.
            socket_path, dirfd = connectable_unix_path(address)
            transport = _UnixTransport(socket_path)
        try:
            # trust_env=False: a hub is named explicitly; proxy variables must not reroute it.
            self._http = httpx.Client(
                base_url=url or UNIX_BASE_URL,
                transport=transport,
                timeout=timeout,
                headers=headers,
                trust_env=False,
            )
        except httpx.InvalidURL as exc:
            if dirfd is not None:
                os.close(dirfd)
            raise HubError(f"invalid hub address {address!r}: {exc}") from None
        # Runs on close() or when the client is collected unclosed, so pooled sockets are closed
        # rather than left to the garbage collector (a ResourceWarning each).
        self._release = weakref.finalize(self, _release, self._http, dirfd)

    @property
    def address(self) -> str:
        """The hub as users name it: the socket path, or the http URL ending in ``/api/v1``."""
        return self._address

    def close(self) -> None:
        """Close the connection pool and release the socket directory descriptor."""
        self._release()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- hub ---------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``GET version``: ``{service, apiVersion, version, build}``."""
        return _object(self._request("GET", "version"))

    # -- sequences ---------------------------------------------------------------------------

    def list_sequences(self) -> list[Any]:
        """``GET sequences``: every sequence record."""
        return _array(self._request("GET", "sequences"))

    def get_sequence(self, sequence_id: str) -> dict[str, Any]:
        """``GET sequence/<id>``: one sequence record."""
        return _object(self._request("GET", f"sequence/{_segment(sequence_id)}"))

    def send_sequence(self, body: Body) -> dict[str, Any]:
        """``POST sequence``: upload a package (tar.gz bytes, a binary file, or chunks).

        The body is streamed; a regular file is sent with its length. Returns ``{"id": ...}``.
        """
        content, headers = _upload(body)
        headers["content-type"] = "application/octet-stream"
        return _object(self._request("POST", "sequence", content=content, headers=headers))

    def delete_sequence(self, sequence_id: str, force: bool = False) -> dict[str, Any]:
        """``DELETE sequence/<id>``; ``force`` kills the sequence's instances first."""
        # STH's op routes refuse a request without a JSON content type, even with no body.
        headers = {"content-type": "application/json"}
        if force:
            headers["x-seq-kill-inst"] = "true"
        path = f"sequence/{_segment(sequence_id)}"
        return _object(self._request("DELETE", path, headers=headers))

    def start_sequence(self, sequence_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST sequence/<id>/start`` with ``{appConfig, args, instanceId, ...}``.

        Returns the hub's reply, which carries the new instance's ``id``.
        """
        path = f"sequence/{_segment(sequence_id)}/start"
        return _object(self._request("POST", path, json=dict(payload)))

    # -- instances ---------------------------------------------------------------------------

    def list_instances(self) -> list[Any]:
        """``GET instances``: every instance record."""
        return _array(self._request("GET", "instances"))

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        """``GET instance/<id>``: one instance record."""
        return _object(self._request("GET", f"instance/{_segment(instance_id)}"))

    def kill_instance(self, instance_id: str, remove_immediately: bool = False) -> dict[str, Any]:
        """``POST instance/<id>/_kill``; ``remove_immediately`` skips the retention period."""
        path = f"instance/{_segment(instance_id)}/_kill"
        body = {"removeImmediately": remove_immediately}
        return _object(self._request("POST", path, json=body))

    def stop_instance(
        self, instance_id: str, timeout_ms: int, can_call_keepalive: bool = True
    ) -> dict[str, Any]:
        """``POST instance/<id>/_stop``: ask the sequence to stop within ``timeout_ms``.

        The hub answers only after that time, so this call blocks for it.
        """
        path = f"instance/{_segment(instance_id)}/_stop"
        body = {"timeout": timeout_ms, "canCallKeepalive": can_call_keepalive}
        return _object(self._request("POST", path, json=body))

    def send_input(
        self,
        instance_id: str,
        body: Body,
        content_type: str = "text/plain",
        end: bool | None = None,
    ) -> Any:
        """``POST instance/<id>/input``: stream ``body`` into the instance's input.

        Args:
            content_type: how the sequence should read the data (the hub keeps the first one).
            end: ``True`` closes the instance's input when this body ends, ``False`` keeps it
                open for more; ``None`` sends no ``x-end-stream`` and leaves it to the hub.

        Returns the parsed reply, usually ``None`` (the hub replies with an empty body).

        Raises:
            HubError: also when the reply breaks off: the hub ends it only after the runner took
                all the data, so a truncated reply means the data may not have arrived.
        """
        content, headers = _upload(body)
        headers["content-type"] = content_type
        if end is not None:
            headers["x-end-stream"] = "true" if end else "false"
        path = f"instance/{_segment(instance_id)}/input"
        return self._request("POST", path, content=content, headers=headers)

    # -- streams -----------------------------------------------------------------------------

    def instance_stream(
        self, instance_id: str, name: str, *, follow: bool = True
    ) -> Iterator[bytes]:
        """:meth:`stream` of an instance's ``output``, ``stdout``, ``stderr`` or ``log``."""
        return self.stream(f"instance/{_segment(instance_id)}/{_segment(name)}", follow=follow)

    def stream(self, path: str, *, follow: bool = True) -> Iterator[bytes]:
        """Yield the body of a streaming GET (e.g. ``instance/<id>/output``) as it arrives.

        Args:
            path: the endpoint below ``/api/v1``.
            follow: when the connection breaks before the response ended (hub restart or
                crash), reconnect with backoff for up to the follow timeout and resume at the
                first byte not yet yielded. Needs a hub that sends ``x-si-offset``.

        Raises:
            HubError: on an error status (404 when the instance is gone), when the hub cannot
                be reached, when the stream breaks and cannot be resumed, or when the hub no
                longer holds the bytes to resume from.
        """
        # Stream offset of the next byte the caller has not seen; None until the hub told us.
        position: int | None = None
        answered = False
        outage_started: float | None = None
        delay = BACKOFF_START
        while True:
            connected_at: float | None = None
            progressed = False
            headers = {"content-type": "application/octet-stream"}
            if position is not None:
                headers[OFFSET_HEADER] = str(position)
            try:
                with self._http.stream("GET", path, headers=headers) as response:
                    if response.is_error:
                        response.read()
                        raise _status_error(response)
                    start = _offset(response)
                    skip = 0
                    if not answered:
                        position = start
                        answered = True
                    elif position is not None:
                        if start is None:
                            raise HubError(
                                f"the hub at {self._address} came back but cannot resume the "
                                "stream (no x-si-offset)",
                                url=str(response.url),
                            )
                        if start > position:
                            raise HubError(
                                f"the hub no longer holds bytes {position}-{start - 1} of the "
                                "stream; they were lost while reconnecting",
                                url=str(response.url),
                            )
                        # The hub may resume earlier than asked: drop what was already yielded.
                        skip = position - start
                    connected_at = time.monotonic()
                    # iter_raw: the bytes exactly as sent, as soon as they arrive.
                    for chunk in response.iter_raw():
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        if position is not None:
                            position += len(chunk)
                        progressed = True
                        yield chunk
                return
            except _RESUMABLE as exc:
                # Without an offset there is no way to resume without repeating or losing bytes;
                # before the first answer the hub is simply not there.
                if not follow or not answered or position is None:
                    raise self._transport_error(exc) from None
                now = time.monotonic()
                recovered = progressed or (
                    connected_at is not None and now - connected_at >= STABLE_CONNECTION
                )
                if outage_started is None or recovered:
                    outage_started = now
                    delay = BACKOFF_START
                limit = self._follow_seconds()
                remaining = outage_started + limit - now
                if remaining <= 0:
                    raise HubError(
                        f"lost the hub at {self._address} and it did not come back within "
                        f"{limit:g} s: {_reason(exc)}"
                    ) from None
                time.sleep(min(remaining, delay * (1 + random.random() * BACKOFF_JITTER)))
                delay = min(delay * 2, BACKOFF_CAP)
            except httpx.TransportError as exc:
                raise self._transport_error(exc) from None

    # -- plumbing ----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request, read the whole reply, and return its parsed JSON (or ``None``)."""
        try:
            response = self._http.request(method, path, json=json, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if response.is_error:
            raise _status_error(response)
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise HubError(
                f"the hub sent a reply that is not JSON for '{response.url}'",
                status=response.status_code,
                url=str(response.url),
            ) from None

    def _transport_error(self, exc: httpx.TransportError) -> HubError:
        url = _request_url(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return HubError(
                f"cannot reach the hub at {self._address}: {_reason(exc)} "
                "(is 'si hub serve' running?)",
                url=url,
            )
        reason = _reason(exc)
        return HubError(f"lost the connection to the hub at {self._address}: {reason}", url=url)

    def _follow_seconds(self) -> float:
        if self._follow_timeout is not None:
            return self._follow_timeout
        text = os.environ.get(FOLLOW_TIMEOUT_ENV, "")
        if not text:
            return DEFAULT_FOLLOW_TIMEOUT
        try:
            return float(text)
        except ValueError:
            raise HubError(
                f"{FOLLOW_TIMEOUT_ENV} must be a number of seconds, not {text!r}"
            ) from None


def _release(http: httpx.Client, dirfd: int | None) -> None:
    http.close()
    if dirfd is not None:
        os.close(dirfd)


class _UnixTransport(httpx.HTTPTransport):
    """httpx's transport over a Unix socket, with :class:`_UnixBackend` underneath."""

    def __init__(self, path: str) -> None:
        super().__init__(retries=0, verify=False)
        # httpx takes no network backend argument; its pool attribute is how to supply one.
        self._pool = httpcore.ConnectionPool(uds=path, network_backend=_UnixBackend())


class _UnixBackend(httpcore.SyncBackend):
    """httpcore's network backend, except that a failed Unix connect closes its socket.

    httpcore 1.0 leaves that socket to the garbage collector; a follower retrying while the hub
    restarts would leave one behind per attempt.
    """

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _SocketStream(sock)


class _SocketStream(httpcore.NetworkStream):
    """A connected plain socket as httpcore reads and writes it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("TLS is not used over a Unix socket")

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "is_readable":
            # A pooled connection with pending bytes (the hub closed it) must not be reused.
            if self._sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


def _as_url(address: str) -> str | None:
    """The API base URL for an http address, or ``None`` when ``address`` is a socket path."""
    if _HOST_PORT.match(address):
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        return None
    base = address.rstrip("/")
    if not base.endswith(API_PATH):
        base += API_PATH
    return base


def _segment(identifier: str) -> str:
    """Quote an id for use as one path segment, so ``../x`` cannot address another route."""
    return quote(identifier, safe="")


def _upload(body: Body) -> tuple[bytes | Iterable[bytes], dict[str, str]]:
    """The httpx content for ``body`` plus the headers that describe its size."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), {}
    read = getattr(body, "read", None)
    if read is None:
        return body, {}  # already an iterable of chunks: sent chunked
    headers: dict[str, str] = {}
    size = _remaining_size(body)
    if size is not None:
        headers["content-length"] = str(size)
    return _chunks(body), headers


def _remaining_size(stream: Any) -> int | None:
    """Bytes left in a regular file (so the hub learns the size), ``None`` for pipes and such."""
    try:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(0, info.st_size - int(stream.tell()))
    except (AttributeError, OSError, ValueError):
        return None


def _chunks(stream: Any) -> Iterator[bytes]:
    """Read a binary stream in chunks; ``read1`` forwards piped data as soon as it arrives."""
    read = getattr(stream, "read1", None) or stream.read
    while True:
        chunk = read(UPLOAD_CHUNK)
        if not chunk:
            return
        yield bytes(chunk)


def _offset(response: httpx.Response) -> int | None:
    value = response.headers.get(OFFSET_HEADER)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _status_error(response: httpx.Response) -> HubError:
    """The error for a reply with an error status: the hub's own message when it gave one."""
    url = str(response.request.url)
    reply: Any = None
    try:
        reply = json.loads(response.content) if response.content.strip() else None
    except ValueError:
        reply = None
    message = f"Failed to request '{url}' with code {response.status_code}"
    if isinstance(reply, dict):
        error = reply.get("error")
        if isinstance(error, str) and error.strip():
            message = error
        elif error not in (None, "", {}, []):
            message = json.dumps(error, separators=(",", ":"), ensure_ascii=False)
    return HubError(_one_line(message), status=response.status_code, url=url, reply=reply)


def _request_url(exc: httpx.TransportError) -> str | None:
    try:
        return str(exc.request.url)
    except RuntimeError:  # the exception was raised before a request existed
        return None


def _reason(exc: BaseException) -> str:
    """The most specific human reason: the OS error text when one is behind the failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _object(value: Any) -> dict[str, Any]:
    # The hub sends an empty body for an empty object.
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HubError(f"the hub sent {type(value).__name__} where an object was expected")
    return value


def _array(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HubError(f"the hub sent {type(value).__name__} where a list was expected")
    return value
