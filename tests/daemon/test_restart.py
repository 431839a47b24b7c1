"""Restart policies on a simulated clock: counts, backoff, flapping, forgiveness."""

from __future__ import annotations

import json

import pytest

from si.daemon.restart import (
    BACKOFF_MAX,
    GiveUp,
    PolicyError,
    Restart,
    RestartMode,
    RestartPolicy,
    RestartState,
    Stay,
)

pytestmark = pytest.mark.timeout(10)


def crash_loop(
    policy: RestartPolicy, state: RestartState, lasts: float, until: float
) -> tuple[list[float], list[float], GiveUp | Stay | None]:
    """Runs that each last ``lasts`` seconds and crash, restarted as ``decide`` says, on a
    simulated clock up to ``until``: (start times, delays, the decision that ended it)."""
    now = 0.0
    starts: list[float] = []
    delays: list[float] = []
    while now <= until:
        starts.append(now)
        started, now = now, now + lasts
        decision = state.decide(policy, failed=True, by_user=False, started=started, now=now)
        if not isinstance(decision, Restart):
            return starts, delays, decision
        delays.append(decision.delay)
        now += decision.delay
    return starts, delays, None


def test_a_crash_loop_backs_off_doubling_then_ends_flapping() -> None:
    state = RestartState()
    policy = RestartPolicy(RestartMode.ON_FAILURE, max_restarts=5, window=60)
    starts, _, decision = crash_loop(policy, state, lasts=0, until=1000)
    assert decision == GiveUp("flapping")
    # The first run, then five restarts 0.1, 0.2, 0.4, 0.8, 1.6 s after each crash.
    assert [round(t, 3) for t in starts] == [0.0, 0.1, 0.3, 0.7, 1.5, 3.1]
    assert state.restarts == 5


def test_backoff_stops_growing_at_its_ceiling() -> None:
    policy = RestartPolicy(RestartMode.ALWAYS, max_restarts=12, window=10_000)
    _, delays, decision = crash_loop(policy, RestartState(), lasts=0, until=10_000)
    assert decision == GiveUp()
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == BACKOFF_MAX
    assert delays[-1] == BACKOFF_MAX


def test_runs_longer_than_the_window_are_never_flapping() -> None:
    policy = RestartPolicy(RestartMode.ON_FAILURE, max_restarts=2, window=60)
    _, delays, decision = crash_loop(policy, RestartState(), lasts=61, until=61 * 10)
    assert decision is None  # still restarting when the clock ran out
    assert len(delays) >= 9  # far past max_restarts, and the backoff reset each time
    assert set(delays) == {0.1}


def test_a_crash_after_a_long_run_forgets_the_earlier_crash_loop() -> None:
    state = RestartState()
    policy = RestartPolicy(RestartMode.ON_FAILURE, max_restarts=3, window=60)
    crash_loop(policy, state, lasts=0, until=1)  # 0.1, 0.2, 0.4 ... backoff grows
    assert state.backoff > 0.1
    decision = state.decide(policy, failed=True, by_user=False, started=100, now=200)
    assert decision == Restart(0.1)


@pytest.mark.parametrize(
    ("mode", "failed", "by_user", "restarted"),
    [
        (RestartMode.NO, True, False, False),
        (RestartMode.ON_FAILURE, False, False, False),
        (RestartMode.ON_FAILURE, True, True, False),
        (RestartMode.ALWAYS, False, True, False),
        (RestartMode.ALWAYS, False, False, True),
        (RestartMode.ON_FAILURE, True, False, True),
    ],
)
def test_which_ends_are_restarted(
    mode: RestartMode, failed: bool, by_user: bool, restarted: bool
) -> None:
    decision = RestartState().decide(
        RestartPolicy(mode), failed=failed, by_user=by_user, started=0, now=1
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
