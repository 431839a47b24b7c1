"""Who may use the console's loopback port (``si hub console``): sans-IO.

The port forwards to the hub's Unix socket, which trusts whoever reaches it, so the port must
not: anyone on the machine can connect to 127.0.0.1. ``si hub console`` prints a link carrying
a one-time token. The first request that brings it is answered with a redirect that sets a
session cookie (HttpOnly, SameSite=Strict) and drops the token from the address bar; the token
is then spent, so a link copied from a terminal or a shell history opens nothing later. Every
other request needs the cookie.

Two more checks keep other web pages out: the ``Host`` must be the loopback address the port
was opened on (a DNS-rebinding page names its own host), and a request that changes something
must come from the console's own origin (SameSite already keeps the cookie from other sites;
this also covers browsers that do not honour it).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit

COOKIE = "si_console"
TOKEN_PARAMETER = "token"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Headers that describe the browser's hop only: the hub gets its own request, one per
# connection (the proxy closes each after its response).
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "cookie", "authorization"}
)


@dataclasses.dataclass(frozen=True)
class Forward:
    """Send the request on, with these headers."""

    headers: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Answer:
    """Answer the browser here; the hub never sees the request."""

    status: int
    message: str
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class Gate:
    """Args:
    hosts: the ``Host`` values the port answers to (``127.0.0.1:PORT``, ``localhost:PORT``).
    upstream_token: the hub's bearer token, when the hub is reached over TCP.
    """

    def __init__(self, hosts: set[str], upstream_token: str | None = None) -> None:
        self.token = secrets.token_urlsafe(24)
        self.spent = False
        self.session = secrets.token_urlsafe(32)
        self.hosts = {host.lower() for host in hosts}
        self.upstream_token = upstream_token

    def judge(self, method: str, target: str, headers: list[tuple[str, str]]) -> Forward | Answer:
        """What to do with one request of the browser's."""
        named = {name.lower(): value for name, value in headers}
        if named.get("host", "").lower() not in self.hosts:
            return Answer(421, "this console answers on its own loopback address only")
        parts = urlsplit(target)
        query = parse_qsl(parts.query, keep_blank_values=True)
        offered = [value for name, value in query if name == TOKEN_PARAMETER]
        if offered:
            if self.spent or not hmac.compare_digest(offered[0].encode(), self.token.encode()):
                return Answer(
                    403,
                    "this console link was already used or is wrong; "
                    "run `si hub console` again for a new one",
                )
            self.spent = True
            rest = urlencode([(name, value) for name, value in query if name != TOKEN_PARAMETER])
            location = parts.path + (f"?{rest}" if rest else "")
            cookie = f"{COOKIE}={self.session}; HttpOnly; SameSite=Strict; Path=/"
            return Answer(303, "signed in", [("location", location), ("set-cookie", cookie)])
        if not self._has_session(named.get("cookie", "")):
            return Answer(
                401,
                "not signed in to this console: open the link `si hub console` printed",
            )
        if method not in READ_METHODS and not self._same_origin(named):
            return Answer(403, "a change to the hub must come from the console's own page")
        forwarded = [(name, value) for name, value in headers if name.lower() not in HOP_HEADERS]
        forwarded.append(("connection", "close"))
        if self.upstream_token:
            forwarded.append(("authorization", f"Bearer {self.upstream_token}"))
        return Forward(forwarded)

    def _has_session(self, cookie_header: str) -> bool:
        for item in cookie_header.split(";"):
            name, _, value = item.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.session.encode()):
                return True
        return False

    def _same_origin(self, named: dict[str, str]) -> bool:
        origin = named.get("origin")
        if origin is None:
            return True  # not a browser's cross-site request: those always say where from
        return urlsplit(origin).netloc.lower() in self.hosts


def parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """Method, target and headers of a request head (without its blank line).

    Raises:
        ValueError: not an HTTP/1.x request head.
    """
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x request")
    method, target, _ = request_line
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"a malformed header line: {line[:40]!r}")
        headers.append((name, value.strip()))
    return method, target, headers


def build_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
