"""Cluster-scoped topics: a topic whose data is a JetStream stream, so instances on different
hubs produce into it and consume from it.

A cluster topic ``T`` is the stream ``si-topic-T`` (subjects ``si.topic.T.<producer>``, replicas
min(3, servers), its content type in the stream's description). Its existence is what makes the
topic cluster-scoped, on every hub alike.

Producing (an instance's output into the stream, ``produce_to_stream``): whole messages are
published in batches of up to ``BATCH_BYTES``, each one JetStream message on the producer's own
subject with ``Nats-Msg-Id: <instance>:<offset>`` and ``Si-Offset``/``Si-End`` headers (where in
the instance's output stream it lies). The instance's output is acknowledged to its runner only
once JetStream acknowledged the publish. A publish that times out (a NATS node lost) is sent
again with the same id, which JetStream's duplicate window drops if the first one was stored.
After a hub crash the route starts from the last message of this producer in the stream
(``get_last_msg`` on its subject) and skips what is there already, so the runner's resend adds
nothing twice.

Consuming (the stream into an instance's input, ``consume_from_stream``): a durable pull
consumer per consuming instance (every consumer gets every message, as with local topics), at
most ``FETCH`` messages unacknowledged. Each batch goes to the runner; once the runner has
acknowledged those input bytes, ``cluster-input.json`` in the instance's directory records the
last stream sequence delivered and the input offset after it, and only then are the messages
acknowledged to JetStream. A restarted hub recreates the consumer from the recorded sequence and
skips the bytes the runner reports it has already consumed, so the instance sees every message
once, in order. A message seen again (a redelivery after a lost ack) is recognised by its stream
sequence and skipped.

Error handling: a route whose NATS calls fail waits ``RETRY_DELAY`` and tries again; it ends
with its instance (output ended, or the instance exited), never the hub.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
import trio
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from si.daemon.cluster.bridge import BridgeClosed
from si.daemon.cluster.member import ClusterUnavailable
from si.daemon.topics import MessageSplitter, is_line_type
from si.fsutil import read_json, write_json_atomic
from si.protocol.frames import Channel

if TYPE_CHECKING:
    from si.daemon.cluster.member import ClusterMember
    from si.daemon.instance import Instance

log = logging.getLogger("si.hub.cluster.topics")

# One JetStream message carries up to this much of a producer's whole messages: per-publish
# round trips are what a stream costs, and 100 B topic messages one by one would be ~100x
# slower. Well under NATS' default 1 MiB payload limit.
BATCH_BYTES = 64 * 1024
# Messages a consuming instance may have unacknowledged: one fetch. Nothing newer is delivered
# while they are pending, so a redelivery can never overtake them.
FETCH = 64
FETCH_WAIT = 1.0
# A publish or a fetch that fails (a NATS node going away) is tried again after this.
RETRY_DELAY = 0.2
PUBLISH_TIMEOUT = 2.0
# How often a consumer checks whether its runner has acknowledged delivered input.
ACK_POLL = 0.002
DUPLICATE_WINDOW = 120.0
INPUT_RECORD = "cluster-input.json"
TRANSIENT = (ClusterUnavailable, nats.errors.Error, BridgeClosed, OSError, TimeoutError)


def stream_name(topic: str) -> str:
    return f"si-topic-{topic}"


def subject_of(topic: str, producer: str) -> str:
    return f"si.topic.{topic}.{producer}"


class ClusterTopics:
    """The cluster topics this hub knows of (cached), and their routes."""

    def __init__(self, member: ClusterMember) -> None:
        self.member = member
        self.known: dict[str, str] = {}  # name -> content type

    async def create(self, name: str, content_type: str) -> None:
        """Create the stream of cluster topic ``name`` (idempotent for the same type).

        Raises:
            ClusterUnavailable.
        """
        js = self.member.jetstream()
        replicas = await self.member.replicas()
        await self.member.call(
            js.add_stream,
            name=stream_name(name),
            subjects=[f"si.topic.{name}.>"],
            description=json.dumps({"contentType": content_type}),
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW,
        )
        self.known[name] = content_type

    async def content_type(self, name: str) -> str | None:
        """The type of cluster topic ``name``; None when it is not a cluster topic.

        Raises:
            ClusterUnavailable.
        """
        if name in self.known:
            return self.known[name]
        js = self.member.jetstream()
        try:
            info = await self.member.call(js.stream_info, stream_name(name))
        except nats.js.errors.NotFoundError:
            return None
        try:
            content_type = str(json.loads(info.config.description or "{}")["contentType"])
        except (ValueError, KeyError):
            return None
        self.known[name] = content_type
        return content_type

    async def produce_to_stream(self, instance: Instance, name: str, content_type: str) -> None:
        """An instance's output into cluster topic ``name`` (see the module's docstring)."""
        member = self.member
        js = member.jetstream()
        subject = subject_of(name, instance.id)
        pipe = instance.output
        await pipe.wait_known()
        reader = pipe.attach(lag_limited=False)
        try:
            stored_end = await self._retrying(self._stored_end, name, subject)
            if stored_end > reader.position:
                pipe.delivered(reader, stored_end - reader.position)
            cursor = reader.position
            batch_start = cursor
            splitter = MessageSplitter(content_type)
            lines = is_line_type(content_type)
            pending = bytearray()

            async def publish(data: bytes, start: int) -> None:
                headers = {
                    "Nats-Msg-Id": f"{instance.id}:{start}",
                    "Si-Offset": str(start),
                    "Si-End": str(start + len(data)),
                }
                while True:
                    try:
                        await member.call(
                            js.publish, subject, data, timeout=PUBLISH_TIMEOUT, headers=headers
                        )
                        return
                    except TRANSIENT as exc:
                        log.debug("topic %s: publish again (%s)", name, exc)
                        await trio.sleep(RETRY_DELAY)

            while (data := await pipe.read(reader, at=cursor)) is not None:
                cursor += len(data)
                pending += splitter.feed(data)
                while pending:
                    piece = bytes(pending[:BATCH_BYTES])
                    if len(pending) > BATCH_BYTES and lines:  # cut at a message's end
                        end = pending.rfind(b"\n", 0, BATCH_BYTES)
                        if end < 0:  # one message longer than a batch: whole all the same
                            end = pending.find(b"\n")
                        piece = bytes(pending[: end + 1])
                    del pending[: len(piece)]
                    await publish(piece, batch_start)
                    batch_start += len(piece)
                    pipe.delivered(reader, batch_start - reader.position)
            last = splitter.finish()
            if last:
                await publish(last, batch_start)
        except trio.ClosedResourceError:
            pass
        finally:
            pipe.detach(reader)

    async def _stored_end(self, name: str, subject: str) -> int:
        """How far into this producer's output the stream already reaches."""
        js = self.member.jetstream()
        try:
            last = await self.member.call(js.get_last_msg, stream_name(name), subject)
        except nats.js.errors.NotFoundError:
            return 0
        return int((last.headers or {}).get("Si-End", 0))

    async def _retrying(self, function: Any, *args: Any) -> Any:
        while True:
            try:
                return await function(*args)
            except TRANSIENT as exc:
                log.debug("cluster topic: again after %s", exc)
                await trio.sleep(RETRY_DELAY)

    async def consume_from_stream(
        self, instance: Instance, name: str, content_type: str, declared: bool
    ) -> None:
        """Cluster topic ``name`` into an instance's input (see the module's docstring)."""
        runner_link = instance.runner_link
        if runner_link is None:
            return
        while not runner_link.link.established and not instance.exited:
            await runner_link.connected.wait()
        record_path = instance.directory / INPUT_RECORD
        try:
            record = read_json(record_path)
            last_seq, input_end = int(record["seq"]), int(record["input"])
        except (OSError, ValueError, KeyError):
            last_seq, input_end = 0, 0
        outbound = runner_link.link.outbound[Channel.INPUT]
        if outbound.next_offset == 0 and not declared:
            header = f"Content-Type: {content_type}\r\n\r\n".encode()
            await runner_link.send(Channel.INPUT, header)
            input_end = max(input_end, len(header))
        # Bytes the runner has consumed already (after a crash of this hub, more than the
        # record says when it died between the runner's acknowledgement and the record).
        consumed = outbound.next_offset
        subscription = await self._retrying(self._subscribe, name, instance.id, last_seq)
        position = input_end
        while not instance.exited:
            try:
                self.member.require()
                messages = await self.member.bridge.call(
                    subscription.fetch, FETCH, timeout=FETCH_WAIT
                )
            except nats.errors.TimeoutError:
                continue
            except TRANSIENT as exc:
                log.debug("topic %s: fetch again (%s)", name, exc)
                await trio.sleep(RETRY_DELAY)
                continue
            for message in messages:
                seq = message.metadata.sequence.stream
                if seq <= last_seq:
                    continue  # seen before: a redelivery after a lost ack
                data = message.data
                start, position = position, position + len(data)
                if position > consumed:
                    await runner_link.send(Channel.INPUT, data[max(0, consumed - start) :])
                last_seq = seq
            if not messages:
                continue
            # Acknowledged only once the runner has these bytes, and recorded before that.
            while outbound.acked < min(position, outbound.next_offset) and not instance.exited:
                await trio.sleep(ACK_POLL)
            if instance.exited:
                return
            write_json_atomic(record_path, {"seq": last_seq, "input": position}, durable=False)
            for message in messages:
                try:
                    await self.member.call(message.ack)
                except TRANSIENT as exc:
                    log.debug("topic %s: ack lost (%s); redelivery is skipped", name, exc)

    async def _subscribe(self, name: str, instance_id: str, last_seq: int) -> Any:
        """A durable pull consumer for this instance that starts after ``last_seq``."""
        js = self.member.jetstream()
        durable = f"si-{instance_id}"
        stream = stream_name(name)
        if last_seq:
            # Start exactly after what was delivered: recreated, as a durable's start cannot
            # be moved.
            try:
                await self.member.call(js.delete_consumer, stream, durable)
            except nats.js.errors.NotFoundError:
                pass
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=FETCH,
            ack_wait=30.0,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if last_seq else DeliverPolicy.ALL,
            opt_start_seq=last_seq + 1 if last_seq else None,
        )
        return await self.member.call(
            js.pull_subscribe, f"si.topic.{name}.>", durable=durable, stream=stream, config=config
        )
