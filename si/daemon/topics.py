"""Topics: named streams between instances and clients (docs/topics.md has the semantics).

A topic is a name, one content type, and a bounded in-hub pipe addressed by offset. Producers
(HTTP uploads, instance outputs) append whole messages, so several producers interleave at
message boundaries instead of one starving the rest; consumers (HTTP readers, instance inputs)
each get every message from where they attached, at the pace of the slowest; with no consumer,
the pipe fills to its bound and then producers wait (an upload is not read further, an instance's
output is not consumed, so its generator pauses).
"""

from __future__ import annotations

import re

import trio

from si.daemon.pipe import OutputPipe

CONTENT_TYPES = (
    "application/x-ndjson",
    "text/x-ndjson",
    "text/plain",
    "application/octet-stream",
)
DEFAULT_CONTENT_TYPE = "application/x-ndjson"
NAME = re.compile(r"[A-Za-z0-9_+\-]+")
# Unconsumed bytes a topic holds before its producers wait: a burst fits, memory stays flat.
TOPIC_CAPACITY = 1 << 20
# Consumed bytes a topic keeps so a consumer that reconnects with its offset loses nothing of
# what its client dropped (what was in flight in sockets and client buffers when it went away).
TOPIC_REPLAY = 4 << 20


def is_line_type(content_type: str) -> bool:
    return content_type != "application/octet-stream"


class MessageSplitter:
    """Cuts a producer's bytes into whole messages (lines; or chunks for binary topics)."""

    def __init__(self, content_type: str) -> None:
        self._lines = is_line_type(content_type)
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        if not self._lines:
            return data
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return data[:cut]

    def finish(self) -> bytes:
        """What is left when the producer ends: a last line gets its newline (STH does this)."""
        rest, self._partial = self._partial, b""
        return rest + b"\n" if rest else b""


class Topic:
    def __init__(self, name: str, content_type: str, capacity: int = TOPIC_CAPACITY) -> None:
        self.name = name
        self.content_type = content_type
        self.capacity = capacity
        self.pipe = OutputPipe(self._consumed, retain=TOPIC_REPLAY)
        self._room = trio.Event()
        self.producers = 0

    def _consumed(self, nbytes: int) -> None:
        self._room.set()
        self._room = trio.Event()

    async def publish(self, messages: bytes) -> None:
        """Append whole messages once there is room; waits while the topic is full."""
        if not messages:
            return
        while self.pipe.tail - self.pipe.head >= self.capacity and not self.pipe.closed:
            await self._room.wait()
        if self.pipe.closed:
            raise trio.ClosedResourceError(f"topic {self.name} was removed")
        self.pipe.append(messages)

    def close(self) -> None:
        self.pipe.close()
        self._room.set()

    def record(self) -> dict[str, str]:
        return {
            "contentType": self.content_type,
            "localProvider": "",
            "topic": self.name,
            "topicName": self.name,
        }


class TopicError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Topics:
    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME.fullmatch(name):
            raise TopicError(400, "Topic id incorrect format")

    def get_or_create(self, name: str, content_type: str) -> Topic:
        """The topic ``name``; created with ``content_type`` if it does not exist.

        Raises:
            TopicError: 400 for a bad name or type, 415 when the topic has another type.
        """
        self.check_name(name)
        if content_type not in CONTENT_TYPES:
            raise TopicError(400, "Unsupported content-type")
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = Topic(name, content_type)
        elif topic.content_type != content_type:
            raise TopicError(415, f"Acceptable Content-Type for {name} is {topic.content_type}")
        return topic

    def remove(self, name: str) -> Topic:
        self.check_name(name)
        topic = self.topics.pop(name, None)
        if topic is None:
            raise TopicError(404, f"Topic {name} not found")
        topic.close()
        return topic
