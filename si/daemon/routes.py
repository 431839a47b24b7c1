"""Topic routes and the event bus: what flows between instances through the hub.

An instance's output goes into the topic it provides and a topic into the instance that
requires it, each at the pace of its slower end; an event one instance emits reaches every other
live one. Both run as tasks in the hub's nursery, one per route.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

from si.daemon.topics import DEFAULT_CONTENT_TYPE, MessageSplitter, Topic, TopicError, Topics
from si.daemon.wakeup import WorkFlag
from si.protocol import messages
from si.protocol.frames import Channel

if TYPE_CHECKING:
    from si.daemon.cluster.topics import ClusterTopics
    from si.daemon.instance import Instance
    from si.daemon.record import Route

log = logging.getLogger("si.hub.routes")
# How long a route waits to learn from the cluster whether its topic is cluster-wide.
SCOPE_TIMEOUT = 2.0


class TopicRoutes:
    """Wires instances to the hub's topics, once per direction per instance."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self._nursery: trio.Nursery | None = None
        # The hub's cluster topics (si.daemon.cluster.topics), when it is in a cluster.
        self.cluster: ClusterTopics | None = None

    def begin(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def route(self, instance: Instance) -> None:
        """Wire an instance's output and input to its topics (once each).

        An instance that already ended still hands its remaining output to its topic.
        """
        assert self._nursery is not None, "the hub is not running"
        state = instance.state
        for direction, route in (("provides", state.provides), ("requires", state.requires)):
            if route is None or direction in instance.routed:
                continue
            if direction == "requires" and instance.exited:
                continue
            if self.cluster is not None and route.topic not in self.topics.topics:
                # Maybe a cluster topic: NATS is asked in the route's own task.
                instance.routed.add(direction)
                self._nursery.start_soon(self._route_scoped, instance, direction, route)
                continue
            self._route_local(instance, direction, route)

    def _route_local(self, instance: Instance, direction: str, route: Route) -> None:
        assert self._nursery is not None
        try:
            existing = self.topics.topics.get(route.topic)
            topic = self.topics.get_or_create(
                route.topic,
                route.content_type or (existing.content_type if existing else DEFAULT_CONTENT_TYPE),
            )
        except TopicError as exc:
            log.warning("instance %s: cannot route to topic %s: %s", instance.id, route.topic, exc)
            return
        instance.routed.add(direction)
        task = produce_from if direction == "provides" else consume_into
        self._nursery.start_soon(task, instance, topic)

    async def _route_scoped(self, instance: Instance, direction: str, route: Route) -> None:
        """Route to the cluster topic ``route.topic`` if there is one, else to the local topic.

        A cluster that does not answer within ``SCOPE_TIMEOUT`` leaves the topic local (and
        says so): a hub whose NATS is away still moves its local topics.
        """
        cluster = self.cluster
        assert cluster is not None
        content_type = None
        with trio.move_on_after(SCOPE_TIMEOUT) as waited:
            while True:
                try:
                    content_type = await cluster.content_type(route.topic)
                    break
                except cluster.member.unavailable:
                    await trio.sleep(0.2)
        if waited.cancelled_caught:
            log.warning(
                "instance %s: the cluster did not say whether topic %s is cluster-wide; "
                "routed on this hub",
                instance.id,
                route.topic,
            )
        if content_type is None:
            instance.routed.discard(direction)
            self._route_local(instance, direction, route)
            return
        if route.content_type and route.content_type != content_type:
            log.warning(
                "instance %s: cluster topic %s is %s, not %s; not routed",
                instance.id,
                route.topic,
                content_type,
                route.content_type,
            )
            return
        if direction == "provides":
            await cluster.produce_to_stream(instance, route.topic, content_type)
        else:
            declared = bool(route.content_type)
            await cluster.consume_from_stream(instance, route.topic, content_type, declared)

    def route_ended(self, instance: Instance) -> None:
        """An instance that ended while no hub watched still hands its saved output to the
        topic it provides: the route recorded at its start, or one it declared afterwards (on
        its returned stream) and recorded in declared.json while no hub could hear it."""
        declared = instance.files.read_declared()
        if "provides" in declared:
            instance.declare_topics(declared["provides"])  # routes it when the route is new
        self.route(instance)


async def produce_from(instance: Instance, topic: Topic) -> None:
    """An instance's output into a topic, message by message, at the topic's pace.

    The instance's output is acknowledged only once the topic's consumers took the messages
    and the topic's head is recorded: after a hub crash its runner resends the rest.
    """
    pipe = instance.output
    await pipe.wait_known()
    # Internal: it reads ahead and acknowledges at the topic's pace, so it is never cut off.
    reader = pipe.attach(lag_limited=False)
    cursor = reader.position  # read ahead of what is acknowledged
    splitter = MessageSplitter(topic.content_type)
    # (topic offset, output offset): output to acknowledge once the topic committed it.
    # Bounded: the output pipe holds at most the runner's window of unacknowledged bytes.
    pending: deque[tuple[int, int]] = deque()
    appended = WorkFlag()
    topic.producers += 1
    skip = topic.restored.pop(instance.id, 0)
    if skip > cursor:
        # Re-adopted after a crash: this much of the output is in the topic already.
        pipe.delivered(reader, skip - reader.position)
        cursor = skip

    def committed_output(head: int) -> int:
        """How far into the output is in the topic before ``head`` (for the topic file)."""
        value = reader.position
        for topic_end, output_end in pending:
            if topic_end > head:
                break
            value = output_end
        return value

    topic.routes[instance.id] = committed_output

    async def release() -> None:
        while True:
            while not pending:
                await appended.take()
            topic_end, output_end = pending[0]
            await topic.wait_committed(topic_end)
            if topic.pipe.closed:
                return
            pending.popleft()
            if output_end > reader.position:
                pipe.delivered(reader, output_end - reader.position)

    def note(output_end: int) -> None:
        pending.append((topic.pipe.tail, output_end))
        appended.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(release)
            while (data := await pipe.read(reader, at=cursor)) is not None:
                cursor += len(data)
                batch = splitter.feed(data)
                if batch:
                    await topic.publish(batch)
                    note(cursor - splitter.pending)
            last = splitter.finish()
            if last:
                await topic.publish(last)
            note(cursor)
            await topic.wait_committed(topic.pipe.tail)
            with trio.move_on_after(1):  # let release() hand over the last range
                while pending and not topic.pipe.closed:
                    await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    except trio.ClosedResourceError:
        pass  # the topic was removed
    finally:
        topic.routes.pop(instance.id, None)
        pipe.detach(reader)
        topic.producers -= 1


async def consume_into(instance: Instance, topic: Topic) -> None:
    """A topic into an instance's input, within the input's window."""
    runner_link = instance.runner_link
    if runner_link is None:
        return
    while not runner_link.link.established and not instance.exited:
        await runner_link.connected.wait()
    reader = topic.pipe.attach()
    try:
        requires = instance.state.requires
        declared = bool(requires and requires.content_type)
        if runner_link.link.outbound[Channel.INPUT].next_offset == 0 and not declared:
            # A sequence that declared its input topic knows its type; others are told.
            header = f"Content-Type: {topic.content_type}\r\n\r\n".encode()
            await runner_link.send(Channel.INPUT, header)
        with trio.CancelScope() as scope:
            instance.input_routes.append(scope)
            while not instance.exited and (data := await topic.pipe.read(reader)) is not None:
                await runner_link.send(Channel.INPUT, data)
                topic.pipe.delivered(reader, len(data))
    finally:
        topic.pipe.detach(reader)


def broadcast_event(source: Instance, others: Iterable[Instance], name: str, message: Any) -> None:
    """STH's in-hub event bus: an instance's event goes to every other live instance."""
    from si.protocol.link import WindowFull

    event = messages.SequenceEvent(name, message, source.id)
    for other in others:
        if other is not source and other.live and not other.exited:
            try:
                other.send_control(event)
            except WindowFull:
                # Not reading its control channel: this one misses the event, the rest do not
                # wait for it.
                log.debug("instance %s: event %s not delivered (window full)", other.id, name)
