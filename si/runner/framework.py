"""The input as a scramjet-framework ``Stream``, for sequences written for STH's Python runner.

STH hands Python sequences a ``scramjet.streams.Stream``; sequences written for it call
``.map`` and friends on their input. The framework moves every chunk through a task, futures
and queues (and formats debug strings for it even with debugging off): about 15 µs a chunk,
a ceiling of some 60,000 lines/s, most of it spent on sequences that only iterate the input.

So the Stream given to the sequence is a subclass that reads straight from the runner's
:class:`~si.runner.streams.InputStream` while nothing is attached to it (no transform, the
framework's own machinery not yet started); from the first ``.map``, ``.pipe`` or the like on,
it is the framework's own Stream. Either way the chunks and their order are the same.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from si.runner.streams import InputStream


def scramjet_stream(source: InputStream) -> Any:
    """``source`` as a scramjet Stream when the framework can be imported, else ``source``."""
    if importlib.util.find_spec("scramjet") is None:
        return source
    try:
        from scramjet.streams import Stream  # type: ignore[import-untyped]
    except ImportError:
        return source
    stream = _direct_class(Stream).read_from(source)
    stream._si_source = source
    return stream


def passthrough_source(result: Any, source: InputStream) -> InputStream | None:
    """``source`` if ``result`` is the input handed to the sequence, returned untouched.

    Then nothing of the input was read, and the runner may move its bytes to the output in
    blocks (:meth:`InputStream.output_blocks`) instead of item by item.
    """
    if result is source or _direct_source(result) is source:
        return source if source.untouched else None
    return None


def _direct_source(stream: Any) -> InputStream | None:
    """The InputStream a Stream of ours may read directly: it is the input itself, nothing
    is attached to it and the framework has not started moving chunks."""
    source = getattr(stream, "_si_source", None)
    if not isinstance(source, InputStream):
        return None
    try:
        pyfca = stream._pyfca
        attached = (
            stream._upstream is not None
            or stream._consumed
            or stream._ready_to_start.done()
            or pyfca._transform_chain
            or pyfca.read_write_balance != 0
        )
    except AttributeError:
        return None  # a framework version we do not know: no shortcut
    return None if attached else source


@functools.cache
def _direct_class(base: Any) -> Any:
    class DirectStream(base):  # type: ignore[misc]
        """A framework Stream that iterates and reads its source directly while it can."""

        _si_source: InputStream | None = None

        def __aiter__(self) -> Any:
            source = _direct_source(self)
            return super().__aiter__() if source is None else source.__aiter__()

        async def read(self) -> Any:
            source = _direct_source(self)
            return await (super().read() if source is None else source.read())

    DirectStream.__name__ = DirectStream.__qualname__ = base.__name__
    return DirectStream
