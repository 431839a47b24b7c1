"""``si hub serve``: take the home's lock, load state, serve the API until told to stop.

Order matters for the reconnect promise: stored sequences and instances are loaded before the
first request is accepted, and re-adoption of running runners starts at the same moment, so a
client never sees a hub that has forgotten an instance.

Error handling: a second hub on the same home fails at once on the lock, before it touches the
socket, the state or any runner. SIGINT and SIGTERM stop the hub cleanly and leave instances
running (unless ``--kill-on-exit``).
"""

from __future__ import annotations

import errno
import fcntl
import gc
import ipaddress
import logging
import os
import resource
import signal
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import trio

from si.allocator import keep_freed_memory
from si.daemon.access import Access
from si.daemon.api import Api
from si.daemon.feed import FeedHandler
from si.daemon.http import Timeouts, handle_connections
from si.daemon.hub import Hub
from si.daemon.options import HubOptions
from si.daemon.tokens import TokenStore
from si.errors import SiError
from si.paths import HubPaths, connectable_unix_path

if TYPE_CHECKING:
    import ssl

    from si.daemon.cluster.member import ClusterMember

log = logging.getLogger("si.hub")


class HubLock:
    """An exclusive ``flock`` on ``hub.lock`` held for the hub's lifetime.

    The kernel drops it when the process dies, however it dies, so a crashed hub never blocks
    the next one; the pid inside is only there to name the holder in the error message.
    """

    def __init__(self, path: os.PathLike[str]) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SiError(
                    f"another hub (pid {holder}) is already serving this home; "
                    f"lock: {os.fspath(self.path)}"
                ) from None
            raise
        self.fd = fd
        pid = f"{os.getpid()}\n".encode()
        try:
            # Over the old holder's pid, then cut: rewriting a page it already has needs no
            # new space, so this works on a full disk too.
            os.pwrite(fd, pid.ljust(os.fstat(fd).st_size, b" "), 0)
            os.ftruncate(fd, len(pid))
        except OSError as exc:
            # The lock is what matters; the pid only names the holder in another hub's error.
            log.warning("cannot record the hub's pid in %s: %s", os.fspath(self.path), exc)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def open_unix_api_listener(path: os.PathLike[str]) -> trio.SocketListener:
    """Bind the API socket with mode 0600; a stale file of a dead hub is replaced."""
    target, dirfd = connectable_unix_path(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        try:
            os.unlink(target)  # safe: we hold the lock, so no live hub owns this file
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            await sock.bind(target)
        finally:
            os.umask(old_umask)
        # As deep a queue as the kernel allows (net.core.somaxconn caps it): every follower
        # and CLI call reconnects at once when a restarted hub comes back.
        sock.listen(65535)
    except BaseException:
        sock.close()
        raise
    finally:
        if dirfd is not None:
            os.close(dirfd)
    return trio.SocketListener(sock)


async def run_hub(
    options: HubOptions,
    *,
    task_status: trio.TaskStatus[Hub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a hub until cancelled or signalled. Reports the Hub once it accepts requests."""
    paths = HubPaths.resolve(options.home)
    paths.make_dirs()
    with ExitStack() as stack:
        lock = HubLock(paths.lock)
        lock.acquire()
        stack.callback(lock.release)
        hub = Hub(options, paths)
        if options.nats:
            hub.cluster = join_cluster(hub)
            hub.routes.cluster = hub.cluster.topics
        hub.log_feed.bind()
        hub.audit_feed.bind()
        handler = FeedHandler(hub.log_feed)
        logging.getLogger("si").addHandler(handler)
        stack.callback(logging.getLogger("si").removeHandler, handler)
        access = tcp_access(options, paths) if options.port is not None else None
        ssl_context = tls_context(options)
        hub.load()
        listeners: list[trio.abc.Listener[Any]] = [await open_unix_api_listener(paths.socket)]
        stack.callback(_unlink_quietly, paths.socket)
        if options.port is not None:
            tcp = await trio.open_tcp_listeners(options.port, host=options.host)
            if ssl_context is None:
                listeners += tcp
            else:
                listeners += [
                    trio.SSLListener(listener, ssl_context, https_compatible=True)
                    for listener in tcp
                ]
        timeouts = Timeouts.of(
            options.head_timeout, options.body_idle_timeout, options.keep_alive_timeout
        )
        api = Api(hub, access)
        if hub.cluster is not None:
            # Another hub's placement starts here as the start route would.
            hub.cluster.handlers["start"] = api.answer_start
        serve_http = handle_connections(api, timeouts, options.max_connections)
        async with trio.open_nursery() as nursery:
            hub.begin(nursery)
            if hub.cluster is not None:
                # In the background: the local API serves whether NATS answers or not.
                await nursery.start(hub.cluster.run)
            await nursery.start(trio.serve_listeners, serve_http, listeners)
            where = str(paths.socket)
            if options.port is not None:
                scheme = "https" if ssl_context is not None else "http"
                guard = "no tokens" if options.insecure_no_auth else "tokens required"
                where += f" and {scheme}://{options.host}:{options.port}/api/v1 ({guard})"
            log.info(
                "hub ready on %s (%d sequences, %d instances)",
                where,
                len(hub.sequences),
                len(hub.instances),
            )
            task_status.started(hub)
            gc.enable()  # off during start-up (see __main__); collections resume from here
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s: stopping the hub", signal.Signals(signum).name)
                    break
            await hub.shutdown()
            if not hub.state_files.flush():  # a last chance for records a full disk held back
                log.warning("stopping with %d unsaved state files", len(hub.state_files.pending))
            nursery.cancel_scope.cancel()


def join_cluster(hub: Hub) -> ClusterMember:
    """This hub's member of the cluster ``--nats`` names; the only place the cluster (and so
    the NATS client) is imported.

    Raises:
        SiError: the NATS client is not installed.
    """
    try:
        from si.daemon.cluster.member import ClusterMember, hub_name
    except ImportError as exc:
        raise SiError(
            f"--nats needs the NATS client ({exc}): pip install 'si[cluster]' (nats-py)"
        ) from None
    return ClusterMember(hub, hub_name(hub.options, hub.paths.lock.parent))


def tcp_access(options: HubOptions, paths: HubPaths) -> Access:
    """The token check and limits for the TCP API; makes the first admin token if none exists.

    Raises:
        SiError: ``--insecure-no-auth`` with an address other than a loopback one.
    """
    store: TokenStore | None = TokenStore(paths.lock.parent)
    if options.insecure_no_auth:
        if not is_loopback(options.host):
            raise SiError(
                f"--insecure-no-auth serves anyone who reaches {options.host}: it is allowed "
                "only on a loopback address (127.0.0.1, ::1, localhost); use a token instead"
            )
        store = None
        log.warning("serving TCP without tokens (--insecure-no-auth): anyone on this machine")
    else:
        assert store is not None
        made = store.ensure_admin()
        if made is not None:
            log.info("created the first admin token for the TCP API; it is in %s", made)
    return Access.of(store, trio.current_time, options.token_rate, options.token_concurrency)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(options: HubOptions) -> ssl.SSLContext | None:
    """The server's TLS context from ``--tls-cert``/``--tls-key``; None without them.

    Raises:
        SiError: only one of them given, or files that do not load.
    """
    if options.tls_cert is None and options.tls_key is None:
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise SiError("--tls-cert and --tls-key go together")
    if options.port is None:
        raise SiError("--tls-cert serves TCP: give --port too")
    import ssl as ssl_module

    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    except (OSError, ssl_module.SSLError) as exc:
        raise SiError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def _unlink_quietly(path: os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard one.

    The hub holds two descriptors per running instance (its link socket and its pidfd), plus
    one per client. The usual soft limit of 1,024 would stop it near 500 instances, while the
    hard limit (often 500,000 and more) is this process's to take.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # keep the soft limit: the hub still runs, with fewer instances


def serve_hub(options: HubOptions) -> int:
    """Entry point of ``si hub serve``: runs in the foreground; returns the exit code."""
    raise_open_file_limit()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    keep_freed_memory()  # stream buffers are reused instead of faulted in afresh
    try:
        trio.run(run_hub, options)
    except SiError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Error: cannot serve the hub: {exc}", file=sys.stderr)
        return 1
    return 0
