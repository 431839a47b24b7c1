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
import stat
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit

from si import __version__
from si._http import (
    ConnectFailed,
    ConnectionLost,
    Endpoint,
    Response,
    Transport,
)
from si.errors import SiError
from si.paths import connectable_unix_path
from si.protocol.codes import Code

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

    Resource handling: the client keeps up to two idle keep-alive connections and, for a socket
    path longer than the kernel's limit, a directory descriptor that makes it reachable. Both are
    released by :meth:`close` (or leaving the ``with`` block), or when an unclosed client is
    collected. A stream holds its own connection until it is exhausted or closed.

    Thread safety: several threads may use one client (``si inst stdio`` does); each request
    takes its own connection.
    """

    def __init__(
        self,
        address: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        follow_timeout: float | None = None,
        token: str | None = None,
        ca: str | None = None,
    ) -> None:
        self._follow_timeout = follow_timeout
        self._user_agent = f"si/{__version__}"
        # Sent on every request to a hub over TCP; the Unix socket needs none.
        self._common: list[tuple[str, str]] = [("user-agent", self._user_agent)]
        url = _as_url(address)
        dirfd: int | None = None
        if url is not None:
            self._address = url
            self._base_url = url
            endpoint = _tcp_endpoint(url, address)
            self._prefix = urlsplit(url).path.rstrip("/")
            transport = Transport(endpoint, connect_timeout=connect_timeout, ca=ca)
            if token:
                self._common.append(("authorization", f"Bearer {token}"))
        else:
            self._address = address
            self._base_url = UNIX_BASE_URL
            self._prefix = API_PATH
            # The descriptor must stay open as long as connections may be made through it.
            socket_path, dirfd = connectable_unix_path(address)
            transport = Transport(
                Endpoint(unix_path=address),
                connect_timeout=connect_timeout,
                unix_connect_path=socket_path,
            )
        self._transport = transport
        # Runs on close() or when the client is collected unclosed, so idle sockets are closed
        # rather than left to the garbage collector (a ResourceWarning each).
        self._release = weakref.finalize(self, _release, transport, dirfd)

    @property
    def address(self) -> str:
        """The hub as users name it: the socket path, or the http URL ending in ``/api/v1``."""
        return self._address

    def close(self) -> None:
        """Close idle connections and release the socket directory descriptor."""
        self._release()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- hub ---------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``GET version``: ``{service, apiVersion, version, build}``."""
        return _object(self._request("GET", "version"))

    def load_check(self) -> dict[str, Any]:
        """``GET load-check``: ``{avgLoad, currentLoad, memFree, memUsed, fsSize}``."""
        return _object(self._request("GET", "load-check"))

    def config(self) -> dict[str, Any]:
        """``GET config``: the public part of the hub's configuration."""
        return _object(self._request("GET", "config"))

    def status(self) -> dict[str, Any]:
        """``GET status``: ``{"cpm": {...}}`` (empty on a standalone hub)."""
        return _object(self._request("GET", "status"))

    def entities(self) -> dict[str, Any]:
        """``GET entities``: ``{sequences: [...], instances: [...]}``."""
        return _object(self._request("GET", "entities"))

    def hub_log(self, *, follow: bool = True) -> Iterator[bytes]:
        """``GET log``: the hub's NDJSON log, history first, then live (never ends)."""
        return self.stream("log", follow=follow)

    def audit(self, *, follow: bool = True) -> Iterator[bytes]:
        """``GET audit``: the hub's NDJSON audit stream (never ends)."""
        return self.stream("audit", follow=follow)

    # -- sequences ---------------------------------------------------------------------------

    def top(self) -> dict[str, Any]:
        """Every instance's counters, CPU time and RSS now (``GET top``, si's own)."""
        return _object(self._request("GET", "top"))

    def get_package(self, sequence_id: str) -> bytes:
        """si's ``GET sequence/<id>/package``: the stored package as a tar.gz."""
        return self._request_bytes("GET", f"sequence/{_segment(sequence_id)}/package")[1]

    def take_lock(self, name: str, owner: str, ttl: float) -> dict[str, Any]:
        """An advisory lock on the hub (si's ``POST lock/<name>``); 409 while another holds it."""
        return _object(
            self._request("POST", f"lock/{_segment(name)}", json={"owner": owner, "ttl": ttl})
        )

    def release_lock(self, name: str, key: str) -> dict[str, Any]:
        return _object(
            self._request("DELETE", f"lock/{_segment(name)}", headers={"x-si-lock-key": key})
        )

    def list_sequences(self) -> list[Any]:
        """``GET sequences``: every sequence record."""
        return _array(self._request("GET", "sequences"))

    def get_sequence(self, sequence_id: str) -> dict[str, Any]:
        """``GET sequence/<id>``: one sequence record."""
        return _object(self._request("GET", f"sequence/{_segment(sequence_id)}"))

    def sequence_instances(self, sequence_id: str) -> list[Any]:
        """``GET sequence/<id>/instances``: the ids of the sequence's instances."""
        return _array(self._request("GET", f"sequence/{_segment(sequence_id)}/instances"))

    def send_sequence(self, body: Body) -> dict[str, Any]:
        """``POST sequence``: upload a package (tar.gz bytes, a binary file, or chunks).

        The body is streamed; a regular file is sent with its length. Returns ``{"id": ...}``.
        """
        content, headers = _upload(body)
        headers["content-type"] = "application/octet-stream"
        return _object(self._request("POST", "sequence", content=content, headers=headers))

    def update_sequence(self, sequence_id: str, body: Body) -> dict[str, Any]:
        """``PUT sequence/<id>``: replace a sequence's package, keeping its id (``{"id"}``)."""
        content, headers = _upload(body)
        headers["content-type"] = "application/octet-stream"
        path = f"sequence/{_segment(sequence_id)}"
        return _object(self._request("PUT", path, content=content, headers=headers))

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

    # -- the cluster (hubs joined by NATS) ---------------------------------------------------

    def cluster_status(self) -> dict[str, Any]:
        """``GET cluster``: this hub's name in its cluster and whether NATS answers."""
        return _object(self._request("GET", "cluster"))

    def cluster_hubs(self) -> list[Any]:
        """``GET cluster/hubs``: every hub in the registry with its age, load and staleness."""
        return _array(self._request("GET", "cluster/hubs"))

    def cluster_instances(self) -> list[Any]:
        """``GET cluster/instances``: every live hub's instances, each naming its ``hub``."""
        return _array(self._request("GET", "cluster/instances"))

    def cluster_sequences(self) -> list[Any]:
        """``GET cluster/sequences``: every sequence in the cluster's store."""
        return _array(self._request("GET", "cluster/sequences"))

    def cluster_start(
        self, sequence_id: str, payload: Mapping[str, Any], hub: str = "auto"
    ) -> dict[str, Any]:
        """``POST cluster/sequence/<id>/start``: start on hub ``hub``, or the least loaded
        (``auto``); the reply names the ``hub`` it started on."""
        path = f"cluster/sequence/{_segment(sequence_id)}/start"
        return _object(self._request("POST", path, json={**payload, "hub": hub}))

    # -- instances ---------------------------------------------------------------------------

    def list_instances(self) -> list[Any]:
        """``GET instances``: every instance record."""
        return _array(self._request("GET", "instances"))

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        """``GET instance/<id>``: one instance record."""
        return _object(self._request("GET", f"instance/{_segment(instance_id)}"))

    def instance_health(self, instance_id: str) -> dict[str, Any]:
        """``GET instance/<id>/health``: the last health report (``{healthy, ...}``)."""
        return _object(self._request("GET", f"instance/{_segment(instance_id)}/health"))

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
        return self._send_stream(f"instance/{_segment(instance_id)}/input", body, content_type, end)

    def send_stdin(self, instance_id: str, body: Body, end: bool | None = None) -> Any:
        """``POST instance/<id>/stdin``: stream ``body`` into the sequence's process stdin."""
        path = f"instance/{_segment(instance_id)}/stdin"
        return self._send_stream(path, body, "application/octet-stream", end)

    def inout(
        self,
        instance_id: str,
        body: Body,
        content_type: str | None = None,
        end: bool | None = None,
    ) -> Iterator[bytes]:
        """``POST instance/<id>/inout``: send ``body`` to the input and yield the output.

        The body is written by a helper thread while the output is read, so a sequence that
        answers line by line streams its answers before the input ends. ``end`` sends
        ``x-end-stream`` (``None``: the hub's default, which keeps the input open).

        Raises:
            HubError: on an error status or a broken connection.
        """
        path = f"instance/{_segment(instance_id)}/inout"
        return self._duplex(path, body, content_type, end)

    def emit_event(self, instance_id: str, name: str, message: Any = None) -> dict[str, Any]:
        """``POST instance/<id>/_event``: send the event ``name`` (with ``message``) to it.

        ``message`` is sent as given (STH's CLI sends the typed text as a string); ``None``
        leaves it out.
        """
        event: dict[str, Any] = {"eventName": name}
        if message is not None:
            event["message"] = message
        path = f"instance/{_segment(instance_id)}/_event"
        return _object(self._request("POST", path, json=[int(Code.EVENT), event]))

    def get_event(self, instance_id: str, name: str, *, wait_next: bool = False) -> Any:
        """The message of the instance's event ``name``.

        ``GET instance/<id>/event/<name>`` answers the last one seen (or waits for the first);
        with ``wait_next``, ``GET .../once/<name>`` waits for the next one.
        """
        route = "once" if wait_next else "event"
        return self._request("GET", f"instance/{_segment(instance_id)}/{route}/{_segment(name)}")

    def event_stream(self, instance_id: str, name: str) -> Iterator[bytes]:
        """``GET instance/<id>/events/<name>``: one JSON line per event, as they come."""
        return self.stream(f"instance/{_segment(instance_id)}/events/{_segment(name)}")

    # -- topics ------------------------------------------------------------------------------

    def list_topics(self) -> list[Any]:
        """``GET topics``: every topic."""
        return _array(self._request("GET", "topics"))

    def create_topic(
        self, name: str, content_type: str, cluster: bool | None = None
    ) -> dict[str, Any]:
        """``POST topics`` with ``{"id": name, "content-type": type}``; ``cluster``: a topic
        of the hub's whole cluster (True) or of this hub (False), else the hub's default."""
        body: dict[str, Any] = {"id": name, "content-type": content_type}
        if cluster is not None:
            body["cluster"] = cluster
        return _object(self._request("POST", "topics", json=body))

    def delete_topic(self, name: str) -> dict[str, Any]:
        """``DELETE topics/<name>``."""
        headers = {"content-type": "application/json"}
        return _object(self._request("DELETE", f"topics/{_segment(name)}", headers=headers))

    def send_topic(self, name: str, body: Body, content_type: str, end: bool | None = None) -> Any:
        """``POST topic/<name>``: publish ``body`` into the topic."""
        return self._send_stream(f"topic/{_segment(name)}", body, content_type, end)

    def topic_stream(self, name: str, content_type: str, *, follow: bool = True) -> Iterator[bytes]:
        """``GET topic/<name>``: the topic's data as it is published (never ends).

        Follows a hub restart like :meth:`stream` when the hub sends ``x-si-offset``.
        """
        path = f"topic/{_segment(name)}"
        return self.stream(path, content_type=content_type, follow=follow)

    # -- streams -----------------------------------------------------------------------------

    def instance_stream(
        self,
        instance_id: str,
        name: str,
        *,
        follow: bool = True,
        query: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        """:meth:`stream` of an instance's ``output``, ``stdout``, ``stderr`` or ``log``."""
        path = f"instance/{_segment(instance_id)}/{_segment(name)}"
        return self.stream(path, follow=follow, query=query)

    def stream(
        self,
        path: str,
        *,
        follow: bool = True,
        content_type: str = "application/octet-stream",
        query: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        """Yield the body of a streaming GET (e.g. ``instance/<id>/output``) as it arrives.

        Args:
            path: the endpoint below ``/api/v1``.
            follow: when the connection breaks before the response ended (hub restart or
                crash), reconnect with backoff for up to the follow timeout and resume at the
                first byte not yet yielded. Needs a hub that sends ``x-si-offset``.
            content_type: the request's ``content-type`` (a topic reads it as the wanted type).
            query: query parameters, e.g. ``{"tail": "10"}``.

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
            headers = {"content-type": content_type}
            if position is not None:
                headers[OFFSET_HEADER] = str(position)
            response: Response | None = None
            try:
                response = self._send("GET", path, headers=headers, query=query)
                if response.status >= 400:
                    raise _status_error(response, self._url(path, query))
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
                            url=self._url(path, query),
                        )
                    if start > position:
                        raise HubError(
                            f"the hub no longer holds bytes {position}-{start - 1} of the "
                            "stream: this reader fell too far behind the others and was cut "
                            "off, or they were lost while reconnecting",
                            url=self._url(path, query),
                        )
                    # The hub may resume earlier than asked: drop what was already yielded.
                    skip = position - start
                connected_at = time.monotonic()
                for chunk in response.iter_bytes():
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
            except ConnectionLost as exc:
                # Without an offset there is no way to resume without repeating or losing bytes;
                # before the first answer the hub is simply not there.
                if not follow or not answered or position is None:
                    raise self._transport_error(exc, path) from None
                outage_started, delay = self._wait_to_resume(
                    exc, outage_started, delay, progressed, connected_at
                )
            except ConnectFailed as exc:
                if not follow or not answered or position is None:
                    raise self._transport_error(exc, path) from None
                outage_started, delay = self._wait_to_resume(
                    exc, outage_started, delay, progressed, connected_at
                )
            finally:
                if response is not None:
                    response.close()

    def _wait_to_resume(
        self,
        exc: OSError,
        outage_started: float | None,
        delay: float,
        progressed: bool,
        connected_at: float | None,
    ) -> tuple[float, float]:
        """Sleep before the next reconnect; raise once the outage outlasted the follow timeout."""
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
        return outage_started, min(delay * 2, BACKOFF_CAP)

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        url = f"{self._base_url}/{path}"
        return f"{url}?{urlencode(query)}" if query else url

    def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Response:
        target = f"{self._prefix}/{path}"
        if query:
            target += "?" + urlencode(query)
        head = list(self._common)
        head.extend((name, value) for name, value in (headers or {}).items())
        return self._transport.request(method, target, head, content)

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
        all_headers = dict(headers or {})
        if json is not None:
            content = _json_bytes(json)
            all_headers["content-type"] = "application/json"
        response, body = self._request_bytes(method, path, headers=all_headers, content=content)
        if not body.strip():
            return None
        try:
            return _parse_json(body)
        except ValueError:
            raise HubError(
                f"the hub sent a reply that is not JSON for '{self._url(path)}'",
                status=response.status,
                url=self._url(path),
            ) from None

    def _request_bytes(
        self,
        method: str,
        path: str,
        *,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Response, bytes]:
        """Send one request and read the whole reply: the response and its body.

        Raises:
            HubError: an error status, or the hub could not be reached or was lost.
        """
        try:
            response = self._send(method, path, headers=headers, content=content)
            body = response.read()
        except (ConnectFailed, ConnectionLost) as exc:
            raise self._transport_error(exc, path) from None
        if response.status >= 400:
            raise _status_error(response, self._url(path))
        return response, body

    def _send_stream(self, path: str, body: Body, content_type: str, end: bool | None) -> Any:
        content, headers = _upload(body)
        headers["content-type"] = content_type
        if end is not None:
            headers["x-end-stream"] = "true" if end else "false"
        return self._request("POST", path, content=content, headers=headers)

    def _duplex(
        self, path: str, body: Body, content_type: str | None, end: bool | None
    ) -> Iterator[bytes]:
        content, headers = _upload(body)
        if content_type is not None:
            headers["content-type"] = content_type
        if end is not None:
            headers["x-end-stream"] = "true" if end else "false"
        headers.pop("content-length", None)
        chunks = [content] if isinstance(content, bytes) else content
        connection = None
        failure: list[HubError] = []
        try:
            # The request head goes through h11; the body is written from a thread
            # (Connection.write_chunked_body), since h11 is not made for two threads at once.
            connection = self._transport.connect()
            import h11

            head = [
                ("host", self._transport.endpoint.host_header),
                *self._common,
                ("transfer-encoding", "chunked"),
                *headers.items(),
            ]
            connection.write(
                h11.Request(method="POST", target=f"{self._prefix}/{path}", headers=head)
            )

            def body_failed(exc: Exception) -> None:
                failure.append(HubError(f"cannot read the input: {_reason(exc)}"))

            writer = threading.Thread(
                target=connection.write_chunked_body, args=(chunks, body_failed), daemon=True
            )
            writer.start()
            event = connection.next_event()
            while isinstance(event, h11.InformationalResponse):
                event = connection.next_event()
            response_headers = {
                bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
                for k, v in event.headers
            }
            response = Response(event.status_code, response_headers, connection, self._transport)
            if response.status >= 400:
                response.read()
                raise _status_error(response, self._url(path))
            yield from response.iter_bytes()
            if failure:
                raise failure[0]
        except (ConnectFailed, ConnectionLost) as exc:
            if failure:
                raise failure[0] from None
            raise self._transport_error(exc, path) from None
        finally:
            if connection is not None:
                connection.close()

    def _transport_error(self, exc: OSError, path: str | None = None) -> HubError:
        url = self._url(path) if path is not None else None
        if isinstance(exc, ConnectFailed):
            if exc.tls_mismatch:
                return HubError(
                    f"the hub at {self._address} does not speak TLS: use http://", url=url
                )
            if exc.tls_refused:
                return HubError(f"TLS with the hub at {self._address} failed: {exc}", url=url)
            return HubError(
                f"cannot reach the hub at {self._address}: {_reason(exc)} "
                "(is 'si hub serve' running?)",
                url=url,
            )
        reason = _reason(exc)
        endpoint = self._transport.endpoint
        lost_early = isinstance(exc, ConnectionLost) and exc.closed_unanswered
        if endpoint.unix_path is None and not endpoint.tls and lost_early:
            return HubError(
                f"the hub at {self._address} closed the connection without an answer; "
                "if it serves TLS, use https://",
                url=url,
            )
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


def _release(transport: Transport, dirfd: int | None) -> None:
    transport.close()
    if dirfd is not None:
        os.close(dirfd)


def _tcp_endpoint(url: str, address: str) -> Endpoint:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise HubError(f"invalid hub address {address!r}: bad port") from None
    if not parts.hostname:
        raise HubError(f"invalid hub address {address!r}: no host")
    return Endpoint(host=parts.hostname, port=port, tls=tls)


def _parse_json(body: bytes) -> Any:
    return json.loads(body)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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
    """The request content for ``body`` plus the headers that describe its size."""
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


def _offset(response: Response) -> int | None:
    value = response.header(OFFSET_HEADER)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _status_error(response: Response, url: str) -> HubError:
    """The error for a reply with an error status: the hub's own message when it gave one."""
    reply: Any = None
    try:
        body = response.read()
        reply = json.loads(body) if body.strip() else None
    except (ValueError, OSError):
        reply = None
    message = f"Failed to request '{url}' with code {response.status}"
    if isinstance(reply, dict):
        error = reply.get("error")
        if isinstance(error, str) and error.strip():
            message = error
        elif error not in (None, "", {}, []):
            message = json.dumps(error, separators=(",", ":"), ensure_ascii=False)
    return HubError(_one_line(message), status=response.status, url=url, reply=reply)


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
