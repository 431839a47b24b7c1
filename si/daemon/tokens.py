"""Bearer tokens for the hub's TCP API (issue 16).

A token is shown once, when it is made; the home keeps only its SHA-256 (``tokens.json``, mode
0600), with a name, a scope and whether it was revoked. A request's token is checked against
every stored hash with ``hmac.compare_digest`` (constant time per entry, and every entry is
compared), so neither timing nor an early exit tells how close a guess was.

Sans-IO apart from the file: ``TokenStore`` reads and writes ``tokens.json``; ``check``
answers a request's ``Authorization`` header. The CLI (``si hub token ...``) and the hub share
it, and the hub reloads the file when it changes, so a token made or revoked by the CLI counts
at the next request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from si.fsutil import read_json, write_json_atomic

TOKEN_PREFIX = "sit_"
FILE_NAME = "tokens.json"
# Where the first `serve --port` leaves the admin token it makes (mode 0600).
ADMIN_TOKEN_FILE = "admin.token"


class Scope(StrEnum):
    ADMIN = "admin"
    READ = "read"  # lists, reads streams and metrics; never changes anything


@dataclasses.dataclass(frozen=True)
class TokenEntry:
    id: str
    name: str
    scope: Scope
    digest: str  # SHA-256 of the token, hex
    created: float
    revoked: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": str(self.scope),
            "sha256": self.digest,
            "created": self.created,
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TokenEntry:
        revoked = body.get("revoked")
        return cls(
            id=str(body["id"]),
            name=str(body.get("name") or ""),
            scope=Scope(body.get("scope", Scope.READ)),
            digest=str(body["sha256"]),
            created=float(body.get("created") or 0),
            revoked=None if revoked is None else float(revoked),
        )

    def public(self) -> dict[str, Any]:
        """What ``si hub token ls`` shows: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": str(self.scope),
            "created": self.created,
            "revoked": self.revoked,
        }


class TokenError(ValueError):
    """A token command that cannot be done (the message says why)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Denied:
    """Why a request's token does not let it in: ``status`` 401 or 403, and a message."""

    status: int
    message: str


@dataclasses.dataclass(frozen=True)
class Granted:
    entry: TokenEntry


class TokenStore:
    """The tokens of one hub home."""

    def __init__(self, home: Path) -> None:
        self.path = home / FILE_NAME
        self.admin_file = home / ADMIN_TOKEN_FILE
        self._entries: list[TokenEntry] = []
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read

    # -- the file --------------------------------------------------------------------------

    def entries(self) -> list[TokenEntry]:
        """The stored tokens, re-read when the file changed (by the CLI, say)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._entries, self._seen = [], None
            return self._entries
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            body = read_json(self.path)
            self._entries = [TokenEntry.from_json(item) for item in body.get("tokens", [])]
            self._seen = seen
        return self._entries

    def _save(self, entries: list[TokenEntry]) -> None:
        write_json_atomic(self.path, {"tokens": [entry.to_json() for entry in entries]})
        self._entries = list(entries)
        self._seen = None

    def create(self, name: str = "", scope: Scope = Scope.ADMIN) -> tuple[str, TokenEntry]:
        """A new token (returned once, in clear) and its entry."""
        entries = self.entries()
        if name and any(entry.name == name and entry.revoked is None for entry in entries):
            raise TokenError(f"a token named {name!r} exists; revoke it first or pick another")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entry = TokenEntry(
            id=secrets.token_hex(4),
            name=name,
            scope=scope,
            digest=digest(token),
            created=time.time(),
        )
        self._save([*entries, entry])
        return token, entry

    def revoke(self, which: str) -> TokenEntry:
        """Revoke the token with id or name ``which``."""
        entries = self.entries()
        matches = [e for e in entries if which in (e.id, e.name) and e.revoked is None]
        if not matches:
            raise TokenError(f"no live token with id or name {which!r}")
        if len(matches) > 1:
            raise TokenError(f"{which!r} names {len(matches)} tokens; revoke by id")
        (target,) = matches
        revoked = dataclasses.replace(target, revoked=time.time())
        self._save([revoked if entry is target else entry for entry in entries])
        return revoked

    def ensure_admin(self) -> Path | None:
        """With no token at all, make an admin token and leave it in ``admin.token`` (0600);
        that file's path, or None when tokens existed already."""
        if self.entries():
            return None
        token, _ = self.create("admin", Scope.ADMIN)
        self.admin_file.write_text(token + "\n")
        self.admin_file.chmod(0o600)
        return self.admin_file

    # -- a request ---------------------------------------------------------------------------

    def check(self, authorization: str) -> Granted | Denied:
        """Judge a request's ``Authorization`` header."""
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Denied(401, "a token is required: send 'Authorization: Bearer <token>'")
        wanted = digest(presented.strip())
        found: TokenEntry | None = None
        for entry in self.entries():
            if hmac.compare_digest(entry.digest, wanted):
                found = entry  # no break: every entry is compared
        if found is None:
            return Denied(401, "the token is not one this hub issued")
        if found.revoked is not None:
            return Denied(403, f"the token {found.name or found.id} was revoked")
        return Granted(found)
