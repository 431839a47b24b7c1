"""Tokens on disk and the judgement of a request's Authorization header."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from si.daemon.tokens import Denied, Granted, Scope, TokenError, TokenStore

pytestmark = pytest.mark.timeout(10)


def test_a_token_is_shown_once_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token, entry = store.create("ci", Scope.READ)
    assert token.startswith("sit_")
    text = store.path.read_text()
    assert token not in text
    assert entry.digest in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    granted = store.check(f"Bearer {token}")
    assert isinstance(granted, Granted)
    assert granted.entry.scope is Scope.READ


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer sit_not-issued"]
)
def test_no_token_or_an_unknown_one_is_401(tmp_path: Path, header: str) -> None:
    store = TokenStore(tmp_path)
    store.create("admin")
    judged = store.check(header)
    assert isinstance(judged, Denied)
    assert judged.status == 401


def test_a_revoked_token_is_403_and_others_still_work(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    old, _ = store.create("old")
    new, _ = store.create("new")
    store.revoke("old")
    judged = store.check(f"Bearer {old}")
    assert judged == Denied(403, "the token old was revoked")
    assert isinstance(store.check(f"Bearer {new}"), Granted)
    with pytest.raises(TokenError, match="no live token"):
        store.revoke("old")


def test_another_process_s_changes_are_seen_at_the_next_check(tmp_path: Path) -> None:
    hub_side = TokenStore(tmp_path)
    assert hub_side.entries() == []
    token, _ = TokenStore(tmp_path).create("later")  # the CLI, say
    assert isinstance(hub_side.check(f"Bearer {token}"), Granted)
    TokenStore(tmp_path).revoke("later")
    assert isinstance(hub_side.check(f"Bearer {token}"), Denied)


def test_names_are_unique_among_live_tokens(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.create("ci")
    with pytest.raises(TokenError, match="exists"):
        store.create("ci")
    store.revoke("ci")
    store.create("ci")  # the name is free again


def test_the_first_admin_token_is_made_once_and_left_in_a_private_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    path = store.ensure_admin()
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    granted = store.check(f"Bearer {token}")
    assert isinstance(granted, Granted)
    assert granted.entry.scope is Scope.ADMIN
    assert store.ensure_admin() is None


def test_a_damaged_token_file_refuses_everyone_with_503(tmp_path: Path) -> None:
    from si.daemon.access import Access, Refusal

    store = TokenStore(tmp_path)
    token, _ = store.create("admin")
    store.path.write_text("{not json")
    access = Access.of(store, lambda: 0.0, rate=10, concurrency=10)
    verdict = access.admit("GET", f"Bearer {token}", "127.0.0.1")
    assert isinstance(verdict, Refusal)
    assert verdict.status == 503
    assert "cannot read its tokens" in verdict.message
