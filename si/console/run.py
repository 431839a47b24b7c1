"""``si hub console``'s process: the proxy in a trio loop until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import ssl
import sys
from urllib.parse import urlsplit

import trio

from si.console.gate import TOKEN_PARAMETER, Gate
from si.console.proxy import ConsoleProxy, OpenUpstream, serve_console, tcp_upstream, unix_upstream

LOOPBACK = "127.0.0.1"


def upstream_of(address: str, ca: str | None) -> OpenUpstream:
    """How to reach the hub at ``address``: a Unix socket path or an http(s) URL."""
    if address.startswith("/"):
        return unix_upstream(address)
    url = address if "://" in address else f"http://{address}"
    parts = urlsplit(url)
    tls = ssl.create_default_context(cafile=ca) if parts.scheme == "https" else None
    port = parts.port or (443 if tls is not None else 80)
    return tcp_upstream(parts.hostname or LOOPBACK, port, tls)


def run_console(
    address: str, port: int, *, token: str | None, ca: str | None, open_browser: bool
) -> None:
    async def main() -> None:
        upstream = upstream_of(address, ca)
        async with trio.open_nursery() as nursery:
            # The gate needs the bound port for its Host check: bind first, then arm it.
            gate = Gate(set(), upstream_token=token)
            bound = await nursery.start(serve_console, ConsoleProxy(gate, upstream), LOOPBACK, port)
            gate.hosts = {f"{LOOPBACK}:{bound}", f"localhost:{bound}"}
            url = f"http://{LOOPBACK}:{bound}/console/?{TOKEN_PARAMETER}={gate.token}"
            print(url, flush=True)
            print("The link works once; Ctrl-C stops the console.", file=sys.stderr, flush=True)
            if open_browser:
                import webbrowser

                await trio.to_thread.run_sync(webbrowser.open, url)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    trio.run(main)
