"""The instance record: one schema for instance.json, the API's view and the end of life."""

from __future__ import annotations

import json

import pytest

from si.daemon.record import InstanceRecord, InstanceStatus, Route, RunOutcome
from si.daemon.restart import RestartMode, RestartPolicy

pytestmark = pytest.mark.timeout(10)


def a_record() -> InstanceRecord:
    return InstanceRecord(
        id="i-1",
        sequence_id="s-1",
        sequence={"id": "s-1", "name": "counter"},
        args=[1, "two"],
        app_config={"k": "v"},
        payload={"outputTopic": "numbers"},
        created=1_700_000_000.25,
        pid=4321,
        provides=Route("numbers", "text/plain"),
    )


def test_a_record_survives_instance_json() -> None:
    record = a_record()
    record.status = InstanceStatus.RUNNING
    record.started = 1_700_000_001.0
    again = InstanceRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert again.status is InstanceStatus.RUNNING


def test_supervision_state_survives_instance_json_and_shows_in_the_view() -> None:
    record = a_record()
    record.restart_policy = RestartPolicy(RestartMode.ON_FAILURE, 3, 30.0)
    decision = record.restart_state.decide(
        record.restart_policy, failed=True, by_user=False, started=0, now=10
    )
    assert decision is not None
    outcome = RunOutcome(InstanceStatus.ERRORED, "Runner killed by signal 9", 137, "SIGKILL")
    record.last_exit = outcome.last_exit(1_700_000_002.5)
    record.status = InstanceStatus.RESTARTING
    record.restart_at, record.output_base = 1_700_000_002.6, 12345
    again = InstanceRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert again.live
    view = again.sth_view(connected=False)
    assert view["status"] == "restarting"
    assert view["restarts"] == 1
    assert view["restartPolicy"] == {"restart": "on-failure", "maxRestarts": 3, "restartWindow": 30}
    assert view["lastExit"] == {
        "code": 137,
        "signal": "SIGKILL",
        "reason": "Runner killed by signal 9",
        "at": "2023-11-14T22:13:22.500Z",
    }


def test_end_sets_status_reason_code_and_time_at_once() -> None:
    record = a_record()
    assert record.live
    assert record.terminated is None
    record.end(InstanceStatus.ERRORED, "Runner killed by signal 9", 137)
    assert not record.live
    assert record.terminated == {"exitcode": 137, "reason": "Runner killed by signal 9"}
    assert record.ended is not None
    assert record.ended >= record.created
    saved = record.to_json()
    assert saved["status"] == "errored"
    assert saved["terminated"] == {"exitcode": 137, "reason": "Runner killed by signal 9"}


def test_end_refuses_a_live_status() -> None:
    with pytest.raises(AssertionError):
        a_record().end(InstanceStatus.RUNNING, "no", 0)


def test_the_sth_view_has_sth_names_and_iso_times_and_omits_nulls() -> None:
    view = a_record().sth_view(connected=True)
    assert view == {
        "id": "i-1",
        "appConfig": {"k": "v"},
        "args": [1, "two"],
        "sequence": {"id": "s-1", "name": "counter"},
        "created": "2023-11-14T22:13:20.250Z",
        "status": "starting",
        "pid": 4321,
        "connected": True,
        "provides": "numbers",
        "restartPolicy": {"restart": "no", "maxRestarts": 5, "restartWindow": 60.0},
        "restarts": 0,
    }


def test_an_unreadable_record_is_shown_lost_with_the_reason() -> None:
    record = InstanceRecord.unreadable("i-2", ValueError("bad json"))
    assert record.status is InstanceStatus.LOST
    assert record.terminated == {"exitcode": -1, "reason": "Instance record unreadable: bad json"}


@pytest.mark.parametrize(
    "data",
    [
        {"sequence_id": "s"},  # no id
        {"id": "i", "sequence_id": "s", "status": "sleeping"},  # not a status
        {"id": "i", "sequence_id": "s", "created": "yesterday"},
    ],
)
def test_a_record_the_hub_did_not_write_is_refused(data: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError, TypeError)):
        InstanceRecord.from_json(data)


def test_malformed_routes_are_no_routes() -> None:
    data = a_record().to_json()
    data["topics"] = {"provides": ["only-a-name"], "requires": [1, 2]}
    record = InstanceRecord.from_json(data)
    assert record.provides is None
    assert record.requires is None
