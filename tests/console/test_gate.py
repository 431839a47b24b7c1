"""The console port's gate, sans-IO: a one-time link, then a session cookie; nothing else."""

from __future__ import annotations

from si.console.gate import COOKIE, Answer, Forward, Gate, build_head, parse_head

HOST = "127.0.0.1:4000"


def gate() -> Gate:
    return Gate({HOST, "localhost:4000"})


def signed_in(g: Gate) -> str:
    verdict = g.judge("GET", f"/console/?token={g.token}", [("Host", HOST)])
    assert isinstance(verdict, Answer)
    assert verdict.status == 303
    headers = dict(verdict.headers)
    assert headers["location"] == "/console/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    return cookie.split(";")[0]


def test_the_link_signs_in_once_and_the_cookie_then_opens_every_request() -> None:
    g = gate()
    cookie = signed_in(g)
    again = g.judge("GET", f"/console/?token={g.token}", [("Host", HOST)])
    assert isinstance(again, Answer)
    assert again.status == 403
    assert "already used" in again.message
    verdict = g.judge("GET", "/api/v1/instances", [("Host", HOST), ("Cookie", f"a=b; {cookie}")])
    assert isinstance(verdict, Forward)
    names = [name.lower() for name, _ in verdict.headers]
    assert "cookie" not in names  # the hub never sees the console's session
    assert ("connection", "close") in verdict.headers


def test_a_wrong_token_does_not_spend_the_link() -> None:
    g = gate()
    wrong = g.judge("GET", "/console/?token=guess", [("Host", HOST)])
    assert isinstance(wrong, Answer)
    assert wrong.status == 403
    signed_in(g)


def test_no_cookie_or_a_wrong_one_is_refused() -> None:
    g = gate()
    signed_in(g)
    for headers in ([("Host", HOST)], [("Host", HOST), ("Cookie", f"{COOKIE}=forged")]):
        verdict = g.judge("GET", "/api/v1/instances", headers)
        assert isinstance(verdict, Answer)
        assert verdict.status == 401


def test_another_host_name_is_refused_even_with_the_cookie() -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name.
    g = gate()
    cookie = signed_in(g)
    verdict = g.judge(
        "GET", "/api/v1/instances", [("Host", "evil.example:4000"), ("Cookie", cookie)]
    )
    assert isinstance(verdict, Answer)
    assert verdict.status == 421


def test_changes_from_another_origin_are_refused() -> None:
    g = gate()
    cookie = signed_in(g)
    base = [("Host", HOST), ("Cookie", cookie)]
    hostile = g.judge(
        "POST", "/api/v1/instance/x/_kill", [*base, ("Origin", "http://evil.example")]
    )
    assert isinstance(hostile, Answer)
    assert hostile.status == 403
    own = g.judge("POST", "/api/v1/instance/x/_kill", [*base, ("Origin", f"http://{HOST}")])
    assert isinstance(own, Forward)


def test_a_tcp_hub_gets_the_cli_token_and_never_the_browser_one() -> None:
    g = Gate({HOST}, upstream_token="sit_secret")
    cookie = signed_in(g)
    verdict = g.judge(
        "GET", "/api/v1/version", [("Host", HOST), ("Cookie", cookie), ("Authorization", "x")]
    )
    assert isinstance(verdict, Forward)
    assert [v for n, v in verdict.headers if n.lower() == "authorization"] == ["Bearer sit_secret"]


def test_heads_parse_and_build_back() -> None:
    head = b"POST /api/v1/sequence HTTP/1.1\r\nHost: h\r\nContent-Length: 3"
    method, target, headers = parse_head(head)
    assert (method, target, headers) == (
        "POST",
        "/api/v1/sequence",
        [("Host", "h"), ("Content-Length", "3")],
    )
    assert (
        build_head(method, target, headers) == head.replace(b"HTTP/1.1", b"HTTP/1.1") + b"\r\n\r\n"
    )
