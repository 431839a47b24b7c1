"""Joining a cluster: optional, lazy, and never at the cost of the local API."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, NatsCluster, python_package, unix_socket_answers, wait_for
from tests.cluster.conftest import MakeHub

pytestmark = pytest.mark.system

IDLE = "import asyncio\nasync def run(context, input):\n    await asyncio.sleep(60)\n"


def _imports_of(log: str) -> set[str]:
    """Module names from ``python -X importtime`` lines: ``import time: self | total | name``."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in log.splitlines()
        if line.startswith("import time:")
    }


def test_a_hub_without_nats_imports_nothing_of_the_cluster(short_dir: Path) -> None:
    hub = HubProcess(short_dir / "alone")  # for its paths and kill_runners
    hub.home.mkdir()
    # -X importtime lists every module the hub imports, on its stderr.
    command = [sys.executable, "-X", "importtime", "-m", "si.daemon", "--home", str(hub.home)]
    log = short_dir / "importtime.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: unix_socket_answers(hub.socket), timeout=20)
        with HubClient(hub.address) as client:
            sequence_id = client.send_sequence(python_package(IDLE))["id"]
            client.start_sequence(sequence_id, {})
            with pytest.raises(HubError, match="not in a cluster"):
                client.cluster_hubs()
    finally:
        process.terminate()
        process.wait(10)
        hub.kill_runners()
    modules = _imports_of(log.read_text())
    assert "si.daemon.serve" in modules  # the listing is real
    assert not {m for m in modules if m == "nats" or m.startswith(("nats.", "si.daemon.cluster"))}


def test_the_cli_never_imports_nats() -> None:
    code = (
        "import sys\n"
        "from si.cli.app import main\n"
        "for args in (['hub', 'ls', '--help'], ['seq', 'start', '--help'], ['inst', 'ls', '-h']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import si.cli.hub, si.cli.seq, si.cli.inst, si.cli.topic, si.client\n"
        "bad = [m for m in sys.modules if m == 'nats' or m.startswith(('nats.', 'si.daemon.c'))]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_hub_whose_nats_is_down_serves_locally_then_joins_when_it_comes_up(
    short_dir: Path,
) -> None:
    cluster = NatsCluster(short_dir / "nats", size=3)  # configured, not started yet
    hub = HubProcess(short_dir / "a", "--nats", cluster.url_list, "--hub-name", "a")
    try:
        hub.start()
        with HubClient(hub.address) as client:
            sequence_id = client.send_sequence(python_package(IDLE))["id"]
            client.start_sequence(sequence_id, {})
            assert len(client.list_instances()) == 1
            with pytest.raises(HubError) as refused:
                client.cluster_hubs()
            assert refused.value.status == 503
            assert client.cluster_status()["connected"] is False
            wait_for(lambda: "cannot join the cluster" in hub.log(), timeout=10)
            cluster.start()
            hubs = wait_for(lambda: _hubs_or_none(client), timeout=20)
            assert [h["name"] for h in hubs] == ["a"]
            # Uploaded while NATS was down: shared once it is back.
            shared = wait_for(lambda: client.cluster_sequences(), timeout=20)
            assert [s["id"] for s in shared] == [sequence_id]
        assert hub.process is not None
        assert hub.process.poll() is None
    finally:
        hub.close()
        cluster.close()


def _hubs_or_none(client: HubClient) -> list[dict[str, object]] | None:
    try:
        return client.cluster_hubs() or None
    except HubError:
        return None


def test_a_hub_keeps_serving_through_its_nats_server_going_away(
    make_hub: MakeHub, nats_cluster: NatsCluster
) -> None:
    """Every NATS node killed: the local API answers at once; cluster calls are 503."""
    hub = make_hub("a")
    with HubClient(hub.address) as client:
        wait_for(lambda: _hubs_or_none(client), timeout=10)
        for node in nats_cluster.nodes:
            node.kill()
        started = time.monotonic()
        assert client.version()
        sequence_id = client.send_sequence(python_package(IDLE))["id"]
        client.start_sequence(sequence_id, {})
        assert time.monotonic() - started < 5
        with pytest.raises(HubError) as refused:
            client.cluster_hubs()
        assert refused.value.status == 503
        assert hub.process is not None
        assert hub.process.poll() is None
