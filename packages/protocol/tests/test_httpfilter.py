"""HTTP filters of personal intercepts: parsing, validation, matching, description."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.protocol.httpfilter import (
    AUTO_HEADER_NAME,
    HttpFilter,
    auto_header,
    describe,
    matches,
    parse_header_option,
    request_path,
    validate,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x-dev=alice", ("x-dev", "alice")),
        ("X-Dev=Alice", ("x-dev", "Alice")),  # names fold, values do not
        ("x-token=a=b==", ("x-token", "a=b==")),  # only the first '=' separates
        ("x-empty=", ("x-empty", "")),
        ("x-sp=a b", ("x-sp", "a b")),
        ("x~!#$%&'*+.^_`|=1", ("x~!#$%&'*+.^_`|", "1")),
    ],
)
def test_parse_header_option(text: str, expected: tuple[str, str]) -> None:
    assert parse_header_option(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auto", "expected NAME=VALUE"),
        ("x-dev", "expected NAME=VALUE"),
        ("=alice", "not a valid header name"),
        ("x dev=alice", "not a valid header name"),
        ("x:dev=alice", "not a valid header name"),
        ("x-dév=alice", "not a valid header name"),
        ("x-dev=al\r\nice", "cannot be sent in HTTP"),
        ("x-dev= alice", "cannot be sent in HTTP"),
        ("x-dev=alice\t", "cannot be sent in HTTP"),
        ("x-dev=a\x00", "cannot be sent in HTTP"),
    ],
)
def test_parse_header_option_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_header_option(text)
    assert "\n" not in str(info.value).replace("\\n", "")


def test_auto_header_is_unique_per_session_and_intercept() -> None:
    a = auto_header("web", "5e1f-aaaa")
    assert a[0] == AUTO_HEADER_NAME
    assert a != auto_header("web", "5e1f-bbbb")
    assert a != auto_header("api", "5e1f-aaaa")
    assert auto_header("web", "5e1f-aaaa") == a  # stable: the CLI can print it again
    validate(HttpFilter(headers=(a,)))


def test_auto_header_refuses_unsendable_input() -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        auto_header("web\n", "s")


@pytest.mark.parametrize(
    "good",
    [
        HttpFilter(headers=(("x-dev", "alice"),)),
        HttpFilter(path_prefix="/api/"),
        HttpFilter(path_equal="/healthz"),
        HttpFilter(path_regex="^/v[0-9]+/"),
        HttpFilter(method="GET"),
        HttpFilter(method="get"),
        HttpFilter(path_prefix="/api", path_regex="json$"),
        HttpFilter(headers=(("a", "1"), ("b", "2")), path_prefix="/", method="POST"),
    ],
)
def test_validate_accepts(good: HttpFilter) -> None:
    validate(good)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (HttpFilter(), "needs at least one"),
        (HttpFilter(path_regex="(unclosed"), r"--http-path-regex '\(unclosed': missing \)"),
        (HttpFilter(path_regex="*x"), "nothing to repeat"),
        (HttpFilter(path_prefix="api"), "starts with '/'"),
        (HttpFilter(path_equal="/a b"), "no spaces"),
        (HttpFilter(path_prefix="/a", path_equal="/a"), "cannot be used together"),
        (HttpFilter(path_regex="a", path_equal="/a"), "cannot be used together"),
        (HttpFilter(method="GE T"), "not an HTTP method"),
        (HttpFilter(headers=(("bad name", "x"),)), "not a valid HTTP header name"),
        (HttpFilter(headers=(("x", "a\r\nb"),)), "cannot be sent"),
        (HttpFilter(headers=(("X-A", "1"), ("x-a", "2"))), "more than once"),
    ],
)
def test_validate_rejects_with_one_line(bad: HttpFilter, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        validate(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/", "/"),
        ("/a/b?x=1&y=/z", "/a/b"),
        ("/a?", "/a"),
        ("*", "*"),
        ("http://example.com/p/q?x", "/p/q"),
        ("http://example.com", "/"),
        ("http://example.com?q=1", "/"),
        ("/%2Fencoded", "/%2Fencoded"),  # no percent-decoding
        ("http://[::1", ""),
    ],
)
def test_request_path(target: str, path: str) -> None:
    assert request_path(target) == path


ALICE = HttpFilter(headers=(("X-Dev", "alice"),))


def test_header_names_fold_values_do_not() -> None:
    assert matches(ALICE, "GET", "/", [("x-dev", "alice")])
    assert matches(ALICE, "GET", "/", [("X-DEV", "alice")])
    assert not matches(ALICE, "GET", "/", [("x-dev", "Alice")])
    assert not matches(ALICE, "GET", "/", [("x-dev", "alice2")])
    assert not matches(ALICE, "GET", "/", [])
    assert not matches(ALICE, "GET", "/", [("x-other", "alice")])


def test_repeated_request_header_matches_any_occurrence() -> None:
    assert matches(ALICE, "GET", "/", [("x-dev", "bob"), ("x-dev", "alice")])


def test_optional_whitespace_around_values_is_ignored() -> None:
    assert matches(ALICE, "GET", "/", [("x-dev", " alice\t")])


def test_every_header_must_match() -> None:
    both = HttpFilter(headers=(("a", "1"), ("b", "2")))
    assert matches(both, "GET", "/", [("a", "1"), ("b", "2")])
    assert not matches(both, "GET", "/", [("a", "1")])
    assert not matches(both, "GET", "/", [("a", "1"), ("b", "3")])


def test_empty_value_matches_only_an_empty_header() -> None:
    empty = HttpFilter(headers=(("x-flag", ""),))
    assert matches(empty, "GET", "/", [("x-flag", "")])
    assert not matches(empty, "GET", "/", [("x-flag", "1")])
    assert not matches(empty, "GET", "/", [])


def test_path_prefix_is_a_plain_prefix_of_the_path_without_query() -> None:
    f = HttpFilter(path_prefix="/api")
    assert matches(f, "GET", "/api", [])
    assert matches(f, "GET", "/api/v1?x=1", [])
    assert matches(f, "GET", "/apiary", [])
    assert not matches(f, "GET", "/ap", [])
    assert not matches(f, "GET", "/v1/api", [])
    assert not matches(f, "GET", "/x?/api", [])  # the query is not the path
    assert matches(f, "GET", "http://svc:8080/api/x", [])


def test_path_equal() -> None:
    f = HttpFilter(path_equal="/healthz")
    assert matches(f, "GET", "/healthz", [])
    assert matches(f, "GET", "/healthz?verbose", [])
    assert not matches(f, "GET", "/healthz/", [])
    assert not matches(f, "GET", "/healthzz", [])


def test_path_regex_is_searched_not_anchored() -> None:
    unanchored = HttpFilter(path_regex="v[0-9]+")
    assert matches(unanchored, "GET", "/api/v2/users", [])
    assert not matches(unanchored, "GET", "/api/vx", [])
    anchored = HttpFilter(path_regex="^/v[0-9]+$")
    assert matches(anchored, "GET", "/v10", [])
    assert matches(anchored, "GET", "/v10?x=y", [])  # the query is not the path
    assert not matches(anchored, "GET", "/v10/", [])
    assert not matches(anchored, "GET", "/api/v10", [])


def test_method_compares_case_insensitively() -> None:
    f = HttpFilter(method="post")
    assert matches(f, "POST", "/", [])
    assert not matches(f, "GET", "/", [])


def test_all_parts_must_match() -> None:
    f = HttpFilter(headers=(("x-dev", "a"),), path_prefix="/api/", method="PUT")
    headers = [("x-dev", "a")]
    assert matches(f, "PUT", "/api/x", headers)
    assert not matches(f, "GET", "/api/x", headers)
    assert not matches(f, "PUT", "/web/x", headers)
    assert not matches(f, "PUT", "/api/x", [])


def test_describe() -> None:
    assert describe(ALICE) == "x-dev: alice"
    assert (
        describe(
            HttpFilter(
                headers=(("A", "1"), ("b", "2")),
                path_prefix="/api/",
                path_regex="json$",
                method="get",
            )
        )
        == "a: 1, b: 2, path prefix /api/, path matching json$, method GET"
    )
    assert describe(HttpFilter(path_equal="/x")) == "path /x"
    assert describe(HttpFilter()) == "every request"


@settings(max_examples=200)
@given(
    st.text(max_size=30),
    st.text(max_size=30),
    st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=5),
)
def test_matching_never_raises(method: str, target: str, headers: list[tuple[str, str]]) -> None:
    f = HttpFilter(headers=(("x", "1"),), path_prefix="/a", path_regex="b", method="GET")
    assert isinstance(matches(f, method, target, headers), bool)


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_parse_header_option_returns_or_raises_value_error(text: str) -> None:
    try:
        name, value = parse_header_option(text)
    except ValueError:
        return
    validate(HttpFilter(headers=((name, value),)))
