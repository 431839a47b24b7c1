"""Runner reconnect: instances outlive the hub, and every stream resumes with nothing lost.

Real hubs, real runners, real kill -9. Sizes are small enough for CI; bench/reconnect.py
runs the large numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from si.client import HubClient, HubError
from si.identity import ProcessIdentity
from si.testing import HubProcess, python_package, wait_for
from tests.system.conftest import hub_http

pytestmark = pytest.mark.system

COUNTER = """
import asyncio

async def run(context, input, length, delay):
    for n in range(int(length)):
        yield n
        if float(delay):
            await asyncio.sleep(float(delay))
"""

PASSTHROUGH = "def run(context, input, *args):\n    return input\n"


class Follower(threading.Thread):
    """Reads one instance's output with the client's follow mode, across hub restarts."""

    def __init__(self, address: str, instance: str) -> None:
        super().__init__(daemon=True)
        self.client = HubClient(address, follow_timeout=30)
        self.instance = instance
        self.data = bytearray()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self.client.stream(f"instance/{self.instance}/output", follow=True):
                self.data += chunk
        except BaseException as exc:
            self.error = exc

    def numbers(self) -> list[int]:
        return [int(n) for n in self.data.split()]


def zombies(hub: HubProcess) -> list[str]:
    """Unreaped processes whose parent is this home's hub or keeper.

    (Orphans of earlier tests' killed keepers go to pid 1, which on these machines does not
    reap: they are not ours to count.)
    """
    keeper = hub.keeper_identity()
    parents = {str(p) for p in (hub.process.pid if hub.process else 0, keeper.pid if keeper else 0)}
    listing = subprocess.run(["ps", "-eo", "stat=,ppid=,pid=,cmd="], capture_output=True, text=True)
    return [
        line
        for line in listing.stdout.splitlines()
        if line.startswith("Z") and line.split()[1] in parents
    ]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_counters(client: HubClient, count: int, *, length: int, delays: list[str]) -> list[str]:
    sequence = client.send_sequence(python_package(COUNTER))["id"]
    instances = []
    for n in range(count):
        delay = delays[n % len(delays)]
        instances.append(
            client.start_sequence(sequence, {"args": [str(length), delay], "appConfig": {"n": n}})[
                "id"
            ]
        )
    return instances


@pytest.mark.parametrize("stop", ["crash", "sigterm"])
def test_restart_readopts_every_instance_and_streams_lose_nothing(
    hub: HubProcess, stop: str
) -> None:
    client = HubClient(hub.address)
    # Half write as fast as they can, half at about 200 lines/s.
    instances = start_counters(client, 6, length=1500, delays=["0", "0.005"])
    before = hub.runner_identities()
    followers = [Follower(hub.address, i) for i in instances]
    for follower in followers:
        follower.start()
    wait_for(lambda: all(len(f.data) > 0 for f in followers))
    if stop == "crash":
        hub.crash()
    else:
        assert hub.stop(signal.SIGTERM) == 0
    time.sleep(0.5)
    hub.start()
    ready = time.monotonic()
    listed = wait_for(
        lambda: [
            i
            for i in HubClient(hub.address).list_instances()
            if i["status"] in ("running", "completed")
        ],
        timeout=2.0,
    )
    adopted_in = time.monotonic() - ready
    assert adopted_in < 2.0
    by_id = {i["id"]: i for i in HubClient(hub.address).list_instances()}
    assert set(by_id) == set(instances)
    for n, instance in enumerate(instances):
        assert by_id[instance]["appConfig"] == {"n": n}
        assert by_id[instance]["args"] == ["1500", ["0", "0.005"][n % 2]]
        assert by_id[instance]["sequence"]["id"]
    assert listed
    for follower in followers:
        follower.join(60)
        assert not follower.is_alive()
        assert follower.error is None, follower.error
        assert follower.numbers() == list(range(1500))
    after = hub.runner_identities()
    assert after == before  # the same runner processes: re-adopted, never restarted


def test_restart_storm_keeps_runners_and_leaves_no_zombies_or_fds(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    instances = start_counters(client, 3, length=100000, delays=["0.01"])
    identities = hub.runner_identities()
    assert hub.process is not None
    baseline_fds = open_fds(hub.process.pid)
    followers = [Follower(hub.address, i) for i in instances]
    for follower in followers:
        follower.start()
    for _ in range(10):
        # Every stream moves on between two crashes.
        seen = [len(f.data) for f in followers]

        def moved(seen: list[int] = seen) -> bool:
            return all(len(f.data) > n for f, n in zip(followers, seen, strict=True))

        wait_for(moved)
        hub.crash()
        hub.start()
    wait_for(lambda: all(i["status"] == "running" for i in HubClient(hub.address).list_instances()))
    time.sleep(0.5)
    assert all(identity.is_alive() for identity in identities.values())
    assert hub.runner_identities() == identities
    assert zombies(hub) == []
    assert abs(open_fds(hub.process.pid) - baseline_fds) <= 3
    client = HubClient(hub.address)
    for instance in instances:
        client.kill_instance(instance)
    for follower in followers:
        follower.join(30)
        assert follower.error is None, follower.error
        numbers = follower.numbers()
        assert numbers == list(range(len(numbers)))  # contiguous: no gap, no repeat
        assert len(numbers) > 100


def test_output_waits_in_bounded_buffers_while_the_hub_is_away(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    [instance] = start_counters(client, 1, length=10_000_000, delays=["0"])
    runner = hub.runner_identities()[instance]
    hub.crash()
    time.sleep(1.0)
    rss_mib = _rss_kib(runner.pid) / 1024
    time.sleep(1.0)
    assert _rss_kib(runner.pid) / 1024 - rss_mib < 5  # the generator is paused, not buffering
    assert rss_mib < 64
    hub.start()
    follower = Follower(hub.address, instance)
    follower.start()
    wait_for(lambda: len(follower.data) > 4_000_000, timeout=30)
    HubClient(hub.address).kill_instance(instance)
    follower.join(30)
    numbers = follower.numbers()
    assert numbers == list(range(len(numbers)))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("restart_hub", [False, True])
def test_runner_death_is_seen_within_a_second(hub: HubProcess, restart_hub: bool) -> None:
    client = HubClient(hub.address)
    [instance] = start_counters(client, 1, length=100000, delays=["0.01"])
    runner = hub.runner_identities()[instance]
    if restart_hub:
        hub.restart()
        client = HubClient(hub.address)
        wait_for(lambda: client.get_instance(instance)["status"] == "running")
    os.kill(runner.pid, signal.SIGKILL)
    killed = time.monotonic()
    info = wait_for(
        lambda: (i := client.get_instance(instance))["status"] != "running" and i, timeout=5
    )
    assert time.monotonic() - killed < 1.0
    assert info["status"] == "errored"
    assert info["terminated"] == {"exitcode": 137, "reason": "Runner killed by signal 9"}
    assert zombies(hub) == []


def test_input_sent_before_and_after_a_restart_arrives_complete_and_in_order(
    hub: HubProcess,
) -> None:
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package(PASSTHROUGH))["id"]
    instance = client.start_sequence(sequence, {})["id"]
    follower = Follower(hub.address, instance)
    follower.start()
    lines = [f"{n}\n".encode() for n in range(20000)]
    client.send_input(instance, iter(lines[:10000]), content_type="text/plain", end=False)
    hub.crash()
    hub.start()
    client = HubClient(hub.address)
    wait_for(lambda: client.get_instance(instance)["status"] == "running")
    client.send_input(instance, iter(lines[10000:]), content_type="text/plain", end=True)
    follower.join(30)
    assert follower.error is None, follower.error
    assert follower.numbers() == list(range(20000))


# A sequence that, at the line "block", blocks its runner's whole event loop until a file
# appears: input the hub writes meanwhile stays unread in the runner's socket.
BLOCKING = """
import os, time

async def run(context, input, blocking, release):
    async for line in input:
        if "block" in line:
            open(blocking, "w").close()
            while not os.path.exists(release):
                time.sleep(0.01)
        yield line
"""


def test_input_a_hub_wrote_just_before_it_died_reaches_a_runner_that_was_busy(
    hub: HubProcess, tmp_path: Path
) -> None:
    # The runner's first sign of the crash is a failed write of its output; the input the hub
    # wrote before dying (and answered its client for) is still in the socket, unread.
    blocking, release = tmp_path / "blocking", tmp_path / "release"
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package(BLOCKING))["id"]
    args = [str(blocking), str(release)]
    instance = client.start_sequence(sequence, {"args": args})["id"]
    follower = Follower(hub.address, instance)
    follower.start()
    lines = [f"{n}\n".encode() for n in range(300)]
    client.send_input(instance, iter([*lines[:100], b"block\n"]), "text/plain", end=False)
    wait_for(blocking.exists)
    client.send_input(instance, iter(lines[100:200]), "text/plain", end=False)
    hub.crash()
    release.touch()  # the runner goes on, and writes "block" to a dead hub
    hub.start()
    client = HubClient(hub.address)
    wait_for(lambda: client.get_instance(instance)["status"] == "running")
    client.send_input(instance, iter(lines[200:]), "text/plain", end=True)
    follower.join(30)
    assert follower.error is None, follower.error
    assert bytes(follower.data) == b"".join([*lines[:100], b"block\n", *lines[100:]])


def test_an_upload_cut_by_a_hub_crash_fails_for_its_client(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package(PASSTHROUGH))["id"]
    instance = client.start_sequence(sequence, {})["id"]

    def slow_body() -> Iterator[bytes]:
        for n in range(100):
            yield f"{n}\n".encode()
            time.sleep(0.02)
            if n == 20:
                hub.crash()

    with pytest.raises(HubError):
        client.send_input(instance, slow_body(), content_type="text/plain", end=False)


def test_a_reused_pid_or_wrong_socket_marks_the_instance_lost_and_is_never_signalled(
    hub: HubProcess,
) -> None:
    client = HubClient(hub.address)
    [instance] = start_counters(client, 1, length=100000, delays=["0.01"])
    hub.stop()
    hub.kill_runners()  # the runner is gone; its records stay, but not how it ended
    for name in ("wait.json", "exit.json"):
        (hub.home / "instances" / instance / name).unlink(missing_ok=True)
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        identity = ProcessIdentity.of(sleeper.pid)
        assert identity is not None
        runner_json = hub.home / "instances" / instance / "runner.json"
        body = json.loads(runner_json.read_text())
        # Case 1: the right pid of a live process with the wrong start time (pid reuse).
        body.update(pid=sleeper.pid, start_time=identity.start_time + 1)
        runner_json.write_text(json.dumps(body))
        started = time.monotonic()
        hub.start()
        info = HubClient(hub.address).get_instance(instance)
        assert info["status"] == "lost"
        assert time.monotonic() - started < 5
        assert sleeper.poll() is None
        # Case 2: the right pid and start time, but no runner socket behind it.
        hub.stop()
        instance_json = hub.home / "instances" / instance / "instance.json"
        state = json.loads(instance_json.read_text())
        state.update(status="running", terminated=None, ended=None)
        instance_json.write_text(json.dumps(state))
        body.update(start_time=identity.start_time)
        runner_json.write_text(json.dumps(body))
        hub.start()
        wait_for(
            lambda: HubClient(hub.address).get_instance(instance)["status"] == "lost", timeout=6
        )
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.timeout(60)
def test_a_forged_runner_record_with_the_real_socket_is_refused_and_its_pid_never_signalled(
    hub: HubProcess,
) -> None:
    client = HubClient(hub.address)
    [instance] = start_counters(client, 1, length=1000000, delays=["0.01"])
    hub.stop()
    runner_json = hub.home / "instances" / instance / "runner.json"
    body = json.loads(runner_json.read_text())
    real = ProcessIdentity(body["pid"], body["start_time"], body["boot_id"])
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        identity = ProcessIdentity.of(sleeper.pid)
        assert identity is not None
        # A live process's true identity, with the real runner still on the real socket.
        body.update(pid=sleeper.pid, start_time=identity.start_time)
        runner_json.write_text(json.dumps(body))
        hub.start()
        client = HubClient(hub.address)
        info = wait_for(lambda: client.get_instance(instance), timeout=5)
        wait_for(lambda: client.get_instance(instance)["status"] == "lost", timeout=5)
        reason = client.get_instance(instance)["terminated"]["reason"]
        assert f"pid {real.pid}, not pid {sleeper.pid}" in reason, info
        with contextlib.suppress(HubError):
            client.kill_instance(instance)
        time.sleep(0.5)
        assert sleeper.poll() is None
        # The real runner is left alone too: the hub signals nothing it cannot prove.
        assert real.is_alive()
    finally:
        sleeper.kill()
        sleeper.wait()
        os.kill(real.pid, signal.SIGKILL)


def test_a_corrupt_instance_record_affects_only_that_instance(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    good, bad = start_counters(client, 2, length=100000, delays=["0.01"])
    hub.stop()
    (hub.home / "instances" / bad / "instance.json").write_text("{ not json")
    hub.start()
    client = HubClient(hub.address)
    assert client.get_instance(good)["status"] == "running"
    assert client.get_instance(bad)["status"] == "lost"


def test_kill_on_exit_ends_instances_with_the_hub(home: Path) -> None:
    hub = HubProcess(home, "--kill-on-exit").start()
    try:
        client = HubClient(hub.address)
        [instance] = start_counters(client, 1, length=100000, delays=["0.01"])
        runner = hub.runner_identities()[instance]
        assert hub.stop(signal.SIGTERM) == 0
        wait_for(lambda: not runner.is_alive(), timeout=5)
    finally:
        hub.close()


class OffsetReader(threading.Thread):
    """A reader that reconnects only when told to, at the offset it reached: a second
    follower that comes back well after the first one already moved on."""

    def __init__(self, hub: HubProcess, instance: str) -> None:
        super().__init__(daemon=True)
        self.hub = hub
        self.path = f"/instance/{instance}/output"
        self.data = bytearray()
        self.start_offset: int | None = None
        self.broken = threading.Event()
        self.resume = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._read({})
            self.broken.set()
            self.resume.wait(30)
            assert self.start_offset is not None
            self._read({"x-si-offset": str(self.start_offset + len(self.data))})
        except BaseException as exc:
            self.error = exc

    def _read(self, headers: dict[str, str]) -> None:
        with hub_http(self.hub) as http:
            try:
                with http.stream("GET", self.path, headers=headers, timeout=60) as response:
                    assert response.status_code == 200
                    start = int(response.headers["x-si-offset"])
                    if self.start_offset is None:
                        self.start_offset = start
                    expected = self.start_offset + len(self.data)
                    assert start == expected, f"resumed at {start}, asked for {expected}"
                    for chunk in response.iter_bytes():
                        self.data += chunk
            except httpx.TransportError:
                if not headers:
                    return  # cut by the crash: resume later
                raise

    def numbers(self) -> list[int]:
        return [int(n) for n in self.data.split()]


def fresh_read(hub: HubProcess, instance: str, seconds: float) -> tuple[int, bytes]:
    """Read an output for a moment without an offset: (the offset it started at, the bytes)."""
    data = bytearray()
    with (
        hub_http(hub) as http,
        http.stream("GET", f"/instance/{instance}/output", timeout=30) as response,
    ):
        assert response.status_code == 200
        start = int(response.headers["x-si-offset"])
        deadline = time.monotonic() + seconds
        for chunk in response.iter_bytes():
            data += chunk
            if time.monotonic() > deadline:
                break
    return start, bytes(data)


def whole_lines(data: bytes, start: int) -> list[int]:
    """The numbers of a fresh reader: it may start and stop inside a line."""
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # may be the second half of a line
    return [int(line) for line in lines[:-1]]


def test_every_follower_and_every_reader_arriving_during_readoption_sees_no_gap_and_no_repeat(
    hub: HubProcess,
) -> None:
    client = HubClient(hub.address)
    [instance] = start_counters(client, 1, length=15_000, delays=["0.0001"])
    first = Follower(hub.address, instance)
    second = OffsetReader(hub, instance)
    first.start()
    second.start()
    wait_for(lambda: len(first.data) > 1000 and len(second.data) > 1000)
    hub.crash()
    assert second.broken.wait(10)
    hub.start()
    # Readers without an offset, arriving while the hub re-adopts the runner.
    fresh = [fresh_read(hub, instance, 0.3) for _ in range(3)]
    # The second follower comes back only once the first one has read on well past it.
    mark = len(first.data)
    wait_for(lambda: len(first.data) > mark + 20_000, timeout=20)
    second.resume.set()
    for start, data in fresh:
        assert start > 0  # numbered where the runner's stream is, never from 0 again
        numbers = whole_lines(data, start)
        assert numbers, "a fresh reader got nothing"
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    first.join(60)
    second.join(60)
    assert first.error is None, first.error
    assert second.error is None, second.error
    for numbers in (first.numbers(), second.numbers()):
        # Each from where it attached (the head), to the end: no gap, no repeat.
        assert numbers == list(range(numbers[0], 15_000))
