"""Topics: named streams between instances and clients (docs/topics.md has the semantics).

A topic is a name, one content type, and a bounded in-hub pipe addressed by offset. Producers
(HTTP uploads, instance outputs) append whole messages, so several producers interleave at
message boundaries instead of one starving the rest; consumers (HTTP readers, instance inputs)
each get every message from where they attached, at the pace of the slowest; with no consumer,
the pipe fills to its bound and then producers wait (an upload is not read further, an instance's
output is not consumed, so its generator pauses).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from si.daemon.pipe import OutputPipe
from si.daemon.state_files import StateFiles
from si.daemon.wakeup import Changes, WorkFlag
from si.fsutil import read_json

CONTENT_TYPES = (
    "application/x-ndjson",
    "text/x-ndjson",
    "text/plain",
    "application/octet-stream",
)
DEFAULT_CONTENT_TYPE = "application/x-ndjson"
NAME = re.compile(r"[A-Za-z0-9_+\-]+")

log = logging.getLogger("si.hub.topics")
# Unconsumed bytes a topic holds before its producers wait: a burst fits, memory stays flat.
TOPIC_CAPACITY = 1 << 20
# Consumed bytes a topic keeps so a consumer that reconnects with its offset loses nothing of
# what its client dropped (what was in flight in sockets and client buffers when it went away).
TOPIC_REPLAY = 4 << 20
# Heads are recorded at most this often: one small file write per interval at full speed.
COMMIT_INTERVAL = 0.005


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

    @property
    def pending(self) -> int:
        """Bytes held back: the start of a message that has not ended yet."""
        return len(self._partial)

    def finish(self) -> bytes:
        """What is left when the producer ends: a last line gets its newline (STH does this)."""
        rest, self._partial = self._partial, b""
        return rest + b"\n" if rest else b""


class Topic:
    """Args:
    base: the offset the topic starts at (its committed head, after a hub restart).
    on_consumed: told whenever consumers took more (the registry persists the head).
    """

    def __init__(
        self,
        name: str,
        content_type: str,
        capacity: int = TOPIC_CAPACITY,
        *,
        base: int = 0,
        on_consumed: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.content_type = content_type
        self.capacity = capacity
        self.pipe = OutputPipe(self._consumed, base, retain=TOPIC_REPLAY)
        self._room = Changes()
        self._notify = on_consumed
        self.producers = 0
        # The head as last recorded on disk; instance producers are acknowledged up to it.
        self.committed = base
        self._committed_changed = Changes()
        # Instance producers: id -> "how far into my output is in the topic up to this head".
        self.routes: dict[str, Callable[[int], int]] = {}
        # After a restart: id -> output offset already in the topic (the route skips it).
        self.restored: dict[str, int] = {}

    def _consumed(self, nbytes: int) -> None:
        self._room.notify()
        if self._notify is not None:
            self._notify()

    def commit(self) -> None:
        """The head is recorded: producers may let their sources go up to it."""
        if self.pipe.head != self.committed:
            self.committed = self.pipe.head
            self._committed_changed.notify()

    async def wait_committed(self, offset: int) -> None:
        while self.committed < offset and not self.pipe.closed:
            await self._committed_changed.wait()

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
        self._room.notify()
        self._committed_changed.notify()

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
    """The hub's topics, with their heads recorded in ``<home>/topics.json``.

    The head (every byte before it was taken by the consumers) is written to disk before the
    instances that produced those bytes are acknowledged; after a hub crash a topic starts at
    its recorded head and the producers' runners resend everything after it, so a consumer that
    resumes at its offset misses nothing and sees nothing twice (for a topic with one producer;
    several producers' messages may be interleaved differently the second time).
    """

    def __init__(self, path: Path | None = None, state_files: StateFiles | None = None) -> None:
        self.path = path
        self.state_files = state_files or StateFiles()
        self.topics: dict[str, Topic] = {}
        self._changed = WorkFlag()
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        """Restore the topics recorded in ``path``, keeping every entry that parses.

        A damaged file never stops the hub nor silently loses what is readable: each bad entry
        is named in one warning, and a file that is not JSON at all is moved aside (the next
        save would otherwise overwrite the only copy someone may want to repair).
        """
        try:
            stored = read_json(path).get("topics", {})
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            self._set_aside(path, f"not a JSON object ({error})")
            return
        if not isinstance(stored, dict):
            self._set_aside(path, '"topics" is not an object')
            return
        skipped = []
        for name, entry in stored.items():
            try:
                topic = self._restore(name, entry)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                skipped.append(f"{name!r} ({type(error).__name__}: {error})")
                continue
            self.topics[name] = topic
        if skipped:
            log.warning(
                "%s: kept %d topics, skipped %d that do not parse: %s",
                path,
                len(self.topics),
                len(skipped),
                ", ".join(skipped),
            )

    def _restore(self, name: str, entry: Any) -> Topic:
        """One recorded topic; raises for anything that is not a well-formed entry."""
        topic_type, head = str(entry["contentType"]), int(entry["head"])
        if not NAME.fullmatch(name):
            raise ValueError("bad topic name")
        if topic_type not in CONTENT_TYPES:
            raise ValueError(f"unsupported content type {topic_type}")
        if head < 0:
            raise ValueError(f"negative head {head}")
        restored = {str(k): int(v) for k, v in (entry.get("producers") or {}).items()}
        topic = self._new(name, topic_type, head)
        topic.restored = restored
        return topic

    @staticmethod
    def _set_aside(path: Path, reason: str) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            path.rename(aside)
        except OSError as error:
            log.warning(
                "%s is %s; starting with no topics (cannot move it: %s)", path, reason, error
            )
            return
        log.warning(
            "%s is %s; starting with no topics, the file is kept as %s", path, reason, aside
        )

    def _new(self, name: str, content_type: str, base: int = 0) -> Topic:
        return Topic(name, content_type, base=base, on_consumed=self._changed.set)

    def save(self) -> bool:
        """Record every topic's head; False when it could not be written (a full disk): the
        body then waits in the hub's StateFiles for a retry."""
        if self.path is None:
            return True
        body = {}
        for name, topic in self.topics.items():
            head = topic.pipe.head
            producers = {iid: committed(head) for iid, committed in topic.routes.items()}
            body[name] = {
                "contentType": topic.content_type,
                "head": head,
                "producers": {**topic.restored, **producers},
            }
        return self.state_files.write(self.path, {"topics": body}, durable=False)

    async def keep_committed(self) -> None:
        """Record heads as they move, then let producers go (runs for the hub's lifetime)."""
        while True:
            await self._changed.take()
            if not self.save():
                # Heads not on disk yet: producers are held (their runners keep the bytes for
                # replay) rather than acknowledged past what a restarted hub would know.
                self._changed.set()
                await trio.sleep(self.state_files.retry_interval)
                continue
            for topic in list(self.topics.values()):
                topic.commit()
            await trio.sleep(COMMIT_INTERVAL)

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
            topic = self.topics[name] = self._new(name, content_type)
            self.save()
        elif topic.content_type != content_type:
            raise TopicError(415, f"Acceptable Content-Type for {name} is {topic.content_type}")
        return topic

    def remove(self, name: str) -> Topic:
        self.check_name(name)
        topic = self.topics.pop(name, None)
        if topic is None:
            raise TopicError(404, f"Topic {name} not found")
        topic.close()
        self.save()
        return topic
