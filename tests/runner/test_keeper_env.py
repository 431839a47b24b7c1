"""The environment the keeper gives a runner it execs."""

from __future__ import annotations

import pytest

from si.runner.keeper import _runner_environment

pytestmark = pytest.mark.timeout(10)


def test_node_extra_ca_certs_is_handed_over_for_the_runner_to_read_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", "/etc/ssl/extra.pem")
    env = _runner_environment()
    assert "NODE_EXTRA_CA_CERTS" not in env
    assert env["SI_NODE_EXTRA_CA_CERTS"] == "/etc/ssl/extra.pem"
    monkeypatch.delenv("NODE_EXTRA_CA_CERTS")
    assert "SI_NODE_EXTRA_CA_CERTS" not in _runner_environment()
