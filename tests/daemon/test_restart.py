"""Restart policies under trio's autojump clock: counts, backoff, flapping, forgiveness."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from si.daemon.restart import (
    BACKOFF_MAX,
    GiveUp,
    PolicyError,
    Restart,
    RestartMode,
    RestartPolicy,
    RestartState,
    RunEnd,
    Stay,
    keep_running,
)

pytestmark = pytest.mark.timeout(10)

CRASHED = RunEnd(failed=True)


class Crasher:
    """A run that lasts ``lasts`` seconds of the (autojump) clock, then ends as told."""

    def __init__(self, lasts: float = 0.0, end: RunEnd = CRASHED) -> None:
        self.lasts = lasts
        self.end = end
        self.starts: list[float] = []

    async def __call__(self) -> RunEnd:
        self.starts.append(trio.current_time())
        await trio.sleep(self.lasts)
        return self.end


async def test_a_crash_loop_backs_off_doubling_then_ends_flapping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crasher = Crasher()
    state = RestartState()
    policy = RestartPolicy(RestartMode.ON_FAILURE, max_restarts=5, window=60)
    decision = await keep_running(crasher, policy, state)
    assert decision == GiveUp("flapping")
    # The first run, then five restarts 0.1, 0.2, 0.4, 0.8, 1.6 s after each crash.
    assert [round(t, 3) for t in crasher.starts] == [0.0, 0.1, 0.3, 0.7, 1.5, 3.1]
    assert state.restarts == 5


async def test_backoff_stops_growing_at_its_ceiling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crasher = Crasher()
    delays: list[float] = []
    policy = RestartPolicy(RestartMode.ALWAYS, max_restarts=12, window=10_000)
    await keep_running(crasher, policy, RestartState(), lambda r: delays.append(r.delay))
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == BACKOFF_MAX
    assert delays[-1] == BACKOFF_MAX


async def test_runs_longer_than_the_window_are_never_flapping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crasher = Crasher(lasts=61)
    delays: list[float] = []
    policy = RestartPolicy(RestartMode.ON_FAILURE, max_restarts=2, window=60)
    with trio.move_on_after(61 * 10):
        await keep_running(crasher, policy, RestartState(), lambda r: delays.append(r.delay))
    assert len(delays) >= 9  # far past max_restarts, and the backoff reset each time
    assert set(delays) == {0.1}


@pytest.mark.parametrize(
    ("mode", "end", "restarted"),
    [
        (RestartMode.NO, RunEnd(failed=True), False),
        (RestartMode.ON_FAILURE, RunEnd(failed=False), False),
        (RestartMode.ON_FAILURE, RunEnd(failed=True, by_user=True), False),
        (RestartMode.ALWAYS, RunEnd(failed=False, by_user=True), False),
        (RestartMode.ALWAYS, RunEnd(failed=False), True),
        (RestartMode.ON_FAILURE, RunEnd(failed=True), True),
    ],
)
def test_which_ends_are_restarted(mode: RestartMode, end: RunEnd, restarted: bool) -> None:
    decision = RestartState().decide(
        RestartPolicy(mode), failed=end.failed, by_user=end.by_user, started=0, now=1
    )
    assert isinstance(decision, Restart) is restarted
    if not restarted:
        assert decision == Stay()


def test_the_state_survives_a_hub_restart_on_disk() -> None:
    state = RestartState()
    policy = RestartPolicy(RestartMode.ALWAYS, max_restarts=2)
    for now in (1.0, 2.0):
        assert isinstance(
            state.decide(policy, failed=True, by_user=False, started=0, now=now), Restart
        )
    again = RestartState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    assert again.decide(policy, failed=True, by_user=False, started=2, now=3) == GiveUp()
    assert RestartPolicy.from_json(json.loads(json.dumps(policy.to_json()))) == policy


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"restart": "sometimes"}, "restart must be"),
        ({"restart": True}, "restart must be"),
        ({"maxRestarts": -1}, "maxRestarts"),
        ({"maxRestarts": "5"}, "maxRestarts"),
        ({"restartWindow": 0}, "restartWindow"),
        ({"restartWindow": "60"}, "restartWindow"),
    ],
)
def test_bad_policies_are_refused_with_the_field_named(
    payload: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        RestartPolicy.from_payload(payload)


def test_sth_start_bodies_mean_no_restarts() -> None:
    assert RestartPolicy.from_payload({"args": [1]}) == RestartPolicy(RestartMode.NO, 5, 60.0)
