"""This hub as a member of a NATS JetStream cluster: connection, heartbeats, requests from other
hubs, shared sequences.

What lives in NATS (all created by the first hub that needs them, the same way by every hub):

- ``si-hubs``, a key-value bucket: one ``registry.HubEntry`` per hub, rewritten every
  ``HEARTBEAT_INTERVAL``.
- ``si-sequences``, an object store: every package uploaded to any hub, named by sequence id,
  so any hub can start any sequence (fetched and stored locally on its first start there).
- ``si.hub.<name>.<verb>`` subjects: the requests one hub makes of another (``start``,
  ``instances``), NATS request and reply; the answer is ``{"status": ..., "body": ...}`` as the
  HTTP API would give it.

Resource handling: ``run`` (a task of the hub's nursery) owns the asyncio thread, the NATS
connection and every task below it; cancelled, it closes the connection and the thread, shielded
and within ``CLOSE_TIMEOUT``.

Error handling: the hub never waits on NATS to serve its local API. Until the first connection
succeeds ``run`` retries every ``RECONNECT_DELAY`` (and logs once); afterwards nats-py
reconnects by itself. A cluster request made meanwhile raises ``ClusterUnavailable`` (the API's
503). A failed heartbeat, a bad registry entry or a request that raises is logged and ends only
itself.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ObjectMeta
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from si.daemon.cluster.bridge import AsyncioThread, BridgeClosed
from si.daemon.cluster.registry import (
    HEARTBEAT_INTERVAL,
    HubEntry,
    NoHubAvailable,
    choose_hub,
    registry_view,
)
from si.daemon.load import load_figures
from si.fsutil import read_json, write_json_atomic

if TYPE_CHECKING:
    from si.daemon.hub import Hub
    from si.daemon.options import HubOptions
    from si.daemon.sequences import Sequence

log = logging.getLogger("si.hub.cluster")

REGISTRY_BUCKET = "si-hubs"
SEQUENCE_BUCKET = "si-sequences"
# A hub gone for a day drops out of the registry by itself; until then it is listed as stale.
REGISTRY_TTL = 24 * 3600.0
# Between attempts at the first connection (nats-py retries by itself once it has connected).
RECONNECT_DELAY = 1.0
# A cluster task that failed (a bug, or something unforeseen from NATS) starts again after this.
RESTART_DELAY = 5.0
# How long a hub waits for a NATS server to answer a connect, and a request to another hub.
CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 5.0
# A start on another hub waits for its sequence to load there (hub.START_TIMEOUT) and more.
START_REQUEST_TIMEOUT = 45.0
# Shutdown: closing the connection and the thread must not hold the hub's exit up.
CLOSE_TIMEOUT = 3.0
# Requests from other hubs served at once; more wait in the subscription's buffer, itself
# bounded to REQUEST_BACKLOG messages (nats-py drops beyond it and reports a slow consumer).
REQUEST_CONCURRENCY = 16
REQUEST_BACKLOG = 256


class ClusterUnavailable(Exception):
    """NATS cannot be reached now (the hub keeps serving locally and retries)."""


class RemoteError(Exception):
    """Another hub answered a request with an error (its HTTP status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# What a hub answers another hub's request with: (HTTP status, JSON body).
RequestHandler = Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]


def hub_name(options: HubOptions, state_dir: Path) -> str:
    """``--hub-name``, else the name this home was given the first time it joined a cluster
    (host name and a random suffix, kept in ``cluster.json`` so it survives restarts)."""
    if options.hub_name:
        return options.hub_name
    path = state_dir / "cluster.json"
    try:
        return str(read_json(path)["name"])
    except (OSError, ValueError, KeyError):
        pass
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    name = f"{host or 'hub'}-{secrets.token_hex(3)}"
    write_json_atomic(path, {"name": name})
    return name


def advertised_url(options: HubOptions) -> str:
    if options.advertise_url:
        return options.advertise_url
    if options.port is None:
        return ""
    scheme = "https" if options.tls_cert is not None else "http"
    return f"{scheme}://{options.host}:{options.port}/api/v1"


class ClusterMember:
    """This hub's part in the cluster.

    Args:
        hub: the hub (its instances, sequences, paths and options).
        name: this hub's name in the cluster.
    """

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.options = hub.options
        self.name = name
        self.url = advertised_url(hub.options)
        self.bridge = AsyncioThread()
        self.client: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._objects: ObjectStore | None = None
        self.ready = trio.Event()  # connected, buckets open
        self._closing = False
        self.handlers: dict[str, RequestHandler] = {"instances": self._answer_instances}
        from si.daemon.cluster.topics import ClusterTopics

        self.topics = ClusterTopics(self)
        self._fetch_locks: dict[str, trio.Lock] = {}
        self._answering = trio.Semaphore(REQUEST_CONCURRENCY)
        # Placements made since the last heartbeat of the hub they went to: counted as its
        # instances until it reports them, so a burst of starts is spread.
        self._placed: dict[str, tuple[float, int]] = {}
        # This hub's last heartbeat that reached the registry: a read served by a NATS replica
        # that has not caught up yet must still list this hub.
        self._own_written: HubEntry | None = None

    # -- life ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the cluster and stay in it until cancelled (see the module's docstring)."""
        self.bridge.start()
        task_status.started()
        try:
            await self._connect()
            async with trio.open_nursery() as nursery:
                for task in (self._heartbeat, self._serve_requests, self._share_stored_sequences):
                    nursery.start_soon(_keep_running, task)
        finally:
            self._closing = True
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                if self.client is not None:
                    try:
                        await self.bridge.call(self.client.close)
                    except Exception as exc:  # closing a broken connection: nothing to keep
                        log.debug("closing the NATS connection: %s", exc)
                await self.bridge.close()

    async def _connect(self) -> None:
        """Connect and open the buckets, retrying until it works (logging the first failure
        and the recovery, not every attempt)."""
        failing = False

        async def warn_if_slow() -> None:
            # nats-py, told to reconnect forever, also keeps trying its first connect.
            nonlocal failing
            await trio.sleep(2 * CONNECT_TIMEOUT)
            log.warning(
                "cannot join the cluster at %s yet; serving locally, retrying",
                ",".join(self.options.nats),
            )
            failing = True

        while True:
            error: Exception | None = None
            async with trio.open_nursery() as nursery:
                if not failing:
                    nursery.start_soon(warn_if_slow)
                try:
                    await self._open()
                except (OSError, nats.errors.Error, TimeoutError) as exc:
                    error = exc
                nursery.cancel_scope.cancel()
            if error is None:
                break
            if not failing:
                log.warning(
                    "cannot join the cluster at %s (%s: %s); serving locally, retrying",
                    ",".join(self.options.nats),
                    type(error).__name__,
                    error,
                )
                failing = True
            await trio.sleep(RECONNECT_DELAY)
        log.info("joined the cluster as %s through %s", self.name, self._connected_url())
        self.ready.set()

    async def _open(self) -> None:
        if self.client is None:
            self.client = await self.bridge.call(self._new_client)
        client = self.client
        js = client.jetstream(timeout=REQUEST_TIMEOUT)
        self._kv = await self.bridge.call(
            js.create_key_value,
            bucket=REGISTRY_BUCKET,
            history=1,
            ttl=REGISTRY_TTL,
            replicas=await self.replicas(),
        )
        self._objects = await self.bridge.call(
            js.create_object_store, SEQUENCE_BUCKET, replicas=await self.replicas()
        )

    async def _new_client(self) -> NatsClient:
        """Runs on the asyncio loop: a connected client that reconnects by itself forever."""

        async def quiet(*_args: Any) -> None:
            return None  # nats-py logs connection trouble itself; we log what we decide

        async def disconnected() -> None:
            if not self._closing:
                log.warning("lost the NATS connection; reconnecting")

        async def reconnected() -> None:
            log.info("NATS connection back (%s)", self._connected_url())

        return await nats.connect(
            servers=list(self.options.nats),
            name=f"si-hub {self.name}",
            user_credentials=str(self.options.nats_creds) if self.options.nats_creds else None,
            connect_timeout=int(CONNECT_TIMEOUT),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=quiet,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
        )

    @property
    def server_url(self) -> str:
        """The NATS server this hub is connected through (``nats://host:port``)."""
        return self._connected_url()

    def _connected_url(self) -> str:
        url = self.client.connected_url if self.client is not None else None
        return url.geturl() if url is not None else "?"

    async def replicas(self) -> int:
        """min(3, servers in the cluster): every bucket and stream survives one node lost
        in a cluster of three; a single server has no replicas to give."""
        client = self.client
        if client is None:
            return 1
        known = {f"{url.hostname}:{url.port}" for url in client.servers}
        return max(1, min(3, len(known)))

    @property
    def connected(self) -> bool:
        return self.ready.is_set() and self.client is not None and self.client.is_connected

    unavailable = ClusterUnavailable  # for modules that catch it without importing this one

    def jetstream(self) -> JetStreamContext:
        return self.require().jetstream(timeout=REQUEST_TIMEOUT)

    def require(self) -> NatsClient:
        if not self.connected or self.client is None:
            raise ClusterUnavailable("the cluster (NATS) cannot be reached from this hub now")
        return self.client

    async def call(self, function: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        """A NATS operation, with this module's failures as ``ClusterUnavailable``."""
        self.require()
        try:
            return await self.bridge.call(function, *args, **kw)  # type: ignore[arg-type]
        except (BridgeClosed, OSError, nats.errors.ConnectionClosedError) as exc:
            raise ClusterUnavailable(f"the cluster cannot be reached: {exc}") from exc
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise ClusterUnavailable(f"the cluster did not answer: {type(exc).__name__}") from exc

    # -- the registry ----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            try:
                entry = await self._own_entry()
                with trio.fail_after(HEARTBEAT_INTERVAL * 2):
                    assert self._kv is not None
                    await self.call(self._kv.put, self.name, entry.encode())
                self._own_written = entry
                if failing:
                    log.info("heartbeats reach the registry again")
                failing = False
            except (ClusterUnavailable, nats.errors.Error, trio.TooSlowError) as exc:
                if not failing:
                    log.warning("cannot write this hub's heartbeat: %s", exc or type(exc).__name__)
                failing = True
            await trio.sleep(HEARTBEAT_INTERVAL)

    async def _own_entry(self) -> HubEntry:
        figures = await trio.to_thread.run_sync(load_figures, self.hub)
        live = sum(1 for instance in self.hub.instances.values() if instance.live)
        return HubEntry(
            name=self.name,
            url=self.url,
            at=time.time(),
            started=self.hub.started_at,
            cpus=os.cpu_count() or 1,
            instances=live,
            load={key: figures[key] for key in ("currentLoad", "avgLoad", "memFree", "memUsed")},
        )

    async def hubs(self) -> list[HubEntry]:
        """Every hub in the registry, stale ones too, by name.

        Raises:
            ClusterUnavailable: NATS cannot be reached.
        """
        kv = self._kv
        assert kv is not None or not self.connected
        found: list[bytes] = await self.call(_read_bucket, kv)
        entries = []
        for value in found:
            try:
                entries.append(HubEntry.parse(value))
            except ValueError as exc:
                log.warning("skipping a registry entry: %s", exc)
        return registry_view(entries, self._own_written)

    async def choose(self, wanted: str) -> HubEntry:
        """The hub a start goes to (``registry.choose_hub``), counting recent placements.

        Raises:
            NoHubAvailable, ClusterUnavailable.
        """
        now = time.time()
        entries = []
        for entry in await self.hubs():
            placed_at, placed = self._placed.get(entry.name, (0.0, 0))
            if placed and placed_at > entry.at:
                entry = HubEntry(**{**entry.__dict__, "instances": entry.instances + placed})
            entries.append(entry)
        chosen = choose_hub(entries, now, wanted)
        previous = self._placed.get(chosen.name, (0.0, 0))
        recent = previous[1] if previous[0] > chosen.at else 0
        self._placed[chosen.name] = (now, recent + 1)
        return chosen

    # -- requests between hubs -------------------------------------------------------------

    async def request(
        self, hub: str, verb: str, body: dict[str, Any], timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """Ask hub ``hub`` to do ``verb``; its answer's body.

        Raises:
            RemoteError: it answered with an error status.
            ClusterUnavailable: NATS or that hub did not answer.
        """
        client = self.require()
        data = json.dumps(body).encode()
        reply: Msg = await self.call(client.request, f"si.hub.{hub}.{verb}", data, timeout=timeout)
        try:
            answer = json.loads(reply.data)
            status, result = int(answer["status"]), answer["body"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteError(502, f"hub {hub} answered nonsense: {exc}") from None
        if status >= 400:
            message = result.get("error") if isinstance(result, dict) else None
            raise RemoteError(status, str(message or result))
        return result

    async def _serve_requests(self) -> None:
        client = self.require()
        subscription = await self.call(
            client.subscribe, f"si.hub.{self.name}.*", pending_msgs_limit=REQUEST_BACKLOG
        )
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    message = await self.bridge.call(subscription.next_msg, timeout=None)
                except (nats.errors.Error, BridgeClosed, TimeoutError) as exc:
                    # A reconnect keeps the subscription; anything else is retried shortly.
                    log.debug("waiting for requests: %s", exc)
                    await trio.sleep(RECONNECT_DELAY)
                    continue
                await self._answering.acquire()
                nursery.start_soon(self._answer, message)

    async def _answer(self, message: Msg) -> None:
        try:
            verb = message.subject.rsplit(".", 1)[-1]
            handler = self.handlers.get(verb)
            if handler is None:
                status, body = 404, {"error": f"no such request: {verb}"}
            else:
                try:
                    request = json.loads(message.data or b"{}")
                    if not isinstance(request, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    status, body = 400, {"error": f"bad request: {exc}"}
                else:
                    status, body = await handler(request)
            reply = json.dumps({"status": status, "body": body}).encode()
            if message.reply:
                await self.call(message.respond, reply)
        except Exception:
            # One request's failure is that request's; the hub and other requests go on.
            log.exception("answering %s", message.subject)
        finally:
            self._answering.release()

    async def _answer_instances(self, request: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.local_instances()

    def local_instances(self) -> list[dict[str, Any]]:
        self.hub.settle()
        return [{**i.record(), "hub": self.name} for i in self.hub.instances.values()]

    async def instances(self) -> list[dict[str, Any]]:
        """Every instance of every live hub, each with its ``hub``; a hub that does not answer
        within ``REQUEST_TIMEOUT`` is left out (and logged).

        Raises:
            ClusterUnavailable.
        """
        now = time.time()
        others = [e.name for e in await self.hubs() if not e.stale(now) and e.name != self.name]
        gathered: dict[str, list[dict[str, Any]]] = {self.name: self.local_instances()}

        async def ask(name: str) -> None:
            try:
                gathered[name] = list(await self.request(name, "instances", {}))
            except (ClusterUnavailable, RemoteError) as exc:
                log.warning("hub %s did not list its instances: %s", name, exc)

        async with trio.open_nursery() as nursery:
            for name in others:
                nursery.start_soon(ask, name)
        return [record for name in sorted(gathered) for record in gathered[name]]

    # -- shared sequences ------------------------------------------------------------------

    async def share_sequence(self, sequence: Sequence) -> None:
        """Put a stored sequence's package into the cluster's object store.

        Raises:
            ClusterUnavailable: not stored; ``_share_stored_sequences`` tries again later.
        """
        from si.daemon.api import _pack_bytes

        objects = self._objects
        self.require()
        assert objects is not None
        package = await trio.to_thread.run_sync(_pack_bytes, sequence.package_dir)
        manifest = sequence.manifest
        about = {
            "name": manifest.name,
            "version": manifest.version,
            "digest": sequence.digest,
            "hub": self.name,
            "created": sequence.created,
        }
        meta = ObjectMeta(name=sequence.id, description=json.dumps(about))
        try:
            await self.call(objects.put, sequence.id, package, meta=meta)
        except nats.js.errors.Error as exc:
            raise ClusterUnavailable(f"cannot store the package in the cluster: {exc}") from exc
        sequence.shared = True

    async def _share_stored_sequences(self) -> None:
        """Sequences stored while NATS was away (or before this hub joined) are shared once it
        is back; checked every few seconds, one listing and a put per missing package."""
        while True:
            pending = [s for s in self.hub.sequences.values() if not s.shared]
            if pending and self.connected:
                try:
                    known = await self.call(_object_names, self._objects)
                    for sequence in pending:
                        if sequence.id not in known:
                            await self.share_sequence(sequence)
                        sequence.shared = True
                except (ClusterUnavailable, nats.errors.Error) as exc:
                    log.debug("sharing sequences later: %s", exc)
            await trio.sleep(5 * HEARTBEAT_INTERVAL)

    async def unshare_sequence(self, sequence_id: str) -> None:
        """Remove a sequence from the cluster's store (hubs that fetched it keep their copy)."""
        objects = self._objects
        if objects is None or not self.connected:
            return
        try:
            await self.call(objects.delete, sequence_id)
        except (ClusterUnavailable, nats.js.errors.NotFoundError, nats.js.errors.Error) as exc:
            log.info("sequence %s: not removed from the cluster's store: %s", sequence_id, exc)

    async def sequences(self) -> list[dict[str, Any]]:
        """Every sequence in the cluster's store.

        Raises:
            ClusterUnavailable.
        """
        self.require()
        infos = await self.call(_object_infos, self._objects)
        listed = []
        for info in infos:
            try:
                about = json.loads(info.description or "{}")
            except ValueError:
                about = {}
            listed.append(
                {
                    "id": info.name,
                    "name": about.get("name"),
                    "version": about.get("version"),
                    "digest": about.get("digest"),
                    "uploadedTo": about.get("hub"),
                    "created": about.get("created"),
                    "size": info.size,
                    "here": info.name in self.hub.sequences,
                }
            )
        return sorted(listed, key=lambda item: (str(item["name"]), item["id"]))

    async def fetch_sequence(self, sequence_id: str) -> Sequence | None:
        """The sequence ``sequence_id`` from the cluster's store, stored on this hub; None when
        the cluster does not have it.

        Raises:
            ClusterUnavailable.
            PackageError, OSError: from storing it (as an upload would).
        """
        import functools

        from si.daemon.sequences import NEW_PREFIX, store_upload
        from si.package.unpack import MAX_PACKAGE_BYTES

        lock = self._fetch_locks.setdefault(sequence_id, trio.Lock())
        async with lock:
            if sequence_id in self.hub.sequences:  # fetched by a start just before this one
                return self.hub.sequences[sequence_id]
            self.require()
            try:
                result = await self.call(self._objects.get, sequence_id)  # type: ignore[union-attr]
            except nats.js.errors.NotFoundError:
                return None
            root = self.hub.paths.sequences
            archive = root / f"{NEW_PREFIX}fetch-{sequence_id}"
            try:
                await trio.to_thread.run_sync(archive.write_bytes, result.data)
                sequence = await trio.to_thread.run_sync(
                    functools.partial(
                        store_upload,
                        max_bytes=max(MAX_PACKAGE_BYTES, 2 * self.options.max_package_size),
                    ),
                    root,
                    sequence_id,
                    archive,
                    len(result.data or b""),
                )
            finally:
                archive.unlink(missing_ok=True)
            sequence.shared = True
            self.hub.sequences[sequence.id] = sequence
            log.info(
                "sequence %s fetched from the cluster (%s)", sequence_id, sequence.manifest.name
            )
            return sequence


async def _keep_running(task: Callable[[], Awaitable[None]]) -> None:
    """Run ``task`` again after a pause whenever it fails: a bug in the cluster's part of the
    hub is logged and retried, it never takes the hub (and its local API) down."""
    while True:
        try:
            await task()
        except Exception:
            log.exception("cluster task %s failed; again in %.0f s", task.__name__, RESTART_DELAY)
        await trio.sleep(RESTART_DELAY)


async def _read_bucket(kv: KeyValue) -> list[bytes]:
    """Runs on the asyncio loop: every value in the bucket (none when it is empty)."""
    import asyncio

    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return []

    async def value(key: str) -> bytes | None:
        try:
            return (await kv.get(key)).value
        except nats.js.errors.KeyNotFoundError:
            return None  # deleted between the listing and now

    values = await asyncio.gather(*(value(key) for key in keys))
    return [v for v in values if v]


async def _object_infos(objects: ObjectStore) -> list[Any]:
    try:
        return [info for info in await objects.list(ignore_deletes=True) if not info.deleted]
    except nats.js.errors.NotFoundError:
        return []


async def _object_names(objects: ObjectStore) -> set[str]:
    return {info.name for info in await _object_infos(objects)}


__all__ = ["ClusterMember", "ClusterUnavailable", "NoHubAvailable", "RemoteError", "hub_name"]
