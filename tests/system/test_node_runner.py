"""JavaScript sequences through a real hub and the Node.js runner (si/runner/node/).

The user's guide examples (examples/js/) run exactly; STH's sequence shapes, output rules and
input types; the context; exit codes; backpressure; and a hub crash in the middle of a stream.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from si.client import HubClient, HubError
from si.testing import HubProcess, make_package, python_package, wait_for
from tests.system.conftest import REPO, Cli

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
]

EXAMPLES = REPO / "examples" / "js"
MANIFEST = {"name": "js-test", "version": "1.0.0", "main": "index.js", "engines": {"node": ">=20"}}


# -- helpers --------------------------------------------------------------------------------


def node_package(
    source: str, files: dict[str, str | bytes] | None = None, **manifest: Any
) -> bytes:
    """A JavaScript sequence package whose index.js is ``source``."""
    return make_package({"index.js": source, **(files or {})}, {**MANIFEST, **manifest})


def example_package(directory: Path) -> bytes:
    """The package of an example directory, as ``si seq pack`` would make it."""
    files: dict[str, str | bytes] = {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    return make_package(files)


def run(client: HubClient, package: bytes, *args: str, **start: Any) -> str:
    sequence = client.send_sequence(package)["id"]
    return str(client.start_sequence(sequence, {"args": list(args), **start})["id"])


def output(client: HubClient, instance: str) -> bytes:
    return b"".join(client.stream(f"instance/{instance}/output", follow=False))


class Reader(threading.Thread):
    """Reads an instance's output while the test writes its input (backpressure is end to end:
    a writer whose output nobody reads stalls once the windows are full)."""

    def __init__(self, client: HubClient, instance: str, *, follow: bool = False) -> None:
        super().__init__(daemon=True)
        self.stream = client.stream(f"instance/{instance}/output", follow=follow)
        self.data = bytearray()

    def run(self) -> None:
        for chunk in self.stream:
            self.data += chunk

    def result(self, timeout: float = 30) -> bytes:
        self.join(timeout)
        assert not self.is_alive(), "the output did not end"
        return bytes(self.data)


def finished(client: HubClient, instance: str, timeout: float = 10.0) -> dict[str, Any]:
    return wait_for(
        lambda: (i := client.get_instance(instance))["status"] in ("completed", "errored") and i,
        timeout=timeout,
    )


def instance_file(hub: HubProcess, instance: str, name: str) -> bytes:
    try:
        return (hub.home / "instances" / instance / name).read_bytes()
    except OSError:
        return b""


def log_of(client: HubClient, instance: str) -> bytes:
    """The instance's log as the hub serves it (after the instance ended: all of it)."""
    finished(client, instance)
    return b"".join(client.stream(f"instance/{instance}/log", follow=False))


def ndjson(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines()]


# -- the user's guide -----------------------------------------------------------------------


def test_guide_counter_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    package = tmp_path / "counter.tar.gz"
    packed = cli.run("seq", "pack", str(EXAMPLES / "counter"), "-o", str(package))
    assert packed.returncode == 0, packed.stderr
    assert cli.run("seq", "send", "-").returncode == 0
    started = cli.run("seq", "start", "-", "3000", "10")
    assert started.returncode == 0, started.stderr
    shown = cli.run("inst", "output", "-")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode().split() == [str(n) for n in range(3000, 3010)]


def test_guide_consumer_saves_every_id(client: HubClient) -> None:
    instance = run(client, example_package(EXAMPLES / "consumer"))
    client.send_input(instance, b"1\n2\n3\n", content_type="application/x-ndjson", end=True)
    assert ndjson(output(client, instance)) == [
        {"saved": 1, "count": 1},
        {"saved": 2, "count": 2},
        {"saved": 3, "count": 3},
    ]
    assert finished(client, instance)["terminated"] == {
        "exitcode": 0,
        "reason": "Instance completed",
    }


def test_guide_transformer_looks_up_every_id(client: HubClient) -> None:
    instance = run(client, example_package(EXAMPLES / "transformer"))
    client.send_input(instance, b"2\n3\n7\n", content_type="application/x-ndjson", end=True)
    assert ndjson(output(client, instance)) == [
        {"id": 2, "name": "Grace", "role": "admiral"},
        {"id": 3, "name": "Edsger", "role": "professor"},
        None,
    ]


def test_guide_producer_writes_page_after_page_until_killed(client: HubClient) -> None:
    instance = run(client, example_package(EXAMPLES / "producer"))
    received = bytearray()
    arrived: dict[int, float] = {}  # lines received -> when
    for chunk in client.stream(f"instance/{instance}/output", follow=True):
        received += chunk
        arrived.setdefault(received.count(b"\n"), time.monotonic())
        if received.count(b"\n") >= 6:
            break
    first_page = min(t for n, t in arrived.items() if n >= 3)
    second_page = min(t for n, t in arrived.items() if n >= 6)
    assert second_page - first_page >= 0.5  # the producer waits a second between pages
    assert ndjson(bytes(received))[:6] == [
        {"page": page, "record": record}
        for page, record in [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    ]
    client.kill_instance(instance)
    assert finished(client, instance)["terminated"]["exitcode"] == 137


def test_guide_operator_calls_the_api_every_second(client: HubClient, hub: HubProcess) -> None:
    instance = run(client, example_package(EXAMPLES / "operator"))
    wait_for(lambda: b"called the API (2)" in instance_file(hub, instance, "stdout"), timeout=5)
    client.stop_instance(instance, 500, can_call_keepalive=False)
    info = finished(client, instance)
    assert info["terminated"] == {"exitcode": 138, "reason": "Instance stopped"}
    assert output(client, instance) == b""
    assert instance_file(hub, instance, "stdout").startswith(
        b"called the API (1)\ncalled the API (2)\n"
    )


def test_typescript_sequence_compiled_to_dist(client: HubClient, hub: HubProcess) -> None:
    instance = run(
        client, example_package(EXAMPLES / "typescript" / "dist"), "K", appConfig={"precision": 1}
    )
    readings = b'{"sensor":"a","celsius":21.5}\n{"sensor":"b","celsius":-273.15}\n'
    client.send_input(instance, readings, content_type="application/x-ndjson", end=True)
    assert ndjson(output(client, instance)) == [
        {"sensor": "a", "value": 294.6, "unit": "K"},
        {"sensor": "b", "value": 0, "unit": "K"},
    ]
    [entry] = ndjson(log_of(client, instance))
    assert (entry["level"], entry["msg"], entry["from"]) == ("INFO", "converting to K", "Sequence")
    assert entry["Sequence"] == {"id": instance}


def test_pack_warns_when_main_is_typescript(cli: Cli, tmp_path: Path) -> None:
    packed = cli.run("seq", "pack", str(EXAMPLES / "typescript"), "-o", str(tmp_path / "ts.tar.gz"))
    assert packed.returncode == 0, packed.stderr
    assert b"TypeScript" in packed.stderr


# -- sequence shapes and output rules ------------------------------------------------------


SHAPES = {
    "async function returning a string": (
        "module.exports = async function (input, ...args) { return args.join('+'); };",
        b"a+b",
    ),
    "plain value written once as text": ("module.exports = () => 42;", b"42"),
    "returning nothing writes nothing": ("module.exports = async function () {};", b""),
    "a Buffer is written raw": (
        "module.exports = () => Buffer.from([0, 255, 10]);",
        b"\x00\xff\n",
    ),
    "an object is one JSON line": ("module.exports = () => ({ a: [1, 'x'] });", b'{"a":[1,"x"]}\n'),
    "an array is NDJSON": (
        "module.exports = () => [1, 'two', { three: 3 }, null];",
        b'1\n"two"\n{"three":3}\nnull\n',
    ),
    "a sync generator is NDJSON": (
        "module.exports = function* (_input, n) { for (let i = 0; i < Number(n); i++) yield i; };",
        b"0\n1\n2\n",
    ),
    "an async generator skips undefined": (
        "module.exports = async function* () { yield 'x'; yield undefined; yield 'y'; };",
        b'"x"\n"y"\n',
    ),
    "a byte stream is raw": (
        "const { Readable } = require('stream');\n"
        "module.exports = () => Readable.from(['ab', 'cd'], { objectMode: false });",
        b"abcd",
    ),
    "a Node object-mode stream is raw, as STH pipes it": (
        "const { Readable } = require('stream');\n"
        "module.exports = () =>\n"
        "  Readable.from(async function* () { yield 'one\\n'; yield 'two'; }());",
        b"one\ntwo",
    ),
    "an object in a raw stream is one JSON line (STH's pipe would fail)": (
        "const { Readable } = require('stream');\n"
        "module.exports = () => Readable.from([{ n: 1 }, 'two']);",
        b'{"n":1}\ntwo',
    ),
    "a declared contentType wins": (
        "module.exports = function () {\n"
        "  const out = (async function* () { yield 'raw '; yield 'text'; })();\n"
        "  out.contentType = 'text/plain';\n"
        "  return out;\n"
        "};",
        b"raw text",
    ),
    "a promise of a value": ("module.exports = () => Promise.resolve('later');", b"later"),
    "an array of functions is a chain": (
        "module.exports = [\n"
        "  async function* (_input, n) { for (let i = 0; i < Number(n); i++) yield i; },\n"
        "  async function* (numbers) { for await (const x of numbers) yield x * 10; },\n"
        "  function (tens) { return tens; },\n"
        "];",
        b"0\n10\n20\n",
    ),
    "a leading declaration object sets the input type": (
        "module.exports = [\n"
        "  { requires: 'numbers', contentType: 'application/x-ndjson' },\n"
        "  function (input) { return 'input is ' + input.contentType; },\n"
        "];",
        b"input is application/x-ndjson",
    ),
    "this is the context": (
        "module.exports = function () {\n"
        "  return JSON.stringify({ config: this.config, id: this.instanceId.length,\n"
        "    has: ['logger', 'on', 'emit', 'keepAlive', 'addStopHandler', 'addKillHandler',\n"
        "          'addMonitoringHandler', 'end'].filter((k) => this[k]) });\n"
        "};",
        b'{"config":{"k":"v"},"id":36,"has":["logger","on","emit","keepAlive","addStopHandler",'
        b'"addKillHandler","addMonitoringHandler","end"]}',
    ),
    "export default of a compiled module": (
        "Object.defineProperty(exports, '__esModule', { value: true });\n"
        "exports.default = () => 'default export';",
        b"default export",
    ),
}


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_sequence_shapes_and_output(client: HubClient, shape: str) -> None:
    source, expected = SHAPES[shape]
    args = ["3"] if "n)" in source else ["a", "b"]
    instance = run(client, node_package(source), *args, appConfig={"k": "v"})
    assert output(client, instance) == expected
    assert finished(client, instance)["terminated"]["exitcode"] == 0


def test_main_without_extension_and_bundled_node_modules(client: HubClient) -> None:
    files = {
        "lib/main.js": "const shout = require('shout');\nmodule.exports = () => shout('hi');\n",
        "node_modules/shout/package.json": '{"name": "shout", "main": "shout.js"}',
        "node_modules/shout/shout.js": "module.exports = (s) => s.toUpperCase() + '!';\n",
    }
    package = make_package(files, {**MANIFEST, "main": "lib/main"})
    instance = run(client, package)
    assert output(client, instance) == b"HI!"


def test_an_es_module_package(client: HubClient) -> None:
    source = "export default async function* () { yield 'esm'; }\n"
    instance = run(client, node_package(source, type="module"))
    assert output(client, instance) == b'"esm"\n'


def test_working_directory_is_the_package(client: HubClient) -> None:
    source = "const fs = require('fs');\nmodule.exports = () => fs.readFileSync('data.txt');\n"
    instance = run(client, node_package(source, {"data.txt": "from the package\n"}))
    assert output(client, instance) == b"from the package\n"


# -- input --------------------------------------------------------------------------------


def checked_passthrough(kind: str, check: str) -> str:
    """A sequence passing its input through, failing if a chunk is not what ``check`` says."""
    return (
        "module.exports = function (input) {\n"
        "  const out = (async function* () {\n"
        "    for await (const chunk of input) {\n"
        f"      if (!({check})) throw new Error('unexpected chunk type');\n"
        "      yield chunk;\n"
        "    }\n"
        "  })();\n"
        f"  out.contentType = '{kind}';\n"
        "  return out;\n"
        "};\n"
    )


def test_text_input_arrives_as_strings(client: HubClient) -> None:
    source = checked_passthrough("text/plain", "typeof chunk === 'string'")
    instance = run(client, node_package(source))
    lines = [f"línea {n}\n".encode() for n in range(2000)]
    client.send_input(instance, iter(lines[:1000]), content_type="text/plain", end=False)
    client.send_input(instance, iter(lines[1000:]), content_type="text/plain", end=True)
    assert output(client, instance) == b"".join(lines)
    assert finished(client, instance)["terminated"]["exitcode"] == 0


def test_binary_input_arrives_as_buffers(client: HubClient) -> None:
    source = checked_passthrough("application/octet-stream", "Buffer.isBuffer(chunk)")
    instance = run(client, node_package(source))
    reader = Reader(client, instance)
    reader.start()
    data = os.urandom(3 * 1024 * 1024 + 17)
    client.send_input(instance, data, content_type="application/octet-stream", end=True)
    assert reader.result() == data
    assert finished(client, instance)["terminated"]["exitcode"] == 0


def test_returning_the_input_passes_it_through_unchanged(client: HubClient) -> None:
    instance = run(client, node_package("module.exports = (input) => input;\n"))
    lines = b"".join(f"{n}\n".encode() for n in range(5000))
    client.send_input(instance, lines, content_type="text/plain", end=True)
    assert output(client, instance) == lines


def test_ndjson_input_arrives_parsed(client: HubClient) -> None:
    source = (
        "module.exports = async function* (input) {\n"
        "  for await (const value of input) yield { type: typeof value, value };\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    body = '1\n"två"\n{"a": [true]}\n\nnull\n[1,2]'.encode()  # no newline after the last value
    client.send_input(instance, [body[:9], body[9:]], content_type="application/x-ndjson", end=True)
    assert ndjson(output(client, instance)) == [
        {"type": "number", "value": 1},
        {"type": "string", "value": "två"},
        {"type": "object", "value": {"a": [True]}},
        {"type": "object", "value": [1, 2]},
    ]


def test_unsupported_input_type_fails_the_reader(client: HubClient) -> None:
    source = "module.exports = async function* (input) { for await (const x of input) yield x; };\n"
    instance = run(client, node_package(source))
    client.send_input(instance, b"<a/>", content_type="application/xml", end=True)
    info = finished(client, instance)
    assert info["terminated"]["exitcode"] == 23


# -- the context ----------------------------------------------------------------------------


def test_logger_writes_json_lines_to_the_instance_log(client: HubClient, hub: HubProcess) -> None:
    source = (
        "module.exports = function () {\n"
        "  this.logger.info('hello', { n: 1 });\n"
        "  this.logger.error('bad');\n"
        "  this.logger.debug({ only: 'data' });\n"
        "  return 'ok';\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    assert output(client, instance) == b"ok"
    entries = ndjson(log_of(client, instance))
    assert [(e["level"], e["msg"], e.get("data")) for e in entries] == [
        ("INFO", "hello", [{"n": 1}]),
        ("ERROR", "bad", None),
        ("DEBUG", "", [{"only": "data"}]),
    ]
    assert all(e["from"] == "Sequence" and e["Sequence"] == {"id": instance} for e in entries)
    assert all(abs(e["ts"] / 1000 - time.time()) < 60 for e in entries)


FOREVER = "await new Promise(() => {});"


def test_stop_runs_stop_handlers_then_exits_stopped(client: HubClient, hub: HubProcess) -> None:
    source = (
        "const fs = require('fs');\n"
        "module.exports = async function () {\n"
        "  this.addStopHandler(async (timeout, canKeepAlive) => {\n"
        "    fs.writeSync(1, `stopping ${timeout} ${canKeepAlive}\\n`);\n"
        "  });\n"
        f"  {FOREVER}\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    client.stop_instance(instance, 3000, can_call_keepalive=False)
    assert finished(client, instance)["terminated"] == {
        "exitcode": 138,
        "reason": "Instance stopped",
    }
    assert instance_file(hub, instance, "stdout") == b"stopping 3000 false\n"


def test_keep_alive_survives_a_stop_and_a_later_kill_ends_stopped(client: HubClient) -> None:
    source = (
        "module.exports = async function () {\n"
        "  this.addStopHandler(() => { this.keepAlive(5000); });\n"
        f"  {FOREVER}\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    client.stop_instance(instance, 300, can_call_keepalive=True)
    time.sleep(0.5)
    assert client.get_instance(instance)["status"] == "stopping"
    client.kill_instance(instance)
    assert finished(client, instance)["terminated"]["exitcode"] == 138


def test_kill_runs_kill_handlers_and_exits_killed(client: HubClient, hub: HubProcess) -> None:
    source = (
        "const fs = require('fs');\n"
        "module.exports = async function () {\n"
        "  this.addKillHandler(() => fs.writeSync(1, 'killed\\n'));\n"
        f"  {FOREVER}\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    client.kill_instance(instance)
    assert finished(client, instance)["terminated"] == {
        "exitcode": 137,
        "reason": "Instance killed",
    }
    assert instance_file(hub, instance, "stdout") == b"killed\n"


def test_end_completes_the_instance(client: HubClient) -> None:
    source = (
        "module.exports = async function () {\n"
        "  setTimeout(() => this.end(), 50);\n"
        f"  {FOREVER}\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    assert finished(client, instance)["terminated"] == {
        "exitcode": 0,
        "reason": "Instance completed",
    }


def test_log_rotates_like_the_python_runner(client: HubClient, hub: HubProcess) -> None:
    source = (
        "module.exports = async function () {\n"
        "  for (let n = 0; n < 20000; n++) this.logger.info(String(n), 'x'.repeat(60));\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    numbers = [int(entry["msg"]) for entry in ndjson(log_of(client, instance))]
    segments = sorted((hub.home / "instances" / instance / "log").iterdir())
    assert 2 <= len(segments) <= 5  # rotated at 1 MiB, five kept
    assert numbers == list(range(numbers[0], 20000))


EVENTS = (
    "module.exports = async function () {\n"
    "  this.on('ping', (message) => this.emit('reply', `reply to ${message}`));\n"
    "  this.addMonitoringHandler(() => ({ healthy: true, mood: 'fine' }));\n"
    f"  {FOREVER}\n"
    "};\n"
)


def test_events_both_ways_and_health(client: HubClient) -> None:
    instance = run(client, node_package(EVENTS))
    reply: list[object] = []
    waiter = threading.Thread(
        target=lambda: reply.append(client.get_event(instance, "reply", wait_next=True)),
        daemon=True,
    )
    waiter.start()

    def ping() -> list[object]:
        # Sent until the waiter has its answer: a ping before it asked is not "the next".
        client.emit_event(instance, "ping", "hello")
        waiter.join(0.1)
        return reply

    assert wait_for(ping) == ["reply to hello"]
    assert client.get_event(instance, "reply") == "reply to hello"
    health = wait_for(lambda: (h := client.instance_health(instance)).get("mood") and h)
    assert health["healthy"] is True


def test_events_travel_between_javascript_and_python_instances(client: HubClient) -> None:
    listener = client.start_sequence(client.send_sequence(node_package(EVENTS))["id"], {})["id"]
    speaker = (
        "import asyncio\n\n"
        "async def run(context, input):\n"
        "    await asyncio.sleep(0.5)\n"
        "    context.emit('ping', 'from Python')\n"
        "    while True:\n"
        "        await asyncio.sleep(0.05)\n"
    )
    heard: list[object] = []
    waiter = threading.Thread(
        target=lambda: heard.append(client.get_event(listener, "reply", wait_next=True)),
        daemon=True,
    )
    waiter.start()
    client.start_sequence(client.send_sequence(python_package(speaker))["id"], {})
    waiter.join(10)
    assert heard == ["reply to from Python"]


def test_stdin_is_process_stdin(client: HubClient) -> None:
    source = (
        "module.exports = async function* () {\n"
        "  for await (const chunk of process.stdin) yield chunk.toString().toUpperCase();\n"
        "};\n"
    )
    instance = run(client, node_package(source))
    client.send_stdin(instance, b"shout\nthis\n", end=True)
    assert "".join(ndjson(output(client, instance))) == "SHOUT\nTHIS\n"


# -- failures and exit codes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("module.exports = async function (input {\n", "SyntaxError"),
        ("require('no-such-module-here');\n", "Cannot find module 'no-such-module-here'"),
        ("throw new Error('boom at load');\n", "boom at load"),
        ("module.exports = { not: 'a function' };\n", "must export a function"),
    ],
)
def test_load_failures_answer_with_the_reason(client: HubClient, source: str, reason: str) -> None:
    sequence = client.send_sequence(node_package(source))["id"]
    with pytest.raises(HubError, match=reason):
        client.start_sequence(sequence, {})
    [instance] = client.list_instances()
    assert instance["status"] == "errored"
    assert instance["terminated"]["exitcode"] == 22


def test_a_missing_entry_file_exits_21(client: HubClient, hub: HubProcess) -> None:
    sequence = client.send_sequence(node_package("module.exports = () => 1;\n"))["id"]
    for entry in (hub.home / "sequences" / sequence).rglob("index.js"):
        entry.unlink()
    with pytest.raises(HubError, match="entrypoint path"):
        client.start_sequence(sequence, {})
    [instance] = client.list_instances()
    assert instance["terminated"]["exitcode"] == 21


# A moment before failing, so that the start succeeds and the failure is the instance's.
PAUSE = "await new Promise((resolve) => setTimeout(resolve, 300));"


@pytest.mark.parametrize(
    "source",
    [
        "module.exports = async function* () {"
        f" yield 1; yield 2; {PAUSE} throw new Error('mid-stream'); }};",
        "module.exports = async function () {"
        f" {PAUSE} setTimeout(() => {{ throw new Error('in a timer'); }}); {FOREVER} }};",
        f"module.exports = [async function () {{ {PAUSE} }}, function (x) {{ return x; }}];",
    ],
    ids=["generator throws", "uncaught exception", "chain ended prematurely"],
)
def test_failures_during_execution_exit_23(client: HubClient, hub: HubProcess, source: str) -> None:
    instance = run(client, node_package(source))
    info = finished(client, instance)
    assert info["status"] == "errored"
    assert info["terminated"] == {"exitcode": 23, "reason": "Sequence failed during execution"}
    assert b"Error" in instance_file(hub, instance, "stderr")
    if "mid-stream" in source:
        assert output(client, instance) == b"1\n2\n"


# -- backpressure and reconnect -------------------------------------------------------------


def test_output_is_not_pulled_while_nobody_reads(client: HubClient, hub: HubProcess) -> None:
    # Each item is 1000 bytes; the generator reports how many it was asked for on stdout.
    source = (
        "const fs = require('fs');\n"
        "module.exports = async function* () {\n"
        "  for (let n = 1; n <= 5000; n++) { fs.writeSync(1, `${n}\\n`); yield 'x'.repeat(997); }\n"
        "};\n"
    )
    instance = run(client, node_package(source))

    def pulled() -> int:
        lines = instance_file(hub, instance, "stdout").split()
        return int(lines[-1]) if lines else 0

    wait_for(lambda: pulled() > 1000)
    time.sleep(1.0)
    held = pulled()
    time.sleep(1.0)
    assert pulled() == held  # stalled: the window is full and nobody reads
    # At most: the window (1 MiB), a batch (64 KiB) sent while the window had a byte left, a
    # batch waiting for the window, and the item in hand.
    assert held * 1000 <= (1 << 20) + 2 * 64 * 1024 + 1000
    assert len(output(client, instance)) == 5000 * 1000
    assert pulled() == 5000


def test_output_follows_across_a_hub_crash_without_gap_or_repeat(
    client: HubClient, hub: HubProcess
) -> None:
    source = (
        "module.exports = async function* (_input, length) {\n"
        "  for (let n = 0; n < Number(length); n++) {\n"
        "    yield n;\n"
        "    await new Promise((resolve) => setTimeout(resolve, 5));\n"
        "  }\n"
        "};\n"
    )
    instance = run(client, node_package(source), "400")
    runner = hub.runner_identities()[instance]
    reader = Reader(HubClient(hub.address, follow_timeout=30), instance, follow=True)
    reader.start()
    wait_for(lambda: reader.data.count(b"\n") >= 50)
    hub.crash()
    hub.start()
    received = reader.result()
    assert [int(n) for n in received.split()] == list(range(400))
    assert runner.pid == hub.runner_identities()[instance].pid


# -- topics ------------------------------------------------------------------------------------


FAST_PRODUCER = """
const { Readable } = require('node:stream');
module.exports = function (input, name) {
  const stream = Readable.from([{ n: 1 }, { n: 2 }, { n: 3 }]);
  stream.topic = name;
  stream.contentType = 'application/x-ndjson';
  return stream;
};
"""


def test_a_producer_that_ends_at_once_still_feeds_its_topic(
    client: HubClient, hub: HubProcess
) -> None:
    """The topic declared on the returned stream reaches the hub even when the runner has
    finished before the hub connected: the runner records it in declared.json first, as the
    Python runner does, and the hub reads that once it sees the runner gone."""
    name = "fast"
    sequence = client.send_sequence(node_package(FAST_PRODUCER))["id"]
    for _ in range(3):  # the later starts go to warm spares: the fastest runners there are
        instance = client.start_sequence(sequence, {"args": [name]})["id"]

        def ended(i: str = instance) -> bool:
            return bool(client.get_instance(i).get("status") != "running")

        wait_for(ended)
        declared = json.loads((hub.home / "instances" / instance / "declared.json").read_text())
        assert declared["provides"] == {"provides": name, "contentType": "application/x-ndjson"}
    received = bytearray()
    for chunk in client.topic_stream(name, "application/x-ndjson"):
        received += chunk
        if received.count(b"\n") >= 9:
            break
    assert ndjson(bytes(received)) == [{"n": 1}, {"n": 2}, {"n": 3}] * 3
