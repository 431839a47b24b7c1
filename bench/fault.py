"""The hub under faults: crash cycles with many readers, and readers that stop reading.

Crash cycles: start ``--instances`` counters (100 lines/s each) with two followers each
(``HubClient.stream(follow=True)``, which resumes by offset), then ``--cycles`` times: kill -9
the hub, start it again and, the moment it answers, attach one fresh reader per instance (no
offset: it starts at the live head while the hub is still re-adopting) that reads for a second.
Reported: time from "the hub answers" to "every instance linked again"; for the followers,
lines lost and lines seen twice over the whole run; for the fresh readers, gaps and repeats in
what each one saw. All four counts must be 0.

Slow readers: one instance writes about 8 MB/s; a normal follower reads it. After a few
seconds a reader that never reads and one that reads 64 KiB/s attach. Reported: the normal
reader's rate before, while the two lag, and after they are cut off; the longest pause it saw;
how long each stalled reader lasted before the hub cut it off; the hub's RSS at the start, its
peak and at the end.

    python bench/fault.py [--instances 10] [--cycles 5] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from reconnect import followed_counters, until_all_linked  # noqa: E402

from si.client import HubClient  # noqa: E402
from si.testing import python_package, running_hub  # noqa: E402

# About 8 MB/s in 80 KB items: the producer, not the reader, sets the normal reader's rate.
STEADY_PRODUCER = """
import asyncio, time

async def run(context, input):
    n = 0
    pad = "x" * 70
    started = time.monotonic()
    while True:
        yield "\\n".join(f"{i:09d} {pad}" for i in range(n, n + 1000))
        n += 1000
        ahead = started + n / 100_000 - time.monotonic()
        await asyncio.sleep(max(ahead, 0))
"""
PHASE = 3.0  # seconds per phase of the slow-reader run


def gaps_and_repeats(data: bytes) -> tuple[int, int]:
    """In the numbers one reader saw, from its first: numbers skipped, and numbers not above
    their predecessor (seen twice or out of order)."""
    complete = data[: data.rfind(b"\n") + 1]
    numbers = [int(n) for n in complete.split()]
    pairs = list(itertools.pairwise(numbers))
    return sum(b - a - 1 for a, b in pairs if b > a + 1), sum(1 for a, b in pairs if b <= a)


class FreshReader(threading.Thread):
    """Attaches without an offset and reads for ``duration`` seconds."""

    def __init__(self, address: str, instance: str, duration: float) -> None:
        super().__init__(daemon=True)
        self.client = HubClient(address, follow_timeout=30)
        self.instance = instance
        self.duration = duration
        self.data = bytearray()
        self.error: str | None = None

    def run(self) -> None:
        deadline = None
        try:
            for chunk in self.client.stream(f"instance/{self.instance}/output", follow=True):
                self.data += chunk
                deadline = deadline or time.monotonic() + self.duration
                if time.monotonic() > deadline:
                    break
        except Exception as error:
            self.error = str(error)


def crash_cycles(instances: int, cycles: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="si-fault-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        ids, followers = followed_counters(hub.address, instances, 2)
        client = HubClient(hub.address)
        time.sleep(1.0)
        timings: list[float] = []
        fresh: list[FreshReader] = []
        for _ in range(cycles):
            hub.crash()
            hub.start()  # returns once the hub answers requests
            ready = time.perf_counter()
            cycle_readers = [FreshReader(hub.address, i, 1.0) for i in ids]
            for reader in cycle_readers:
                reader.start()
            timings.append(until_all_linked(hub.address, instances, ready))
            fresh += cycle_readers
            time.sleep(1.5)
        for reader in fresh:
            reader.join(30)
        for instance in ids:
            client.kill_instance(instance)
        for follower in followers:
            follower.join(30)
        # Followers of one instance attach a moment apart: each counts from its first line.
        losses = [gaps_and_repeats(bytes(f.data)) for f in followers]
        fresh_counts = [gaps_and_repeats(bytes(r.data)) for r in fresh]
        starts = [int(f.data.split()[0]) for f in followers if f.data]
        return {
            "instances": instances,
            "cycles": cycles,
            "readopt_ms_median": round(statistics.median(timings), 1),
            "readopt_ms_max": round(max(timings), 1),
            "followers": len(followers),
            "follower_lines_lost": sum(lost for lost, _ in losses),
            "follower_lines_repeated": sum(dup for _, dup in losses),
            "follower_lines_read": sum(len(f.data.split()) for f in followers),
            "follower_first_line_max": max(starts, default=0),
            "fresh_readers": len(fresh),
            "fresh_reader_errors": sum(1 for r in fresh if r.error),
            "fresh_gaps": sum(gaps for gaps, _ in fresh_counts),
            "fresh_repeats": sum(repeats for _, repeats in fresh_counts),
            "fresh_lines_read": sum(len(r.data.split()) for r in fresh),
        }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Meter(threading.Thread):
    """A normal follower that timestamps what it reads."""

    def __init__(self, address: str, instance: str) -> None:
        super().__init__(daemon=True)
        self.client = HubClient(address)
        self.instance = instance
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        total = 0
        for chunk in self.client.stream(f"instance/{self.instance}/output", follow=True):
            total += len(chunk)
            self.samples.append((time.monotonic(), total))
            if self.stop.is_set():
                break

    def rate(self, start: float, end: float) -> float:
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) / 1e6

    def longest_pause(self, start: float, end: float) -> float:
        times = [t for t, _ in self.samples if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class StalledReader(threading.Thread):
    """A raw HTTP reader of an output that reads ``rate`` bytes/s (0: not at all, until told)."""

    def __init__(self, socket_path: str, instance: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.connect(socket_path)
        request = f"GET /api/v1/instance/{instance}/output HTTP/1.1\r\nhost: si\r\n\r\n"
        self.sock.sendall(request.encode())
        self.attached = time.monotonic()
        self.rate = rate
        self.drain = threading.Event()
        self.received = 0
        self.tail = b""
        self.cut_after: float | None = None

    def run(self) -> None:
        # The hub's hang-up shows in poll() while unread bytes still wait in the socket, so
        # the moment of the cut is seen without reading what precedes it.
        poller = select.poll()
        poller.register(self.sock, select.POLLRDHUP)
        while self.cut_after is None and not self.drain.is_set():
            if poller.poll(50):
                self.cut_after = time.monotonic() - self.attached
            elif self.rate:
                self.take(self.rate // 20)
                time.sleep(0.05)
        self.sock.settimeout(10)
        try:
            while self.take(65536):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()

    def take(self, size: int) -> int:
        data = self.sock.recv(size)
        self.received += len(data)
        self.tail = (self.tail + data)[-16:]
        return len(data)

    @property
    def ended_cleanly(self) -> bool:
        """True if the response ended with the final chunk (it must not: a cut is not an end)."""
        return self.tail.endswith(b"0\r\n\r\n")


def slow_readers() -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="si-fault-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        assert hub.process is not None
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(STEADY_PRODUCER))["id"]
        instance = client.start_sequence(sequence, {})["id"]
        meter = Meter(hub.address, instance)
        meter.start()
        rss: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                rss.append(rss_mib(hub.process.pid))  # type: ignore[union-attr]
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        time.sleep(1.0)
        rss_start = rss_mib(hub.process.pid)
        sampler.start()
        begin = time.monotonic()
        time.sleep(PHASE)
        lagging = time.monotonic()
        stopped = StalledReader(hub.address, instance, 0)
        slow = StalledReader(hub.address, instance, 64 * 1024)
        stopped.start()
        slow.start()
        time.sleep(2 * PHASE)
        after = time.monotonic()
        time.sleep(PHASE)
        end = time.monotonic()
        stopped.drain.set()
        slow.drain.set()
        stopped.join(15)
        slow.join(15)
        sampling.set()
        sampler.join()
        meter.stop.set()
        client.kill_instance(instance)
        meter.join(15)
        return {
            "rate_before_mb_s": round(meter.rate(begin, lagging), 2),
            "rate_while_lagging_mb_s": round(meter.rate(lagging, after), 2),
            "rate_after_mb_s": round(meter.rate(after, end), 2),
            "longest_pause_s": round(meter.longest_pause(lagging, end), 2),
            "stopped_reader_cut_after_s": stopped.cut_after and round(stopped.cut_after, 2),
            "stopped_reader_ended_cleanly": stopped.ended_cleanly,
            "slow_reader_cut_after_s": slow.cut_after and round(slow.cut_after, 2),
            "slow_reader_ended_cleanly": slow.ended_cleanly,
            "hub_rss_start_mib": round(rss_start, 1),
            "hub_rss_max_mib": round(max(rss), 1),
            "hub_rss_end_mib": round(rss[-1], 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    crash = crash_cycles(options.instances, options.cycles)
    slow = slow_readers()
    if options.json:
        print(json.dumps({"crash": crash, "slow": slow}))
        return
    print(
        f"{crash['cycles']} kill -9 cycles, {crash['instances']} instances: re-adopted in "
        f"median {crash['readopt_ms_median']} ms (max {crash['readopt_ms_max']})"
    )
    print(
        f"  {crash['followers']} followers: lost {crash['follower_lines_lost']}, repeated "
        f"{crash['follower_lines_repeated']} of {crash['follower_lines_read']} lines"
    )
    print(
        f"  {crash['fresh_readers']} readers attached during re-adoption: gaps "
        f"{crash['fresh_gaps']}, repeats {crash['fresh_repeats']} in "
        f"{crash['fresh_lines_read']} lines; errors {crash['fresh_reader_errors']}"
    )
    print(
        f"slow readers: normal reader {slow['rate_before_mb_s']} MB/s before, "
        f"{slow['rate_while_lagging_mb_s']} while two readers lag, {slow['rate_after_mb_s']} "
        f"after; longest pause {slow['longest_pause_s']} s"
    )
    print(
        f"  stopped reader cut off after {slow['stopped_reader_cut_after_s']} s, 64 KiB/s "
        f"reader after {slow['slow_reader_cut_after_s']} s (clean end: "
        f"{slow['stopped_reader_ended_cleanly']}, {slow['slow_reader_ended_cleanly']})"
    )
    print(
        f"  hub RSS {slow['hub_rss_start_mib']} MiB at start, {slow['hub_rss_max_mib']} peak, "
        f"{slow['hub_rss_end_mib']} at end"
    )


if __name__ == "__main__":
    main()
