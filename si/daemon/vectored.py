"""Vectored writes: several buffers to a trio stream in one system call, without joining them.

The hub's hot paths send a small header before each large payload (a link frame header, an
HTTP chunk size line). Joining them copies every payload byte once more; ``sendmsg`` takes
the pieces as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

# Pieces per sendmsg call: the system's limit on an I/O vector.
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


async def send_all_parts(stream: trio.abc.Stream, parts: Sequence[bytes | memoryview]) -> None:
    """Send ``parts`` in order, as ``stream.send_all(b"".join(parts))`` would.

    Raises:
        trio.BrokenResourceError: the peer is gone (as ``send_all`` raises it).
        trio.ClosedResourceError: the stream was closed.
    """
    if not isinstance(stream, trio.SocketStream) or len(parts) == 1:
        await stream.send_all(parts[0] if len(parts) == 1 else b"".join(parts))
        return
    views = [memoryview(part) for part in parts if len(part)]
    index = 0
    try:
        while index < len(views):
            sent = await stream.socket.sendmsg(views[index : index + IOV_MAX])
            while sent:
                size = len(views[index])
                if sent < size:
                    views[index] = views[index][sent:]
                    break
                sent -= size
                index += 1
    except OSError as exc:
        if stream.socket.fileno() < 0:
            raise trio.ClosedResourceError("the stream was closed") from exc
        raise trio.BrokenResourceError(exc) from exc
