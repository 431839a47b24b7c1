"""The metrics text for a snapshot, checked with prometheus_client's parser; /proc parsing."""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from si.daemon.metrics import InstanceFigures, Snapshot, TopicFigures, process_figures, render

pytestmark = pytest.mark.timeout(10)


def test_a_snapshot_renders_as_valid_exposition_text() -> None:
    snapshot = Snapshot(
        uptime=12.5,
        statuses={"running": 1, "errored": 0},
        instances=[
            InstanceFigures('i"1', "s-1", "running", os.getpid(), 10, 20, 2, 3, 1.0),
            InstanceFigures("i-2", "s-1", "completed", None, 5, 0, 0, 0, 2.0),
        ],
        topics=[TopicFigures("t", 7, 1, 2)],
    )
    families = {f.name: f for f in text_string_to_metric_families(render(snapshot).decode())}
    assert families["si_instances"].type == "gauge"
    assert families["si_instance_output_bytes"].type == "counter"
    outputs = {s.labels["instance"]: s.value for s in families["si_instance_output_bytes"].samples}
    assert outputs == {'i"1': 10, "i-2": 5}  # a quote in an id is escaped, and read back
    rss = families["si_instance_rss_bytes"].samples
    assert [s.labels["instance"] for s in rss] == ['i"1']  # no pid, no process to measure
    assert rss[0].value > 0
    restarts = {s.labels["instance"]: s.value for s in families["si_instance_restarts"].samples}
    assert restarts == {'i"1': 3, "i-2": 0}
    assert families["si_topic_depth_bytes"].samples[0].value == 7
    assert families["si_topic_readers"].samples[0].value == 2


def test_process_figures_of_this_process_and_of_a_gone_one() -> None:
    figures = process_figures(os.getpid())
    assert figures is not None
    cpu, rss = figures
    assert cpu > 0
    assert rss > 1 << 20
    assert process_figures(2**22 + 1) is None  # above pid_max's default: no such process
