"""Who may do what over TCP (issue 16): the token check and the limits, per request.

A request on the hub's Unix socket is let in as it is (the socket's mode, 0600, is its guard).
A request over TCP needs a bearer token the home issued (``si.daemon.tokens``), unless the hub
runs with ``--insecure-no-auth`` (loopback only); a read-only token may only read (GET, HEAD);
each token, or each peer without tokens, is held to a request rate and a number in flight
(``si.daemon.ratelimit``). Sans-IO: ``admit`` judges a request's method and headers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from si.daemon.ratelimit import Limiter
from si.daemon.tokens import Denied, Scope, TokenStore

# Methods that change nothing: all a read-only token may use. OPTIONS (a CORS preflight, which
# never carries the token) answers with headers only.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclasses.dataclass(frozen=True)
class Admitted:
    who: str  # the token's name (or id), or the peer's address without tokens
    key: str  # what the limits count by


@dataclasses.dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class Access:
    def __init__(
        self,
        tokens: TokenStore | None,
        limiter: Limiter,
    ) -> None:
        """``tokens``: None when TCP runs without them (``--insecure-no-auth``)."""
        self.tokens = tokens
        self.limiter = limiter

    @classmethod
    def of(
        cls,
        tokens: TokenStore | None,
        clock: Callable[[], float],
        rate: float,
        concurrency: int,
    ) -> Access:
        return cls(tokens, Limiter(clock, rate=rate, burst=2 * rate, concurrent=concurrency))

    def admit(self, method: str, authorization: str, peer: str) -> Admitted | Refusal:
        """Judge one remote request; an ``Admitted`` one is ended with :meth:`done`."""
        if self.tokens is None:
            admitted = Admitted(who=peer or "tcp", key=f"peer:{peer}")
        else:
            try:
                judged = self.tokens.check(authorization)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # A damaged tokens.json refuses every token, and says so, rather than fail open.
                return Refusal(503, f"the hub cannot read its tokens ({exc}); see its log")
            if isinstance(judged, Denied):
                headers = (
                    [("www-authenticate", 'Bearer realm="si"')] if judged.status == 401 else []
                )
                return Refusal(judged.status, judged.message, headers)
            entry = judged.entry
            if entry.scope is Scope.READ and method not in READ_METHODS:
                return Refusal(403, f"the token {entry.name or entry.id} may only read")
            admitted = Admitted(who=entry.name or entry.id, key=f"token:{entry.id}")
        refused = self.limiter.begin(admitted.key)
        if refused is not None:
            return Refusal(429, refused.message, [("retry-after", str(refused.retry_after))])
        return admitted

    def done(self, admitted: Admitted) -> None:
        self.limiter.end(admitted.key)
