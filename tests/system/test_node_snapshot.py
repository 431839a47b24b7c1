"""Warm Node spares booted from the runner's startup snapshot (issue 20), through a real hub.

The hub builds the snapshot in the background once it has a JavaScript sequence; spares boot
from it once it exists. What must hold: a runner from the snapshot runs every kind of package
a cold runner does (CommonJS, an ES module package, CommonJS importing an ES module), and a
snapshot that cannot be built, or is turned off, leaves spares booting from runner.js.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from si.client import HubClient
from si.daemon.node import NodeSnapshot
from si.testing import HubProcess, make_package, wait_for

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
    pytest.mark.timeout(120),
]

MANIFEST = {"name": "snap", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}}

# Each writes a word and then lives until its input ends, so the test can see its process.
DRAIN = "  for await (const _ of input);\n"
PACKAGES = {
    "commonjs": (
        {
            "index.js": "module.exports = async function* (input) {\n  yield 'cjs';\n"
            + DRAIN
            + "};\n"
        },
        {},
        b'"cjs"\n',
    ),
    "an ES module package": (
        {"index.js": "export default async function* (input) {\n  yield 'esm';\n" + DRAIN + "}\n"},
        {"type": "module"},
        b'"esm"\n',
    ),
    "commonjs importing an ES module": (
        {
            "index.js": (
                "module.exports = async function* (input) {\n"
                "  const { word } = await import('./word.mjs');\n"
                "  yield word;\n" + DRAIN + "};\n"
            ),
            "word.mjs": "export const word = 'imported';\n",
        },
        {},
        b'"imported"\n',
    ),
}


def started(client: HubClient, hub: HubProcess, sequence: str) -> tuple[list[str], bytes]:
    """Start ``sequence``: the command line of its runner, and its output once its input
    ended."""
    instance = client.start_sequence(sequence, {})["id"]
    argv = runner_argv(hub, instance)
    client.send_input(instance, [b""], content_type="text/plain", end=True)
    return argv, output(client, instance)


def runner_argv(hub: HubProcess, instance: str) -> list[str]:
    pid = hub.runner_identities()[instance].pid
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def output(client: HubClient, instance: str) -> bytes:
    return b"".join(client.stream(f"instance/{instance}/output", follow=True))


def blobs(home: Path) -> list[Path]:
    return sorted((home / "node-snapshot").glob("runner-*.blob"))


def test_spares_boot_from_the_snapshot_and_run_every_kind_of_package(hub: HubProcess) -> None:
    client = HubClient(hub.address)
    sequences = {
        kind: client.send_sequence(make_package(files, {**MANIFEST, **manifest}))["id"]
        for kind, (files, manifest, _) in PACKAGES.items()
    }
    wait_for(lambda: bool(blobs(hub.home)), timeout=30)  # built after the uploads
    from_snapshot: set[str] = set()
    # The first start after the blob appears finds spares of the old kind: it starts cold and
    # the pool refills from the snapshot. Some rounds make sure each kind met a snapshot spare.
    for _ in range(4):
        for kind, sequence in sequences.items():
            argv, out = started(client, hub, sequence)
            assert out == PACKAGES[kind][2], kind
            if "--snapshot-blob" in argv:
                assert argv[-2:] == ["--", "--spare"]
                from_snapshot.add(kind)
    assert from_snapshot == set(PACKAGES)


def test_without_the_snapshot_spares_boot_from_runner_js(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SI_NODE_SNAPSHOT", "0")
    hub = HubProcess(tmp_path / "home").start()
    try:
        client = HubClient(hub.address)
        files, manifest, expected = PACKAGES["commonjs"]
        sequence = client.send_sequence(make_package(files, {**MANIFEST, **manifest}))["id"]
        for _ in range(3):
            argv, out = started(client, hub, sequence)
            assert out == expected
            assert "--snapshot-blob" not in argv
            assert argv[-2].endswith("runner.js")
        assert blobs(hub.home) == []
    finally:
        hub.close()


def test_a_snapshot_that_cannot_be_built_leaves_the_hub_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose snapshot build fails (here: a wrapper that refuses --build-snapshot) is
    logged once; instances still start, from runner.js."""
    wrapper = tmp_path / "node"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do\n'
        '  [ "$a" = --build-snapshot ] && { echo "no snapshots" >&2; exit 9; }\n'
        "done\n"
        f'exec {shutil.which("node")} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("SI_NODE", str(wrapper))
    hub = HubProcess(tmp_path / "home").start()
    try:
        client = HubClient(hub.address)
        files, manifest, expected = PACKAGES["commonjs"]
        sequence = client.send_sequence(make_package(files, {**MANIFEST, **manifest}))["id"]
        wait_for(lambda: "without a startup snapshot" in hub.log(), timeout=30)
        for _ in range(3):
            argv, out = started(client, hub, sequence)
            assert "--snapshot-blob" not in argv
            assert out == expected
        assert "no snapshots" in hub.log()
        assert blobs(hub.home) == []
    finally:
        hub.close()


def test_a_blob_is_named_by_its_node_and_sources_and_replaces_stale_ones(tmp_path: Path) -> None:
    stale = tmp_path / "runner-0000000000000000.blob"
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"from an older si")
    snapshot = NodeSnapshot(tmp_path)
    assert snapshot.ready() is None
    assert snapshot.wanted()
    built = snapshot.build()
    assert built.parent == tmp_path
    assert built.stat().st_size > 1 << 20
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no scratch left behind
    again = NodeSnapshot(tmp_path)  # the next hub on this home finds it
    assert again.ready() == built
    assert not again.wanted()
