"""The web console's files, served by the hub at ``/`` and ``/console/`` (issue 17).

They ship inside the package (``si/console/static``); nothing is built at install time and
nothing is fetched at run time, which the Content-Security-Policy makes the browser enforce:
scripts, styles, images and connections are allowed from the hub's own origin only.

Sans-IO apart from reading the files: :meth:`ConsoleFiles.lookup` turns a request path into
the bytes and headers to answer with, or ``None``. Files are read once and kept (they are a few
tens of KiB); an ``ETag`` of their digest lets a browser revalidate without reloading them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent.parent / "console" / "static"

# Only these files exist; any other path under /console/ is a 404, so no request can name a
# file outside the directory (no path is ever joined from what the client sent).
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

SECURITY_HEADERS = [
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    # Revalidated on every load (the ETag makes that cheap): an upgraded hub's page is never
    # mixed with an old script from the cache.
    ("cache-control", "no-cache"),
]


@dataclasses.dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


class ConsoleFiles:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.directory = directory
        self._cache: dict[str, StaticFile] = {}

    @staticmethod
    def name_of(path: str) -> str | None:
        """The console file a request path names: ``/``, ``/console`` and ``/console/`` are the
        page itself; ``None`` for a path that is not the console's."""
        if path in ("/", "/console", "/console/", "/index.html"):
            return "index.html"
        if path.startswith("/console/"):
            name = path[len("/console/") :]
            return name if name in CONTENT_TYPES else ""
        return None

    def get(self, name: str) -> StaticFile | None:
        """The file's bytes (read once); None if it is not one of the console's."""
        if name not in CONTENT_TYPES:
            return None
        cached = self._cache.get(name)
        if cached is None:
            body = (self.directory / name).read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:32]
            cached = StaticFile(body, CONTENT_TYPES[name], f'"{digest}"')
            self._cache[name] = cached
        return cached
