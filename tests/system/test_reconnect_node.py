"""The runner-reconnect system tests (test_reconnect.py), run again with JavaScript instances.

The tests are the same functions; only the sequences they start change: each Python sequence
source of that module is replaced by a Node.js package that does the same, so every guarantee
(re-adoption, no gap or repeat after kill -9, bounded buffers while the hub is away, input across
a restart, proven adoption) is checked for the Node.js runner too.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from si.testing import make_package
from tests.system import test_reconnect as reconnect

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
]

MANIFEST = {"name": "js-reconnect", "version": "1.0.0", "main": "index.js"}

# The JavaScript twin of each Python source test_reconnect.py starts.
TWINS = {
    reconnect.COUNTER: (
        "module.exports = async function* (_input, length, delay) {\n"
        "  const pause = Number(delay) * 1000;\n"
        "  for (let n = 0; n < Number(length); n++) {\n"
        "    yield n;\n"
        "    if (pause) await new Promise((resolve) => setTimeout(resolve, pause));\n"
        "  }\n"
        "};\n"
    ),
    reconnect.PASSTHROUGH: "module.exports = (input) => input;\n",
    # Blocks the whole event loop, as the Python one does, until the release file appears.
    reconnect.BLOCKING: (
        "const fs = require('node:fs');\n"
        "const { Readable } = require('node:stream');\n"
        "module.exports = (input, blocking, release) => Readable.from(async function* () {\n"
        "  for await (const line of input) {\n"
        "    if (String(line).includes('block')) {\n"
        "      fs.writeFileSync(blocking, '');\n"
        "      const pause = new Int32Array(new SharedArrayBuffer(4));\n"
        "      while (!fs.existsSync(release)) Atomics.wait(pause, 0, 0, 10);\n"
        "    }\n"
        "    yield line;\n"
        "  }\n"
        "}());\n"
    ),
}


def node_twin(source: str, **manifest: Any) -> bytes:
    return make_package({"index.js": TWINS[source]}, {**MANIFEST, **manifest})


@pytest.fixture(autouse=True)
def javascript_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconnect, "python_package", node_twin)


def _rebind(name: str) -> Any:
    return getattr(reconnect, name)


test_restart_readopts_every_instance_and_streams_lose_nothing = _rebind(
    "test_restart_readopts_every_instance_and_streams_lose_nothing"
)
test_restart_storm_keeps_runners_and_leaves_no_zombies_or_fds = _rebind(
    "test_restart_storm_keeps_runners_and_leaves_no_zombies_or_fds"
)
test_output_waits_in_bounded_buffers_while_the_hub_is_away = _rebind(
    "test_output_waits_in_bounded_buffers_while_the_hub_is_away"
)
test_runner_death_is_seen_within_a_second = _rebind("test_runner_death_is_seen_within_a_second")
test_input_sent_before_and_after_a_restart_arrives_complete_and_in_order = _rebind(
    "test_input_sent_before_and_after_a_restart_arrives_complete_and_in_order"
)
test_input_a_hub_wrote_just_before_it_died_reaches_a_runner_that_was_busy = _rebind(
    "test_input_a_hub_wrote_just_before_it_died_reaches_a_runner_that_was_busy"
)
test_an_upload_cut_by_a_hub_crash_fails_for_its_client = _rebind(
    "test_an_upload_cut_by_a_hub_crash_fails_for_its_client"
)
test_a_reused_pid_or_wrong_socket_marks_the_instance_lost_and_is_never_signalled = _rebind(
    "test_a_reused_pid_or_wrong_socket_marks_the_instance_lost_and_is_never_signalled"
)
test_a_corrupt_instance_record_affects_only_that_instance = _rebind(
    "test_a_corrupt_instance_record_affects_only_that_instance"
)
test_kill_on_exit_ends_instances_with_the_hub = _rebind(
    "test_kill_on_exit_ends_instances_with_the_hub"
)

test_every_follower_and_every_reader_arriving_during_readoption_sees_no_gap_and_no_repeat = _rebind(
    "test_every_follower_and_every_reader_arriving_during_readoption_sees_no_gap_and_no_repeat"
)


def test_every_reconnect_test_is_run_for_javascript_too() -> None:
    names = {name for name in vars(reconnect) if name.startswith("test_")}
    assert names <= set(globals()), f"not rebound here: {sorted(names - set(globals()))}"


test_a_forged_runner_record_with_the_real_socket_is_refused_and_its_pid_never_signalled = _rebind(
    "test_a_forged_runner_record_with_the_real_socket_is_refused_and_its_pid_never_signalled"
)
