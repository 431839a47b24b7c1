"""The settings of one hub, as ``si hub serve`` parses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from si.daemon.ratelimit import DEFAULT_CONCURRENT, DEFAULT_MAX_CONNECTIONS, DEFAULT_RATE

# How long a finished instance's output, logs and status stay readable (STH's default 180 s).
DEFAULT_RETENTION_SECONDS = 180.0
# A reader of an instance's output more than this far behind the fastest reader for longer than
# DEFAULT_READER_LAG_SECONDS is cut off, so it cannot hold the others back. Half the runner's
# 1 MiB window: the fastest reader runs on for the other half before it has to wait.
DEFAULT_READER_LAG_BYTES = 512 * 1024
DEFAULT_READER_LAG_SECONDS = 2.0
# The largest package upload (compressed bytes) the hub reads; a larger one is refused with 413
# as soon as its size is known. Half the unpacked limit (si.package.unpack): room for any real
# sequence with its dependencies, yet a runaway upload cannot take a disk's last gigabytes.
DEFAULT_MAX_PACKAGE_SIZE = 512 << 20
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912: bytes, or binary K/M/G units (an ``i`` and ``B`` may follow).

    Raises:
        ValueError: not a positive size.
    """
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = cleaned[-1:] if cleaned[-1:] in SIZE_UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)].strip()
    try:
        value = int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use bytes or K, M, G: 512M)") from None
    if value <= 0:
        raise ValueError(f"a size must be positive: {text!r}")
    return value


# How long the HTTP server waits for a client (0 in HubOptions turns one off). A request head is
# a few hundred bytes: 10 s is ample on any link that works. A body of known length that stops
# for 30 s has stalled. 60 s keeps a connection warm between a CLI's or a script's requests.
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_BODY_IDLE_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 60.0


@dataclass(frozen=True)
class HubOptions:
    """What ``si hub serve`` was asked for.

    Args:
        home: the hub's home directory; ``None`` means platformdirs' per-user directories.
        port: also serve the API on TCP at this port (``None``: Unix socket only).
        host: the TCP address to bind when ``port`` is given.
        kill_on_exit: kill every instance when the hub stops (STH's ``-K``).
        retention: seconds a finished instance stays readable before it is removed.
        reader_lag_bytes: how far (bytes) a reader of an instance's output may be behind the
            fastest reader at any time.
        reader_lag_seconds: how long a reader may stay further behind than that before it is
            cut off.
        max_package_size: the largest package upload accepted, in bytes (compressed).
        head_timeout: seconds a client has to send a request head (408 after it).
        body_idle_timeout: longest pause in a request body of declared length, or one read
            whole (408 after it); chunked streams into a sequence are never timed out.
        keep_alive_timeout: seconds an idle connection stays open between requests.
        insecure_no_auth: serve TCP without tokens (refused unless ``host`` is a loopback).
        tls_cert, tls_key: serve TCP over TLS with this certificate chain and key (PEM).
        token_rate: requests a second one token (or, without tokens, one peer) may make.
        token_concurrency: requests one token may have in flight at once.
        max_connections: TCP connections at once, in all.
        nats: NATS server URLs (``nats://host:4222``) of the cluster to join; empty: no
            cluster, and nothing of it is imported (``si.daemon.cluster``).
        nats_creds: a NATS credentials file (JWT and NKey seed) for those servers.
        hub_name: this hub's name in the cluster (default: the host name and a suffix kept
            in the home's ``cluster.json``, so it survives restarts).
        advertise_url: the URL other machines reach this hub's API at, as listed by ``si hub
            ls`` (default: ``http(s)://<host>:<port>/api/v1`` when ``port`` is given).
        cluster_topics: topics created on this hub are cluster-scoped unless said otherwise.

    A timeout of 0 turns it off.
    """

    home: Path | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    kill_on_exit: bool = False
    retention: float = DEFAULT_RETENTION_SECONDS
    reader_lag_bytes: int = DEFAULT_READER_LAG_BYTES
    reader_lag_seconds: float = DEFAULT_READER_LAG_SECONDS
    max_package_size: int = DEFAULT_MAX_PACKAGE_SIZE
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    insecure_no_auth: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_rate: float = DEFAULT_RATE
    token_concurrency: int = DEFAULT_CONCURRENT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    nats: tuple[str, ...] = ()
    nats_creds: Path | None = None
    hub_name: str | None = None
    advertise_url: str | None = None
    cluster_topics: bool = False


def parse_nats_urls(text: str) -> tuple[str, ...]:
    """``"nats://a:4222,nats://b:4222"`` -> the URLs; a bare ``host:port`` gets ``nats://``.

    Raises:
        ValueError: no URL, or one with another scheme.
    """
    urls = []
    for part in text.split(","):
        url = part.strip()
        if not url:
            continue
        if "://" not in url:
            url = f"nats://{url}"
        if url.split("://", 1)[0] not in ("nats", "tls"):
            raise ValueError(f"not a NATS URL: {part.strip()!r} (nats://host:4222)")
        urls.append(url)
    if not urls:
        raise ValueError("give at least one NATS URL (nats://host:4222)")
    return tuple(urls)
