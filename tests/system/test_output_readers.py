"""Readers of an instance's output that misbehave: they end themselves, never the instance.

Real hub, real runner, real sockets: a reader that stops reading (its socket fills) and one
that asks for offsets the hub can never serve.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from si.client import HubClient
from si.paths import connectable_unix_path
from si.testing import HubProcess, python_package, running_hub, wait_for
from tests.system.conftest import hub_http

pytestmark = pytest.mark.system

# Numbered 1 KiB lines, as fast as the reader takes them.
FLOOD = """
async def run(context, input):
    n = 0
    pad = "x" * 1000
    while True:
        yield f"{n:08d} {pad}"
        n += 1
"""


class CountingReader(threading.Thread):
    def __init__(self, address: str, instance: str) -> None:
        super().__init__(daemon=True)
        self.client = HubClient(address)
        self.instance = instance
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for chunk in self.client.stream(f"instance/{self.instance}/output", follow=False):
                self.received += len(chunk)
                if self.stop.is_set():
                    return
        except Exception:
            pass


def stopped_reader(hub: HubProcess, instance: str) -> socket.socket:
    """A client that asks for the output and then never reads a byte."""
    target, dirfd = connectable_unix_path(hub.socket)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(target)
    finally:
        if dirfd is not None:
            os.close(dirfd)
    sock.sendall(f"GET /api/v1/instance/{instance}/output HTTP/1.1\r\nhost: si\r\n\r\n".encode())
    return sock


@pytest.mark.timeout(90)
def test_a_stopped_reader_is_cut_off_and_the_others_and_the_producer_go_on(home: Path) -> None:
    with running_hub(home, "--reader-lag-bytes", "262144", "--reader-lag-seconds", "1") as hub:
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(FLOOD))["id"]
        instance = client.start_sequence(sequence, {})["id"]
        normal = CountingReader(hub.address, instance)
        normal.start()
        wait_for(lambda: normal.received > 1_000_000, timeout=20)
        stopped = stopped_reader(hub, instance)
        try:
            # Far more than the runner's window and every socket buffer: had the stopped
            # reader held the instance back, this never arrives.
            mark = normal.received
            wait_for(lambda: normal.received > mark + 32_000_000, timeout=30)
            # The stopped reader's response was broken off, not ended: no final chunk.
            stopped.settimeout(10)
            received = bytearray()
            while chunk := stopped.recv(1 << 16):
                received += chunk
            assert received.startswith(b"HTTP/1.1 200")
            assert not received.endswith(b"0\r\n\r\n")
            assert "cut off" in hub.log()
        finally:
            normal.stop.set()
            stopped.close()
            client.kill_instance(instance)
            normal.join(10)


def test_a_lone_slow_reader_slows_the_instance_and_is_never_cut_off(home: Path) -> None:
    with running_hub(home, "--reader-lag-bytes", "4096", "--reader-lag-seconds", "0.5") as hub:
        client = HubClient(hub.address)
        sequence = client.send_sequence(python_package(FLOOD))["id"]
        instance = client.start_sequence(sequence, {})["id"]
        stopped = stopped_reader(hub, instance)
        try:
            time.sleep(2)  # four times the lag limit in seconds
            stopped.setblocking(False)
            received = bytearray()
            deadline = time.monotonic() + 5
            while len(received) < 3_000_000 and time.monotonic() < deadline:
                try:
                    chunk = stopped.recv(1 << 16)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                assert chunk, "the hub cut off the only reader"
                received += chunk
            assert len(received) >= 3_000_000  # it was backpressure: the stream went on
            assert "cut off" not in hub.log()
        finally:
            stopped.close()
            client.kill_instance(instance)


@pytest.mark.parametrize("offset", ["-1", "99999999999"])
def test_an_offset_the_output_can_never_reach_is_a_400(hub: HubProcess, offset: str) -> None:
    client = HubClient(hub.address)
    sequence = client.send_sequence(python_package("def run(context, input):\n    yield 1\n"))
    instance = client.start_sequence(sequence["id"], {})["id"]
    with hub_http(hub) as http:
        response = http.get(f"/instance/{instance}/output", headers={"x-si-offset": offset})
    assert response.status_code == 400
    assert "x-si-offset" in response.json()["error"]
