"""Warm spare Node.js runners (si/runner/spares.py): a start handed to a spare gives a runner as
detached as a cold-started one, and spares never outlive their keeper.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from si.client import HubClient
from si.identity import ProcessIdentity
from si.paths import connectable_unix_path
from si.testing import HubProcess, make_package, wait_for

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
]

MANIFEST = {
    "name": "spare-test",
    "version": "1.0.0",
    "main": "index.js",
    "engines": {"node": ">=20"},
}
WRITES_EVERYWHERE = """
module.exports = async function* (input, ...args) {
  console.log('to stdout');
  console.error('to stderr');
  yield { args, stdinIsNull: require('node:fs').readFileSync(0).length === 0 };
};
"""


def spares(hub: HubProcess) -> list[int]:
    """The pids of this home's keeper's children that are warm spares, still waiting.

    (A spare keeps its command line once it runs an instance: those are told by runner.json.)
    """
    keeper = hub.keeper_identity()
    if keeper is None:
        return []
    runners = {identity.pid for identity in hub.runner_identities().values()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        zombie = "\nState:\tZ" in status
        pid = int(entry.name)
        if ppid == str(keeper.pid) and b"--spare" in cmdline and not zombie and pid not in runners:
            found.append(pid)
    return found


def gone(pids: list[int]) -> bool:
    def done(pid: int) -> bool:
        try:
            return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True

    return all(done(pid) for pid in pids)


def start(client: HubClient, sequence: str, *args: str) -> str:
    return str(client.start_sequence(sequence, {"args": list(args)})["id"])


def test_a_start_handed_to_a_spare_is_as_detached_as_a_cold_one(
    client: HubClient, hub: HubProcess
) -> None:
    sequence = client.send_sequence(make_package({"index.js": WRITES_EVERYWHERE}, MANIFEST))["id"]
    cold = start(client, sequence, "cold")  # the first start teaches the keeper the argv
    booted = wait_for(lambda: spares(hub) if len(spares(hub)) >= 1 else None)
    warm = start(client, sequence, "warm")
    runner = hub.runner_identities()[warm]
    assert runner.pid in booted  # the keeper handed the instance to a spare

    for instance, args in ((cold, ["cold"]), (warm, ["warm"])):
        output = b"".join(client.stream(f"instance/{instance}/output", follow=False))
        assert json.loads(output) == {"args": args, "stdinIsNull": True}
        directory = hub.home / "instances" / instance
        wait_for((directory / "exit.json").exists)
        assert (directory / "stdout").read_text() == "to stdout\n"
        assert (directory / "stderr").read_text() == "to stderr\n"
        assert json.loads((directory / "exit.json").read_text())["code"] == 0
        assert {p.name for p in directory.iterdir()} >= {"runner.sock", "runner.json"}
    # No spare's directory is left behind by an assignment.
    assert len(list((hub.home / "spares").iterdir())) == len(spares(hub))


def test_a_spare_runner_has_the_descriptors_session_and_identity_of_a_runner(
    client: HubClient, hub: HubProcess
) -> None:
    idle = "module.exports = async function () { await new Promise(() => {}); };\n"
    sequence = client.send_sequence(make_package({"index.js": idle}, MANIFEST))["id"]
    start(client, sequence)
    booted = wait_for(lambda: spares(hub) if len(spares(hub)) >= 1 else None)
    instance = start(client, sequence)
    runner = hub.runner_identities()[instance]
    assert runner.pid in booted
    assert ProcessIdentity.of(runner.pid) == runner  # runner.json: its own pid and start time
    directory = hub.home / "instances" / instance
    fds = {
        int(fd): os.readlink(f"/proc/{runner.pid}/fd/{fd}")
        for fd in os.listdir(f"/proc/{runner.pid}/fd")
    }
    assert fds[0] == os.devnull
    assert fds[1] == str(directory / "stdout")
    assert fds[2] == str(directory / "stderr")
    assert os.getsid(runner.pid) == runner.pid  # its own session, like every runner
    # fd 3 is the listener at the instance's path; the keeper's socket (fd 4) was closed, so
    # the only other socket is the hub's connection.
    sockets = sorted(fd for fd, target in fds.items() if target.startswith("socket:"))
    assert sockets[0] == 3, fds
    assert len(sockets) == 2, fds
    target, dirfd = connectable_unix_path(directory / "runner.sock")
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(5)
            probe.connect(target)  # the renamed listener answers at its new name
    finally:
        if dirfd is not None:
            os.close(dirfd)
    client.kill_instance(instance)


def test_spares_exit_with_their_keeper(client: HubClient, hub: HubProcess) -> None:
    quick = "module.exports = async function* () { yield 'done'; };\n"
    sequence = client.send_sequence(make_package({"index.js": quick}, MANIFEST))["id"]
    start(client, sequence)
    booted = wait_for(lambda: spares(hub) if len(spares(hub)) >= 2 else None)
    keeper = hub.keeper_identity()
    assert keeper is not None
    os.kill(keeper.pid, signal.SIGTERM)
    wait_for(lambda: gone([*booted, keeper.pid]))
    assert not (hub.home / "spares").exists()


def test_spares_exit_when_the_home_is_removed(hub: HubProcess, client: HubClient) -> None:
    quick = "module.exports = async function* () { yield 'done'; };\n"
    sequence = client.send_sequence(make_package({"index.js": quick}, MANIFEST))["id"]
    instance = start(client, sequence)
    booted = wait_for(lambda: spares(hub) if len(spares(hub)) >= 2 else None)
    wait_for(lambda: (hub.home / "instances" / instance / "exit.json").exists())
    keeper = hub.keeper_identity()
    assert keeper is not None
    hub.stop()
    shutil.rmtree(hub.home)
    # The keeper looks for its home every few seconds and leaves, retiring its spares.
    wait_for(lambda: gone([*booted, keeper.pid]), timeout=30)


def test_a_dead_spare_is_replaced_and_the_start_still_succeeds(
    client: HubClient, hub: HubProcess
) -> None:
    quick = "module.exports = async function* (input, n) { yield `run ${n}`; };\n"
    sequence = client.send_sequence(make_package({"index.js": quick}, MANIFEST))["id"]
    start(client, sequence, "0")
    booted = wait_for(lambda: spares(hub) if len(spares(hub)) >= 2 else None)
    for pid in booted:
        os.kill(pid, signal.SIGKILL)
    for n in range(1, 4):
        instance = start(client, sequence, str(n))
        output = b"".join(client.stream(f"instance/{instance}/output", follow=False))
        assert output == f'"run {n}"\n'.encode()  # a generator's strings: NDJSON
    wait_for(lambda: len(spares(hub)) >= 2 and not set(spares(hub)) & set(booted))
