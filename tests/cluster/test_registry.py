"""The registry's entries, staleness and placement (sans-IO)."""

from __future__ import annotations

import pytest

from si.daemon.cluster.registry import (
    STALE_AFTER,
    HubEntry,
    NoHubAvailable,
    choose_hub,
    registry_view,
)


def entry(name: str, at: float = 100.0, instances: int = 0, load: float = 0.0) -> HubEntry:
    return HubEntry(
        name,
        f"http://{name}:8000/api/v1",
        at,
        cpus=2,
        instances=instances,
        load={"currentLoad": load},
    )


def test_an_entry_survives_encoding_and_a_wrong_schema_is_refused() -> None:
    original = entry("a", instances=3, load=1.5)
    assert HubEntry.parse(original.encode()) == original
    with pytest.raises(ValueError, match="schema"):
        HubEntry.parse(b'{"schema": 99, "name": "a", "at": 1}')
    with pytest.raises(ValueError, match="not a registry entry"):
        HubEntry.parse(b'{"schema": 1, "name": "a"}')


def test_a_hub_is_stale_once_three_heartbeats_are_missed_and_that_is_within_ten_seconds() -> None:
    assert STALE_AFTER < 10
    hub = entry("a", at=100.0)
    assert not hub.stale(100.0 + STALE_AFTER)
    assert hub.stale(100.0 + STALE_AFTER + 0.1)
    assert hub.view(103.0)["age"] == 3.0


def test_auto_takes_the_least_loaded_live_hub_counting_instances_and_load_per_cpu() -> None:
    hubs = [entry("a", instances=4), entry("b", instances=1, load=0.5), entry("c", at=0.0)]
    assert choose_hub(hubs, 101.0).name == "b"  # c is emptier but stale
    assert choose_hub([entry("b"), entry("a")], 101.0).name == "a"  # ties: by name


def test_a_named_hub_must_be_known_and_live() -> None:
    hubs = [entry("a"), entry("old", at=0.0)]
    assert choose_hub(hubs, 101.0, "a").name == "a"
    with pytest.raises(NoHubAvailable, match="stale"):
        choose_hub(hubs, 101.0, "old")
    with pytest.raises(NoHubAvailable, match="no hub named"):
        choose_hub(hubs, 101.0, "nope")
    with pytest.raises(NoHubAvailable, match="no live hub"):
        choose_hub([entry("old", at=0.0)], 101.0)


def test_a_hub_lists_its_own_last_heartbeat_when_the_read_lags_behind_it() -> None:
    own = entry("b", at=200.0)
    # A replica that has not seen b yet, one with an older b, and one that caught up.
    assert [e.name for e in registry_view([entry("a")], own)] == ["a", "b"]
    assert registry_view([entry("b", at=150.0), entry("a")], own) == [entry("a"), own]
    newer = entry("b", at=250.0)
    assert registry_view([newer], own) == [newer]
    assert registry_view([entry("a")], None) == [entry("a")]
