"""`si hub token create|ls|revoke`, and the CLI reaching a TCP hub with a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from si.testing import HubProcess
from tests.cli.conftest import RunSi, one_error_line
from tests.netutil import free_port, make_certificates

pytestmark = pytest.mark.timeout(60)


def test_create_prints_the_token_once_and_ls_never_shows_it(run_si: RunSi, tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    made = run_si("hub", "token", "create", "--home", home, "--name", "ci", "--read-only")
    assert made.returncode == 0, made.stderr
    token = made.stdout.decode().strip()
    assert token.startswith("sit_")
    assert "not shown again" in made.stderr.decode()
    listed = run_si("hub", "token", "ls", "--home", home).stdout.decode()
    assert token not in listed
    header, row = listed.splitlines()
    assert header.split() == ["ID", "NAME", "SCOPE", "CREATED", "REVOKED"]
    assert row.split()[1:3] == ["ci", "read"]
    assert token not in (tmp_path / "h" / "tokens.json").read_text()


def test_revoke_by_name_then_a_second_revoke_is_one_clear_error(
    run_si: RunSi, tmp_path: Path
) -> None:
    home = str(tmp_path / "h")
    assert run_si("hub", "token", "create", "--home", home, "--name", "old").returncode == 0
    assert run_si("hub", "token", "revoke", "--home", home, "old").returncode == 0
    (entry,) = json.loads(run_si("hub", "token", "ls", "--home", home, "--format", "json").stdout)
    assert entry["name"] == "old"
    assert entry["revoked"] is not None
    again = run_si("hub", "token", "revoke", "--home", home, "old")
    assert one_error_line(again) == "no live token with id or name 'old'"


@pytest.fixture
def tcp_hub(short_dir: Path) -> Iterator[tuple[HubProcess, str]]:
    port = free_port()
    hub = HubProcess(short_dir / "tcp", "--port", str(port)).start()
    try:
        yield hub, f"http://127.0.0.1:{port}"
    finally:
        hub.close()


def test_the_cli_reaches_a_tcp_hub_with_si_token_or_the_profile_s(
    run_si: RunSi, tcp_hub: tuple[HubProcess, str]
) -> None:
    hub, url = tcp_hub
    token = (hub.home / "admin.token").read_text().strip()
    without = run_si("--hub", url, "inst", "ls")
    assert "a token is required" in one_error_line(without)
    with_env = run_si("--hub", url, "inst", "ls", env={"SI_TOKEN": token})
    assert with_env.returncode == 0, with_env.stderr
    assert run_si("config", "set", "token", token).returncode == 0
    assert run_si("config", "set", "apiUrl", url).returncode == 0
    from_profile = run_si("inst", "ls", env={"SI_HUB": None})
    assert from_profile.returncode == 0, from_profile.stderr
    wrong = run_si("--hub", url, "inst", "ls", env={"SI_TOKEN": "sit_" + "x" * 40})
    assert one_error_line(wrong).endswith("the token is not one this hub issued")


def test_ca_verifies_a_tls_hub_and_without_it_the_failure_is_one_line(
    run_si: RunSi, short_dir: Path, tmp_path: Path
) -> None:
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    home = short_dir / "tls"
    hub = HubProcess(home, "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key))
    hub.start()
    try:
        env: dict[str, str | None] = {"SI_TOKEN": (home / "admin.token").read_text().strip()}
        url = f"https://127.0.0.1:{port}"
        verified = run_si("--ca", str(ca), "--hub", url, "inst", "ls", env=env)
        assert verified.returncode == 0, verified.stderr
        unverified = run_si("--hub", url, "inst", "ls", env=env)
        assert "certificate failed verification" in one_error_line(unverified)
        assert one_error_line(unverified).endswith("name its CA with --ca or SI_CA")
        plain = run_si("--hub", f"http://127.0.0.1:{port}", "inst", "ls", env=env)
        assert one_error_line(plain).endswith("if it serves TLS, use https://")
    finally:
        hub.close()
