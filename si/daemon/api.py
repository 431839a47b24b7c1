"""The HTTP API under ``/api/v1``: STH's paths, bodies and status codes.

Tolerant on input, correct on output (docs/compat.md lists every deliberate difference): op
endpoints accept a missing or odd ``Content-Type`` and an empty or ``null`` body, and a stop or
kill of a Python instance ends it ``completed`` as it should.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import si
from si.daemon.access import READ_METHODS, Access, Admitted, Refusal
from si.daemon.fds import OutOfFileDescriptors
from si.daemon.feed import Feed, now_ms
from si.daemon.http import Request, Response
from si.daemon.hub import Hub, InstanceExists, RunnerNotStarted, SequenceFailed
from si.daemon.limits import Limits, LimitsError
from si.daemon.load import load_figures
from si.daemon.locks import LockBusy, Locks
from si.daemon.pipe import OffsetError, OutputPipe, PipeReader
from si.daemon.record import InstanceStatus
from si.daemon.restart import PolicyError, RestartPolicy
from si.daemon.sequences import (
    NEW_PREFIX,
    Sequence,
    remove_sequence,
    rename_sequence,
    store_upload,
)
from si.daemon.static import SECURITY_HEADERS, ConsoleFiles
from si.daemon.topics import DEFAULT_CONTENT_TYPE, MessageSplitter, Topic, TopicError
from si.errors import PackageError
from si.fsutil import is_disk_full, is_exhaustion, write_all
from si.protocol import messages
from si.protocol.frames import Channel
from si.segments import list_segments, offset_of_last_lines, read_from, stream_end

if TYPE_CHECKING:
    from si.daemon.cluster.member import ClusterMember

    # Imported where used: a hub with no instances does not load the link machinery (hub.py).
    from si.daemon.instance import Instance
    from si.daemon.overview import SharedLine

log = logging.getLogger("si.hub.api")

API_BASE = "/api/v1"
# JSON request bodies (start payloads, stop options) are small; refuse anything larger.
MAX_JSON_BODY = 1 << 20
INSTANCE_ID_LENGTH = 36
# How long an input request waits for an adopted runner's link before giving up.
CONNECT_TIMEOUT = 5.0
# Followers of stdout, stderr and log poll their file: quickly while it grows, then backing off
# to a fifth of a second while it is idle.
FILE_POLL_FIRST = 0.01
FILE_POLL_MAX = 0.2
FILE_READ_SIZE = 256 * 1024
# Where a topic peek starts: about this many bytes before the newest.
PEEK_BACK = 16 * 1024

# Every gzip stream starts with these two bytes: anything else is refused at its first chunk.
GZIP_MAGIC = b"\x1f\x8b"
NOT_GZIP = "not a sequence package: a package is a gzip-compressed tar archive (.tar.gz)"

RouteHandler = Callable[[Request, Response], Awaitable[None]]


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def storage_error(exc: OSError, doing: str) -> ApiError:
    """The answer to a request that failed to write: 507 when the disk is full, 503 when the
    hub is out of file descriptors, else 500."""
    if is_disk_full(exc):
        return ApiError(507, f"{doing}: the hub's disk is full ({exc.strerror})")
    if is_exhaustion(exc):
        return ApiError(503, f"{doing}: the hub is out of file descriptors ({exc.strerror})")
    return ApiError(500, f"{doing}: {exc.strerror or exc}")


class Api:
    def __init__(self, hub: Hub, access: Access | None = None) -> None:
        self.hub = hub
        # Who may do what over TCP; None: no TCP listener (every request is the Unix socket's).
        self.access = access
        self.locks = Locks(trio.current_time)
        self._input_locks: dict[str, trio.Lock] = {}
        self.console = ConsoleFiles()
        self._overview: SharedLine | None = None  # made by the first watcher
        route = self._route
        self.routes: list[tuple[str, re.Pattern[str], RouteHandler]] = [
            route("GET", "/version", self.version),
            route("GET", "/load-check", self.load_check),
            route("GET", "/topics", self.list_topics),
            route("POST", "/topics", self.create_topic),
            route("DELETE", "/topics/(?P<name>[^/]+)", self.delete_topic),
            route("POST", "/topic/(?P<name>[^/]+)", self.produce),
            route("GET", "/topic/(?P<name>[^/]+)", self.consume),
            route("GET", "/log", self.hub_log),
            route("GET", "/audit", self.hub_audit),
            route("POST", "/instance/(?P<id>[^/]+)/inout", self.instance_inout),
            route("GET", "/config", self.config),
            route("GET", "/status", self.status),
            route("GET", "/entities", self.entities),
            route("PUT", "/sequence/(?P<id>[^/]+)", self.update_sequence),
            route("POST", "/instance/(?P<id>[^/]+)/stdin", self.instance_stdin),
            route("POST", "/instance/(?P<id>[^/]+)/_monitoring_rate", self.monitoring_rate),
            route("GET", "/sequences", self.list_sequences),
            route("POST", "/sequence", self.upload_sequence),
            route("GET", "/sequence/(?P<id>[^/]+)", self.get_sequence),
            route("GET", "/sequence/(?P<id>[^/]+)/instances", self.sequence_instances),
            route("DELETE", "/sequence/(?P<id>[^/]+)", self.delete_sequence),
            route("POST", "/sequence/(?P<id>[^/]+)/start", self.start_sequence),
            route("GET", "/instances", self.list_instances),
            route("GET", "/instance/(?P<id>[^/]+)/?", self.get_instance),
            route("GET", "/instance/(?P<id>[^/]+)/output", self.instance_output),
            route("POST", "/instance/(?P<id>[^/]+)/input", self.instance_input),
            route("GET", "/instance/(?P<id>[^/]+)/(?P<stream>stdout|stderr|log)", self.file_stream),
            route("GET", "/instance/(?P<id>[^/]+)/health", self.instance_health),
            route("POST", "/instance/(?P<id>[^/]+)/_event", self.post_event),
            route("GET", "/instance/(?P<id>[^/]+)/event/(?P<name>[^/]+)", self.get_event),
            route("GET", "/instance/(?P<id>[^/]+)/once/(?P<name>[^/]+)", self.once_event),
            route("GET", "/instance/(?P<id>[^/]+)/events/(?P<name>[^/]+)", self.event_stream),
            route("POST", "/instance/(?P<id>[^/]+)/_kill", self.kill_instance),
            route("POST", "/instance/(?P<id>[^/]+)/_stop", self.stop_instance),
            route("GET", "/metrics", self.metrics),
            route("GET", "/top", self.top),
            # si's, for the web console: the whole hub pushed once a second, every event of an
            # instance, and a look at a topic that consumes nothing.
            route("GET", "/watch", self.watch),
            route("GET", "/instance/(?P<id>[^/]+)/events", self.all_events),
            route("GET", "/topics/(?P<name>[^/]+)/peek", self.peek_topic),
            route("GET", "/sequence/(?P<id>[^/]+)/package", self.sequence_package),
            route("GET", "/cluster", self.cluster_status),
            route("GET", "/cluster/hubs", self.cluster_hubs),
            route("GET", "/cluster/instances", self.cluster_instances),
            route("GET", "/cluster/sequences", self.cluster_sequences),
            route("POST", "/cluster/sequence/(?P<id>[^/]+)/start", self.cluster_start),
            route("POST", "/lock/(?P<name>[A-Za-z0-9._-]{1,64})", self.take_lock),
            route("DELETE", "/lock/(?P<name>[A-Za-z0-9._-]{1,64})", self.release_lock),
            # Where Prometheus looks by default, beside the API's own path.
            ("GET", re.compile("/metrics"), self.metrics),
        ]

    @staticmethod
    def _route(
        method: str, pattern: str, handler: RouteHandler
    ) -> tuple[str, re.Pattern[str], RouteHandler]:
        return method, re.compile(f"{API_BASE}{pattern}"), handler

    async def __call__(self, request: Request, response: Response) -> None:
        if request.method == "GET":
            name = ConsoleFiles.name_of(request.path)
            if name is not None:
                # The console's own files are the wheel's, the same for everyone: they are
                # served without a token; everything the page then asks the API for needs one.
                await self._console_file(request, response, name)
                return
        admitted: Admitted | None = None
        if request.remote:
            verdict = (
                Refusal(403, "this hub serves no TCP API")
                if self.access is None
                else self.access.admit(
                    request.method, request.header("authorization"), request.peer
                )
            )
            if isinstance(verdict, Refusal):
                self._audit_line(request, verdict.status, "-")
                request.abandon_body()
                await response.json(verdict.status, {"error": verdict.message}, verdict.headers)
                return
            admitted = verdict
        who = admitted.who if admitted is not None else "unix"
        audit = self._audit_start(request, who)
        try:
            await self._dispatch(request, response)
        finally:
            if admitted is not None and self.access is not None:
                self.access.done(admitted)
            if audit is not None:
                audit["opState"] = "END" if response.finished and response.status < 400 else "ERROR"
                audit["receivedAt"] = now_ms()
                self.hub.audit_feed.publish(audit)
            self._audit_line(request, response.status, who)

    @staticmethod
    def _audit_line(request: Request, status: int, who: str) -> None:
        """One hub-log line per request that may change something: who, what, the answer."""
        if request.method in READ_METHODS:
            return
        where = f" from {request.peer}" if request.peer else ""
        log.info("audit: %s%s %s %s -> %d", who, where, request.method, request.path, status)

    def _audit_start(self, request: Request, who: str) -> dict[str, Any] | None:
        """STH's request audit record, for requests on sequences, instances and topics."""
        parts = request.path[len(API_BASE) :].strip("/").split("/")
        kind = AUDIT_KINDS.get(parts[0]) if parts else None
        method = AUDIT_METHODS.get(request.method)
        if kind is None or method is None:
            return None
        operation = AUDIT_OPERATIONS.get(parts[2], 0) if len(parts) > 2 else 0
        record = {
            "opState": "START",
            "opCode": 10000 + 1000 * kind + 100 * method + operation,
            "requestId": str(uuid.uuid4()),
            "objectId": parts[1] if len(parts) > 1 else "",
            "requestorId": request.header("x-mw-billable"),
            "receivedAt": now_ms(),
            "token": who,  # si's: the token's name, or "unix" for the hub's own socket
        }
        self.hub.audit_feed.publish(record)
        return dict(record)

    async def _dispatch(self, request: Request, response: Response) -> None:
        if request.method == "OPTIONS":
            await response.start(
                200,
                [
                    ("access-control-allow-headers", "*"),
                    ("access-control-allow-methods", "DELETE, POST, GET, PUT, OPTIONS"),
                    ("content-length", "0"),
                ],
            )
            await response.end()
            return
        path = request.path.rstrip("/") if request.path != "/" else request.path
        path_matched = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            path_matched = True
            if method != request.method:
                continue
            request.params = match.groupdict()
            try:
                try:
                    await handler(request, response)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    raise storage_error(exc, "cannot write the hub's files") from exc
            except ApiError as exc:
                if response.started:
                    raise
                await response.json(exc.status, {"error": exc.message})
            return
        if path_matched:
            await response.empty(405)
            return
        if path.startswith(f"{API_BASE}/instance/"):
            instance_id = path.split("/")[4]
            if instance_id not in self.hub.instances:
                await response.json(404, {"error": f"Instance {instance_id} not found"})
                return
        await response.empty(404)

    async def _console_file(self, request: Request, response: Response, name: str) -> None:
        try:
            found = self.console.get(name)
        except OSError as exc:
            log.warning("cannot read the console's %s: %s", name, exc)
            await response.json(500, {"error": f"the hub cannot read its console ({exc})"})
            return
        if found is None:
            await response.json(404, {"error": f"no console file {request.path}"})
            return
        headers = [*SECURITY_HEADERS, ("etag", found.etag)]
        if request.header("if-none-match") == found.etag:
            await response.whole(304, b"", None, headers)
            return
        await response.whole(200, found.body, found.content_type, headers)

    # -- helpers ---------------------------------------------------------------------------

    def _sequence(self, request: Request, message: str = "Sequence {id} not found") -> Sequence:
        sequence_id = request.params["id"]
        sequence = self.hub.sequences.get(sequence_id)
        if sequence is None:
            raise ApiError(404, message.format(id=sequence_id))
        return sequence

    def _instance(self, request: Request) -> Instance:
        instance_id = request.params["id"]
        self.hub.settle(instance_id)
        instance = self.hub.instances.get(instance_id)
        if instance is None:
            raise ApiError(404, f"Instance {instance_id} not found")
        return instance

    @staticmethod
    def _send_control(instance: Instance, message: messages.AnyMessage) -> None:
        """A client's message to a runner; 503 while the runner does not read its control
        channel (the hub holds at most a window of them, then refuses)."""
        from si.protocol.link import WindowFull

        try:
            instance.send_control(message)
        except WindowFull as exc:
            raise ApiError(
                503,
                f"Instance {instance.id} is not reading its control messages ({exc}); "
                "try again later",
            ) from exc

    @staticmethod
    async def _json_body(request: Request) -> Any:
        """The request's JSON body; absent, empty or ``null`` bodies read as ``None``.

        A body that breaks off, stalls (408) or is too big (413) raises the shell's BodyError:
        the shell answers it and closes the connection rather than drain what is left."""
        raw = await request.read(MAX_JSON_BODY)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "Could not parse content: the body is not valid JSON") from None
        except RecursionError:
            # Nesting deeper than the interpreter's stack (a [[[[... bomb): no API takes it.
            raise ApiError(400, "Could not parse content: the JSON nests too deeply") from None

    async def _json_object(self, request: Request) -> dict[str, Any]:
        body = await self._json_body(request)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ApiError(400, "Could not parse content: expected a JSON object")
        return body

    @staticmethod
    def _check_accept(request: Request, served: str) -> None:
        accept = request.header("accept")
        if not accept:
            return
        major = served.split("/")[0]
        for item in accept.split(","):
            media = item.split(";")[0].strip().lower()
            if media in (served, "*/*", f"{major}/*"):
                return
        raise ApiError(415, f"this endpoint serves {served}")

    # -- hub -------------------------------------------------------------------------------

    async def version(self, request: Request, response: Response) -> None:
        await response.json(
            200,
            {"service": "si", "apiVersion": "v1", "version": si.__version__, "build": "source"},
        )

    async def hub_log(self, request: Request, response: Response) -> None:
        await self._feed(request, response, self.hub.log_feed)

    async def hub_audit(self, request: Request, response: Response) -> None:
        await self._feed(request, response, self.hub.audit_feed)

    async def _feed(self, request: Request, response: Response, feed: Feed) -> None:
        self._check_accept(request, "application/octet-stream")
        await response.start(200, [("content-type", "application/octet-stream")])
        async for chunk in feed.follow():
            await response.write(chunk)

    # -- topics ----------------------------------------------------------------------------

    async def list_topics(self, request: Request, response: Response) -> None:
        await response.json(200, [t.record() for t in self.hub.topics.topics.values()])

    async def create_topic(self, request: Request, response: Response) -> None:
        body = await self._json_object(request)
        name, content_type = body.get("id"), body.get("content-type")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Missing body param: id")
        if not isinstance(content_type, str) or not content_type:
            raise ApiError(400, "Missing body param: content-type")
        if name in self.hub.topics.topics:
            raise ApiError(400, "Topic with given id already exist")
        cluster_wide = body.get("cluster")
        if cluster_wide is None:
            cluster_wide = self.hub.options.cluster_topics and self.hub.cluster is not None
        if cluster_wide:
            await self._create_cluster_topic(name, content_type)
            await response.json(
                200,
                {
                    "id": name,
                    "origin": {"id": "si", "type": "cluster"},
                    "state": "flowing",
                    "contentType": content_type,
                    "cluster": True,
                },
            )
            return
        topic = self._topic(name, content_type)
        await response.json(
            200,
            {
                "id": topic.name,
                "origin": {"id": "si", "type": "hub"},
                "state": "flowing",
                "contentType": topic.content_type,
            },
        )

    async def _create_cluster_topic(self, name: str, content_type: str) -> None:
        """A topic whose data is a JetStream stream (si.daemon.cluster.topics)."""
        from si.daemon.cluster.member import ClusterUnavailable
        from si.daemon.topics import CONTENT_TYPES

        cluster = self._cluster()
        try:
            self.hub.topics.check_name(name)
        except TopicError as exc:
            raise ApiError(exc.status, exc.message) from None
        if content_type not in CONTENT_TYPES:
            raise ApiError(400, "Unsupported content-type")
        existing = None
        try:
            existing = await cluster.topics.content_type(name)
            if existing is not None and existing != content_type:
                raise ApiError(415, f"Acceptable Content-Type for {name} is {existing}")
            await cluster.topics.create(name, content_type)
        except ClusterUnavailable as exc:
            raise ApiError(503, str(exc)) from None

    async def delete_topic(self, request: Request, response: Response) -> None:
        await self._json_body(request)
        name = request.params["name"]
        try:
            self.hub.topics.remove(name)
        except TopicError as exc:
            raise ApiError(exc.status, exc.message) from None
        await response.json(200, {"message": f"Topic {name} removed"})

    def _topic(self, name: str, content_type: str) -> Topic:
        try:
            return self.hub.topics.get_or_create(name, content_type)
        except TopicError as exc:
            raise ApiError(exc.status, exc.message) from None

    async def produce(self, request: Request, response: Response) -> None:
        """An HTTP producer: whole messages into the topic, read only as fast as it has room."""
        topic = self._topic(request.params["name"], request.content_type)
        splitter = MessageSplitter(topic.content_type)
        topic.producers += 1
        try:
            async for chunk in request.body():
                await topic.publish(splitter.feed(chunk))
            await topic.publish(splitter.finish())
        except trio.ClosedResourceError:
            raise ApiError(410, f"Topic {topic.name} was removed") from None
        finally:
            topic.producers -= 1
        await response.json(200, {})

    async def consume(self, request: Request, response: Response) -> None:
        """An HTTP consumer: every message from where it attaches (``x-si-offset`` resumes)."""
        content_type = request.content_type or DEFAULT_CONTENT_TYPE
        topic = self._topic(request.params["name"], content_type)
        await self._serve_pipe(request, response, topic.pipe)

    async def peek_topic(self, request: Request, response: Response) -> None:
        """si's: a topic's messages as they pass, from about the last ``?back=`` bytes (16 KiB;
        whole lines for the line types), without consuming them or holding the topic back.
        A peek that falls behind skips what the topic no longer holds; it never slows it."""
        name = request.params["name"]
        topic = self.hub.topics.topics.get(name)
        if topic is None:
            raise ApiError(404, f"Topic {name} not found")
        try:
            back = int(request.query.get("back", PEEK_BACK))
        except ValueError:
            raise ApiError(400, "back must be a number of bytes") from None
        pipe = topic.pipe
        position = max(pipe.tail - max(back, 0), pipe.floor)
        lines = topic.content_type != "application/octet-stream"
        await response.start(
            200,
            [
                ("content-type", topic.content_type),
                ("cache-control", "no-store"),
                ("x-si-offset", str(position)),
            ],
        )
        partial = lines and position > pipe.floor  # may start inside a message
        while (glanced := await pipe.glance(position)) is not None:
            start, data = glanced
            if start > position:
                partial = lines  # skipped ahead: the first bytes may be a message's middle
            position = start + len(data)
            if partial:
                cut = data.find(b"\n")
                if cut < 0:
                    continue
                data, partial = data[cut + 1 :], False
            await response.write(data)
        await response.end()

    async def load_check(self, request: Request, response: Response) -> None:
        await response.json(200, await trio.to_thread.run_sync(load_figures, self.hub))

    async def config(self, request: Request, response: Response) -> None:
        options = self.hub.options
        await response.json(
            200,
            {
                "host": {"apiBase": API_BASE, "hostname": options.host, "port": options.port},
                "runtimeAdapter": "process",
                "timings": {"instanceLifetimeExtensionDelay": int(options.retention * 1000)},
                "killOnExit": options.kill_on_exit,
            },
        )

    async def metrics(self, request: Request, response: Response) -> None:
        """Prometheus' text format (si.daemon.metrics); /proc is read in a worker thread."""
        from si.daemon import metrics

        self.hub.settle()
        snapshot = metrics.gather(self.hub)
        body = await trio.to_thread.run_sync(metrics.render, snapshot)
        await response.whole(200, body, metrics.CONTENT_TYPE)

    async def top(self, request: Request, response: Response) -> None:
        """What ``si top`` shows: every instance's counters and its runner's CPU and RSS."""
        from si.daemon import metrics

        self.hub.settle()
        snapshot = metrics.gather(self.hub)
        await response.json(200, await trio.to_thread.run_sync(metrics.top_view, snapshot))

    async def watch(self, request: Request, response: Response) -> None:
        """si's: the console's feed, one NDJSON line of the whole hub per ``interval`` seconds
        (at least 1), until the client goes away (si.daemon.overview)."""
        from si.daemon import overview

        try:
            interval = overview.interval_of(request.query.get("interval"))
        except ValueError:
            raise ApiError(400, "interval must be a number of seconds") from None
        await response.start(
            200, [("content-type", "application/x-ndjson"), ("cache-control", "no-store")]
        )
        if self._overview is None:
            self._overview = overview.SharedLine(overview.builder(self.hub))
        while True:
            await response.write(await self._overview.current())
            await trio.sleep(interval)

    async def sequence_package(self, request: Request, response: Response) -> None:
        """si's: the sequence's package as a tar.gz, packed again from what the hub stored (its
        content digest is the uploaded one's; ``si export`` saves it)."""
        sequence = self._sequence(request)
        body = await trio.to_thread.run_sync(_pack_bytes, sequence.package_dir)
        await response.whole(200, body, "application/gzip")

    async def take_lock(self, request: Request, response: Response) -> None:
        """An advisory lock (``si apply`` takes one per hub): ``{owner, ttl}`` -> ``{key}``."""
        body = await self._json_object(request)
        owner, ttl = body.get("owner", ""), body.get("ttl", 60)
        if not isinstance(owner, str) or isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ApiError(400, "a lock request is {owner: string, ttl: seconds}")
        try:
            held = self.locks.take(request.params["name"], owner[:200], float(ttl))
        except LockBusy as exc:
            raise ApiError(409, f"lock {request.params['name']} is {exc}") from None
        except ValueError as exc:
            raise ApiError(503, str(exc)) from None
        await response.json(200, {"key": held.key, "ttl": held.until - held.since})

    async def release_lock(self, request: Request, response: Response) -> None:
        if not self.locks.release(request.params["name"], request.header("x-si-lock-key")):
            raise ApiError(409, f"lock {request.params['name']} is not held with this key")
        await response.json(200, {"released": request.params["name"]})

    async def status(self, request: Request, response: Response) -> None:
        await response.json(200, {"cpm": {}})

    async def entities(self, request: Request, response: Response) -> None:
        self.hub.settle()
        await response.json(
            200,
            {
                "sequences": [s.record() for s in self.hub.sequences.values()],
                "instances": [i.record() for i in self.hub.instances.values()],
            },
        )

    # -- sequences -------------------------------------------------------------------------

    async def update_sequence(self, request: Request, response: Response) -> None:
        """Replace a sequence's package, keeping its id; refused while it has instances."""
        sequence = self._sequence(request, "Sequence with id: {id} not found")
        if any(i in self.hub.instances for i in sequence.instances):
            raise ApiError(409, "Can't update sequence with instances")
        replacement = await self._store_upload(request, str(uuid.uuid4()), label=sequence.id)
        await trio.to_thread.run_sync(remove_sequence, sequence)
        final = await trio.to_thread.run_sync(rename_sequence, replacement, sequence.id)
        self.hub.sequences[sequence.id] = final
        await self._share(final)  # the cluster's copy replaced too (same name in the store)
        await response.json(200, {"id": sequence.id})

    async def list_sequences(self, request: Request, response: Response) -> None:
        await response.json(200, [s.record() for s in self.hub.sequences.values()])

    async def get_sequence(self, request: Request, response: Response) -> None:
        await response.json(200, self._sequence(request).record())

    async def sequence_instances(self, request: Request, response: Response) -> None:
        await response.json(200, list(self._sequence(request).instances))

    async def upload_sequence(self, request: Request, response: Response) -> None:
        sequence = await self._store_upload(request, str(uuid.uuid4()))
        self.hub.sequences[sequence.id] = sequence
        log.info("sequence %s stored (%s)", sequence.id, sequence.manifest.name)
        self.hub.warm_keeper()  # a start usually follows an upload
        await self._share(sequence)
        await response.json(200, {"id": sequence.id})

    async def _share(self, sequence: Sequence) -> None:
        """Into the cluster's store before the upload is answered, so a start on any hub may
        follow at once; a cluster that cannot be reached gets it later, the upload succeeds."""
        cluster = self.hub.cluster
        if cluster is None or not cluster.connected:
            return
        from si.daemon.cluster.member import ClusterUnavailable

        try:
            await cluster.share_sequence(sequence)
        except ClusterUnavailable as exc:
            log.warning("sequence %s: shared later (%s)", sequence.id, exc)

    async def _store_upload(
        self, request: Request, sequence_id: str, label: str | None = None
    ) -> Sequence:
        """Receive a package body and store it as ``sequence_id``.

        Checked while it streams, and refused as soon as it is known to be bad, reading no
        further: a body that does not start as gzip (422, STH's answer to a bad package), one
        over ``--max-package-size`` (413; at once when its length is announced), no room left
        on the disk (507). Whatever was written of a refused upload is removed.
        """
        try:
            return await self._receive_package(request, sequence_id, label)
        except ApiError:
            request.abandon_body()
            raise

    async def _receive_package(
        self, request: Request, sequence_id: str, label: str | None
    ) -> Sequence:
        from si.package.unpack import MAX_PACKAGE_BYTES

        content_type = request.content_type
        if content_type and content_type not in ("application/octet-stream", "application/gzip"):
            raise ApiError(415, "a sequence package is sent as application/octet-stream")
        limit = self.hub.options.max_package_size
        announced = request.header("content-length")
        if announced.isdigit() and int(announced) > limit:
            raise ApiError(413, package_too_large(limit))
        root = self.hub.paths.sequences
        upload = root / f"{NEW_PREFIX}upload-{sequence_id}"
        size = 0
        head = b""
        try:
            fd = os.open(upload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                async for chunk in request.body():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, package_too_large(limit))
                    if len(head) < len(GZIP_MAGIC):
                        head += chunk[: len(GZIP_MAGIC) - len(head)]
                        if not GZIP_MAGIC.startswith(head):
                            raise ApiError(422, NOT_GZIP)
                    write_all(fd, chunk)
            finally:
                os.close(fd)
            if head != GZIP_MAGIC:
                raise ApiError(422, NOT_GZIP)  # empty, or cut after its first byte
            # Unpacked, a package may be larger than sent: at least the standing limit.
            unpacked = max(MAX_PACKAGE_BYTES, 2 * limit)
            return await trio.to_thread.run_sync(
                functools.partial(store_upload, max_bytes=unpacked, label=label),
                root,
                sequence_id,
                upload,
                size,
            )
        except PackageError as exc:
            raise ApiError(422, str(exc)) from exc
        except OSError as exc:
            raise storage_error(exc, "cannot store the package") from exc
        finally:
            upload.unlink(missing_ok=True)

    async def delete_sequence(self, request: Request, response: Response) -> None:
        sequence = self._sequence(request, "The sequence {id} does not exist.")
        await self._json_body(request)  # an op endpoint may carry a body; it has no fields
        force = bool(request.header("x-seq-kill-inst"))
        self.hub.settle()
        live = [
            self.hub.instances[i]
            for i in sequence.instances
            if i in self.hub.instances and self.hub.instances[i].live
        ]
        if live and not force:
            raise ApiError(409, "Can't remove- Sequence in use")
        for instance in live:
            instance.remove_immediately = True
            await self.hub.kill(instance)
        await trio.to_thread.run_sync(remove_sequence, sequence)
        self.hub.sequences.pop(sequence.id, None)
        if self.hub.cluster is not None:
            await self.hub.cluster.unshare_sequence(sequence.id)
        await response.json(200, {"id": sequence.id})

    async def start_sequence(self, request: Request, response: Response) -> None:
        payload = await self._json_object(request)
        await response.json(200, await self.start_payload(request.params["id"], payload))

    async def start_payload(self, sequence_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Start an instance of ``sequence_id`` on this hub (``POST sequence/:id/start``, and
        another hub's placement); a sequence this hub has not stored is fetched from the
        cluster's store, when there is a cluster. Its answer's body.

        Raises:
            ApiError: as the start route answers it.
        """
        instance_id = payload.get("instanceId")
        if instance_id is not None and (
            not isinstance(instance_id, str) or len(instance_id) != INSTANCE_ID_LENGTH
        ):
            raise ApiError(422, f"Invalid Instance id: must be {INSTANCE_ID_LENGTH} characters")
        if instance_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", instance_id):
            raise ApiError(422, "Invalid Instance id: letters, digits, '-', '_' and '.' only")
        if not isinstance(payload.get("appConfig", {}) or {}, dict):
            raise ApiError(422, "appConfig must be a JSON object")
        if not isinstance(payload.get("args", []) or [], list):
            raise ApiError(422, "args must be a JSON array")
        _check_name_and_labels(payload)
        try:
            policy = RestartPolicy.from_payload(payload)
            Limits.from_payload(payload)
        except (PolicyError, LimitsError) as exc:
            raise ApiError(400, str(exc)) from None
        sequence = await self._sequence_to_start(sequence_id)
        try:
            instance = await self.hub.start_instance(sequence, payload, policy)
        except InstanceExists as exc:
            raise ApiError(409, str(exc)) from None
        except SequenceFailed as exc:
            raise ApiError(400, str(exc)) from None
        except RunnerNotStarted as exc:
            raise ApiError(500, str(exc)) from exc
        except OutOfFileDescriptors as exc:
            raise ApiError(
                503, f"the hub is out of file descriptors ({exc}); the instance was not started"
            ) from exc
        except OSError as exc:
            raise storage_error(exc, "cannot start an instance") from exc
        return {"message": f"Sequence {instance.id} starting", "id": instance.id}

    async def _sequence_to_start(self, sequence_id: str) -> Sequence:
        sequence = self.hub.sequences.get(sequence_id)
        if sequence is not None:
            return sequence
        cluster = self.hub.cluster
        if cluster is not None and cluster.connected:
            from si.daemon.cluster.member import ClusterUnavailable

            try:
                fetched = await cluster.fetch_sequence(sequence_id)
            except ClusterUnavailable as exc:
                raise ApiError(503, str(exc)) from None
            except PackageError as exc:
                raise ApiError(422, str(exc)) from exc
            except OSError as exc:
                raise storage_error(exc, "cannot store the sequence") from exc
            if fetched is not None:
                return fetched
        raise ApiError(404, f"Sequence {sequence_id} not found")

    # -- the cluster (si.daemon.cluster) ---------------------------------------------------

    def _cluster(self) -> ClusterMember:
        cluster = self.hub.cluster
        if cluster is None:
            raise ApiError(409, "this hub is not in a cluster (start it with --nats URL)")
        return cluster

    async def cluster_status(self, request: Request, response: Response) -> None:
        cluster = self._cluster()
        await response.json(
            200,
            {
                "hub": cluster.name,
                "url": cluster.url,
                "connected": cluster.connected,
                "server": cluster.server_url if cluster.connected else None,
            },
        )

    async def _cluster_answer(self, response: Response, work: Awaitable[Any]) -> None:
        """Answer with what ``work`` gives; a cluster that cannot be reached is a 503."""
        from si.daemon.cluster.member import ClusterUnavailable, NoHubAvailable, RemoteError

        try:
            body = await work
        except ClusterUnavailable as exc:
            raise ApiError(503, str(exc)) from None
        except NoHubAvailable as exc:
            raise ApiError(404, str(exc)) from None
        except RemoteError as exc:
            raise ApiError(exc.status, exc.message) from None
        await response.json(200, body)

    async def cluster_hubs(self, request: Request, response: Response) -> None:
        cluster = self._cluster()

        async def hubs() -> list[dict[str, Any]]:
            now = time.time()
            return [
                {**entry.view(now), "self": entry.name == cluster.name}
                for entry in await cluster.hubs()
            ]

        await self._cluster_answer(response, hubs())

    async def cluster_instances(self, request: Request, response: Response) -> None:
        await self._cluster_answer(response, self._cluster().instances())

    async def cluster_sequences(self, request: Request, response: Response) -> None:
        await self._cluster_answer(response, self._cluster().sequences())

    async def cluster_start(self, request: Request, response: Response) -> None:
        """Start on the hub named by ``hub`` in the body (default ``auto``: the least loaded
        live one); the answer adds ``hub``, where it started."""
        cluster = self._cluster()
        payload = await self._json_object(request)
        wanted = payload.pop("hub", None) or "auto"
        if not isinstance(wanted, str):
            raise ApiError(422, "hub must be a hub's name or auto")
        sequence_id = request.params["id"]

        async def start() -> dict[str, Any]:
            from si.daemon.cluster.member import START_REQUEST_TIMEOUT

            chosen = await cluster.choose(wanted)
            if chosen.name == cluster.name:
                answer = await self.start_payload(sequence_id, payload)
            else:
                answer = await cluster.request(
                    chosen.name,
                    "start",
                    {"sequence": sequence_id, "payload": payload},
                    timeout=START_REQUEST_TIMEOUT,
                )
            return {**answer, "hub": chosen.name}

        await self._cluster_answer(response, start())

    async def answer_start(self, request: dict[str, Any]) -> tuple[int, Any]:
        """Another hub's placement of a start here (``si.hub.<name>.start``)."""
        sequence_id, payload = request.get("sequence"), request.get("payload")
        if not isinstance(sequence_id, str) or not isinstance(payload, dict):
            return 400, {"error": "a start names a sequence and carries a payload object"}
        try:
            return 200, await self.start_payload(sequence_id, payload)
        except ApiError as exc:
            return exc.status, {"error": exc.message}

    # -- instances -------------------------------------------------------------------------

    async def list_instances(self, request: Request, response: Response) -> None:
        self.hub.settle()
        await response.json(200, [i.record() for i in self.hub.instances.values()])

    async def get_instance(self, request: Request, response: Response) -> None:
        await response.json(200, self._instance(request).record())

    async def instance_output(self, request: Request, response: Response) -> None:
        await self._serve_pipe(request, response, self._instance(request).output)

    async def _serve_pipe(self, request: Request, response: Response, pipe: OutputPipe) -> None:
        """Stream ``pipe`` from where the request resumes (``x-si-offset``) to its end; the
        reply says where it starts, so a client cut off can resume without gap or repeat."""
        self._check_accept(request, "application/octet-stream")
        offset_header = request.header("x-si-offset")
        try:
            offset = int(offset_header) if offset_header else None
        except ValueError:
            raise ApiError(400, "x-si-offset must be a byte offset") from None
        # A re-adopted runner's offsets are known once its link is up (a second or so).
        await pipe.wait_known()
        try:
            reader = pipe.attach(offset)
        except OffsetError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            with reader.scope:
                await response.start(
                    200,
                    [
                        ("content-type", "application/octet-stream"),
                        ("x-si-offset", str(reader.position)),
                    ],
                )
                await _copy_to_response(pipe, reader, response)
                await response.end()
        finally:
            pipe.detach(reader)
        _note_cut_off(request, reader)

    async def file_stream(self, request: Request, response: Response) -> None:
        """stdout, stderr and log: the retained history, then new bytes as they are written.

        Unlike STH's pipes these are files, so a late reader sees what came before (STH
        #127) and a follower resumes at its offset after a hub restart. ``?tail=N`` starts at
        the last N lines.
        """
        instance = self._instance(request)
        self._check_accept(request, "application/octet-stream")
        path = instance.directory / request.params["stream"]
        position = _file_start(path, request.header("x-si-offset"), request.query.get("tail"))
        segments = list_segments(path)
        if segments and position < segments[0][0]:
            position = segments[0][0]  # older bytes were rotated away
        await response.start(
            200,
            [("content-type", "application/octet-stream"), ("x-si-offset", str(position))],
        )
        delay = FILE_POLL_FIRST
        while True:
            ended = instance.finished.is_set()  # checked before reading: no write is missed
            start, data = read_from(path, position, FILE_READ_SIZE)
            if data:
                await response.write(data)
                position = start + len(data)
                delay = FILE_POLL_FIRST
                continue
            if ended or instance.id not in self.hub.instances:
                break
            await trio.sleep(delay)
            delay = min(delay * 2, FILE_POLL_MAX)
        await response.end()

    async def instance_health(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        if not instance.live:
            raise ApiError(404, f"Instance {instance.id} is not running")
        health = instance.health if isinstance(instance.health, dict) else {"healthy": True}
        await response.json(200, {**health, "processId": instance.state.pid})

    async def post_event(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        body = await self._json_body(request)
        if isinstance(body, list) and len(body) >= 2 and isinstance(body[1], dict):
            event = body[1]
        elif isinstance(body, dict):
            event = body  # tolerated: the event object without STH's [code, ...] wrapper
        else:
            raise ApiError(400, "Invalid format: expected [5001, {eventName, message}]")
        name = event.get("eventName")
        if not isinstance(name, str):
            raise ApiError(400, "Invalid format, eventName missing.")
        if not instance.live or instance.exited:
            raise ApiError(409, f"Instance {instance.id} is not running")
        self._send_control(instance, messages.SequenceEvent(name, event.get("message"), "api"))
        await response.json(200, {"accepted": "OK"})

    async def get_event(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        value = await instance.events.last_or_next(request.params["name"])
        await response.json(200, value)

    async def once_event(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        value = await instance.events.next(request.params["name"])
        await response.json(200, value)

    async def event_stream(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        self._check_accept(request, "application/octet-stream")
        receive = instance.events.subscribe(request.params["name"])
        await response.start(200, [("content-type", "application/octet-stream")])
        async with receive:
            async for message in receive:
                line = json.dumps(message if message else {}, separators=(",", ":"))
                await response.write(line.encode() + b"\n")
        await response.end()

    async def all_events(self, request: Request, response: Response) -> None:
        """si's: every event the instance emits, as NDJSON ``{"eventName", "message"}`` lines,
        starting with the last one of each name seen so far; ends when the instance does."""
        instance = self._instance(request)
        seen, receive = instance.events.watch()
        await response.start(
            200, [("content-type", "application/x-ndjson"), ("cache-control", "no-store")]
        )

        def line(name: str, message: Any) -> bytes:
            body = {"eventName": name, "message": message}
            return json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"

        async with receive:
            for name, message in seen:
                await response.write(line(name, message))
            async for name, message in receive:
                await response.write(line(name, message))
        await response.end()

    async def instance_input(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        runner_link = instance.runner_link
        if not instance.live or runner_link is None or instance.exited:
            raise ApiError(409, f"Instance {instance.id} is not running")
        if instance.state.requires is not None:
            raise ApiError(405, "Input provided in other way")
        end = parse_end_stream(request.header("x-end-stream"), default=True)
        lock = self._input_locks.setdefault(instance.id, trio.Lock())
        async with lock:
            with trio.move_on_after(CONNECT_TIMEOUT):
                await _wait_established(instance)
            link = runner_link.link
            if not link.established and not link.outbound[Channel.INPUT].known:
                raise ApiError(503, f"Instance {instance.id} is not reachable yet; try again")
            channel = link.outbound[Channel.INPUT]
            if channel.ended:
                raise ApiError(409, f"Input of instance {instance.id} has already ended")
            if channel.next_offset == 0:
                content_type = request.header("content-type")
                if not content_type:
                    raise ApiError(406, "Content-Type must be defined")
                await runner_link.send(
                    Channel.INPUT, f"Content-Type: {content_type}\r\n\r\n".encode()
                )
            await response.start(200 if end else 202, [("content-type", "application/json")])
            async for chunk in request.body():
                await runner_link.send(Channel.INPUT, chunk)
            if end:
                runner_link.end(Channel.INPUT)
            if not await runner_link.wait_flushed():
                # The reply breaks off: the client must not take the data as delivered.
                log.info("instance %s: its runner ended before it took the input", instance.id)
                return
            await response.end()

    async def instance_inout(self, request: Request, response: Response) -> None:
        """One request both ways: its body feeds the input, the output is the response."""
        instance = self._instance(request)
        runner_link = instance.runner_link
        if not instance.live or runner_link is None or instance.exited:
            raise ApiError(409, f"Instance {instance.id} is not running")
        with trio.move_on_after(CONNECT_TIMEOUT):
            await _wait_established(instance)
        if runner_link.link.outbound[Channel.INPUT].ended:
            raise ApiError(409, f"Input of instance {instance.id} has already ended")
        pipe = instance.output
        await pipe.wait_known()
        reader = pipe.attach()
        try:
            with reader.scope:
                await self._inout(request, response, instance, pipe, reader)
        finally:
            pipe.detach(reader)
        _note_cut_off(request, reader)

    async def _inout(
        self,
        request: Request,
        response: Response,
        instance: Instance,
        pipe: OutputPipe,
        reader: PipeReader,
    ) -> None:
        runner_link = instance.runner_link
        assert runner_link is not None
        # The input stays open unless asked (``si inst inout --end``): then the sequence sees
        # its input end, and the output ends when the sequence does.
        end = parse_end_stream(request.header("x-end-stream"), default=False)
        await response.start(200, [("content-type", "application/octet-stream")])
        async with trio.open_nursery() as nursery:

            async def feed_input() -> None:
                async with self._input_locks.setdefault(instance.id, trio.Lock()):
                    if runner_link.link.outbound[Channel.INPUT].next_offset == 0:
                        content_type = request.header("content-type", "text/plain")
                        header = f"Content-Type: {content_type}\r\n\r\n".encode()
                        await runner_link.send(Channel.INPUT, header)
                    async for chunk in request.body():
                        await runner_link.send(Channel.INPUT, chunk)
                    if end:
                        runner_link.end(Channel.INPUT)

            nursery.start_soon(feed_input)
            await _copy_to_response(pipe, reader, response)
            nursery.cancel_scope.cancel()
        await response.end()

    async def instance_stdin(self, request: Request, response: Response) -> None:
        """Bytes for the sequence's stdin (the runner acknowledges them as it takes them)."""
        instance = self._instance(request)
        content_type = request.content_type
        if content_type and content_type != "application/octet-stream":
            raise ApiError(415, "stdin takes application/octet-stream")
        runner_link = instance.runner_link
        if not instance.live or runner_link is None or instance.exited:
            raise ApiError(409, f"Instance {instance.id} is not running")
        end = parse_end_stream(request.header("x-end-stream"), default=True)
        if runner_link.link.outbound[Channel.STDIN].ended:
            raise ApiError(409, f"stdin of instance {instance.id} has already ended")
        await response.start(200 if end else 202, [("content-type", "application/json")])
        async for chunk in request.body():
            await runner_link.send(Channel.STDIN, chunk)
        if end:
            runner_link.end(Channel.STDIN)
        if not await runner_link.wait_flushed():
            log.info("instance %s: its runner ended before it took the stdin", instance.id)
            return
        await response.end()

    async def monitoring_rate(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        body = await self._json_body(request)
        try:
            rate = messages.parse_as(
                messages.MonitoringRate, body, "[4003, {monitoringRate: n >= 0}]"
            )
        except messages.MessageError as exc:
            raise ApiError(400, f"Invalid format: {exc}") from None
        self._send_control(instance, rate)
        await response.json(202, {"accepted": True})

    async def kill_instance(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        body = await self._json_object(request)
        remove = body.get("removeImmediately", False)
        if not isinstance(remove, bool):
            raise ApiError(400, "Invalid removeImmediately format")
        if not instance.live:
            raise ApiError(400, "Instance not running")
        if remove:
            instance.remove_immediately = True
        instance.set_status(InstanceStatus.KILLING)
        self.hub.nursery.start_soon(self.hub.kill, instance)
        await response.json(202, instance.record())

    async def stop_instance(self, request: Request, response: Response) -> None:
        instance = self._instance(request)
        body = await self._json_object(request)
        timeout = body.get("timeout", 7000)
        keep_alive = body.get("canCallKeepalive", False)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise ApiError(400, "Invalid timeout format")
        if not isinstance(keep_alive, bool):
            raise ApiError(400, "Invalid canCallKeepalive format")
        if not instance.live:
            raise ApiError(400, "Instance not running")
        await self.hub.stop(instance, int(timeout), keep_alive)
        await response.json(202, instance.record())


# STH's audit opCode = 10000 + 1000 x kind + 100 x method + operation.
AUDIT_KINDS = {"sequence": 0, "instance": 1, "topic": 2}
AUDIT_METHODS = {"POST": 1, "GET": 2, "PUT": 3, "DELETE": 4}
AUDIT_OPERATIONS = {
    name: index
    for index, name in enumerate(
        [
            "stdout",
            "stderr",
            "stdin",
            "log",
            "monitoring",
            "output",
            "input",
            "health",
            "events",
            "event",
            "once",
            "_monitoring_rate",
            "_event",
            "_stop",
            "_kill",
            "instances",
            "start",
        ],
        start=1,
    )
}


def package_too_large(limit: int) -> str:
    return f"package over the hub's limit of {limit} bytes (si hub serve --max-package-size)"


def _file_start(path: Path, offset_header: str, tail: str | None) -> int:
    """Where a read of a file-backed stream starts: ``x-si-offset`` (0 to the stream's end),
    else the last ``tail`` lines (``tail`` >= 0), else its beginning. 400 for anything else:
    an offset past the end was never handed out, and following from it would wait for ever."""
    try:
        if offset_header:
            position = int(offset_header)
        elif tail is not None:
            lines = int(tail)
            if lines < 0:
                raise ApiError(400, "tail must be a number of lines, 0 or more")
            return offset_of_last_lines(path, lines)
        else:
            return 0
    except ValueError:
        raise ApiError(400, "x-si-offset and tail must be whole numbers") from None
    end = stream_end(path)
    if not 0 <= position <= end:
        raise ApiError(400, f"x-si-offset must be a byte offset from 0 to {end}")
    return position


def _pack_bytes(directory: Path) -> bytes:
    import io

    from si.package.pack import pack_directory

    out = io.BytesIO()
    pack_directory(directory, out)
    return out.getvalue()


INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_LABELS = 32


def _check_name_and_labels(payload: dict[str, Any]) -> None:
    """si's ``name`` (unique per hub, checked by the hub) and ``labels`` of a start body."""
    name = payload.get("name")
    if name is not None and not (isinstance(name, str) and INSTANCE_NAME.fullmatch(name)):
        raise ApiError(400, "name: letters, digits, '.', '_' and '-', 64 at most")
    if name is not None and re.fullmatch(r"[0-9a-f-]{36}", name):
        raise ApiError(400, "name: an instance id's shape is kept for ids")
    labels = payload.get("labels")
    if labels is None:
        return
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ApiError(400, f"labels: an object of at most {MAX_LABELS} strings")
    for key, value in labels.items():
        if not (isinstance(value, str) and len(key) <= 128 and len(value) <= 256):
            raise ApiError(400, "labels: keys of at most 128 and values of 256 characters")


def parse_end_stream(value: str, *, default: bool) -> bool:
    """STH's ``x-end-stream``: ``true`` ends, ``false``/``success`` keeps open (any case)."""
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered in ("false", "success"):
        return False
    return default


async def _wait_established(instance: Instance) -> None:
    runner_link = instance.runner_link
    while runner_link is not None and not runner_link.link.established and not instance.exited:
        await runner_link.connected.wait()


async def _copy_to_response(pipe: OutputPipe, reader: PipeReader, response: Response) -> None:
    """Write the pipe from the reader's position to its end; each byte counts as delivered
    once the socket took it."""
    while (data := await pipe.read(reader)) is not None:
        await response.write(data)
        pipe.delivered(reader, len(data))


def _note_cut_off(request: Request, reader: PipeReader) -> None:
    """A reader the pipe cut off: its response stays unterminated, so the client sees a broken
    stream (a follower resumes by offset if the bytes are still held), and the log says why."""
    if reader.cut_off is not None:
        log.warning("%s cut off at offset %d: %s", request.path, reader.position, reader.cut_off)
