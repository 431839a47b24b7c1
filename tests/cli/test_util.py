"""``si util log-format``: NDJSON log lines in, one human line each out."""

from __future__ import annotations

from tests.cli.conftest import RunSi

LOG = (
    b'{"ts": 1700000000123, "level": "INFO", "msg": "started", "from": "Runner",'
    b' "Runner": {"id": "0123456789abcdef"}}\n'
    b"not json at all\n"
    b'{"ts": 1700000001000, "level": "error", "msg": "boom", "from": "Sequence",'
    b' "data": [{"code": 7}]}\n'
    b"[1, 2]\n"
)


def test_log_format_prints_one_line_per_object(run_si: RunSi) -> None:
    result = run_si("util", "log-format", input=LOG)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "2023-11-14T22:13:20.123Z INFO  Runner 01234567 started",
        '2023-11-14T22:13:21.000Z ERROR Sequence boom [{"code":7}]',
    ]


def test_lf_alias_and_no_colour_in_a_pipe(run_si: RunSi) -> None:
    result = run_si("u", "lf", "--no-color", input=LOG)
    assert b"\x1b[" not in result.stdout
    assert len(result.stdout.splitlines()) == 2
